#include "registry/wire_format.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "outbox/envelope.h"

namespace outboxd::registry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The event of tests/registry/make_fixture.py, field for field.
outbox::OutboxEvent FixtureEvent() {
  outbox::OutboxEvent event;
  event.id = "0b5f7e0c-2a4d-4c1e-9f3a-7d2b1c0e4a55";
  event.aggregate_type = "order";
  event.aggregate_id = "42";
  event.event_type = "OrderCreated";
  event.payload = R"({"total": 12.5})";
  event.content_type = "application/json";
  event.headers = {{"traceparent", "00-abc-def-01"}};
  // PostgreSQL microseconds since 2000-01-01: Unix seconds minus 946684800.
  event.created_at = (1764633600LL - 946684800LL) * 1'000'000 + 123'456;
  event.source.commit_lsn = Lsn(0x16B3748);
  event.source.lsn = Lsn(0x16B3700);
  event.source.xid = 771;
  event.source.commit_time = (1764633601LL - 946684800LL) * 1'000'000 + 5;
  event.source.schema = "public";
  event.source.table = "outbox";
  return event;
}

// Bytes made by confluent-kafka's ProtobufSerializer (tests/registry/make_fixture.py,
// schema id 1234567): outboxd's framing of the same event must be identical.
TEST(FrameEnvelopeTest, MatchesConfluentProtobufSerializer) {
  const std::string confluent = ReadFile(std::string(OUTBOXD_TESTDATA_DIR) + "/registry/envelope_confluent.bin");
  ASSERT_EQ(confluent.substr(0, 6), std::string("\x00\x00\x12\xd6\x87\x00", 6));
  std::string message;
  outbox::EncodeEnvelope(FixtureEvent(), &message);
  std::string framed = "stale";
  FrameEnvelope(1234567, message, &framed);
  EXPECT_EQ(framed, confluent);
}

TEST(FrameEnvelopeTest, HeaderIsMagicBigEndianIdAndIndexZero) {
  char header[kEnvelopeFrameHeaderSize];
  WriteEnvelopeFrameHeader(0x01020304, header);
  EXPECT_EQ(std::string(header, 6), std::string("\x00\x01\x02\x03\x04\x00", 6));
  WriteEnvelopeFrameHeader(INT32_MAX, header);
  EXPECT_EQ(std::string(header, 6), std::string("\x00\x7f\xff\xff\xff\x00", 6));
}

TEST(ParseFrameTest, ReadsTheFixture) {
  const std::string confluent = ReadFile(std::string(OUTBOXD_TESTDATA_DIR) + "/registry/envelope_confluent.bin");
  absl::StatusOr<Frame> frame = ParseFrame(confluent);
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(frame->schema_id, 1234567);
  EXPECT_THAT(frame->message_indexes, ElementsAre(0));
  outbox::OutboxEvent decoded;
  ASSERT_TRUE(outbox::DecodeEnvelope(frame->message, &decoded).ok());
  EXPECT_EQ(decoded.id, FixtureEvent().id);
  EXPECT_EQ(decoded.created_at, FixtureEvent().created_at);
}

TEST(ParseFrameTest, ReadsAnExplicitIndexArray) {
  // Count 2, indexes 1 and 3, zigzag: 4, 2, 6.
  const std::string value("\x00\x00\x00\x00\x07\x04\x02\x06xyz", 11);  // the frame views into it
  absl::StatusOr<Frame> frame = ParseFrame(value);
  ASSERT_TRUE(frame.ok()) << frame.status();
  EXPECT_EQ(frame->schema_id, 7);
  EXPECT_THAT(frame->message_indexes, ElementsAre(1, 3));
  EXPECT_EQ(frame->message, "xyz");
}

TEST(ParseFrameTest, RefusesMalformedValues) {
  EXPECT_EQ(ParseFrame("").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseFrame(std::string("\x00\x00\x00\x01", 4)).status().code(), absl::StatusCode::kDataLoss);
  // A bare Envelope starts with a field tag: not a frame.
  EXPECT_EQ(ParseFrame(std::string("\x0a\x24" "0b5f7e0c", 10)).status().code(), absl::StatusCode::kDataLoss);
  // Count 100 with nothing after it.
  EXPECT_EQ(ParseFrame(std::string("\x00\x00\x00\x00\x01\xc8\x01", 7)).status().code(),
            absl::StatusCode::kDataLoss);
  // An endless varint.
  EXPECT_EQ(ParseFrame(std::string("\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\x01", 12)).status().code(),
            absl::StatusCode::kDataLoss);
  // Negative count.
  EXPECT_EQ(ParseFrame(std::string("\x00\x00\x00\x00\x01\x01", 6)).status().code(), absl::StatusCode::kDataLoss);
}

TEST(ParseFrameTest, RandomBytesNeverCrash) {
  uint32_t state = 12345;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(state % 24, '\0');
    for (char& c : bytes) {
      state = state * 1103515245 + 12345;
      c = static_cast<char>(state >> 16);
    }
    if (!bytes.empty() && (state & 1)) bytes[0] = 0;
    (void)ParseFrame(bytes);
  }
}

TEST(SubjectNameTest, Strategies) {
  EXPECT_EQ(SubjectName(SubjectStrategy::kTopicName, "outbox.event.order"), "outbox.event.order-value");
  EXPECT_EQ(SubjectName(SubjectStrategy::kRecordName, "outbox.event.order"), "outbox.v1.Envelope");
  EXPECT_EQ(SubjectName(SubjectStrategy::kTopicRecordName, "outbox.event.order"),
            "outbox.event.order-outbox.v1.Envelope");
}

TEST(SubjectNameTest, ParsesStrategyNames) {
  for (SubjectStrategy s :
       {SubjectStrategy::kTopicName, SubjectStrategy::kRecordName, SubjectStrategy::kTopicRecordName}) {
    absl::StatusOr<SubjectStrategy> parsed = ParseSubjectStrategy(SubjectStrategyName(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
  absl::StatusOr<SubjectStrategy> bad = ParseSubjectStrategy("TopicNameStrategy");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("topic_record_name"));
}

TEST(RegistryJsonTest, RegisterBodyCarriesTypeSchemaAndReferences) {
  EXPECT_EQ(RegisterSchemaBody("syntax = \"proto3\";\n", {}),
            R"({"schema":"syntax = \"proto3\";\n","schemaType":"PROTOBUF"})");
  EXPECT_EQ(RegisterSchemaBody("x", {{"google/protobuf/timestamp.proto", "google/protobuf/timestamp.proto", 3}}),
            R"({"references":[{"name":"google/protobuf/timestamp.proto","subject":"google/protobuf/timestamp.proto","version":3}],"schema":"x","schemaType":"PROTOBUF"})");
}

TEST(RegistryJsonTest, ParsesAnswers) {
  EXPECT_EQ(*ParseSchemaId(R"({"id": 42})"), 42);
  EXPECT_EQ(*ParseSchemaVersion(R"({"subject":"s","version":3,"id":9,"schema":"x"})"), 3);
  EXPECT_EQ(*ParseCompatibilityLevel(R"({"compatibilityLevel":"BACKWARD"})"), "BACKWARD");
  EXPECT_EQ(*ParseCompatibilityLevel(R"({"compatibility":"FULL"})"), "FULL");
  EXPECT_EQ(ParseSchemaId(R"({"id": "42"})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSchemaId(R"({"id": -1})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSchemaId(R"({"id": 4294967296})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSchemaId("<html>502</html>").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSchemaId(std::string(10000, '[')).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RegistryJsonTest, ParsesACompatibilityAnswer) {
  absl::StatusOr<Compatibility> no = ParseCompatibility(
      R"({"is_compatible": false, "messages": ["Incompatible schema: message removed", 7, "field 1 changed"]})");
  ASSERT_TRUE(no.ok()) << no.status();
  EXPECT_FALSE(no->compatible);
  EXPECT_EQ(no->messages,
            (std::vector<std::string>{"Incompatible schema: message removed", "field 1 changed"}));
  EXPECT_TRUE(ParseCompatibility(R"({"is_compatible": true})")->compatible);
  EXPECT_EQ(ParseCompatibility(R"({"is_compatible": "yes"})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCompatibility("[]").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RegistryJsonTest, ErrorTextQuotesTheRegistry) {
  EXPECT_EQ(RegistryErrorText(409, R"({"error_code":409,"message":"Schema being registered is incompatible"})"),
            "HTTP 409, error_code 409: Schema being registered is incompatible");
  EXPECT_EQ(RegistryErrorText(502, "Bad\ngateway"), "HTTP 502: Bad gateway");
}

TEST(RegistryJsonTest, EncodesSubjectsAsOnePathSegment) {
  EXPECT_EQ(EncodePathSegment("google/protobuf/timestamp.proto"), "google%2Fprotobuf%2Ftimestamp.proto");
  EXPECT_EQ(EncodePathSegment("outbox.event.order-value"), "outbox.event.order-value");
  EXPECT_EQ(EncodePathSegment("a b?#"), "a%20b%3F%23");
}

// The per-event cost of framing: one 6-byte header and a copy of the value
// into a reused buffer. Prints ns/event for the closing note; asserts only a
// generous bound so that a slow CI machine does not fail it.
TEST(FrameEnvelopeBenchmark, PerEventCost) {
  std::string message;
  outbox::EncodeEnvelope(FixtureEvent(), &message);
  std::string framed;
  constexpr int kIterations = 2'000'000;
  size_t sink = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kIterations; ++i) {
    FrameEnvelope(i, message, &framed);
    sink += static_cast<uint8_t>(framed[4]);
  }
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() / kIterations;
  std::printf("FrameEnvelope: %.1f ns/event for a %zu-byte envelope (checksum %zu)\n", ns, message.size(), sink);
  EXPECT_LT(ns, 5000.0);
}

}  // namespace
}  // namespace outboxd::registry
