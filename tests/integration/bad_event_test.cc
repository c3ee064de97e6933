// End to end: bad events against the real PostgreSQL and Kafka. Each goes to
// the dead-letter topic with its reason, the stream goes on, and the slot is
// confirmed past them only once the dead letters are acknowledged.
#include <signal.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <set>
#include <string>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::string HeaderOf(const Record& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "<absent>";
}

class BadEventTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "the local stack is not up: run deploy/local/stack.sh up";
    source_ = CreateDefaultSource(sql_, "bad");
    // A text id and nullable columns, so that the rows can be bad.
    sql_.Exec(fmt::format("ALTER TABLE public.{} ALTER COLUMN id TYPE text, ALTER COLUMN "
                          "aggregate_id DROP NOT NULL",
                          source_.table));
  }
  void TearDown() override {
    if (outboxd_) outboxd_->Stop(SIGKILL);
    DropSource(sql_, source_);
  }
  // `kafka_extra`: more [sink.kafka] lines; `outbox_extra`: more [[outbox]] keys.
  void StartOutboxd(const std::string& kafka_extra = "", const std::string& errors = "",
                    const std::string& outbox_extra = "") {
    std::string config = ConfigFor(source_, outbox_extra);
    const std::string bootstrap = fmt::format("\"bootstrap.servers\" = \"{}\"\n", KafkaBootstrap());
    config.replace(config.find(bootstrap), bootstrap.size(), bootstrap + kafka_extra);
    config += fmt::format("\n[errors]\ndead_letter_topic = \"{}\"\n{}", DlqTopic(), errors);
    outboxd_ = std::make_unique<OutboxdProcess>(config);
    outboxd_->Start();
    ASSERT_TRUE(outboxd_->WaitForLog("streaming slot", absl::Seconds(30))) << outboxd_->Log();
  }
  std::string DlqTopic() const { return source_.topic_prefix + ".dlq"; }
  std::string Topic() const { return source_.topic_prefix + ".Order"; }
  std::string Insert(const std::string& id, const std::string& type, const std::string& agg,
                     const std::string& payload_sql) {
    return fmt::format(
        "INSERT INTO public.{} (id, aggregate_type, aggregate_id, event_type, payload) VALUES "
        "('{}', '{}', {}, 'OrderCreated', {});",
        source_.table, id, type, agg, payload_sql);
  }

  Sql sql_;
  TestSource source_;
  std::unique_ptr<OutboxdProcess> outboxd_;
};

TEST_F(BadEventTest, BadRowsGoToTheDeadLetterTopicAndTheStreamGoesOn) {
  StartOutboxd();
  const std::string good1 = "00000000-0000-4000-8000-000000000001";
  const std::string good2 = "00000000-0000-4000-8000-000000000002";
  const std::string null_agg = "00000000-0000-4000-8000-000000000003";
  const std::string bad_topic = "00000000-0000-4000-8000-000000000004";
  const std::string too_large = "00000000-0000-4000-8000-000000000005";
  // One transaction: good, four bad, good. The oversize payload (1.5 MB) is
  // over librdkafka's default message.max.bytes, so it is refused at produce time.
  sql_.Exec("BEGIN;" + Insert(good1, "Order", "'a-1'", "'{\"secret\": \"PAYLOADMARK\"}'") +
            Insert("not-a-uuid", "Order", "'a-2'", "'{\"secret\": \"PAYLOADMARK\"}'") +
            Insert(null_agg, "Order", "NULL", "'{\"secret\": \"PAYLOADMARK\"}'") +
            Insert(bad_topic, "Bad Type", "'a-4'", "'{\"secret\": \"PAYLOADMARK\"}'") +
            Insert(too_large, "Order", "'a-5'",
                   "jsonb_build_object('secret', 'PAYLOADMARK', 'pad', repeat('x', 1500000))") +
            Insert(good2, "Order", "'a-6'", "'{}'") + "COMMIT;");

  const std::vector<Record> good =
      ReadTopicsUntil({Topic()}, [](const auto& r) { return r.size() >= 2; }, absl::Seconds(60));
  ASSERT_EQ(good.size(), 2u) << outboxd_->Log();
  EXPECT_EQ(good[0].key, good1);
  EXPECT_EQ(good[1].key, good2);

  const std::vector<Record> dead =
      ReadTopicsUntil({DlqTopic()}, [](const auto& r) { return r.size() >= 4; }, absl::Seconds(60));
  ASSERT_EQ(dead.size(), 4u) << outboxd_->Log();
  std::map<std::string, const Record*> by_reason;
  for (const Record& r : dead) by_reason[HeaderOf(r, "outboxd-dlq-reason")] = &r;
  ASSERT_EQ(by_reason.count("invalid_uuid"), 1u);
  ASSERT_EQ(by_reason.count("null_column"), 1u);
  ASSERT_EQ(by_reason.count("invalid_topic"), 1u);
  ASSERT_EQ(by_reason.count("message_too_large"), 1u);

  const Record& uuid = *by_reason["invalid_uuid"];
  EXPECT_EQ(HeaderOf(uuid, "outboxd-dlq-source"), "public." + source_.table);
  EXPECT_EQ(HeaderOf(uuid, "outboxd-dlq-value"), "row");
  EXPECT_THAT(uuid.value, HasSubstr("\"id\":\"not-a-uuid\""));
  EXPECT_NE(HeaderOf(uuid, "outboxd-dlq-xid"), "<absent>");
  EXPECT_EQ(HeaderOf(*by_reason["null_column"], "outbox-id"), null_agg);
  EXPECT_THAT(HeaderOf(*by_reason["null_column"], "outboxd-dlq-error"), HasSubstr("aggregate_id"));
  EXPECT_EQ(by_reason["invalid_topic"]->key, bad_topic);

  const Record& big = *by_reason["message_too_large"];
  EXPECT_EQ(big.key, too_large);
  EXPECT_EQ(HeaderOf(big, "outboxd-dlq-value"), "envelope-without-payload");
  EXPECT_EQ(HeaderOf(big, "outboxd-dlq-topic"), Topic());
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(big.value));
  EXPECT_EQ(envelope.id(), too_large);
  EXPECT_EQ(envelope.payload(), "");
  EXPECT_EQ(envelope.aggregate_id(), "a-5");
  EXPECT_LT(big.value.size(), 10000u);

  // Every dead letter acknowledged: the slot passes the transaction.
  EXPECT_TRUE(WaitForConfirmedPast(sql_, source_.slot, LastCommitLsn(good), absl::Seconds(30)))
      << outboxd_->Log();
  const std::string log = outboxd_->Log();
  EXPECT_THAT(log, HasSubstr("sent to dead-letter topic"));
  EXPECT_THAT(log, Not(HasSubstr("PAYLOADMARK"))) << "payloads stay out of logs";
  EXPECT_TRUE(outboxd_->running());
}

TEST_F(BadEventTest, RecordTheBrokerRefusesAsTooLargeIsReplacedByItsDeadLetter) {
  // The producer accepts up to 10 MB, the broker (message.max.bytes ~1 MB)
  // refuses the batch: the failure comes in the delivery report.
  StartOutboxd("\"message.max.bytes\" = \"10000000\"\n");
  const std::string big = "00000000-0000-4000-8000-000000000011";
  const std::string after = "00000000-0000-4000-8000-000000000012";
  sql_.Exec("BEGIN;" +
            Insert(big, "Order", "'b-1'", "jsonb_build_object('pad', repeat('y', 2000000))") +
            "COMMIT;");
  sql_.Exec("BEGIN;" + Insert(after, "Order", "'b-2'", "'{}'") + "COMMIT;");

  const std::vector<Record> dead =
      ReadTopicsUntil({DlqTopic()}, [](const auto& r) { return !r.empty(); }, absl::Seconds(60));
  ASSERT_EQ(dead.size(), 1u) << outboxd_->Log();
  EXPECT_EQ(dead[0].key, big);
  EXPECT_EQ(HeaderOf(dead[0], "outboxd-dlq-reason"), "message_too_large");
  EXPECT_THAT(HeaderOf(dead[0], "outboxd-dlq-error"), HasSubstr("MSG_SIZE_TOO_LARGE"));
  const std::vector<Record> good =
      ReadTopicsUntil({Topic()}, [](const auto& r) { return !r.empty(); }, absl::Seconds(60));
  ASSERT_EQ(good.size(), 1u);
  EXPECT_EQ(good[0].key, after);
  EXPECT_TRUE(WaitForConfirmedPast(sql_, source_.slot, LastCommitLsn(good), absl::Seconds(30)))
      << outboxd_->Log();
  EXPECT_TRUE(outboxd_->running());
}

// value = "payload" (Debezium's record: the payload column as the value, no
// envelope), on a topic whose max.message.bytes is 3000: the broker refuses a
// 20 KB row in its delivery report. Its dead letter is built from the row,
// read again from the slot; the small row after it arrives; the slot moves
// past both. (Decoding the refused payload as an envelope failed, and the
// session restarted on the same row forever.)
TEST_F(BadEventTest, PayloadRecordTheTopicRefusesIsDeadLetteredFromItsRowAndTheSlotMovesOn) {
  ASSERT_EQ(CreateTopic(Topic(), 1, {{"max.message.bytes", "3000"}}), "");
  StartOutboxd("", "", "value = \"payload\"\n");
  const std::string big = "00000000-0000-4000-8000-000000000031";
  const std::string small = "00000000-0000-4000-8000-000000000032";
  sql_.Exec("BEGIN;" + Insert(big, "Order", "'p-1'", "jsonb_build_object('pad', repeat('z', 20000))") + "COMMIT;");
  sql_.Exec("BEGIN;" + Insert(small, "Order", "'p-2'", "'{\"n\": 2}'") + "COMMIT;");
  const Lsn written = sql_.CurrentLsn();

  const std::vector<Record> dead =
      ReadTopicsUntil({DlqTopic()}, [](const auto& r) { return !r.empty(); }, absl::Seconds(90));
  ASSERT_EQ(dead.size(), 1u) << outboxd_->Log();
  EXPECT_EQ(dead[0].key, big);
  EXPECT_EQ(HeaderOf(dead[0], "outboxd-dlq-reason"), "message_too_large");
  EXPECT_THAT(HeaderOf(dead[0], "outboxd-dlq-error"), HasSubstr("MSG_SIZE_TOO_LARGE"));
  EXPECT_EQ(HeaderOf(dead[0], "outboxd-dlq-topic"), Topic());
  EXPECT_EQ(HeaderOf(dead[0], "outboxd-dlq-source"), "public." + source_.table);
  EXPECT_EQ(HeaderOf(dead[0], "outboxd-dlq-value"), "envelope-without-payload");
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(dead[0].value));
  EXPECT_EQ(envelope.id(), big);
  EXPECT_EQ(envelope.aggregate_id(), "p-1");
  EXPECT_EQ(envelope.payload(), "");

  const std::vector<Record> good =
      ReadTopicsUntil({Topic()}, [](const auto& r) { return !r.empty(); }, absl::Seconds(60));
  ASSERT_EQ(good.size(), 1u) << outboxd_->Log();
  EXPECT_EQ(good[0].key, small);
  EXPECT_EQ(good[0].value, "{\"n\": 2}");
  EXPECT_TRUE(WaitFor([&] { return sql_.ConfirmedFlush(source_.slot) >= written; }, absl::Seconds(60)))
      << "the slot is at " << sql_.ConfirmedFlush(source_.slot) << ", not past " << written << "\n"
      << outboxd_->Log();
  const std::string log = outboxd_->Log();
  EXPECT_THAT(log, HasSubstr("restarting from the slot's confirmed position, where that event is read again"));
  EXPECT_THAT(log, Not(HasSubstr("restarting from the slot's confirmed position 0/0")));
  std::cout << "[ figures ] sessions: " << Occurrences(log, "streaming slot") << ", refusals of the 20 KB row: "
            << Occurrences(log, "Kafka refused the record of") << "\n";
  // Once with the records batched with it (maybe), once alone: then it is its own.
  EXPECT_LE(Occurrences(log, "Kafka refused the record of"), 2u) << "the same row was refused again and again";
  EXPECT_TRUE(outboxd_->running());
}

TEST_F(BadEventTest, OnBadEventStopHaltsWithTheErrorAndConfirmsNothingPastIt) {
  StartOutboxd("", "on_bad_event = \"stop\"\n");
  const Lsn before = sql_.CurrentLsn();
  sql_.Exec("BEGIN;" + Insert("00000000-0000-4000-8000-000000000021", "Order", "NULL", "'{}'") +
            "COMMIT;");
  ASSERT_TRUE(outboxd_->WaitForLog("on_bad_event", absl::Seconds(30))) << outboxd_->Log();
  EXPECT_EQ(outboxd_->Stop(SIGTERM), 1) << outboxd_->Log();
  EXPECT_LE(sql_.ConfirmedFlush(source_.slot), before);
  EXPECT_TRUE(ReadTopics({DlqTopic()}, 1, absl::Seconds(3)).empty());
}

}  // namespace
}  // namespace outboxd::it
