// libFuzzer target for the CopyBoth frame codec (src/replication/copy_frame.h):
// any bytes decode to a frame or an error, never a crash; and whatever decodes
// encodes back to the same bytes, so the codec neither drops nor invents a field.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "replication/copy_frame.h"

namespace {

using outboxd::replication::DecodeServerFrame;
using outboxd::replication::DecodeStandbyStatus;
using outboxd::replication::EncodeKeepalive;
using outboxd::replication::EncodeStandbyStatus;
using outboxd::replication::EncodeXLogData;
using outboxd::replication::Keepalive;
using outboxd::replication::XLogData;

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto frame = DecodeServerFrame(bytes);
  if (frame.ok()) {
    if (const auto* x = std::get_if<XLogData>(&*frame)) {
      Check(EncodeXLogData(*x) == bytes);
    } else {
      Check(EncodeKeepalive(std::get<Keepalive>(*frame)) == bytes);
    }
  }
  auto status = DecodeStandbyStatus(bytes);
  if (status.ok()) {
    const auto encoded = EncodeStandbyStatus(*status);
    Check(std::string_view(encoded.data(), encoded.size()) == bytes);
  }
  return 0;
}
