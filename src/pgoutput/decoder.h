// Decodes one pgoutput message (the payload of one XLogData frame) into a
// Message. Pure: no I/O, no logging.
//
// Errors:
//  - DataLossError naming the message kind and the byte offset for truncated or
//    malformed bytes (including trailing garbage).
//  - UnimplementedError for messages outboxd never asks for (stream start/stop/
//    commit/abort 'S' 'E' 'c' 'A', two-phase 'b' 'P' 'K' 'r', and unknown kinds):
//    seeing one means the server was started with options we did not request.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "pgoutput/messages.h"

namespace outboxd::pgoutput {

// Decodes `data`. Views in the result point into `data`.
absl::StatusOr<Message> DecodeMessage(std::string_view data);

// Same, but reuses `out`'s storage (tuple vectors) to avoid allocations on the
// hot path. On error `out` is left in an unspecified but valid state.
absl::Status DecodeMessageInto(std::string_view data, Message& out);

}  // namespace outboxd::pgoutput
