// The three journeys of issue 24, as a new user takes them with README and
// docs/ only, against the real local PostgreSQL and Kafka:
//   1. a Debezium outbox table migrated with the migration guide's own config
//      (docs/examples/debezium-outboxd.toml, which the guide shows whole), by
//      its cut-over steps; every record read back and compared field by field
//      with the table;
//   2. exactly-once across two SIGKILLs (one between a Kafka commit and the
//      slot's confirmation, one mid-stream), read with read_committed: every
//      id once;
//   3. an operator's curl of /healthz, /readyz and /metrics, then SIGTERM and
//      the exit code.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "support/free_port.h"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;
using test_support::FreePort;

std::string Header(const Record& record, const std::string& name) {
  for (const auto& [key, value] : record.headers) {
    if (key == name) return value;
  }
  return "<absent>";
}

// The guide's file with this site's values, through the renderer `make
// conformance` uses too; fails the test when the guide no longer shows the file.
std::string GuideConfig(const std::vector<std::pair<std::string, std::string>>& sets) {
  const std::string src = OUTBOXD_SOURCE_DIR;
  std::string command = fmt::format("/usr/bin/python3 {0}/scripts/guide_config.py {0}/docs/examples/debezium-outboxd.toml "
                                    "--check-doc {0}/docs/migrating-from-debezium.md",
                                    src);
  for (const auto& [key, value] : sets) command += fmt::format(" --set '{}={}'", key, value);
  const CommandResult r = RunShell(command);
  EXPECT_EQ(r.code, 0) << r.output;
  return r.output;
}

class JourneysTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Stack("status")) << "run deploy/local/stack.sh up"; }
  void TearDown() override {
    for (auto& p : processes_) p->Stop(SIGKILL);
    for (const std::string& slot : slots_) sql_.DropSlotWhenInactive(slot);
    for (const std::string& statement : drop_) sql_.Exec(statement);
  }
  OutboxdProcess& Outboxd(const std::string& config) {
    processes_.push_back(std::make_unique<OutboxdProcess>(config));
    return *processes_.back();
  }

  Sql sql_;
  std::vector<std::unique_ptr<OutboxdProcess>> processes_;
  std::vector<std::string> slots_;
  std::vector<std::string> drop_;
};

// Journey 1: docs/migrating-from-debezium.md, "Cut-over without loss", with
// the guide's config.
TEST_F(JourneysTest, ADebeziumTableMigratedWithTheGuidesConfig) {
  const std::string table = UniqueName("outboxevent");
  const std::string publication = UniqueName("dbz_guide_pub");
  const std::string slot = UniqueName("dbz_guide_slot");
  const std::string prefix = UniqueName("it.guide");
  slots_.push_back(slot);
  drop_.push_back(fmt::format("DROP PUBLICATION IF EXISTS {}", publication));
  drop_.push_back(fmt::format("DROP TABLE IF EXISTS public.{}", table));
  // Debezium's outbox table, with the columns the guide's router options read.
  sql_.Exec(fmt::format(
      "CREATE TABLE public.{} (id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL, aggregateid "
      "varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb, tracingspancontext text, correlation text, "
      "created_at timestamp NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC'))",
      table));
  // Step 2: the publication, then (step 3) the slot, while "Debezium" still runs.
  sql_.Exec(fmt::format("CREATE PUBLICATION {} FOR TABLE public.{} WITH (publish = 'insert')", publication, table));
  sql_.Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", slot));
  const std::string config = GuideConfig({
      {"source:dsn", PgDsn()},
      {"source:slot", slot},
      {"source:publication", publication},
      {"sink.kafka:\"bootstrap.servers\"", KafkaBootstrap()},
      {"outbox:table", "public." + table},
      {"outbox:topic", prefix + ".outbox.event.{aggregate_type}"},
      {"http:listen", "off"},
  });
  ASSERT_THAT(config, HasSubstr("create_slot = false"));
  ASSERT_THAT(config, HasSubstr("value = \"payload\""));

  // Step 4: check, with create_slot = false: ok slot, and the columns as outboxd reads them.
  const std::string path = fmt::format("/tmp/{}.toml", UniqueName("guide"));
  std::ofstream(path) << config;
  const CommandResult check = RunOutboxd(fmt::format("check --config {}", path));
  std::remove(path.c_str());
  EXPECT_EQ(check.code, 0) << check.output;
  EXPECT_THAT(check.output, HasSubstr(fmt::format("ok    slot         '{}' wal_status reserved", slot)));
  EXPECT_THAT(check.output, HasSubstr(fmt::format("ok    columns      public.{}: every column outboxd reads is there "
                                                  "and sent: id (uuid), aggregate_type = aggregatetype",
                                                  table)));

  // Rows committed while "Debezium" publishes: the new slot keeps them.
  const std::string traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  sql_.Exec(fmt::format(
      "INSERT INTO public.{0} (id, aggregatetype, aggregateid, type, payload, tracingspancontext, correlation) "
      "VALUES ('0190f6a1-0000-7000-8000-000000000001', 'Order', '1001', 'OrderCreated', "
      "'{{\"id\": 1001, \"customer\": \"Zoë\", \"lines\": [{{\"sku\": \"A-1\", \"qty\": 2}}]}}', "
      "E'#comment\\ntraceparent={1}\\n', 'corr-1'), "
      "('0190f6a1-0000-7000-8000-000000000002', 'Order', '1001', 'OrderPaid', '{{\"paid\": true}}', NULL, NULL), "
      "('0190f6a1-0000-7000-8000-000000000003', 'Customer', 'c-42', 'CustomerRegistered', '\"a bare string\"', NULL, "
      "'corr-3')",
      table, traceparent));
  // Step 5/6: Debezium stopped, outboxd started; a row after the start, and a tombstone.
  OutboxdProcess& outboxd = Outboxd(config);
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(60))) << outboxd.Log();
  sql_.Exec(fmt::format("INSERT INTO public.{} (id, aggregatetype, aggregateid, type, payload) VALUES "
                        "('0190f6a1-0000-7000-8000-000000000004', 'Order', '1002', 'OrderArchived', NULL)",
                        table));

  // Read back: every row's record, compared field by field with the table.
  struct Row {
    std::string aggregatetype, aggregateid, type, correlation, tracing;
    std::optional<std::string> payload;
    int64_t created_ms = 0;
  };
  std::map<std::string, Row> rows;
  for (const replication::Row& r : sql_.Query(fmt::format(
           "SELECT id::text, aggregatetype, aggregateid, type, payload::text, correlation, tracingspancontext, "
           "floor(extract(epoch FROM created_at) * 1000)::bigint FROM public.{}",
           table))) {
    rows[*r[0]] = Row{.aggregatetype = *r[1], .aggregateid = *r[2], .type = *r[3],
                      .correlation = r[5].value_or("<absent>"), .tracing = r[6].value_or(""),
                      .payload = r[4], .created_ms = std::stoll(*r[7])};
  }
  ASSERT_EQ(rows.size(), 4u);
  const std::vector<std::string> topics = {prefix + ".outbox.event.Order", prefix + ".outbox.event.Customer"};
  std::map<std::string, Record> records;
  ReadTopicsUntil(
      topics,
      [&](const std::vector<Record>& got) {
        for (const Record& r : got) records[Header(r, "id")] = r;
        return records.size() >= rows.size();
      },
      absl::Seconds(60));
  ASSERT_EQ(records.size(), rows.size()) << outboxd.Log();
  for (const auto& [id, row] : rows) {
    SCOPED_TRACE(id);
    ASSERT_TRUE(records.contains(id));
    const Record& r = records[id];
    EXPECT_EQ(r.topic, prefix + ".outbox.event." + row.aggregatetype);
    EXPECT_EQ(r.key, row.aggregateid);
    if (row.payload.has_value()) {
      EXPECT_FALSE(r.null_value);
      EXPECT_EQ(r.value, *row.payload);
    } else {
      EXPECT_TRUE(r.null_value) << "a NULL payload is a tombstone";
    }
    EXPECT_EQ(r.timestamp_ms, row.created_ms);
    EXPECT_EQ(Header(r, "eventType"), row.type);
    EXPECT_EQ(Header(r, "correlationId"), row.correlation);
    EXPECT_EQ(Header(r, "traceparent"), row.tracing.empty() ? "<absent>" : traceparent);
    EXPECT_EQ(Header(r, "outbox-id"), "<absent>") << "Debezium's records carry the id in `id` only";
  }
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
}

// Journey 2: docs/operations.md, "Exactly-once mode", across two SIGKILLs.
TEST_F(JourneysTest, ExactlyOnceAcrossTwoKillsEveryIdOnce) {
  const TestSource source = CreateDefaultSource(sql_, "journey_eos");
  slots_.push_back(source.slot);
  drop_.push_back(fmt::format("DROP PUBLICATION IF EXISTS {}", source.publication));
  drop_.push_back(fmt::format("DROP TABLE IF EXISTS public.{}", source.table));
  std::string config = ConfigFor(source);
  config.replace(config.find("[sink.kafka]"), 12,
                 fmt::format("[sink]\ndelivery = \"exactly_once\"\ncheckpoint_topic = \"{}\"\n\n[sink.kafka]",
                             UniqueName("it.journey.checkpoints")));
  const std::string topic = source.topic_prefix + ".Order";

  // Kill 1: right after its third Kafka commit, before the slot hears of it.
  // The writer starts once the slot exists: outboxd captures from then on.
  OutboxdProcess& first = Outboxd(config);
  first.set_env({{"OUTBOXD_FAILPOINT", "kill_after_kafka_commit:3"}});
  first.Start();
  ASSERT_TRUE(first.WaitForLog("streaming slot", absl::Seconds(60))) << first.Log();
  Writer writer(source.table, 400);
  ASSERT_EQ(first.WaitExit(absl::Seconds(90)), 128 + SIGKILL) << "the failpoint did not kill outboxd\n" << first.Log();
  // Kill 2: SIGKILL mid-stream, once it committed something of its own.
  OutboxdProcess& second = Outboxd(config);
  second.Start();
  ASSERT_TRUE(second.WaitForLog("exactly-once: transactional.id", absl::Seconds(60))) << second.Log();
  const Lsn before = sql_.ConfirmedFlush(source.slot);
  ASSERT_TRUE(WaitFor([&] { return sql_.ConfirmedFlush(source.slot) > before; }, absl::Seconds(60)))
      << second.Log();
  EXPECT_EQ(second.Stop(SIGKILL), 128 + SIGKILL);
  // The third runs to the end of the writer and stops cleanly.
  OutboxdProcess& third = Outboxd(config);
  third.Start();
  writer.Join();
  const std::set<std::string> ids = Ids(sql_, source.table);
  ASSERT_FALSE(ids.empty());
  ReadUntilAllKeys({topic}, ids, absl::Seconds(120), Isolation::kReadCommitted);
  EXPECT_EQ(third.Stop(SIGTERM), 0) << third.Log();

  std::map<std::string, int> seen;
  for (const Record& r : ReadToEnd({topic}, Isolation::kReadCommitted, absl::Seconds(120))) ++seen[r.key];
  size_t missing = 0, duplicated = 0;
  for (const std::string& id : ids) {
    if (seen[id] == 0) ++missing;
    if (seen[id] > 1) ++duplicated;
  }
  std::cout << "[ figures ] exactly-once journey: " << ids.size() << " rows in " << writer.committed()
            << " transactions, 2 SIGKILLs, read_committed: missing " << missing << ", duplicated " << duplicated
            << "\n";
  EXPECT_EQ(missing, 0u) << first.Log() << second.Log() << third.Log();
  EXPECT_EQ(duplicated, 0u) << first.Log() << second.Log() << third.Log();
  EXPECT_EQ(seen.size(), ids.size()) << "records of ids that are no row of the table";
}

// Journey 3: docs/operations.md and docs/metrics.md: the operator's curl, then
// SIGTERM (docs/operations.md, "Stopping": exit 0).
TEST_F(JourneysTest, AnOperatorCurlsTheEndpointsAndStopsIt) {
  const TestSource source = CreateDefaultSource(sql_, "journey_ops");
  slots_.push_back(source.slot);
  drop_.push_back(fmt::format("DROP PUBLICATION IF EXISTS {}", source.publication));
  drop_.push_back(fmt::format("DROP TABLE IF EXISTS public.{}", source.table));
  const int port = FreePort();
  std::string config = ConfigFor(source);
  config.replace(config.find("listen = \"off\""), 14, fmt::format("listen = \"127.0.0.1:{}\"", port));
  OutboxdProcess& outboxd = Outboxd(config);
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(60))) << outboxd.Log();
  sql_.Exec(InsertTxnSql(source.table, 1, 3));
  ASSERT_EQ(ReadTopics({source.topic_prefix + ".Order"}, 3, absl::Seconds(60)).size(), 3u) << outboxd.Log();

  auto curl = [port](const std::string& path) {
    return RunShell(fmt::format("curl -s -w '\\n%{{http_code}}' http://127.0.0.1:{}{}", port, path));
  };
  const CommandResult healthz = curl("/healthz");
  EXPECT_EQ(healthz.code, 0);
  EXPECT_THAT(healthz.output, ::testing::EndsWith("\n200"));
  CommandResult readyz;
  EXPECT_TRUE(WaitFor(
      [&] {
        readyz = curl("/readyz");
        return readyz.output.ends_with("\n200");
      },
      absl::Seconds(30)))
      << readyz.output;
  EXPECT_THAT(readyz.output, HasSubstr(fmt::format("\"slot\":\"{}\"", source.slot)));
  const CommandResult metrics = curl("/metrics");
  EXPECT_THAT(metrics.output, HasSubstr("outboxd_up 1"));
  EXPECT_THAT(metrics.output,
              HasSubstr(StreamSeries(fmt::format("outboxd_events_published_total{{topic=\"{}.Order\"}} 3",
                                                 source.topic_prefix),
                                     source.slot)));
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
  EXPECT_THAT(outboxd.Log(), HasSubstr("stopped cleanly at confirmed LSN"));
  EXPECT_NE(curl("/healthz").code, 0) << "the endpoint is gone with the process";
}

}  // namespace
}  // namespace outboxd::it
