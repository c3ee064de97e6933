// Encodes outbox.v1.Envelope by hand, straight into the output string: one size pass, one
// write pass, no intermediate message object and no per-field copies. The bytes are exactly
// what the generated protobuf code would serialize (fields in number order, proto3 defaults
// omitted, created_at/source/commit_time present as set by the old encoder);
// tests/unit/outbox/envelope_test.cc compares both on many events.
//
// Wire format (protobuf encoding guide): tag = field number << 3 | wire type; wire type 0 is
// a varint, 2 is a length-delimited field (varint length, then the bytes). Every field number
// here is below 16, so every tag is one byte.
#include "outbox/envelope.h"

#include <cstdint>
#include <cstring>
#include <string_view>

#include "common/time.h"
#include "fmt/format.h"
#include "google/protobuf/timestamp.pb.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::outbox {
namespace {

constexpr int64_t kMicrosPerSecond = 1000000;

constexpr uint8_t Tag(uint32_t field, uint32_t wire_type) {
  return static_cast<uint8_t>(field << 3 | wire_type);
}
constexpr uint32_t kVarint = 0;
constexpr uint32_t kLengthDelimited = 2;

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

char* PutVarint(char* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

// proto3 scalars and strings are omitted when they hold the default (0, empty).
size_t VarintFieldSize(uint64_t v) { return v == 0 ? 0 : 1 + VarintSize(v); }
size_t BytesFieldSize(std::string_view s) {
  return s.empty() ? 0 : 1 + VarintSize(s.size()) + s.size();
}
// A present sub-message is written even when its body is empty.
size_t MessageFieldSize(size_t body) { return 1 + VarintSize(body) + body; }

char* PutVarintField(char* p, uint32_t field, uint64_t v) {
  if (v == 0) return p;
  *p++ = static_cast<char>(Tag(field, kVarint));
  return PutVarint(p, v);
}
char* PutBytesField(char* p, uint32_t field, std::string_view s) {
  if (s.empty()) return p;
  *p++ = static_cast<char>(Tag(field, kLengthDelimited));
  p = PutVarint(p, s.size());
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}
char* PutMessageHeader(char* p, uint32_t field, size_t body) {
  *p++ = static_cast<char>(Tag(field, kLengthDelimited));
  return PutVarint(p, body);
}

// google.protobuf.Timestamp from PostgreSQL microseconds since 2000-01-01: Unix seconds and
// nanos in [0, 1e9) (floor division, so that times before 1970 come out right). int64 and
// int32 varints carry negative values sign-extended to 64 bits.
struct Timestamp {
  uint64_t seconds;
  uint64_t nanos;
  size_t body;
};
Timestamp ToTimestamp(int64_t pg_micros) {
  int64_t seconds = pg_micros / kMicrosPerSecond;
  int64_t micros = pg_micros % kMicrosPerSecond;
  if (micros < 0) {
    micros += kMicrosPerSecond;
    --seconds;
  }
  Timestamp t{static_cast<uint64_t>(seconds + kPgEpochOffsetSeconds),
              static_cast<uint64_t>(micros * 1000), 0};
  t.body = VarintFieldSize(t.seconds) + VarintFieldSize(t.nanos);
  return t;
}
char* PutTimestamp(char* p, uint32_t field, const Timestamp& t) {
  p = PutMessageHeader(p, field, t.body);
  p = PutVarintField(p, 1, t.seconds);
  return PutVarintField(p, 2, t.nanos);
}

size_t HeaderBodySize(const Header& h) { return BytesFieldSize(h.key) + BytesFieldSize(h.value); }

int64_t FromTimestamp(const google::protobuf::Timestamp& t) {
  return (t.seconds() - kPgEpochOffsetSeconds) * kMicrosPerSecond + t.nanos() / 1000;
}

}  // namespace

absl::Status DecodeEnvelope(std::string_view bytes, OutboxEvent* out) {
  out->Clear();
  ::outbox::v1::Envelope envelope;
  if (!envelope.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(
        fmt::format("{} bytes are not an outbox.v1.Envelope", bytes.size()));
  }
  out->id = envelope.id();
  out->aggregate_type = envelope.aggregate_type();
  out->aggregate_id = envelope.aggregate_id();
  out->event_type = envelope.event_type();
  out->payload = envelope.payload();
  out->content_type = envelope.content_type();
  for (const ::outbox::v1::Header& h : envelope.headers()) {
    out->headers.push_back(Header{h.key(), h.value()});
  }
  if (envelope.has_created_at()) out->created_at = FromTimestamp(envelope.created_at());
  const ::outbox::v1::Source& source = envelope.source();
  out->source.commit_lsn = Lsn(source.commit_lsn());
  out->source.lsn = Lsn(source.lsn());
  out->source.xid = source.xid();
  out->source.commit_time = FromTimestamp(source.commit_time());
  out->source.schema = source.schema();
  out->source.table = source.table();
  out->source.message_prefix = source.message_prefix();
  out->source.database = source.database();
  for (const ::outbox::v1::Header& h : envelope.attributes()) {
    out->attributes.push_back(Header{h.key(), h.value()});
  }
  return absl::OkStatus();
}

void EncodeEnvelope(const OutboxEvent& event, std::string* out) {
  const SourcePosition& src = event.source;
  const Timestamp commit_time = ToTimestamp(src.commit_time);
  // 0 (2000-01-01) is no commit at all: `outboxd replay` reads rows, not WAL.
  const bool has_commit_time = src.commit_time != 0;
  const size_t source_body =
      VarintFieldSize(src.commit_lsn.value()) + VarintFieldSize(src.lsn.value()) +
      VarintFieldSize(src.xid) + (has_commit_time ? MessageFieldSize(commit_time.body) : 0) +
      BytesFieldSize(src.schema) +
      BytesFieldSize(src.table) + BytesFieldSize(src.message_prefix) + BytesFieldSize(src.database);
  Timestamp created_at{};
  if (event.created_at.has_value()) created_at = ToTimestamp(*event.created_at);

  size_t size = BytesFieldSize(event.id) + BytesFieldSize(event.aggregate_type) +
                BytesFieldSize(event.aggregate_id) + BytesFieldSize(event.event_type) +
                BytesFieldSize(event.payload) + BytesFieldSize(event.content_type) +
                MessageFieldSize(source_body);
  for (const Header& h : event.headers) size += MessageFieldSize(HeaderBodySize(h));
  for (const Header& h : event.attributes) size += MessageFieldSize(HeaderBodySize(h));
  if (event.created_at.has_value()) size += MessageFieldSize(created_at.body);

  // resize() on a string with enough capacity does not allocate; the bytes are overwritten.
  out->resize(size);
  char* p = out->data();
  p = PutBytesField(p, 1, event.id);
  p = PutBytesField(p, 2, event.aggregate_type);
  p = PutBytesField(p, 3, event.aggregate_id);
  p = PutBytesField(p, 4, event.event_type);
  p = PutBytesField(p, 5, event.payload);
  p = PutBytesField(p, 6, event.content_type);
  for (const Header& h : event.headers) {
    p = PutMessageHeader(p, 7, HeaderBodySize(h));
    p = PutBytesField(p, 1, h.key);
    p = PutBytesField(p, 2, h.value);
  }
  if (event.created_at.has_value()) p = PutTimestamp(p, 8, created_at);
  p = PutMessageHeader(p, 9, source_body);
  p = PutVarintField(p, 1, src.commit_lsn.value());
  p = PutVarintField(p, 2, src.lsn.value());
  p = PutVarintField(p, 3, src.xid);
  if (has_commit_time) p = PutTimestamp(p, 4, commit_time);
  p = PutBytesField(p, 5, src.schema);
  p = PutBytesField(p, 6, src.table);
  p = PutBytesField(p, 7, src.message_prefix);
  p = PutBytesField(p, 8, src.database);
  for (const Header& h : event.attributes) {
    p = PutMessageHeader(p, 10, HeaderBodySize(h));
    p = PutBytesField(p, 1, h.key);
    p = PutBytesField(p, 2, h.value);
  }
}

void RecordHeaders(const OutboxEvent& event,
                   std::vector<std::pair<std::string_view, std::string_view>>* out) {
  out->clear();
  out->emplace_back("outbox-id", event.id);
  out->emplace_back("event-type", event.event_type);
  out->emplace_back("content-type", event.content_type);
  for (const Header& header : event.headers) out->emplace_back(header.key, header.value);
}

}  // namespace outboxd::outbox
