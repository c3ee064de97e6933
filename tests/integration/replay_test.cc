// `outboxd replay` against the real PostgreSQL and Kafka: exactly the rows of
// the time window reach Kafka, in created_at order, with their original ids and
// the live path's envelope; the replication slot does not move.
#include <librdkafka/rdkafka.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::it {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

using Result = CommandResult;

// The number of records in partition 0 of `topic` (high watermark); -1 on error.
int64_t RecordCount(const std::string& topic) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (rk == nullptr) return -1;
  int64_t low = 0, high = -1;
  if (rd_kafka_query_watermark_offsets(rk, topic.c_str(), 0, &low, &high, 10000) !=
      RD_KAFKA_RESP_ERR_NO_ERROR) {
    high = -1;
  }
  rd_kafka_destroy(rk);
  return high;
}

class ReplayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_path_ = fmt::format("/tmp/{}.toml", UniqueName("replay"));
    std::ofstream(config_path_) << ConfigFor(source_);
    // A slot that a live relay would use: replay must leave it alone.
    sql_.Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", source_.slot));
  }
  void TearDown() override {
    std::remove(config_path_.c_str());
    DropSource(sql_, source_);
  }

  // Inserts a row with the given created_at; returns its id.
  std::string Insert(const std::string& created_at, int n) {
    return sql_.Scalar(fmt::format(
        "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload, headers, "
        "created_at) VALUES ('order', 'o-{}', 'OrderPlaced', '{{\"n\": {}}}', "
        "'{{\"traceparent\": \"t-{}\"}}', '{}') RETURNING id",
        source_.table, n, n, n, created_at));
  }

  Sql sql_;
  TestSource source_ = CreateDefaultSource(sql_, "replay");
  std::string config_path_;
};

TEST_F(ReplayTest, RepublishesExactlyTheWindowInOrderWithoutMovingTheSlot) {
  // Inserted out of created_at order, each in its own transaction.
  std::vector<std::string> before, window, after;
  before.push_back(Insert("2026-01-01 09:59:59.999999+00", 0));
  window.push_back(Insert("2026-01-01 10:00:00.5+00", 2));
  after.push_back(Insert("2026-01-01 11:00:00+00", 9));  // --until is exclusive
  window.insert(window.begin(), Insert("2026-01-01 10:00:00+00", 1));
  for (int i = 0; i < 5; ++i) window.push_back(Insert(fmt::format("2026-01-01 10:30:0{}+00", i), 3 + i));
  // Two rows with the same created_at go out in id order.
  const std::string a = Insert("2026-01-01 10:59:00+00", 20);
  const std::string b = Insert("2026-01-01 10:59:00+00", 21);
  window.push_back(std::min(a, b));
  window.push_back(std::max(a, b));
  before.push_back(Insert("2025-12-31 23:00:00+00", 30));
  const Lsn confirmed = sql_.ConfirmedFlush(source_.slot);
  ASSERT_TRUE(confirmed.valid());

  const std::string range = "--since 2026-01-01T11:00:00+01:00 --until 2026-01-01T11:00:00Z";
  Result dry = RunOutboxd(fmt::format("replay --config {} --table {} {} --dry-run", config_path_,
                                      source_.table, range));
  EXPECT_EQ(dry.code, 0) << dry.output;
  EXPECT_THAT(dry.output, HasSubstr(fmt::format("dry run: {} row(s)", window.size())));
  const std::string topic = source_.topic_prefix + ".order";
  EXPECT_LE(RecordCount(topic), 0) << "a dry run produced records";

  Result replay = RunOutboxd(fmt::format("replay --config {} --table public.{} {}", config_path_,
                                         source_.table, range));
  ASSERT_EQ(replay.code, 0) << replay.output;
  EXPECT_THAT(replay.output, HasSubstr(fmt::format("replayed {} of {} row(s) of public.{} with "
                                                   "created_at >= 2026-01-01T10:00:00Z and < "
                                                   "2026-01-01T11:00:00Z: {} sent, 0 failed",
                                                   window.size(), window.size(), source_.table,
                                                   window.size())));

  // Every delivery report came back before replay exited: the topic holds
  // exactly the window, in created_at, id order.
  EXPECT_EQ(RecordCount(topic), static_cast<int64_t>(window.size()));
  std::vector<Record> records = ReadTopics({topic}, window.size(), absl::Seconds(60));
  std::vector<std::string> keys;
  for (const Record& r : records) keys.push_back(r.key);
  EXPECT_THAT(keys, ElementsAreArray(window));

  ASSERT_FALSE(records.empty());
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(records[0].value));
  EXPECT_EQ(envelope.id(), window[0]);
  EXPECT_EQ(envelope.aggregate_id(), "o-1");
  EXPECT_EQ(envelope.payload(), "{\"n\": 1}");
  EXPECT_EQ(envelope.content_type(), "application/json");
  ASSERT_EQ(envelope.headers_size(), 1);
  EXPECT_EQ(envelope.headers(0).value(), "t-1");
  EXPECT_EQ(envelope.created_at().seconds(), 1767261600);  // 2026-01-01T10:00:00Z
  EXPECT_EQ(envelope.source().table(), source_.table);
  EXPECT_EQ(envelope.source().commit_lsn(), 0u);
  EXPECT_EQ(envelope.source().xid(), 0u);
  EXPECT_FALSE(envelope.source().has_commit_time());
  bool outbox_id_header = false;
  for (const auto& [key, value] : records[0].headers) {
    if (key == "outbox-id") outbox_id_header = value == window[0];
  }
  EXPECT_TRUE(outbox_id_header);

  // The slot did not move, and nothing holds it.
  EXPECT_EQ(sql_.ConfirmedFlush(source_.slot), confirmed);
  EXPECT_EQ(sql_.Scalar(fmt::format(
                "SELECT active FROM pg_replication_slots WHERE slot_name = '{}'", source_.slot)),
            "f");

  // Without --until: everything from --since on.
  Result open_ended = RunOutboxd(fmt::format("replay --config {} --table {} --since "
                                             "2026-01-01T10:59:00Z --dry-run",
                                             config_path_, source_.table));
  EXPECT_EQ(open_ended.code, 0) << open_ended.output;
  EXPECT_THAT(open_ended.output, HasSubstr("dry run: 3 row(s)"));
}

TEST_F(ReplayTest, BadArgumentsSayWhatToWrite) {
  Result bad_time = RunOutboxd(
      fmt::format("replay --config {} --table {} --since yesterday", config_path_, source_.table));
  EXPECT_EQ(bad_time.code, 2);
  EXPECT_THAT(bad_time.output, HasSubstr("--since \"yesterday\" is not an RFC 3339 timestamp"));

  Result no_since = RunOutboxd(fmt::format("replay --config {} --table {}", config_path_, source_.table));
  EXPECT_EQ(no_since.code, 2);
  EXPECT_THAT(no_since.output, HasSubstr("replay needs --since TIME"));

  Result backwards = RunOutboxd(fmt::format(
      "replay --config {} --table {} --since 2026-01-02T00:00:00Z --until 2026-01-01T00:00:00Z",
      config_path_, source_.table));
  EXPECT_EQ(backwards.code, 2);
  EXPECT_THAT(backwards.output, HasSubstr("--until must be later than --since"));

  Result unknown = RunOutboxd(fmt::format(
      "replay --config {} --table public.nope --since 2026-01-01T00:00:00Z", config_path_));
  EXPECT_EQ(unknown.code, 2);
  EXPECT_THAT(unknown.output, HasSubstr(fmt::format("--table public.nope is not an [[outbox]] "
                                                    "table of the config (it has public.{})",
                                                    source_.table)));
}

TEST_F(ReplayTest, ABadRowFailsTheReplayAndTheOthersStillGo) {
  const std::string good = Insert("2026-02-01 10:00:00+00", 1);
  // An aggregate type that makes an invalid topic name: the row cannot be routed.
  sql_.Exec(fmt::format("INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload, "
                        "created_at) VALUES ('bad topic!', 'x', 'E', '{{}}', '2026-02-01 10:00:01+00')",
                        source_.table));
  Result r = RunOutboxd(fmt::format("replay --config {} --table {} --since 2026-02-01T00:00:00Z",
                                    config_path_, source_.table));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("1 sent, 1 failed"));
  EXPECT_THAT(r.output, HasSubstr("cannot route outbox row"));
  std::vector<Record> records = ReadTopics({source_.topic_prefix + ".order"}, 1, absl::Seconds(60));
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].key, good);
}


// Finding 2 of issue 24: a Debezium-shaped table has no created_at, and
// `replay --since` failed with PostgreSQL's "column does not exist". It says
// which selection applies (here track_commit_timestamp is off: ids or --all),
// and those replay the table.
TEST_F(ReplayTest, ADebeziumTableReplaysByIdRangeOrEveryRow) {
  const std::string table = UniqueName("dbz_replay");
  sql_.Exec(fmt::format("CREATE TABLE public.{} (id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL, "
                        "aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb)",
                        table));
  // UUIDv7-like ids: their order is the insert order.
  std::vector<std::string> ids;
  for (int i = 1; i <= 6; ++i) ids.push_back(fmt::format("0190f6a1-8a4b-7c3d-9e2f-00000000000{}", i));
  for (const std::string& id : ids) {
    sql_.Exec(fmt::format("INSERT INTO public.{} VALUES ('{}', 'Customer', 'c-{}', 'CustomerCreated', '{{}}')", table,
                          id, id.back()));
  }
  const std::string config_path = fmt::format("/tmp/{}.toml", UniqueName("replay_dbz"));
  std::string config = ConfigFor(source_, R"(key = "aggregate_id"
value = "payload"
[outbox.columns]
aggregate_type = "aggregatetype"
aggregate_id = "aggregateid"
event_type = "type"
)");
  config.replace(config.find(source_.table), source_.table.size(), table);
  std::ofstream(config_path) << config;
  ASSERT_EQ(sql_.Scalar("SHOW track_commit_timestamp"), "off");

  Result since = RunOutboxd(fmt::format("replay --config {} --table {} --since 2026-01-01T00:00:00Z --dry-run",
                                        config_path, table));
  EXPECT_EQ(since.code, 2) << since.output;
  EXPECT_THAT(since.output, HasSubstr(fmt::format("has no column \"created_at\" ([outbox.columns] created_at), and "
                                                  "the server's track_commit_timestamp is off")));
  EXPECT_THAT(since.output, HasSubstr("--from-id ID --to-id ID"));
  EXPECT_THAT(since.output, HasSubstr("with --all"));
  EXPECT_THAT(since.output, HasSubstr("ALTER SYSTEM SET track_commit_timestamp = on"));
  EXPECT_THAT(since.output, ::testing::Not(HasSubstr("does not exist")));

  Result all = RunOutboxd(fmt::format("replay --config {} --table {} --all --dry-run", config_path, table));
  EXPECT_EQ(all.code, 0) << all.output;
  EXPECT_THAT(all.output, HasSubstr("dry run: 6 row(s)"));

  Result range = RunOutboxd(
      fmt::format("replay --config {} --table {} --from-id {} --to-id {}", config_path, table, ids[1], ids[3]));
  ASSERT_EQ(range.code, 0) << range.output;
  EXPECT_THAT(range.output, HasSubstr(fmt::format("replayed 3 of 3 row(s) of public.{} with id from {} to {}: 3 sent",
                                                  table, ids[1], ids[3])));
  const std::string topic = source_.topic_prefix + ".Customer";
  std::vector<Record> records = ReadTopics({topic}, 3, absl::Seconds(60));
  std::vector<std::string> sent;
  for (const Record& r : records) {
    for (const auto& [key, value] : r.headers) {
      if (key == "id") sent.push_back(value);
    }
  }
  EXPECT_THAT(sent, ElementsAreArray(std::vector<std::string>{ids[1], ids[2], ids[3]}));
  std::remove(config_path.c_str());
  sql_.Exec(fmt::format("DROP TABLE public.{}", table));
}

}  // namespace
}  // namespace outboxd::it
