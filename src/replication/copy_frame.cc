#include "replication/copy_frame.h"

#include <cctype>
#include <string>

#include "absl/status/status.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "common/byte_reader.h"

namespace outboxd::replication {
namespace {

using ::outboxd::ByteReader;

constexpr size_t kXLogDataHeaderSize = 1 + 8 * 3;
constexpr size_t kKeepaliveSize = 1 + 8 * 2 + 1;

void PutUint64(uint64_t value, char* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(value & 0xff);
    value >>= 8;
  }
}

void AppendUint64(uint64_t value, std::string& out) {
  char bytes[8];
  PutUint64(value, bytes);
  out.append(bytes, sizeof(bytes));
}

std::string DescribeByte(uint8_t byte) {
  if (std::isprint(byte)) return fmt::format("'{}' (0x{:02x})", static_cast<char>(byte), byte);
  return fmt::format("0x{:02x}", byte);
}

// PostgreSQL writes the flag as 0 or 1; anything else means we are not reading what it wrote.
absl::StatusOr<bool> ReadFlag(ByteReader& r, std::string_view field) {
  const size_t at = r.offset();
  ASSIGN_OR_RETURN(const uint8_t flag, r.ReadUint8(field));
  if (flag > 1) {
    return r.Malformed(at, fmt::format("{} is {}, expected 0 or 1", field, DescribeByte(flag)));
  }
  return flag == 1;
}

absl::StatusOr<ServerFrame> DecodeXLogData(ByteReader& r) {
  XLogData frame;
  ASSIGN_OR_RETURN(const uint64_t start, r.ReadUint64("dataStart"));
  frame.data_start = Lsn(start);
  ASSIGN_OR_RETURN(const uint64_t end, r.ReadUint64("walEnd"));
  frame.wal_end = Lsn(end);
  ASSIGN_OR_RETURN(frame.send_time, r.ReadInt64("sendTime"));
  frame.data = r.ReadRest();
  return frame;
}

absl::StatusOr<ServerFrame> DecodeKeepalive(ByteReader& r) {
  Keepalive frame;
  ASSIGN_OR_RETURN(const uint64_t end, r.ReadUint64("walEnd"));
  frame.wal_end = Lsn(end);
  ASSIGN_OR_RETURN(frame.send_time, r.ReadInt64("sendTime"));
  ASSIGN_OR_RETURN(frame.reply_requested, ReadFlag(r, "replyRequested"));
  RETURN_IF_ERROR(r.ExpectEnd());
  return frame;
}

}  // namespace

absl::StatusOr<ServerFrame> DecodeServerFrame(std::string_view frame) {
  if (frame.empty()) {
    return absl::DataLossError(
        "replication CopyData frame truncated at byte 0: the frame is empty, not even its "
        "1-byte kind is there");
  }
  const char kind = frame[0];
  if (kind == 'w') {
    ByteReader r(frame, "replication XLogData frame ('w')", "frame");
    RETURN_IF_ERROR(r.ReadUint8("the kind").status());
    return DecodeXLogData(r);
  }
  if (kind == 'k') {
    ByteReader r(frame, "replication keepalive frame ('k')", "frame");
    RETURN_IF_ERROR(r.ReadUint8("the kind").status());
    return DecodeKeepalive(r);
  }
  return absl::UnimplementedError(fmt::format(
      "replication CopyData frame kind {} is unknown: a walsender streaming a logical slot sends "
      "only 'w' (XLogData) and 'k' (keepalive); the server may be newer than outboxd or the "
      "connection is not in START_REPLICATION",
      DescribeByte(static_cast<uint8_t>(kind))));
}

std::array<char, kStandbyStatusSize> EncodeStandbyStatus(const StandbyStatus& status) {
  std::array<char, kStandbyStatusSize> out{};
  out[0] = 'r';
  PutUint64(status.written.value(), &out[1]);
  PutUint64(status.flushed.value(), &out[9]);
  PutUint64(status.applied.value(), &out[17]);
  PutUint64(static_cast<uint64_t>(status.clock), &out[25]);
  out[33] = status.reply_requested ? 1 : 0;
  return out;
}

std::string EncodeXLogData(const XLogData& frame) {
  std::string out;
  out.reserve(kXLogDataHeaderSize + frame.data.size());
  out.push_back('w');
  AppendUint64(frame.data_start.value(), out);
  AppendUint64(frame.wal_end.value(), out);
  AppendUint64(static_cast<uint64_t>(frame.send_time), out);
  out.append(frame.data.data(), frame.data.size());
  return out;
}

std::string EncodeKeepalive(const Keepalive& frame) {
  std::string out;
  out.reserve(kKeepaliveSize);
  out.push_back('k');
  AppendUint64(frame.wal_end.value(), out);
  AppendUint64(static_cast<uint64_t>(frame.send_time), out);
  out.push_back(frame.reply_requested ? 1 : 0);
  return out;
}

absl::StatusOr<StandbyStatus> DecodeStandbyStatus(std::string_view frame) {
  if (frame.empty()) {
    return absl::DataLossError(
        "replication standby status frame ('r') truncated at byte 0: the frame is empty");
  }
  if (frame[0] != 'r') {
    return absl::UnimplementedError(fmt::format(
        "replication client frame kind {} is not a standby status update ('r'), the only "
        "client frame outboxd sends",
        DescribeByte(static_cast<uint8_t>(frame[0]))));
  }
  ByteReader r(frame, "replication standby status frame ('r')", "frame");
  RETURN_IF_ERROR(r.ReadUint8("the kind").status());
  StandbyStatus status;
  ASSIGN_OR_RETURN(const uint64_t written, r.ReadUint64("the written LSN"));
  status.written = Lsn(written);
  ASSIGN_OR_RETURN(const uint64_t flushed, r.ReadUint64("the flushed LSN"));
  status.flushed = Lsn(flushed);
  ASSIGN_OR_RETURN(const uint64_t applied, r.ReadUint64("the applied LSN"));
  status.applied = Lsn(applied);
  ASSIGN_OR_RETURN(status.clock, r.ReadInt64("the clock"));
  ASSIGN_OR_RETURN(status.reply_requested, ReadFlag(r, "replyRequested"));
  RETURN_IF_ERROR(r.ExpectEnd());
  return status;
}

}  // namespace outboxd::replication
