#include "replication/copy_frame.h"

#include <map>
#include <random>
#include <regex>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::replication {
namespace {

// absl::string_view is not std::string_view in this toolchain; gMock's string matchers need
// a std::string.
std::string Text(const absl::Status& status) { return std::string(status.message()); }

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Bytes(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

size_t OffsetIn(const absl::Status& status) {
  static const std::regex kAtByte("at byte ([0-9]+)");
  std::smatch match;
  const std::string message(status.message());
  if (!std::regex_search(message, match, kAtByte)) return SIZE_MAX;
  return std::stoul(match[1]);
}

// Bytes written by hand from the protocol docs, not by our encoder.
const std::string kKeepaliveBytes =
    Bytes({'k', 0x00, 0x00, 0x00, 0x16, 0xB3, 0x74, 0xD8, 0x48,  // walEnd 16/B374D848
           0x00, 0x02, 0xB0, 0xEC, 0x85, 0x15, 0xF3, 0x40,       // sendTime
           0x01});                                                // replyRequested
const std::string kXLogDataBytes =
    Bytes({'w', 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10,  // dataStart 1/10
           0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20,       // walEnd 1/20
           0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,       // sendTime -2
           'B', 0x00, 'x'});                                      // data

TEST(CopyFrameTest, DecodesHandWrittenKeepalive) {
  auto frame = DecodeServerFrame(kKeepaliveBytes);
  ASSERT_TRUE(frame.ok()) << frame.status();
  const auto& k = std::get<Keepalive>(*frame);
  EXPECT_EQ(k.wal_end, *Lsn::Parse("16/B374D848"));
  EXPECT_EQ(k.send_time, 757479845000000);
  EXPECT_TRUE(k.reply_requested);
  EXPECT_EQ(EncodeKeepalive(k), kKeepaliveBytes);
}

TEST(CopyFrameTest, DecodesHandWrittenXLogData) {
  auto frame = DecodeServerFrame(kXLogDataBytes);
  ASSERT_TRUE(frame.ok()) << frame.status();
  const auto& w = std::get<XLogData>(*frame);
  EXPECT_EQ(w.data_start, Lsn((uint64_t{1} << 32) | 0x10));
  EXPECT_EQ(w.wal_end, Lsn((uint64_t{1} << 32) | 0x20));
  EXPECT_EQ(w.send_time, -2);
  EXPECT_EQ(w.data, std::string_view("B\0x", 3));
  EXPECT_EQ(w.data.data(), kXLogDataBytes.data() + 25);  // a view, not a copy
  EXPECT_EQ(EncodeXLogData(w), kXLogDataBytes);
}

TEST(CopyFrameTest, EncodesStandbyStatusInWireOrder) {
  StandbyStatus status;
  status.written = Lsn(0x0102030405060708);
  status.flushed = Lsn(0x1112131415161718);
  status.applied = Lsn(0x2122232425262728);
  status.clock = -1;
  status.reply_requested = true;
  const auto bytes = EncodeStandbyStatus(status);
  EXPECT_EQ(std::string(bytes.data(), bytes.size()),
            Bytes({'r', 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
                   0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                   0xFF, 0xFF, 0xFF, 1}));
}

TEST(CopyFrameTest, StandbyStatusRoundTrips) {
  for (bool reply : {false, true}) {
    StandbyStatus status{Lsn(10), Lsn(9), Lsn(8), 757479845000000, reply};
    const auto bytes = EncodeStandbyStatus(status);
    auto decoded = DecodeStandbyStatus(std::string_view(bytes.data(), bytes.size()));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->written, Lsn(10));
    EXPECT_EQ(decoded->flushed, Lsn(9));
    EXPECT_EQ(decoded->applied, Lsn(8));
    EXPECT_EQ(decoded->clock, 757479845000000);
    EXPECT_EQ(decoded->reply_requested, reply);
  }
}

TEST(CopyFrameTest, XLogDataAndKeepaliveRoundTrip) {
  const std::string payload("I\0\0\x40\x0bN", 6);
  for (std::string_view data : {std::string_view(), std::string_view(payload)}) {
    XLogData w{Lsn(0xABCDEF0123456789), Lsn(0xFFFFFFFFFFFFFFFF), INT64_MIN, data};
    const std::string bytes = EncodeXLogData(w);
    EXPECT_EQ(bytes.size(), 25 + data.size());
    auto decoded = DecodeServerFrame(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    const auto& got = std::get<XLogData>(*decoded);
    EXPECT_EQ(got.data_start, w.data_start);
    EXPECT_EQ(got.wal_end, w.wal_end);
    EXPECT_EQ(got.send_time, INT64_MIN);
    EXPECT_EQ(got.data, data);
  }
  for (bool reply : {false, true}) {
    Keepalive k{Lsn(42), 123, reply};
    const std::string bytes = EncodeKeepalive(k);
    EXPECT_EQ(bytes.size(), 18u);
    auto decoded = DecodeServerFrame(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    const auto& got = std::get<Keepalive>(*decoded);
    EXPECT_EQ(got.wal_end, Lsn(42));
    EXPECT_EQ(got.send_time, 123);
    EXPECT_EQ(got.reply_requested, reply);
  }
}

TEST(CopyFrameTest, EveryTruncationIsDataLossWithOffset) {
  const auto status_bytes = EncodeStandbyStatus({Lsn(1), Lsn(2), Lsn(3), 4, true});
  const std::string standby(status_bytes.data(), status_bytes.size());
  struct Case {
    std::string bytes;
    size_t min_len;  // shortest complete frame
    bool standby;
    std::string name;
  };
  for (const Case& c : {Case{kXLogDataBytes, 25, false, "replication XLogData frame ('w')"},
                        Case{kKeepaliveBytes, 18, false, "replication keepalive frame ('k')"},
                        Case{standby, 34, true, "replication standby status frame ('r')"}}) {
    for (size_t len = 0; len < c.min_len; ++len) {
      const std::string prefix = c.bytes.substr(0, len);
      const absl::Status status =
          c.standby ? DecodeStandbyStatus(prefix).status() : DecodeServerFrame(prefix).status();
      ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.name << " len " << len;
      EXPECT_LE(OffsetIn(status), len) << status;
      if (len > 0) {
        EXPECT_THAT(Text(status), StartsWith(c.name + " truncated at byte"));
      }
    }
  }
  EXPECT_EQ(DecodeServerFrame(kKeepaliveBytes.substr(0, 10)).status().message(),
            "replication keepalive frame ('k') truncated at byte 9: sendTime needs 8 bytes, 1 "
            "left of the 10-byte frame");
}

TEST(CopyFrameTest, TrailingBytesAndBadFlagsAreDataLoss) {
  absl::Status status = DecodeServerFrame(kKeepaliveBytes + "z").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Text(status), HasSubstr("1 trailing bytes at byte 18"));

  std::string bad_flag = kKeepaliveBytes;
  bad_flag[17] = 2;
  status = DecodeServerFrame(bad_flag).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Text(status), HasSubstr("malformed at byte 17: replyRequested is 0x02"));

  const auto bytes = EncodeStandbyStatus({});
  std::string standby(bytes.data(), bytes.size());
  EXPECT_EQ(DecodeStandbyStatus(standby + std::string(1, '\0')).status().code(),
            absl::StatusCode::kDataLoss);
  standby[33] = 'y';
  EXPECT_EQ(DecodeStandbyStatus(standby).status().code(), absl::StatusCode::kDataLoss);
}

TEST(CopyFrameTest, UnknownKindsAreUnimplemented) {
  for (char kind : {'r', 'x', 'h', '\0', 'B'}) {
    const absl::Status status =
        DecodeServerFrame(std::string(1, kind) + std::string(30, '\0')).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << kind;
    EXPECT_THAT(Text(status), HasSubstr("is unknown"));
  }
  EXPECT_THAT(Text(DecodeServerFrame("x").status()),
              StartsWith("replication CopyData frame kind 'x' (0x78) is unknown"));
  EXPECT_EQ(DecodeStandbyStatus(kKeepaliveBytes).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(CopyFrameTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(99);
  std::map<absl::StatusCode, size_t> codes;
  for (int i = 0; i < 100000; ++i) {
    std::string input(rng() % 40, '\0');
    for (char& c : input) c = static_cast<char>(rng() % 3 == 0 ? rng() : rng() % 2);
    if (!input.empty() && rng() % 3 != 0) input[0] = "wkr"[rng() % 3];
    auto frame = DecodeServerFrame(input);
    const absl::StatusCode code = frame.status().code();
    ++codes[code];
    ASSERT_TRUE(code == absl::StatusCode::kOk || code == absl::StatusCode::kDataLoss ||
                code == absl::StatusCode::kUnimplemented)
        << frame.status();
    if (frame.ok()) {
      // Decoding is exact: re-encoding gives the input back.
      const std::string again = std::holds_alternative<XLogData>(*frame)
                                    ? EncodeXLogData(std::get<XLogData>(*frame))
                                    : EncodeKeepalive(std::get<Keepalive>(*frame));
      ASSERT_EQ(again, input);
    }
    auto standby = DecodeStandbyStatus(input);
    const absl::StatusCode standby_code = standby.status().code();
    ASSERT_TRUE(standby_code == absl::StatusCode::kOk ||
                standby_code == absl::StatusCode::kDataLoss ||
                standby_code == absl::StatusCode::kUnimplemented);
    if (standby.ok()) {
      const auto again = EncodeStandbyStatus(*standby);
      ASSERT_EQ(std::string(again.data(), again.size()), input);
    }
  }
  EXPECT_GT(codes[absl::StatusCode::kOk], 0u);
  EXPECT_GT(codes[absl::StatusCode::kDataLoss], 0u);
  EXPECT_GT(codes[absl::StatusCode::kUnimplemented], 0u);
}

}  // namespace
}  // namespace outboxd::replication
