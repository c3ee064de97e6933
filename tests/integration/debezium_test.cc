// Debezium drop-in records end to end (real PostgreSQL, real Kafka): a
// Debezium-shaped outbox table, value = "payload", the `id` header, header
// fields with aliases, traceparent from tracingspancontext, key, timestamp and
// partition from columns, tombstones; and envelope attributes.
#include <librdkafka/rdkafka.h>

#include <string>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::it {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

constexpr char kTraceparent[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

// Creates `topic` with `partitions` partitions; "" on success, else the error.
std::string CreateTopic(const std::string& topic, int partitions) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (rk == nullptr) return errstr;
  rd_kafka_NewTopic_t* new_topic =
      rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof errstr);
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &new_topic, 1, nullptr, queue);
  std::string error = "no answer to CreateTopics";
  rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 30000);
  if (event != nullptr) {
    const rd_kafka_CreateTopics_result_t* result = rd_kafka_event_CreateTopics_result(event);
    size_t n = 0;
    const rd_kafka_topic_result_t** topics = rd_kafka_CreateTopics_result_topics(result, &n);
    error = n == 1 && rd_kafka_topic_result_error(topics[0]) == RD_KAFKA_RESP_ERR_NO_ERROR
                ? ""
                : (n == 1 ? rd_kafka_topic_result_error_string(topics[0]) : "no topic result");
    rd_kafka_event_destroy(event);
  }
  rd_kafka_queue_destroy(queue);
  rd_kafka_NewTopic_destroy(new_topic);
  rd_kafka_destroy(rk);
  return error;
}

std::string HeaderValue(const Record& record, const std::string& name) {
  for (const auto& [key, value] : record.headers) {
    if (key == name) return value;
  }
  return "<absent>";
}

class DebeziumTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Debezium's documented outbox table, plus the columns its options place.
    sql_.Exec(fmt::format(
        "CREATE TABLE public.{} (id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL, "
        "aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb, "
        "tenant text, part int, created_at timestamptz NOT NULL, tracingspancontext text)",
        table_));
    sql_.Exec(fmt::format("CREATE PUBLICATION {} FOR TABLE public.{} WITH (publish = 'insert')",
                          publication_, table_));
  }
  void TearDown() override {
    if (process_) process_->Stop(SIGTERM);
    sql_.DropSlotWhenInactive(slot_);
    sql_.Exec(fmt::format("DROP PUBLICATION IF EXISTS {}", publication_));
    sql_.Exec(fmt::format("DROP TABLE IF EXISTS public.{}", table_));
  }

  std::string Config(const std::string& outbox_keys) {
    return fmt::format(R"([source]
dsn = "{}"
slot = "{}"
publication = "{}"

[sink.kafka]
"bootstrap.servers" = "{}"

[[outbox]]
table = "public.{}"
topic = "{}.{{aggregate_type}}"
{}

[outbox.columns]
aggregate_type = "aggregatetype"
aggregate_id = "aggregateid"
event_type = "type"

[messages]
enabled = false

[http]
listen = "off"
)",
                       PgDsn(), slot_, publication_, KafkaBootstrap(), table_, prefix_,
                       outbox_keys);
  }

  void Insert(const std::string& id, const std::string& aggregate_id, const std::string& payload,
              const std::string& tenant, const std::string& part, const std::string& created_at,
              const std::string& tracing) {
    sql_.Exec(fmt::format(
        "INSERT INTO public.{} VALUES ('{}', 'order', '{}', 'OrderCreated', {}, {}, {}, '{}', {})",
        table_, id, aggregate_id, payload, tenant, part, created_at, tracing));
  }

  Sql sql_;
  std::string table_ = UniqueName("dbz_outbox");
  std::string publication_ = UniqueName("dbz_pub");
  std::string slot_ = UniqueName("dbz_slot");
  std::string prefix_ = UniqueName("it.dbz");
  std::unique_ptr<OutboxdProcess> process_;
};

TEST_F(DebeziumTest, PayloadValueHeadersKeyTimestampPartitionAndTombstone) {
  const std::string topic = prefix_ + ".order";
  ASSERT_EQ(CreateTopic(topic, 3), "");
  process_ = std::make_unique<OutboxdProcess>(Config(R"(value = "payload"
key = "aggregate_id"
timestamp_column = "created_at"
partition_column = "part"
tombstone_on_empty_payload = true

[[outbox.fields]]
column = "tenant"
alias = "x-tenant"
[[outbox.fields]]
column = "type"
alias = "eventType")"));
  process_->Start();
  ASSERT_TRUE(process_->WaitForLog("streaming", absl::Seconds(60))) << process_->Log();

  const std::string a = "0190f6a1-8a4b-7c3d-9e2f-00000000000a";
  const std::string b = "0190f6a1-8a4b-7c3d-9e2f-00000000000b";
  const std::string c = "0190f6a1-8a4b-7c3d-9e2f-00000000000c";
  Insert(a, "o-1", R"('{"total": 12.50, "items": [1, 2]}')", "'acme'", "2",
         "2026-11-27 03:09:58.123456+00",
         fmt::format("E'# span\\ntraceparent={}\\ntracestate=x=1\\n'", kTraceparent));
  Insert(b, "o-1", "NULL", "NULL", "1", "2026-11-27 03:10:00+00", "NULL");  // a tombstone
  Insert(c, "o-2", R"('"just a string"')", "'globex'", "NULL", "2026-11-27 03:11:00+00", "NULL");

  const std::vector<Record> records = ReadTopics({topic}, 3, absl::Seconds(60));
  ASSERT_EQ(records.size(), 3u) << process_->Log();
  const Record* ra = nullptr;
  const Record* rb = nullptr;
  const Record* rc = nullptr;
  for (const Record& r : records) {
    const std::string id = HeaderValue(r, "id");
    if (id == a) ra = &r;
    if (id == b) rb = &r;
    if (id == c) rc = &r;
  }
  ASSERT_NE(ra, nullptr);
  ASSERT_NE(rb, nullptr);
  ASSERT_NE(rc, nullptr);

  // The payload as PostgreSQL prints the jsonb, not an envelope.
  EXPECT_EQ(ra->value, R"({"items": [1, 2], "total": 12.50})");
  EXPECT_FALSE(ra->null_value);
  EXPECT_EQ(ra->key, "o-1");
  EXPECT_EQ(ra->partition, 2);
  EXPECT_EQ(ra->timestamp_ms, 1795748998123);
  EXPECT_THAT(ra->headers, ElementsAre(Pair("id", a), Pair("x-tenant", "acme"),
                                       Pair("eventType", "OrderCreated"),
                                       Pair("traceparent", kTraceparent)));

  EXPECT_TRUE(rb->null_value);
  EXPECT_EQ(rb->key, "o-1");
  EXPECT_EQ(rb->partition, 1);
  EXPECT_EQ(rb->timestamp_ms, 1795749000000);
  EXPECT_THAT(rb->headers, ElementsAre(Pair("id", b), Pair("eventType", "OrderCreated")));

  // NULL partition column: the key decides.
  EXPECT_EQ(rc->value, R"("just a string")");
  EXPECT_EQ(rc->key, "o-2");
  EXPECT_EQ(rc->timestamp_ms, 1795749060000);
}

TEST_F(DebeziumTest, EnvelopeAttributesAndKeyColumn) {
  const std::string topic = prefix_ + ".order";
  process_ = std::make_unique<OutboxdProcess>(Config(R"(key_column = "tenant"

[[outbox.fields]]
column = "tenant"
placement = "envelope"
alias = "tenantId"
[[outbox.fields]]
column = "part"
placement = "header")"));
  process_->Start();
  ASSERT_TRUE(process_->WaitForLog("streaming", absl::Seconds(60))) << process_->Log();
  const std::string a = "0190f6a1-8a4b-7c3d-9e2f-0000000000aa";
  Insert(a, "o-1", R"('{"n": 1}')", "'acme'", "7", "2026-11-27 03:09:58+00", "NULL");
  const std::vector<Record> records = ReadTopics({topic}, 1, absl::Seconds(60));
  ASSERT_EQ(records.size(), 1u) << process_->Log();
  const Record& r = records[0];
  EXPECT_EQ(r.key, "acme");
  outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(r.value));
  EXPECT_EQ(envelope.id(), a);
  EXPECT_EQ(envelope.payload(), R"({"n": 1})");
  ASSERT_EQ(envelope.attributes_size(), 1);
  EXPECT_EQ(envelope.attributes(0).key(), "tenantId");
  EXPECT_EQ(envelope.attributes(0).value(), "acme");
  EXPECT_EQ(HeaderValue(r, "outbox-id"), a);
  EXPECT_EQ(HeaderValue(r, "part"), "7");
  EXPECT_EQ(HeaderValue(r, "id"), "<absent>");
}

}  // namespace
}  // namespace outboxd::it
