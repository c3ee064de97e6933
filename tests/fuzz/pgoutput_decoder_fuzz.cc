// libFuzzer target for the pgoutput decoder (src/pgoutput/decoder.h): any
// bytes must give a Message or an error status, never a crash, a read out of
// bounds or undefined behaviour. Both entry points run: the allocating one and
// the one the pipeline uses, which reuses the previous message's storage.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "pgoutput/decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<outboxd::pgoutput::Message> once = outboxd::pgoutput::DecodeMessage(bytes);

  // Reused storage: `out` still holds the previous input's message (tuple
  // vectors and all); the outcome must match the fresh decode.
  static outboxd::pgoutput::Message out;
  const absl::Status reused = outboxd::pgoutput::DecodeMessageInto(bytes, out);
  if (once.ok() != reused.ok() || (!once.ok() && once.status().code() != reused.code())) {
    std::abort();
  }
  return 0;
}
