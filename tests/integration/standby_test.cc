// Decoding on a hot standby (issue 22): a PostgreSQL primary and its physical standby
// (pg_pair.sh, PostgreSQL 17 unless OUTBOXD_PAIR_VERSION says otherwise), outboxd streaming from
// a slot on the standby while writers commit on the primary, Kafka from the local stack.
//
//   StandbyTest         (17, with the integration tests): 10 SIGKILLs of outboxd lose nothing;
//                       slot creation on a quiet primary says what it waits for without
//                       primary_dsn and streams within 10 s with it; a promotion of the standby
//                       while outboxd streams from it loses nothing; a slot invalidated by a
//                       conflict with recovery stops outboxd with the reason named.
//   StandbyMatrixTest   (scripts/test.sh, phase pg_matrix: 16 and 18; 17 is StandbyTest above):
//                       the standby case on each version, and on 18 idle_replication_slot_timeout:
//                       check warns beforehand, and the invalidation names idle_timeout.
//
// The pair listens on OUTBOXD_STANDBY_PAIR_PORT and the port after it (default: OUTBOXD_PAIR_PORT
// + 2, so that switchover_test's pair is another), one case at a time (RESOURCE_LOCK).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "fmt/format.h"
#include "harness.h"

namespace outboxd::it {
namespace {

using replication::PgConnection;
using replication::Row;
using ::testing::HasSubstr;
using ::testing::Not;

int PairPort() {
  if (const char* port = std::getenv("OUTBOXD_STANDBY_PAIR_PORT"); port != nullptr && *port != '\0') {
    return std::atoi(port);
  }
  const char* base = std::getenv("OUTBOXD_PAIR_PORT");
  return (base != nullptr && *base != '\0' ? std::atoi(base) : 54347) + 2;
}
int PrimaryPort() { return PairPort(); }
int StandbyPort() { return PairPort() + 1; }
int Version() {
  const char* v = std::getenv("OUTBOXD_PAIR_VERSION");
  return v != nullptr && *v != '\0' ? std::atoi(v) : 17;
}

// pg_pair.sh `args` for this pair, with `env` (e.g. "OUTBOXD_PAIR_FEEDBACK=off") in front.
CommandResult Pair(const std::string& args, const std::string& env = "") {
  return RunShell(fmt::format("{} OUTBOXD_PAIR_PORT={} OUTBOXD_PAIR_VERSION={} bash {}/tests/integration/pg_pair.sh {}",
                              env, PairPort(), Version(), OUTBOXD_SOURCE_DIR, args));
}

std::string NodeDsn(int port, const std::string& database = "app") {
  return fmt::format("host=127.0.0.1 port={} dbname={} user=postgres connect_timeout=5", port, database);
}
// What an application uses across a promotion: libpq keeps the writable host.
std::string MultiHostDsn() {
  return fmt::format("host=127.0.0.1,127.0.0.1 port={},{} dbname=app user=postgres "
                     "target_session_attrs=read-write connect_timeout=2",
                     PrimaryPort(), StandbyPort());
}

std::vector<Row> QueryAt(int port, const std::string& sql) {
  auto conn = PgConnection::Connect(NodeDsn(port), false);
  if (!conn.ok()) {
    ADD_FAILURE() << conn.status();
    return {};
  }
  auto rows = (*conn)->Query(sql);
  if (!rows.ok()) {
    ADD_FAILURE() << sql << ": " << rows.status();
    return {};
  }
  return *std::move(rows);
}
std::string ScalarAt(int port, const std::string& sql) {
  auto rows = QueryAt(port, sql);
  return rows.empty() || rows[0].empty() ? "" : rows[0][0].value_or("");
}

// Commits one outbox row per transaction through `dsn` until stopped, reconnecting after a
// failure; remembers each acknowledged id and the port of the server that took it.
class Writer {
 public:
  Writer(std::string dsn, std::string table) : dsn_(std::move(dsn)), table_(std::move(table)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Writer() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int committed() const { return committed_.load(); }
  int committed_on(int port) {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& [id, p] : port_of_) n += p == port ? 1 : 0;
    return n;
  }

 private:
  void Loop() {
    std::unique_ptr<PgConnection> conn;
    int n = 0;
    while (!stop_) {
      if (conn == nullptr) {
        auto c = PgConnection::Connect(dsn_, false);
        if (!c.ok()) {
          absl::SleepFor(absl::Milliseconds(100));  // no writable server yet: a promotion under way
          continue;
        }
        conn = *std::move(c);
      }
      auto rows = conn->Query(fmt::format(
          "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) VALUES ('Order', 'o-{}', "
          "'OrderCreated', '{{}}') RETURNING id::text, inet_server_port()",
          table_, n++));
      if (!rows.ok() || rows->size() != 1) {
        conn.reset();  // in doubt: the table on the server decides
        continue;
      }
      {
        std::lock_guard lock(mu_);
        port_of_[(*rows)[0][0].value_or("")] = std::atoi((*rows)[0][1].value_or("0").c_str());
      }
      ++committed_;
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  std::string dsn_, table_;
  std::atomic<bool> stop_{false};
  std::atomic<int> committed_{0};
  std::mutex mu_;
  std::map<std::string, int> port_of_;
  std::thread thread_;
};

class StandbyTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (auto& p : outboxd_) p->Stop(SIGKILL);
    Pair("down");
    if (!state_dir_.empty()) RunShell("rm -rf " + state_dir_);
  }

  // A fresh pair (`env` for pg_pair.sh up) with an outbox table and its publication, made on the
  // primary (the standby replays them).
  void Up(const std::string& env = "") {
    CommandResult up = Pair("up", env);
    ASSERT_EQ(up.code, 0) << up.output;
    char dir[] = "/tmp/outboxd-standby-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    state_dir_ = dir;
    table_ = UniqueName("sb_outbox");
    publication_ = UniqueName("sb_pub");
    slot_ = UniqueName("sb_slot");
    topic_ = UniqueName("it.sb") + ".Order";
    QueryAt(PrimaryPort(),
            fmt::format("CREATE TABLE public.{} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type "
                        "text NOT NULL, aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT "
                        "NULL, headers jsonb, destination text, created_at timestamptz NOT NULL DEFAULT now())",
                        table_));
    QueryAt(PrimaryPort(), fmt::format("CREATE PUBLICATION {} FOR TABLE public.{} WITH (publish = 'insert')",
                                       publication_, table_));
  }

  // outboxd on the standby; with `primary_dsn`, [source] primary_dsn names the primary.
  std::string Config(bool primary_dsn = true) const {
    return fmt::format(R"([source]
dsn = "{}"
{}slot = "{}"
publication = "{}"
state_dir = "{}"

[sink.kafka]
"bootstrap.servers" = "{}"

[[outbox]]
table = "public.{}"
topic = "{}"

[messages]
enabled = false

[http]
listen = "off"
)",
                       NodeDsn(StandbyPort()),
                       primary_dsn ? fmt::format("primary_dsn = \"{}\"\n", NodeDsn(PrimaryPort())) : "", slot_,
                       publication_, state_dir_, KafkaBootstrap(), table_, topic_);
  }

  OutboxdProcess& Start(const std::string& config) {
    outboxd_.push_back(std::make_unique<OutboxdProcess>(config));
    outboxd_.back()->Start();
    return *outboxd_.back();
  }

  CommandResult Check(bool primary_dsn = true) {
    const std::string path = state_dir_ + "/check.toml";
    std::ofstream(path, std::ios::trunc) << Config(primary_dsn);
    return RunOutboxd("check --config " + path);
  }

  std::set<std::string> IdsAt(int port) {
    std::set<std::string> ids;
    for (const Row& row : QueryAt(port, fmt::format("SELECT id::text FROM public.{}", table_))) {
      ids.insert(row[0].value_or(""));
    }
    return ids;
  }

  // Reads Kafka until every id of the table on `port` arrived; prints and returns how many
  // are missing.
  size_t Lost(int port, const std::string& what) {
    const std::set<std::string> truth = IdsAt(port);
    std::vector<Record> records = ReadUntilAllKeys({topic_}, truth, absl::Seconds(120));
    std::set<std::string> keys;
    for (const Record& r : records) keys.insert(r.key);
    size_t missing = 0, phantom = 0;
    for (const std::string& id : truth) missing += keys.contains(id) ? 0 : 1;
    for (const std::string& key : keys) phantom += truth.contains(key) ? 0 : 1;
    std::cout << fmt::format("[ figures ] {} (PostgreSQL {}): committed {}, lost {}, published but not in the "
                             "database {}, records {}, duplicates {}\n",
                             what, Version(), truth.size(), missing, phantom, records.size(),
                             records.size() - keys.size());
    EXPECT_EQ(phantom, 0u);
    return missing;
  }

  std::string SlotColumn(const std::string& column) {
    return ScalarAt(StandbyPort(),
                    fmt::format("SELECT {} FROM pg_replication_slots WHERE slot_name = '{}'", column, slot_));
  }

  std::string state_dir_, table_, publication_, slot_, topic_;
  std::vector<std::unique_ptr<OutboxdProcess>> outboxd_;
};

// outboxd on the standby, a writer on the primary, 10 SIGKILLs of outboxd while it streams.
TEST_F(StandbyTest, TenSigkillsWhileTheWriterCommitsOnThePrimaryLoseNothing) {
  ASSERT_NO_FATAL_FAILURE(Up());
  std::unique_ptr<OutboxdProcess> outboxd = std::make_unique<OutboxdProcess>(Config());
  outboxd->Start();
  ASSERT_TRUE(outboxd->WaitForLog("streaming slot", absl::Seconds(30))) << outboxd->Log();
  EXPECT_THAT(outboxd->Log(), HasSubstr("on a hot standby"));
  // After the slot exists: what is committed before it is not the slot's to stream.
  Writer writer(NodeDsn(PrimaryPort()), table_);
  for (int kill = 0; kill < 10; ++kill) {
    const int before = writer.committed();
    // Killed with events in flight: the writer went on for a while since the stream started.
    ASSERT_TRUE(WaitFor([&] { return writer.committed() >= before + 30; }, absl::Seconds(60)));
    ASSERT_EQ(outboxd->Stop(SIGKILL), 128 + SIGKILL);
    outboxd->Start();
    ASSERT_TRUE(outboxd->WaitForLog("streaming slot", absl::Seconds(60))) << outboxd->Log();
  }
  ASSERT_TRUE(WaitFor([&, n = writer.committed()] { return writer.committed() >= n + 30; }, absl::Seconds(60)));
  writer.Stop();
  EXPECT_EQ(Lost(PrimaryPort(), "standby, 10 SIGKILLs of outboxd"), 0u) << outboxd->Log();
  EXPECT_THAT(outboxd->Log(), Not(HasSubstr("gap upstream")));
  EXPECT_EQ(outboxd->Stop(SIGTERM), 0) << outboxd->Log();
}

// A quiet primary writes no running-transactions record: without primary_dsn the slot's creation
// waits and says for what; with it, outboxd asks the primary for one and streams within 10 s.
TEST_F(StandbyTest, SlotCreationOnAQuietPrimaryWaitsAndSaysWhyOrStreamsWithPrimaryDsn) {
  ASSERT_NO_FATAL_FAILURE(Up());
  CommandResult quiet = Pair("quiet");
  ASSERT_EQ(quiet.code, 0) << quiet.output;

  OutboxdProcess& waiting = Start(Config(/*primary_dsn=*/false));
  ASSERT_TRUE(waiting.WaitForLog("for the standby to replay a running-transactions record", absl::Seconds(30)))
      << waiting.Log();
  const std::string log = waiting.Log();
  EXPECT_THAT(log, HasSubstr(fmt::format("creating replication slot \"{}\" on hot standby", slot_)));
  EXPECT_THAT(log, HasSubstr("Set [source] primary_dsn so that outboxd asks the primary for one"));
  EXPECT_THAT(log, Not(HasSubstr("streaming slot")));
  std::cout << "[ log ] " << log.substr(log.find("creating replication slot"),
                                        log.find('\n', log.find("creating replication slot")) -
                                            log.find("creating replication slot"))
            << "\n";
  // A stop is honoured while the creation waits, and the creation is cancelled on the standby.
  EXPECT_EQ(waiting.Stop(SIGTERM, absl::Seconds(10)), 0) << waiting.Log();
  EXPECT_TRUE(WaitFor([&] { return SlotColumn("count(*)") == "0"; }, absl::Seconds(10)))
      << "the cancelled creation left its slot behind";

  const absl::Time started = absl::Now();
  OutboxdProcess& asking = Start(Config(/*primary_dsn=*/true));
  ASSERT_TRUE(asking.WaitForLog("streaming slot", absl::Seconds(10))) << asking.Log();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - started);
  std::cout << fmt::format("[ figures ] slot creation on a standby of a quiet primary with primary_dsn: streaming "
                           "{:.2f} s after the start\n",
                           seconds);
  EXPECT_THAT(asking.Log(), HasSubstr("asked the primary"));
  QueryAt(PrimaryPort(), InsertTxnSql(table_, 1, 1));
  EXPECT_EQ(Lost(PrimaryPort(), "quiet primary, first event"), 0u) << asking.Log();
}

// The standby promoted while outboxd streams from it: the slot is the promoted server's own, so
// the session goes on through the promotion, and a restart after it (state file of a standby's
// slot, new timeline) goes on from the slot too. Writers move to the new primary.
TEST_F(StandbyTest, PromotionWhileStreamingLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(Up());
  OutboxdProcess& streaming = Start(Config());
  ASSERT_TRUE(streaming.WaitForLog("streaming slot", absl::Seconds(30))) << streaming.Log();
  Writer writer(MultiHostDsn(), table_);
  ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 200; }, absl::Seconds(60)));
  ASSERT_EQ(Pair("stop-primary fast").code, 0);
  CommandResult promoted = Pair("promote");
  ASSERT_EQ(promoted.code, 0) << promoted.output;
  ASSERT_TRUE(WaitFor([&] { return writer.committed_on(StandbyPort()) >= 200; }, absl::Seconds(120)))
      << "the writer never committed on the promoted standby";
  // The same session streamed through the promotion.
  EXPECT_TRUE(streaming.running());
  EXPECT_EQ(Lost(StandbyPort(), "standby promoted while streaming") , 0u) << streaming.Log();
  EXPECT_THAT(streaming.Log(), Not(HasSubstr("reconnecting")));

  // Killed after the promotion: the next start finds timeline 2 and the slot it streamed.
  EXPECT_EQ(streaming.Stop(SIGKILL), 128 + SIGKILL);
  OutboxdProcess& after = Start(Config());
  ASSERT_TRUE(after.WaitForLog("streaming slot", absl::Seconds(60))) << after.Log();
  EXPECT_THAT(after.Log(), HasSubstr("timeline 2"));
  EXPECT_THAT(after.Log(), Not(HasSubstr("on a hot standby")));
  EXPECT_THAT(after.Log(), Not(HasSubstr("gap upstream")));
  ASSERT_TRUE(WaitFor([&, n = writer.committed()] { return writer.committed() >= n + 100; }, absl::Seconds(60)));
  writer.Stop();
  EXPECT_EQ(Lost(StandbyPort(), "standby promoted, outboxd killed and restarted after it"), 0u) << after.Log();
  EXPECT_EQ(after.Stop(SIGTERM), 0) << after.Log();
}

// hot_standby_feedback = off: the primary's vacuum removes catalog rows the standby's slot
// still needs, the standby invalidates the slot (rows_removed), and outboxd stops, naming it.
TEST_F(StandbyTest, SlotInvalidatedByAConflictStopsOutboxdWithTheReason) {
  ASSERT_NO_FATAL_FAILURE(Up("OUTBOXD_PAIR_FEEDBACK=off"));
  OutboxdProcess& outboxd = Start(Config());
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(30))) << outboxd.Log();
  EXPECT_THAT(outboxd.Log(), HasSubstr("decoding on a hot standby with hot_standby_feedback = off"));
  QueryAt(PrimaryPort(), InsertTxnSql(table_, 1, 1));
  ASSERT_EQ(Lost(PrimaryPort(), "before the conflict"), 0u) << outboxd.Log();

  // A transaction in another database keeps the slot's catalog_xmin behind what the drop below
  // deletes (running transactions hold it back, whatever their database) without holding back
  // the vacuum of this database's catalog on the primary.
  auto holder = PgConnection::Connect(NodeDsn(PrimaryPort(), "postgres"), false);
  ASSERT_TRUE(holder.ok()) << holder.status();
  ASSERT_TRUE((*holder)->Query("BEGIN; SELECT pg_current_xact_id()").ok());
  const std::string scratch = UniqueName("sb_dropped");
  QueryAt(PrimaryPort(), fmt::format("CREATE TABLE public.{} (i int)", scratch));
  QueryAt(PrimaryPort(), fmt::format("DROP TABLE public.{}", scratch));
  QueryAt(PrimaryPort(), "VACUUM pg_class");
  QueryAt(PrimaryPort(), "VACUUM pg_attribute");
  QueryAt(PrimaryPort(), "VACUUM pg_type");

  const std::optional<int> code = outboxd.WaitExit(absl::Seconds(90));
  ASSERT_TRUE(code.has_value()) << "outboxd did not stop\n" << outboxd.Log();
  EXPECT_EQ(*code, 1) << outboxd.Log();
  const std::string log = outboxd.Log();
  EXPECT_THAT(log, HasSubstr(Version() >= 17 ? "was invalidated by PostgreSQL (rows_removed: a conflict with "
                                               "recovery on this hot standby"
                                             : "was invalidated by PostgreSQL (conflict: a conflict with recovery"));
  EXPECT_THAT(log, HasSubstr("set hot_standby_feedback = on and primary_slot_name"));
  EXPECT_THAT(log, HasSubstr("--accept-gap"));
  EXPECT_THAT(log, Not(HasSubstr("wal_status lost")));
  const size_t at = log.find("was invalidated by PostgreSQL");
  if (at != std::string::npos) {
    const size_t begin = log.rfind('\n', at) + 1;
    std::cout << "[ log ] " << log.substr(begin, log.find('\n', at) - begin) << "\n";
  }
  EXPECT_EQ(SlotColumn(Version() >= 17 ? "invalidation_reason" : "conflicting::text"),
            Version() >= 17 ? "rows_removed" : "true");
  CommandResult check = Check();
  EXPECT_THAT(check.output, HasSubstr("FAIL  hot_standby  hot_standby_feedback = off")) << check.output;
  EXPECT_THAT(check.output, HasSubstr(fmt::format("FAIL  slot         '{}' was invalidated by PostgreSQL ({}", slot_,
                                                  Version() >= 17 ? "rows_removed" : "conflict")))
      << check.output;
  ASSERT_TRUE((*holder)->Query("ROLLBACK").ok());
}

// The standby case on each version of the matrix (scripts/test.sh runs it on 16 and 18; 17 runs
// StandbyTest): check is clean, the slot is created within 10 s with primary_dsn, and a SIGKILL
// while the writer commits on the primary loses nothing.
class StandbyMatrixTest : public StandbyTest {};

TEST_F(StandbyMatrixTest, DecodesOnAStandbyAndLosesNothingAcrossASigkill) {
  ASSERT_NO_FATAL_FAILURE(Up());
  CommandResult check = Check();
  EXPECT_EQ(check.code, 0) << check.output;
  EXPECT_THAT(check.output, HasSubstr(fmt::format("hot standby of PostgreSQL {}: outboxd decodes there", Version())));
  EXPECT_THAT(check.output, HasSubstr("ok    primary"));
  const absl::Time started = absl::Now();
  std::unique_ptr<OutboxdProcess> outboxd = std::make_unique<OutboxdProcess>(Config());
  outboxd->Start();
  ASSERT_TRUE(outboxd->WaitForLog("streaming slot", absl::Seconds(10))) << outboxd->Log();
  std::cout << fmt::format("[ figures ] PostgreSQL {}: streaming from the standby {:.2f} s after the start\n",
                           Version(), absl::ToDoubleSeconds(absl::Now() - started));
  Writer writer(NodeDsn(PrimaryPort()), table_);
  ASSERT_TRUE(WaitFor([&, n = writer.committed()] { return writer.committed() >= n + 50; }, absl::Seconds(60)));
  ASSERT_EQ(outboxd->Stop(SIGKILL), 128 + SIGKILL);
  outboxd->Start();
  ASSERT_TRUE(outboxd->WaitForLog("streaming slot", absl::Seconds(60))) << outboxd->Log();
  ASSERT_TRUE(WaitFor([&, n = writer.committed()] { return writer.committed() >= n + 50; }, absl::Seconds(60)));
  writer.Stop();
  EXPECT_EQ(Lost(PrimaryPort(), "standby, 1 SIGKILL"), 0u) << outboxd->Log();
  EXPECT_EQ(outboxd->Stop(SIGTERM), 0) << outboxd->Log();
}

// PostgreSQL 18: a slot nobody streams for idle_replication_slot_timeout is invalidated at the next
// checkpoint (a restartpoint on the standby). check warns beforehand; outboxd names idle_timeout.
TEST_F(StandbyMatrixTest, IdleTimeoutIsWarnedOfAndNamed) {
  if (Version() < 18) GTEST_SKIP() << "idle_replication_slot_timeout is PostgreSQL 18's";
  ASSERT_NO_FATAL_FAILURE(Up());
  OutboxdProcess& first = Start(Config());
  ASSERT_TRUE(first.WaitForLog("streaming slot", absl::Seconds(10))) << first.Log();
  QueryAt(PrimaryPort(), InsertTxnSql(table_, 1, 1));
  ASSERT_EQ(Lost(PrimaryPort(), "before the idle timeout"), 0u) << first.Log();
  ASSERT_EQ(first.Stop(SIGTERM), 0) << first.Log();

  QueryAt(StandbyPort(), "ALTER SYSTEM SET idle_replication_slot_timeout = 2");
  QueryAt(StandbyPort(), "SELECT pg_reload_conf()");
  ASSERT_TRUE(WaitFor([&] { return SlotColumn("now() - inactive_since > interval '2 s'") == "t"; },
                      absl::Seconds(30)));
  CommandResult before = Check();
  EXPECT_THAT(before.output, HasSubstr("WARN  idle_timeout idle_replication_slot_timeout = 2s: a slot that no outboxd "
                                       "streams for that long is invalidated at the next checkpoint (idle_timeout), "
                                       "before OutboxdNoInstanceStreaming even fires"))
      << before.output;
  EXPECT_THAT(before.output, HasSubstr(fmt::format("WARN  idle_timeout slot '{}' has not been streamed for", slot_)))
      << before.output;

  // The invalidation happens at a checkpoint: on a standby, the restartpoint that follows the
  // primary's checkpoint record.
  ASSERT_TRUE(WaitFor(
      [&] {
        QueryAt(PrimaryPort(), "CHECKPOINT");
        QueryAt(StandbyPort(), "CHECKPOINT");
        return SlotColumn("invalidation_reason") == "idle_timeout";
      },
      absl::Seconds(30), absl::Milliseconds(500)));

  OutboxdProcess& refused = Start(Config());
  const std::optional<int> code = refused.WaitExit(absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << refused.Log();
  EXPECT_EQ(*code, 1) << refused.Log();
  const std::string log = refused.Log();
  EXPECT_THAT(log, HasSubstr("was invalidated by PostgreSQL (idle_timeout: no client streamed it for longer than "
                             "idle_replication_slot_timeout = 2s (PostgreSQL 18)"));
  EXPECT_THAT(log, HasSubstr("raise idle_replication_slot_timeout"));
  EXPECT_THAT(log, Not(HasSubstr("wal_status lost")));
  const size_t at = log.find("was invalidated by PostgreSQL");
  if (at != std::string::npos) {
    const size_t begin = log.rfind('\n', at) + 1;
    std::cout << "[ log ] " << log.substr(begin, log.find('\n', at) - begin) << "\n";
  }
  CommandResult after = Check();
  EXPECT_THAT(after.output, HasSubstr(fmt::format("FAIL  slot         '{}' was invalidated by PostgreSQL "
                                                  "(idle_timeout: ",
                                                  slot_)))
      << after.output;
}

}  // namespace
}  // namespace outboxd::it
