#include "outbox/envelope.h"

#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "google/protobuf/timestamp.pb.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::outbox {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

OutboxEvent FullEvent() {
  OutboxEvent event;
  event.id = "0190f6a1-8a4b-7c3d-9e2f-0123456789ab";
  event.aggregate_type = "order";
  event.aggregate_id = "42";
  event.event_type = "OrderCreated";
  event.payload = std::string("\x00\x01\xff binary", 10);
  event.content_type = "application/octet-stream";
  event.headers = {
      {"traceparent", "00-abc-01"}, {"tenant", "acme"}, {"bin", std::string("\0x", 2)}};
  event.destination = "ignored-by-envelope";
  event.created_at = 817'528'198'123'456;  // 2025-11-27 03:09:58.123456 UTC
  event.source.commit_lsn = Lsn(0x16'B374D848);
  event.source.lsn = Lsn(0x16'B374D000);
  event.source.xid = 4'000'000'000u;
  event.source.commit_time = 817'528'198'654'321;
  event.source.schema = "public";
  event.source.table = "outbox";
  return event;
}

::outbox::v1::Envelope Decode(const std::string& bytes) {
  ::outbox::v1::Envelope envelope;
  EXPECT_TRUE(envelope.ParseFromString(bytes));
  return envelope;
}

TEST(EncodeEnvelopeTest, RoundTripsEveryField) {
  const OutboxEvent event = FullEvent();
  std::string bytes = "stale bytes that must be replaced";
  EncodeEnvelope(event, &bytes);
  const ::outbox::v1::Envelope envelope = Decode(bytes);

  EXPECT_EQ(envelope.id(), event.id);
  EXPECT_EQ(envelope.aggregate_type(), "order");
  EXPECT_EQ(envelope.aggregate_id(), "42");
  EXPECT_EQ(envelope.event_type(), "OrderCreated");
  EXPECT_EQ(envelope.payload(), event.payload);
  EXPECT_EQ(envelope.content_type(), "application/octet-stream");
  ASSERT_EQ(envelope.headers_size(), 3);
  EXPECT_EQ(envelope.headers(0).key(), "traceparent");
  EXPECT_EQ(envelope.headers(0).value(), "00-abc-01");
  EXPECT_EQ(envelope.headers(1).key(), "tenant");
  EXPECT_EQ(envelope.headers(1).value(), "acme");
  EXPECT_EQ(envelope.headers(2).key(), "bin");
  EXPECT_EQ(envelope.headers(2).value(), std::string("\0x", 2));

  ASSERT_TRUE(envelope.has_created_at());
  EXPECT_EQ(envelope.created_at().seconds(), 817'528'198 + kPgEpochOffsetSeconds);
  EXPECT_EQ(envelope.created_at().nanos(), 123'456'000);

  ASSERT_TRUE(envelope.has_source());
  const ::outbox::v1::Source& source = envelope.source();
  EXPECT_EQ(source.commit_lsn(), 0x16'B374D848u);
  EXPECT_EQ(source.lsn(), 0x16'B374D000u);
  EXPECT_EQ(source.xid(), 4'000'000'000u);
  ASSERT_TRUE(source.has_commit_time());
  EXPECT_EQ(source.commit_time().seconds(), 817'528'198 + kPgEpochOffsetSeconds);
  EXPECT_EQ(source.commit_time().nanos(), 654'321'000);
  EXPECT_EQ(source.schema(), "public");
  EXPECT_EQ(source.table(), "outbox");
  EXPECT_EQ(source.message_prefix(), "");
}

TEST(EncodeEnvelopeTest, TimestampsAgreeWithAbslTime) {
  OutboxEvent event = FullEvent();
  std::string bytes;
  EncodeEnvelope(event, &bytes);
  const ::outbox::v1::Envelope envelope = Decode(bytes);
  const absl::Time expected = PgTimestampToTime(*event.created_at);
  EXPECT_EQ(absl::FromUnixSeconds(envelope.created_at().seconds()) +
                absl::Nanoseconds(envelope.created_at().nanos()),
            expected);
}

TEST(EncodeEnvelopeTest, LogicalMessageWithoutCreatedAt) {
  OutboxEvent event = FullEvent();
  event.created_at.reset();
  event.headers.clear();
  event.source.schema.clear();
  event.source.table.clear();
  event.source.message_prefix = "outbox";
  std::string bytes;
  EncodeEnvelope(event, &bytes);
  const ::outbox::v1::Envelope envelope = Decode(bytes);
  EXPECT_FALSE(envelope.has_created_at());
  EXPECT_EQ(envelope.headers_size(), 0);
  EXPECT_EQ(envelope.source().schema(), "");
  EXPECT_EQ(envelope.source().table(), "");
  EXPECT_EQ(envelope.source().message_prefix(), "outbox");
}

TEST(EncodeEnvelopeTest, ReuseDoesNotLeakFieldsOfThePreviousEvent) {
  std::string first;
  EncodeEnvelope(FullEvent(), &first);
  OutboxEvent small;
  small.id = "00000000-0000-0000-0000-000000000001";
  small.headers = {{"only", "one"}};
  std::string bytes;
  EncodeEnvelope(small, &bytes);
  const ::outbox::v1::Envelope envelope = Decode(bytes);
  EXPECT_EQ(envelope.id(), small.id);
  EXPECT_EQ(envelope.aggregate_type(), "");
  EXPECT_EQ(envelope.payload(), "");
  ASSERT_EQ(envelope.headers_size(), 1);
  EXPECT_EQ(envelope.headers(0).key(), "only");
  EXPECT_FALSE(envelope.has_created_at());
  EXPECT_EQ(envelope.source().commit_lsn(), 0u);
  EXPECT_EQ(envelope.source().table(), "");
  // Same input, same bytes.
  std::string again;
  EncodeEnvelope(FullEvent(), &again);
  EXPECT_EQ(again, first);
}

TEST(EncodeEnvelopeTest, TimesBeforeTheEpochs) {
  OutboxEvent event = FullEvent();
  event.created_at = -1;  // 1999-12-31 23:59:59.999999
  event.source.commit_time = -kPgEpochOffsetSeconds * 1'000'000 - 1;  // 1969-12-31 23:59:59.999999
  std::string bytes;
  EncodeEnvelope(event, &bytes);
  const ::outbox::v1::Envelope envelope = Decode(bytes);
  EXPECT_EQ(envelope.created_at().seconds(), kPgEpochOffsetSeconds - 1);
  EXPECT_EQ(envelope.created_at().nanos(), 999'999'000);
  EXPECT_EQ(envelope.source().commit_time().seconds(), -1);
  EXPECT_EQ(envelope.source().commit_time().nanos(), 999'999'000);
}

// The encoder writes protobuf bytes by hand; the generated code is the reference. Same
// fields, same order, same omitted defaults: the bytes must be identical.
std::string ProtobufReference(const OutboxEvent& event) {
  auto set_time = [](int64_t pg_micros, google::protobuf::Timestamp* out) {
    int64_t seconds = pg_micros / 1000000, micros = pg_micros % 1000000;
    if (micros < 0) {
      micros += 1000000;
      --seconds;
    }
    out->set_seconds(seconds + kPgEpochOffsetSeconds);
    out->set_nanos(static_cast<int32_t>(micros * 1000));
  };
  ::outbox::v1::Envelope envelope;
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
  if (event.created_at.has_value()) set_time(*event.created_at, envelope.mutable_created_at());
  ::outbox::v1::Source* source = envelope.mutable_source();
  source->set_commit_lsn(event.source.commit_lsn.value());
  source->set_lsn(event.source.lsn.value());
  source->set_xid(event.source.xid);
  // No commit time (replayed rows) leaves the field out.
  if (event.source.commit_time != 0) set_time(event.source.commit_time, source->mutable_commit_time());
  source->set_schema(event.source.schema);
  source->set_table(event.source.table);
  source->set_message_prefix(event.source.message_prefix);
  source->set_database(event.source.database);
  for (const Header& attribute : event.attributes) {
    ::outbox::v1::Header* h = envelope.add_attributes();
    h->set_key(attribute.key);
    h->set_value(attribute.value);
  }
  return envelope.SerializeAsString();
}

TEST(EncodeEnvelopeTest, BytesEqualTheGeneratedCodesOnManyEvents) {
  std::vector<OutboxEvent> events;
  events.push_back(FullEvent());
  events.push_back(OutboxEvent());  // every field default: only an empty source remains
  OutboxEvent zero_times = FullEvent();
  zero_times.created_at = -kPgEpochOffsetSeconds * 1'000'000;  // the Unix epoch: empty Timestamp
  zero_times.source.commit_time = -kPgEpochOffsetSeconds * 1'000'000;
  events.push_back(zero_times);
  OutboxEvent extremes = FullEvent();
  extremes.source.commit_lsn = Lsn(~uint64_t{0});
  extremes.source.lsn = Lsn(1);
  extremes.source.xid = ~uint32_t{0};
  extremes.created_at = std::numeric_limits<int64_t>::min() / 2;
  extremes.headers = {{"", "empty key"}, {"empty value", ""}, {"", ""}};
  events.push_back(extremes);
  OutboxEvent with_attributes = FullEvent();
  with_attributes.attributes = {{"tenant", "acme"}, {"", ""}, {"big", std::string(200, 'x')}};
  events.push_back(with_attributes);
  OutboxEvent with_database = FullEvent();
  with_database.source.database = "billing";
  events.push_back(with_database);
  // Lengths around the varint boundaries (127/128, 16383/16384) and a large payload.
  for (size_t n : {0, 1, 127, 128, 16383, 16384, 300000}) {
    OutboxEvent e = FullEvent();
    e.payload.assign(n, 'p');
    e.aggregate_id.assign(n % 200, 'a');
    events.push_back(e);
  }
  std::string bytes;
  for (size_t i = 0; i < events.size(); ++i) {
    SCOPED_TRACE(i);
    EncodeEnvelope(events[i], &bytes);
    EXPECT_EQ(bytes, ProtobufReference(events[i]));
  }
}

// One process serves a cluster: the envelope says which database, and a
// decoded dead letter keeps it.
TEST(EncodeEnvelopeTest, DatabaseRoundTripsAndIsLeftOutWhenEmpty) {
  OutboxEvent event = FullEvent();
  event.source.database = "orders";
  std::string bytes;
  EncodeEnvelope(event, &bytes);
  EXPECT_EQ(Decode(bytes).source().database(), "orders");
  OutboxEvent decoded;
  ASSERT_EQ(DecodeEnvelope(bytes, &decoded).code(), absl::StatusCode::kOk);
  EXPECT_EQ(decoded.source.database, "orders");
  std::string without;
  EncodeEnvelope(FullEvent(), &without);
  EXPECT_EQ(bytes.size(), without.size() + 2 + std::string("orders").size());
}

TEST(EncodeEnvelopeTest, AttributesRoundTripThroughDecode) {
  OutboxEvent event = FullEvent();
  event.attributes = {{"tenant", "acme"}, {"region", "eu"}};
  std::string bytes;
  EncodeEnvelope(event, &bytes);
  const ::outbox::v1::Envelope envelope = Decode(bytes);
  ASSERT_EQ(envelope.attributes_size(), 2);
  EXPECT_EQ(envelope.attributes(1).key(), "region");
  EXPECT_EQ(envelope.attributes(1).value(), "eu");
  OutboxEvent decoded;
  ASSERT_EQ(DecodeEnvelope(bytes, &decoded).code(), absl::StatusCode::kOk);
  ASSERT_EQ(decoded.attributes.size(), 2u);
  EXPECT_EQ(decoded.attributes[0].key, "tenant");
  EXPECT_EQ(decoded.attributes[0].value, "acme");
}

TEST(RecordHeadersTest, FixedHeadersThenRowHeadersInOrder) {
  const OutboxEvent event = FullEvent();
  std::vector<std::pair<std::string_view, std::string_view>> headers = {{"stale", "x"}};
  RecordHeaders(event, &headers);
  EXPECT_THAT(headers, ElementsAre(Pair("outbox-id", "0190f6a1-8a4b-7c3d-9e2f-0123456789ab"),
                                   Pair("event-type", "OrderCreated"),
                                   Pair("content-type", "application/octet-stream"),
                                   Pair("traceparent", "00-abc-01"), Pair("tenant", "acme"),
                                   Pair("bin", std::string_view("\0x", 2))));
  // Views into the event, not copies.
  EXPECT_EQ(headers[0].second.data(), event.id.data());
  EXPECT_EQ(headers[3].first.data(), event.headers[0].key.data());
  EXPECT_EQ(headers[3].second.data(), event.headers[0].value.data());
}

}  // namespace
}  // namespace outboxd::outbox
