// A real switchover: a PostgreSQL 17 primary and its physical standby (pg_pair.sh), outboxd on a
// failover slot with a multi-host DSN, a writer committing throughout, the old primary stopped
// (fast, then immediate) and the standby promoted. Every committed id must reach Kafka, and gap
// detection must accept the new timeline only for the synchronized slot.
//
// Exactly-once when the server's history goes back (issue 20, defect 1): the standby falls
// behind, the primary commits past it and outboxd's checkpoint with it, then the standby is
// promoted (or its copy restored as a primary on the same timeline) and commits 10 rows whose
// LSNs lie below that checkpoint. Each must reach Kafka once (read_committed).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "absl/time/clock.h"
#include "fmt/format.h"
#include "harness.h"
#include "support/free_port.h"

namespace outboxd::it {
namespace {

using replication::PgConnection;
using replication::Row;
using ::testing::HasSubstr;

int PairPort() {
  const char* port = std::getenv("OUTBOXD_PAIR_PORT");
  return port != nullptr && *port != '\0' ? std::atoi(port) : 54347;
}
int PrimaryPort() { return PairPort(); }
int StandbyPort() { return PairPort() + 1; }

CommandResult Pair(const std::string& args) {
  return RunShell(fmt::format("OUTBOXD_PAIR_PORT={} bash {}/tests/integration/pg_pair.sh {}", PairPort(),
                              OUTBOXD_SOURCE_DIR, args));
}

std::string NodeDsn(int port) {
  return fmt::format("host=127.0.0.1 port={} dbname=app user=postgres connect_timeout=5", port);
}
// What an application behind a switchover uses: libpq tries each host, keeping the writable one.
std::string MultiHostDsn() {
  return fmt::format("host=127.0.0.1,127.0.0.1 port={},{} dbname=app user=postgres "
                     "target_session_attrs=read-write connect_timeout=2",
                     PrimaryPort(), StandbyPort());
}

// One query on a fresh connection to one node; empty on error (reported).
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

// Commits one outbox row per transaction through the multi-host DSN until stopped, reconnecting
// after a failure; remembers each acknowledged id and the port of the server that took it.
class Writer {
 public:
  explicit Writer(std::string table) : table_(std::move(table)) {
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
  std::map<std::string, int> acknowledged() {
    std::lock_guard lock(mu_);
    return port_of_;
  }

 private:
  void Loop() {
    std::unique_ptr<PgConnection> conn;
    int n = 0;
    while (!stop_) {
      if (conn == nullptr) {
        auto c = PgConnection::Connect(MultiHostDsn(), false);
        if (!c.ok()) {
          absl::SleepFor(absl::Milliseconds(100));  // no server writable yet: the switchover is under way
          continue;
        }
        conn = *std::move(c);
      }
      auto rows = conn->Query(fmt::format(
          "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) VALUES ('Order', 'o-{}', "
          "'OrderCreated', '{{}}') RETURNING id::text, inet_server_port()",
          table_, n++));
      if (!rows.ok() || rows->size() != 1) {
        conn.reset();  // in doubt: the final table on the new primary decides
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

  std::string table_;
  std::atomic<bool> stop_{false};
  std::atomic<int> committed_{0};
  std::mutex mu_;
  std::map<std::string, int> port_of_;
  std::thread thread_;
};

class SwitchoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CommandResult up = Pair("up");
    ASSERT_EQ(up.code, 0) << up.output;
    char dir[] = "/tmp/outboxd-switchover-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    state_dir_ = dir;
    table_ = UniqueName("sw_outbox");
    publication_ = UniqueName("sw_pub");
    slot_ = UniqueName("sw_slot");
    topic_ = UniqueName("it.sw") + ".Order";
    // DDL on the primary reaches the standby through the WAL.
    QueryAt(PrimaryPort(),
            fmt::format("CREATE TABLE public.{} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type "
                        "text NOT NULL, aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT "
                        "NULL, headers jsonb, destination text, created_at timestamptz NOT NULL DEFAULT now())",
                        table_));
    QueryAt(PrimaryPort(), fmt::format("CREATE PUBLICATION {} FOR TABLE public.{} WITH (publish = 'insert')",
                                       publication_, table_));
  }
  void TearDown() override {
    if (outboxd_ != nullptr) outboxd_->Stop(SIGKILL);
    Pair("down");
    if (!state_dir_.empty()) RunShell("rm -rf " + state_dir_);
  }

  std::string Config() const {
    return fmt::format(R"([source]
dsn = "{}"
slot = "{}"
publication = "{}"
failover = true
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

[log]
level = "debug"
)",
                       MultiHostDsn(), slot_, publication_, state_dir_, KafkaBootstrap(), table_, topic_);
  }

  OutboxdProcess& StartOutboxd(std::vector<std::string> args = {}) {
    if (outboxd_ != nullptr) outboxd_->Stop(SIGKILL);
    outboxd_ = std::make_unique<OutboxdProcess>(Config());
    outboxd_->set_extra_args(std::move(args));
    outboxd_->Start();
    return *outboxd_;
  }

  // True once the standby holds a persistent copy of the slot, synchronized past `lsn`.
  bool SyncedOnStandbyPast(const std::string& lsn) {
    return ScalarAt(StandbyPort(),
                    fmt::format("SELECT synced AND NOT temporary AND confirmed_flush_lsn >= '{}' FROM "
                                "pg_replication_slots WHERE slot_name = '{}'",
                                lsn, slot_)) == "t";
  }

  // Streams, switches over with the old primary stopped in `mode`, and checks what reached Kafka.
  void SwitchOver(const std::string& mode) {
    StartOutboxd();
    ASSERT_TRUE(outboxd_->WaitForLog("failover slot", absl::Seconds(60))) << outboxd_->Log();
    EXPECT_EQ(ScalarAt(PrimaryPort(), fmt::format("SELECT failover FROM pg_replication_slots WHERE slot_name "
                                                  "= '{}'",
                                                  slot_)),
              "t");
    Writer writer(table_);
    ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 300; }, absl::Seconds(60)));
    // The slot sync worker copies the slot to the standby; a switchover before that loses it.
    const std::string lsn = ScalarAt(PrimaryPort(), "SELECT pg_current_wal_lsn()");
    ASSERT_TRUE(WaitFor([&] { return SyncedOnStandbyPast(lsn); }, absl::Seconds(90)))
        << "the standby never synchronized slot " << slot_ << "\n" << outboxd_->Log();
    ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 500; }, absl::Seconds(60)));

    CommandResult stopped = Pair("stop-primary " + mode);
    ASSERT_EQ(stopped.code, 0) << stopped.output;
    const absl::Time promoted_at = absl::Now();
    CommandResult promoted = Pair("promote");
    ASSERT_EQ(promoted.code, 0) << promoted.output;
    ASSERT_TRUE(WaitFor([&] { return writer.committed_on(StandbyPort()) >= 300; }, absl::Seconds(120)))
        << "the writer never committed on the promoted standby";
    writer.Stop();
    ASSERT_TRUE(outboxd_->WaitForLog("synchronized from the old primary", absl::Seconds(120))) << outboxd_->Log();
    EXPECT_THAT(outboxd_->Log(), HasSubstr("timeline 2"));

    // The new primary's table is the truth: every acknowledged commit is in it (synchronous
    // replication to the standby), and so is every in-doubt one that made it.
    std::set<std::string> truth;
    for (const Row& row : QueryAt(StandbyPort(), fmt::format("SELECT id::text FROM public.{}", table_))) {
      truth.insert(row[0].value_or(""));
    }
    const std::map<std::string, int> acknowledged = writer.acknowledged();
    size_t lost_by_database = 0;
    for (const auto& [id, port] : acknowledged) lost_by_database += truth.contains(id) ? 0 : 1;
    EXPECT_EQ(lost_by_database, 0u) << "an acknowledged commit is missing on the promoted standby";

    std::vector<Record> records = ReadUntilAllKeys({topic_}, truth, absl::Seconds(120));
    std::set<std::string> keys;
    int64_t first_new_ms = -1;
    for (const Record& r : records) {
      keys.insert(r.key);
      auto it = acknowledged.find(r.key);
      if (it != acknowledged.end() && it->second == StandbyPort() &&
          (first_new_ms < 0 || r.timestamp_ms < first_new_ms)) {
        first_new_ms = r.timestamp_ms;
      }
    }
    size_t missing = 0, phantom = 0;
    for (const std::string& id : truth) missing += keys.contains(id) ? 0 : 1;
    for (const std::string& key : keys) phantom += truth.contains(key) ? 0 : 1;
    const size_t duplicates = records.size() - keys.size();
    const double seconds = (first_new_ms - absl::ToUnixMillis(promoted_at)) / 1000.0;
    std::cout << fmt::format(
        "[ figures ] switchover ({} stop): committed {} ({} acknowledged, {} on the new primary), lost {}, "
        "published but not in the database {}, records {}, duplicates {}, promotion to first event on the new "
        "primary {:.2f} s\n",
        mode, truth.size(), acknowledged.size(), writer.committed_on(StandbyPort()), missing, phantom,
        records.size(), duplicates, seconds);
    EXPECT_EQ(missing, 0u) << outboxd_->Log();
    EXPECT_EQ(phantom, 0u) << "synchronized_standby_slots must hold back what the standby does not have";
    EXPECT_GE(first_new_ms, 0);
    // Duplicates come from the synchronized slot lagging the primary's: bounded by what was
    // committed before the switch, never a replay from the start.
    EXPECT_LT(duplicates, truth.size() - static_cast<size_t>(writer.committed_on(StandbyPort())));
  }

  std::string state_dir_, table_, publication_, slot_, topic_;
  std::unique_ptr<OutboxdProcess> outboxd_;
};

TEST_F(SwitchoverTest, FastStopOfThePrimaryLosesNothing) { SwitchOver("fast"); }

TEST_F(SwitchoverTest, ImmediateStopOfThePrimaryLosesNothing) { SwitchOver("immediate"); }

// A slot that was not synchronized from the old primary (made anew on the promoted server, by
// hand or by outboxd) says nothing about what was published: refused until --accept-gap.
TEST_F(SwitchoverTest, SlotMadeAnewOnThePromotedServerIsAGap) {
  StartOutboxd();
  ASSERT_TRUE(outboxd_->WaitForLog("failover slot", absl::Seconds(60))) << outboxd_->Log();
  QueryAt(PrimaryPort(), fmt::format("INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) "
                                     "VALUES ('Order', 'o-1', 'OrderCreated', '{{}}')",
                                     table_));
  ASSERT_EQ(ReadTopics({topic_}, 1, absl::Seconds(60)).size(), 1u) << outboxd_->Log();
  const std::string lsn = ScalarAt(PrimaryPort(), "SELECT pg_current_wal_lsn()");
  ASSERT_TRUE(WaitFor([&] { return SyncedOnStandbyPast(lsn); }, absl::Seconds(90))) << outboxd_->Log();
  // outboxd check sees what a promotion would keep.
  const std::string config_path = state_dir_ + "/check.toml";
  {
    std::string config = Config();
    config.replace(config.find("failover = true"), 15,
                   fmt::format("failover = true\nstandby_dsn = \"{}\"", NodeDsn(StandbyPort())));
    std::ofstream(config_path, std::ios::trunc) << config;
  }
  CommandResult check = RunOutboxd("check --config " + config_path);
  EXPECT_THAT(check.output, HasSubstr("ok    failover     synchronized_standby_slots = 'standby1'")) << check.output;
  EXPECT_THAT(check.output, HasSubstr(fmt::format("slot '{}' is synchronized; a promotion keeps it", slot_)))
      << check.output;
  EXPECT_EQ(outboxd_->Stop(SIGTERM), 0) << outboxd_->Log();
  ASSERT_EQ(Pair("stop-primary fast").code, 0);
  ASSERT_EQ(Pair("promote").code, 0);

  // Made by hand on the promoted server: found, but not synchronized.
  QueryAt(StandbyPort(), fmt::format("SELECT pg_drop_replication_slot('{}')", slot_));
  QueryAt(StandbyPort(), fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput', false, false, "
                                     "true)",
                                     slot_));
  OutboxdProcess& by_hand = StartOutboxd();
  ASSERT_TRUE(by_hand.WaitForLog("gap upstream", absl::Seconds(60))) << by_hand.Log();
  EXPECT_EQ(by_hand.Stop(SIGTERM), 1) << by_hand.Log();
  EXPECT_THAT(by_hand.Log(), HasSubstr("on timeline 1"));
  EXPECT_THAT(by_hand.Log(), HasSubstr("was not synchronized from the old primary"));

  // No slot at all: outboxd would create one at the promoted server's present.
  QueryAt(StandbyPort(), fmt::format("SELECT pg_drop_replication_slot('{}')", slot_));
  OutboxdProcess& anew = StartOutboxd();
  ASSERT_TRUE(anew.WaitForLog("gap upstream", absl::Seconds(60))) << anew.Log();
  EXPECT_EQ(anew.Stop(SIGTERM), 1) << anew.Log();
  EXPECT_THAT(anew.Log(), HasSubstr("does not exist"));
  EXPECT_EQ(ScalarAt(StandbyPort(), fmt::format("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
                                                slot_)),
            "0")
      << "refused means not created";

  OutboxdProcess& accepted = StartOutboxd({"--accept-gap"});
  ASSERT_TRUE(accepted.WaitForLog("--accept-gap: created slot", absl::Seconds(60))) << accepted.Log();
}

// The value of the sample `series` (without the stream labels), -1 when absent.
double Metric(int port, const std::string& series) { return ScrapeSample(port, series, -1); }

class ExactlyOnceRewindTest : public SwitchoverTest {
 protected:
  void SetUp() override {
    SwitchoverTest::SetUp();
    checkpoint_topic_ = UniqueName("it.sw.checkpoints");
    transactional_id_ = UniqueName("it_sw_txid");
    http_port_ = test_support::FreePort();
  }

  std::string EosConfig() const {
    std::string config = Config();
    const std::string kafka = "[sink.kafka]";
    config.insert(config.find(kafka), fmt::format("[sink]\ndelivery = \"exactly_once\"\ntransactional_id = \"{}\"\n"
                                                  "checkpoint_topic = \"{}\"\n\n",
                                                  transactional_id_, checkpoint_topic_));
    const std::string off = "listen = \"off\"";
    config.replace(config.find(off), off.size(), fmt::format("listen = \"127.0.0.1:{}\"", http_port_));
    return config;
  }
  OutboxdProcess& StartEos() {
    if (outboxd_ != nullptr) outboxd_->Stop(SIGKILL);
    outboxd_ = std::make_unique<OutboxdProcess>(EosConfig());
    outboxd_->Start();
    EXPECT_TRUE(outboxd_->WaitForLog("streaming slot", absl::Seconds(60))) << outboxd_->Log();
    return *outboxd_;
  }

  std::set<std::string> IdsAt(int port, const std::string& where = "true") {
    std::set<std::string> ids;
    for (const Row& row : QueryAt(port, fmt::format("SELECT id::text FROM public.{} WHERE {}", table_, where))) {
      ids.insert(row[0].value_or(""));
    }
    return ids;
  }
  // The newest checkpoint's "lsn" (read_committed).
  Lsn CheckpointLsn() {
    std::string newest;
    for (const Record& r : ReadToEnd({checkpoint_topic_}, Isolation::kReadCommitted, absl::Seconds(60))) newest = r.value;
    const std::string field = "\"lsn\":\"";
    const size_t at = newest.find(field);
    if (at == std::string::npos) return Lsn::Invalid();
    auto lsn = Lsn::Parse(newest.substr(at + field.size(), newest.find('"', at + field.size()) - at - field.size()));
    return lsn.ok() ? *lsn : Lsn::Invalid();
  }
  Lsn WalAt(int port) {
    return Lsn::Parse(ScalarAt(port, "SELECT pg_current_wal_lsn()")).value_or(Lsn::Invalid());
  }

  // outboxd publishes from the primary, and the standby holds the slot; then the standby stops
  // following, the primary writes 4 MB of other WAL and one more outbox transaction, outboxd
  // publishes it and stops. Returns the checkpoint, ahead of everything the standby has.
  Lsn CommitPastTheStandby() {
    StartEos();
    for (int t = 0; t < 5; ++t) QueryAt(PrimaryPort(), InsertTxnSql(table_, t, 2));
    EXPECT_EQ(ReadUntilAllKeys({topic_}, IdsAt(PrimaryPort()), absl::Seconds(60)).size(), 10u) << outboxd_->Log();
    const std::string lsn = ScalarAt(PrimaryPort(), "SELECT pg_current_wal_lsn()");
    EXPECT_TRUE(WaitFor([&] { return SyncedOnStandbyPast(lsn); }, absl::Seconds(90)))
        << "the standby never synchronized slot " << slot_ << "\n" << outboxd_->Log();
    CommandResult detached = Pair("detach");
    EXPECT_EQ(detached.code, 0) << detached.output;
    standby_at_ = Lsn::Parse(ScalarAt(StandbyPort(), "SELECT pg_last_wal_replay_lsn()")).value_or(Lsn::Invalid());
    QueryAt(PrimaryPort(), "CREATE TABLE public.past_the_standby AS SELECT repeat('x', 1000) AS v FROM "
                           "generate_series(1, 4000)");
    QueryAt(PrimaryPort(), InsertTxnSql(table_, 5, 1));
    EXPECT_EQ(ReadUntilAllKeys({topic_}, IdsAt(PrimaryPort()), absl::Seconds(60)).size(), 11u) << outboxd_->Log();
    EXPECT_EQ(outboxd_->Stop(SIGTERM), 0) << outboxd_->Log();
    const Lsn checkpoint = CheckpointLsn();
    EXPECT_GT(checkpoint, Lsn(standby_at_.value() + 3'000'000)) << "the checkpoint must be far past the standby";
    return checkpoint;
  }

  // 10 transactions of one row on the standby's port, each below `checkpoint` (what outboxd up to
  // 9d4c84d skipped as already in Kafka); restarts outboxd and expects each once (read_committed).
  void TenRowsBelowTheCheckpointArrive(Lsn checkpoint, const std::string& context,
                                       const std::function<void()>& before_restart = [] {}) {
    for (int t = 100; t < 110; ++t) QueryAt(StandbyPort(), InsertTxnSql(table_, t, 1));
    const std::set<std::string> ten = IdsAt(StandbyPort(), "aggregate_id LIKE 't10_-1'");
    ASSERT_EQ(ten.size(), 10u);
    new_rows_end_ = WalAt(StandbyPort());
    ASSERT_LT(new_rows_end_, checkpoint) << "the new rows must lie below the checkpoint";
    before_restart();
    StartEos();
    ReadUntilAllKeys({topic_}, ten, absl::Seconds(90));
    std::map<std::string, int> copies;
    for (const Record& r : ReadToEnd({topic_}, Isolation::kReadCommitted, absl::Seconds(60))) ++copies[r.key];
    size_t missing = 0, twice = 0, duplicates = 0;
    for (const std::string& id : ten) {
      auto it = copies.find(id);
      missing += it == copies.end() ? 1 : 0;
      twice += it != copies.end() && it->second > 1 ? 1 : 0;
    }
    for (const auto& [id, n] : copies) duplicates += static_cast<size_t>(n - 1);
    std::cout << fmt::format("[ figures ] {}: standby at {}, checkpoint {}, 10 new rows up to {}; missing {}, "
                             "published twice {}; duplicates of the earlier rows {}\n",
                             context, standby_at_.ToString(), checkpoint.ToString(), new_rows_end_.ToString(),
                             missing, twice, duplicates);
    EXPECT_EQ(missing, 0u) << outboxd_->Log();
    EXPECT_EQ(twice, 0u) << outboxd_->Log();
    duplicates_ = duplicates;
    // What an operator reads.
    const std::string log = outboxd_->Log();
    for (const std::string what : {"exactly-once: the checkpoint", "exactly-once: transactional.id"}) {
      for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) {
        std::cout << "[ log ] " << log.substr(at, log.find('\n', at) - at) << "\n";
      }
    }
  }

  std::string checkpoint_topic_, transactional_id_;
  int http_port_ = 0;
  Lsn standby_at_, new_rows_end_;
  size_t duplicates_ = 0;
};

// Promoted to timeline 2 at the standby's position: the checkpoint (timeline 1) is trusted only
// before the switch point, read with TIMELINE_HISTORY. The new timeline's WAL runs past the
// checkpoint before outboxd starts, so only the timeline tells.
TEST_F(ExactlyOnceRewindTest, PromotionOfAStandbyThatFellBehindLosesNothing) {
  const Lsn checkpoint = CommitPastTheStandby();
  ASSERT_EQ(Pair("stop-primary fast").code, 0);
  CommandResult promoted = Pair("promote");
  ASSERT_EQ(promoted.code, 0) << promoted.output;
  TenRowsBelowTheCheckpointArrive(checkpoint, "promotion", [&] {
    QueryAt(StandbyPort(), "CREATE TABLE public.after_the_promotion AS SELECT repeat('x', 1000) AS v FROM "
                           "generate_series(1, 8000)");
    EXPECT_GT(WalAt(StandbyPort()), checkpoint) << "the WAL position alone must not give it away";
  });
  EXPECT_THAT(outboxd_->Log(), HasSubstr("timeline 2"));
  EXPECT_THAT(outboxd_->Log(), HasSubstr("is trusted only before"));
  EXPECT_THAT(outboxd_->Log(), HasSubstr("branched off timeline 1"));
  EXPECT_EQ(Metric(http_port_, "outboxd_checkpoint_bounded_total{reason=\"timeline\"}"), 1) << outboxd_->Log();
  EXPECT_EQ(Metric(http_port_, "outboxd_checkpoint_bounded_total{reason=\"ahead_of_server\"}"), 0);
  // Bounded, not dropped: what both histories share stays skipped.
  EXPECT_EQ(duplicates_, 0u) << outboxd_->Log();
}

// The standby's copy started as a primary on timeline 1, as a restored snapshot would be: the
// checkpoint lies past the server's WAL position (IDENTIFY_SYSTEM xlogpos) and is not trusted.
TEST_F(ExactlyOnceRewindTest, RestoreToAnEarlierPositionLosesNothing) {
  const Lsn checkpoint = CommitPastTheStandby();
  CommandResult restored = Pair("restore");
  ASSERT_EQ(restored.code, 0) << restored.output;
  ASSERT_EQ(ScalarAt(StandbyPort(), "SELECT timeline_id FROM pg_control_checkpoint()"), "1");
  TenRowsBelowTheCheckpointArrive(checkpoint, "restore");
  EXPECT_THAT(outboxd_->Log(), HasSubstr("is not trusted"));
  EXPECT_THAT(outboxd_->Log(), HasSubstr("past the server's WAL position"));
  EXPECT_EQ(Metric(http_port_, "outboxd_checkpoint_bounded_total{reason=\"ahead_of_server\"}"), 1)
      << outboxd_->Log();
}

}  // namespace
}  // namespace outboxd::it
