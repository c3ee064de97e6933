// Codec for the CopyBoth sub-protocol of streaming replication
// (protocol-replication.html, "START_REPLICATION"). Pure: bytes in, structs out.
//
// Server -> client, inside CopyData:
//   'w' XLogData:  Int64 dataStart, Int64 walEnd, Int64 sendTime, Byten data
//   'k' Keepalive: Int64 walEnd, Int64 sendTime, Byte1 replyRequested
// Client -> server:
//   'r' Standby status update: Int64 written, Int64 flushed, Int64 applied,
//       Int64 clock (microseconds since 2000-01-01), Byte1 replyRequested
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <variant>

#include "absl/status/statusor.h"
#include "common/lsn.h"

namespace outboxd::replication {

// 'w'
struct XLogData {
  Lsn data_start;
  Lsn wal_end;
  int64_t send_time = 0;
  std::string_view data;  // the pgoutput message; a view into the frame
};

// 'k'
struct Keepalive {
  Lsn wal_end;
  int64_t send_time = 0;
  bool reply_requested = false;
};

using ServerFrame = std::variant<XLogData, Keepalive>;

// 'r'
struct StandbyStatus {
  Lsn written;
  Lsn flushed;
  Lsn applied;
  int64_t clock = 0;
  bool reply_requested = false;
};

inline constexpr size_t kStandbyStatusSize = 1 + 8 * 4 + 1;

// DataLossError naming the frame kind and offset on truncated input;
// UnimplementedError for an unknown frame kind.
absl::StatusOr<ServerFrame> DecodeServerFrame(std::string_view frame);

// Encoders, also used by tests and fakes.
std::array<char, kStandbyStatusSize> EncodeStandbyStatus(const StandbyStatus& status);
std::string EncodeXLogData(const XLogData& frame);
std::string EncodeKeepalive(const Keepalive& frame);
absl::StatusOr<StandbyStatus> DecodeStandbyStatus(std::string_view frame);

}  // namespace outboxd::replication
