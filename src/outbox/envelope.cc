#include "outbox/envelope.h"

#include "common/time.h"
#include "fmt/format.h"
#include "google/protobuf/timestamp.pb.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::outbox {
namespace {

constexpr int64_t kMicrosPerSecond = 1000000;

// PostgreSQL microseconds since 2000-01-01 -> Unix seconds + nanos, with the
// nanos in [0, 1e9) as google.protobuf.Timestamp requires (floor division, so
// that times before 1970 come out right).
void SetTimestamp(int64_t pg_micros, google::protobuf::Timestamp* out) {
  int64_t seconds = pg_micros / kMicrosPerSecond;
  int64_t micros = pg_micros % kMicrosPerSecond;
  if (micros < 0) {
    micros += kMicrosPerSecond;
    --seconds;
  }
  out->set_seconds(seconds + kPgEpochOffsetSeconds);
  out->set_nanos(static_cast<int32_t>(micros * 1000));
}

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
  return absl::OkStatus();
}

void EncodeEnvelope(const OutboxEvent& event, std::string* out) {
  // Reused per thread: Clear() keeps the string and repeated-field capacity,
  // so a warm encoder does not allocate for the top-level fields.
  thread_local ::outbox::v1::Envelope envelope;
  envelope.Clear();
  envelope.set_id(event.id);
  envelope.set_aggregate_type(event.aggregate_type);
  envelope.set_aggregate_id(event.aggregate_id);
  envelope.set_event_type(event.event_type);
  envelope.set_payload(event.payload);
  envelope.set_content_type(event.content_type);
  for (const Header& header : event.headers) {
    ::outbox::v1::Header* h = envelope.add_headers();
    h->set_key(header.key);
    h->set_value(header.value);
  }
  if (event.created_at.has_value()) SetTimestamp(*event.created_at, envelope.mutable_created_at());
  ::outbox::v1::Source* source = envelope.mutable_source();
  source->set_commit_lsn(event.source.commit_lsn.value());
  source->set_lsn(event.source.lsn.value());
  source->set_xid(event.source.xid);
  SetTimestamp(event.source.commit_time, source->mutable_commit_time());
  source->set_schema(event.source.schema);
  source->set_table(event.source.table);
  source->set_message_prefix(event.source.message_prefix);
  out->clear();
  envelope.AppendToString(out);
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
