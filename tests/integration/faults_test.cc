// Faults against the real stack: PostgreSQL restarted and crashed, the
// walsender terminated, the Kafka broker stopped and killed, two instances on
// one slot, and gaps upstream (slot dropped, slot invalidated, another
// cluster) detected through the state file. After each fault every committed
// id arrives, in order within its transaction.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "support/free_port.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"
#include "replication/state_file.h"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;

using ::outboxd::test_support::FreePort;

// GET http://127.0.0.1:port/path: {status, body}; status 0 when nothing answers.
std::pair<int, std::string> HttpGet(int port, const char* path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  auto res = client.Get(path);
  if (!res) return {0, ""};
  return {res->status, res->body};
}

// Every id in `ids` is among the records, and within each transaction the
// first appearance of each event follows the insert order (a re-published
// transaction starts again from its first event, so duplicates are allowed).
void ExpectAllArrivedInOrder(const std::vector<Record>& records, const std::set<std::string>& ids,
                             const std::string& context) {
  std::set<std::string> keys;
  std::map<uint32_t, int> last_first_seq;  // by xid
  for (const Record& r : records) {
    ::outbox::v1::Envelope e;
    ASSERT_TRUE(e.ParseFromString(r.value));
    if (!keys.insert(r.key).second) continue;
    const int seq = std::stoi(e.aggregate_id().substr(e.aggregate_id().find('-') + 1));
    auto [it, fresh] = last_first_seq.try_emplace(e.source().xid(), seq);
    if (!fresh) {
      EXPECT_EQ(seq, it->second + 1) << "out of order in xid " << e.source().xid();
      it->second = seq;
    } else {
      EXPECT_EQ(seq, 1) << "xid " << e.source().xid() << " starts with event " << seq;
    }
  }
  size_t missing = 0;
  for (const std::string& id : ids) missing += keys.contains(id) ? 0 : 1;
  EXPECT_EQ(missing, 0u) << context;
  std::cout << "[ figures ] rows " << ids.size() << ", records " << records.size() << ", duplicates "
            << records.size() - keys.size() << "\n";
}


class FaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "the local stack is not up: run deploy/local/stack.sh up";
    // A broker restarted on a loaded 2-core CI machine may need more than the
    // script's default 120 s to accept an acks=all produce again.
    setenv("OUTBOXD_STACK_TIMEOUT", "300", /*overwrite=*/0);
  }
  void TearDown() override {
    // A fault test may leave a side down when it fails half-way.
    if (!Stack("status")) {
      Stack("start postgres");
      Stack("start kafka");
    }
    for (auto& p : outboxd_) p->Stop(SIGKILL);
    Sql sql;
    if (!source_.table.empty()) DropSource(sql, source_);
    if (!state_dir_.empty()) {
      std::remove(replication::StateFilePath(state_dir_, source_.slot).c_str());
      rmdir(state_dir_.c_str());
    }
  }
  OutboxdProcess& NewOutboxd(std::vector<std::string> args = {}) {
    outboxd_.push_back(std::make_unique<OutboxdProcess>(ConfigFor(source_)));
    outboxd_.back()->set_extra_args(std::move(args));
    return *outboxd_.back();
  }
  OutboxdProcess& StartStreaming(std::vector<std::string> args = {}) {
    OutboxdProcess& p = NewOutboxd(std::move(args));
    p.Start();
    EXPECT_TRUE(p.WaitForLog("streaming slot", absl::Seconds(30))) << p.Log();
    return p;
  }
  std::string Topic() const { return source_.topic_prefix + ".Order"; }
  std::string MakeStateDir() {
    char tmpl[] = "/tmp/outboxd_it_state_XXXXXX";
    EXPECT_NE(mkdtemp(tmpl), nullptr);
    state_dir_ = tmpl;
    return state_dir_;
  }
  std::optional<replication::SavedState> ReadState() {
    auto state = replication::ReadStateFile(replication::StateFilePath(state_dir_, source_.slot));
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : std::nullopt;
  }
  int ActiveWalsender() {
    const std::string pid = Sql().Scalar(fmt::format(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'", source_.slot));
    return pid.empty() ? 0 : std::stoi(pid);
  }
  // Waits for the process to exit by itself; returns its exit code.
  int WaitExit(OutboxdProcess& p, const std::string& last_words) {
    EXPECT_TRUE(p.WaitForLog(last_words, absl::Seconds(30))) << p.Log();
    return p.Stop(SIGTERM);
  }

  Sql sql_;
  TestSource source_;
  std::string state_dir_;
  std::vector<std::unique_ptr<OutboxdProcess>> outboxd_;
};

// ---------------------------------------------------------------------------
// PostgreSQL restart and crash, walsender terminated
// ---------------------------------------------------------------------------

class PostgresDownTest : public FaultsTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(PostgresDownTest, RestartWhileWritersCommitLosesNothing) {
  const std::string mode = GetParam();
  source_ = CreateDefaultSource(sql_, "pgdown");
  OutboxdProcess& outboxd = StartStreaming();
  Writer writer(source_.table, 200);
  ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 50; }, absl::Seconds(60)));
  ASSERT_TRUE(Stack("stop postgres " + mode));
  // outboxd notices, and keeps retrying while the server is down.
  ASSERT_TRUE(outboxd.WaitForLog("(reconnect 2 to postgres)", absl::Seconds(30))) << outboxd.Log();
  ASSERT_TRUE(Stack("start postgres"));
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(60))) << outboxd.Log();
  writer.Join();
  EXPECT_EQ(writer.committed(), 200);
  EXPECT_GT(writer.failures(), 0) << "the writer should have seen the server go away";

  Sql sql;
  const std::set<std::string> ids = Ids(sql, source_.table);
  std::vector<Record> records = ReadUntilAllKeys({Topic()}, ids, absl::Seconds(120));
  ExpectAllArrivedInOrder(records, ids, outboxd.Log());
  const std::string log = outboxd.Log();
  EXPECT_THAT(log, HasSubstr("reconnecting to postgres in"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr("to kafka)"))) << "a PostgreSQL fault is not Kafka's";
}

INSTANTIATE_TEST_SUITE_P(Modes, PostgresDownTest, ::testing::Values("fast", "immediate"),
                         [](const auto& info) { return std::string(info.param); });

TEST_F(FaultsTest, TerminatedWalsenderIsReconnected) {
  source_ = CreateDefaultSource(sql_, "walsender");
  OutboxdProcess& outboxd = StartStreaming();
  Writer writer(source_.table, 150);
  for (int kill = 1; kill <= 3; ++kill) {
    ASSERT_TRUE(WaitFor([&] { return writer.committed() >= kill * 40; }, absl::Seconds(60)));
    int pid = 0;
    ASSERT_TRUE(WaitFor([&] { return (pid = ActiveWalsender()) != 0; }, absl::Seconds(30)));
    EXPECT_EQ(sql_.Scalar(fmt::format("SELECT pg_terminate_backend({})", pid)), "t");
    ASSERT_TRUE(outboxd.WaitForLog(fmt::format("(reconnect {} to postgres)", kill), absl::Seconds(30)))
        << outboxd.Log();
    ASSERT_TRUE(WaitFor([&] { const int now = ActiveWalsender(); return now != 0 && now != pid; },
                        absl::Seconds(30)));
  }
  writer.Join();
  const std::set<std::string> ids = Ids(sql_, source_.table);
  ASSERT_EQ(ids.size(), 594u) << "150 transactions of 1 + t % 7 rows";
  ExpectAllArrivedInOrder(ReadUntilAllKeys({Topic()}, ids, absl::Seconds(120)), ids, outboxd.Log());
}

// ---------------------------------------------------------------------------
// Kafka stopped and killed
// ---------------------------------------------------------------------------

class KafkaDownTest : public FaultsTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(KafkaDownTest, NothingConfirmedKeepalivesAnsweredResumesByItself) {
  const std::string how = GetParam();
  // The walsender drops a client that does not answer within 2 s, and asks for
  // a reply after 1 s of silence. A status update every 1.5 s (above half the
  // timeout: outboxd warns, and refuses only at or above the whole) leaves such
  // requests to be answered as they come, queue full or not.
  ServerSetting timeout("wal_sender_timeout", "2s");
  source_ = CreateDefaultSource(sql_, "kafkadown");
  std::string config = ConfigFor(source_);
  config.replace(config.find("[source]\n"), 9, "[source]\nstatus_interval = \"1500ms\"\n");
  outboxd_.push_back(std::make_unique<OutboxdProcess>(config));
  OutboxdProcess& outboxd = *outboxd_.back();
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(30))) << outboxd.Log();
  sql_.Exec(InsertTxnSql(source_.table, 0, 5));
  const std::vector<Record> first = ReadTopics({Topic()}, 5, absl::Seconds(60));
  ASSERT_EQ(first.size(), 5u) << outboxd.Log();
  ASSERT_TRUE(WaitForConfirmedPast(sql_, source_.slot, LastCommitLsn(first), absl::Seconds(15)));
  const int walsender = ActiveWalsender();
  ASSERT_NE(walsender, 0);

  ASSERT_TRUE(Stack(how == "kill" ? "stop kafka kill" : "stop kafka"));
  for (int t = 1; t <= 20; ++t) sql_.Exec(InsertTxnSql(source_.table, t, 10));
  const Lsn written = sql_.CurrentLsn();
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string sent = sql_.Scalar(
            fmt::format("SELECT sent_lsn FROM pg_stat_replication WHERE pid = {}", walsender));
        return !sent.empty() && *Lsn::Parse(sent) >= written;
      },
      absl::Seconds(30)));
  // Four wal_sender_timeouts with Kafka away: the walsender is still the same
  // (keepalives were answered), and nothing new is confirmed.
  Lsn max_confirmed;
  const absl::Time until = absl::Now() + absl::Seconds(8);
  while (absl::Now() < until) {
    max_confirmed = std::max(max_confirmed, sql_.ConfirmedFlush(source_.slot));
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(ActiveWalsender(), walsender) << "the walsender timed outboxd out\n" << outboxd.Log();
  EXPECT_THAT(outboxd.Log(), ::testing::Not(HasSubstr("to postgres)")));

  ASSERT_TRUE(Stack("start kafka"));
  const std::set<std::string> ids = Ids(sql_, source_.table);
  ASSERT_EQ(ids.size(), 205u);
  std::vector<Record> records = ReadUntilAllKeys({Topic()}, ids, absl::Seconds(180));
  ExpectAllArrivedInOrder(records, ids, outboxd.Log());
  uint64_t first_new_commit = UINT64_MAX, last_commit = 0;
  for (const Record& r : records) {
    ::outbox::v1::Envelope e;
    ASSERT_TRUE(e.ParseFromString(r.value));
    if (e.aggregate_id().starts_with("t0-")) continue;
    first_new_commit = std::min(first_new_commit, e.source().commit_lsn());
    last_commit = std::max(last_commit, e.source().commit_lsn());
  }
  EXPECT_LE(max_confirmed, Lsn(first_new_commit))
      << "the slot was confirmed past a commit whose events Kafka never acknowledged";
  ASSERT_TRUE(WaitFor([&] { return sql_.ConfirmedFlush(source_.slot) > Lsn(last_commit); },
                      absl::Seconds(30)))
      << outboxd.Log();
}

INSTANTIATE_TEST_SUITE_P(Modes, KafkaDownTest, ::testing::Values("term", "kill"),
                         [](const auto& info) { return std::string(info.param); });

// ---------------------------------------------------------------------------
// Two instances, one slot
// ---------------------------------------------------------------------------

TEST_F(FaultsTest, TwoInstancesOneStreamsTheStandbyTakesOverAfterSigkill) {
  source_ = CreateDefaultSource(sql_, "standby");
  sql_.Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", source_.slot));
  OutboxdProcess& a = NewOutboxd();
  OutboxdProcess& b = NewOutboxd();
  a.Start();
  b.Start();
  ASSERT_TRUE(WaitFor([&] { return a.WaitForLog("streaming slot", absl::ZeroDuration()) ||
                                   b.WaitForLog("streaming slot", absl::ZeroDuration()); },
                      absl::Seconds(30)));
  OutboxdProcess& active = a.WaitForLog("streaming slot", absl::ZeroDuration()) ? a : b;
  OutboxdProcess& standby = &active == &a ? b : a;
  ASSERT_TRUE(standby.WaitForLog("standby: ", absl::Seconds(30))) << standby.Log();
  // Several seconds of retries: still exactly one streams, one standby line.
  Writer writer(source_.table, 200);
  ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 60; }, absl::Seconds(60)));
  EXPECT_FALSE(standby.WaitForLog("streaming slot", absl::ZeroDuration())) << standby.Log();
  EXPECT_EQ(Sql().Scalar(fmt::format("SELECT count(*) FROM pg_stat_replication WHERE application_name "
                                     "= 'outboxd' AND pid = (SELECT active_pid FROM pg_replication_slots "
                                     "WHERE slot_name = '{}')",
                                     source_.slot)),
            "1");
  const std::string waiting = standby.Log();
  size_t lines = 0;
  const std::string line = "waiting for the slot to be released";
  for (size_t at = waiting.find(line); at != std::string::npos; at = waiting.find(line, at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << "logged once a minute, not once a retry\n" << waiting;
  EXPECT_THAT(waiting, ::testing::Not(HasSubstr("reconnecting to")));

  EXPECT_EQ(active.Stop(SIGKILL), 128 + SIGKILL);
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(standby.WaitForLog("takes over streaming", absl::Seconds(20))) << standby.Log();
  ASSERT_TRUE(standby.WaitForLog("streaming slot", absl::Seconds(5))) << standby.Log();
  std::cout << "[ figures ] the standby took over " << absl::FormatDuration(absl::Now() - killed)
            << " after SIGKILL of the active instance\n";
  writer.Join();
  const std::set<std::string> ids = Ids(sql_, source_.table);
  ExpectAllArrivedInOrder(ReadUntilAllKeys({Topic()}, ids, absl::Seconds(120)), ids, standby.Log());
}

// ---------------------------------------------------------------------------
// Gaps upstream, through the state file
// ---------------------------------------------------------------------------

// Commits `txns` transactions of 3 rows and waits until Kafka has every one
// of their events (rows committed earlier may be lost to a gap on purpose).
// Returns the newest commit LSN among their records.
Lsn StreamSome(Sql& sql, const TestSource& source, int first_txn, int txns, const std::string& topic,
               OutboxdProcess& outboxd) {
  const std::set<std::string> before = Ids(sql, source.table);
  for (int t = first_txn; t < first_txn + txns; ++t) sql.Exec(InsertTxnSql(source.table, t, 3));
  std::set<std::string> ids;
  for (const std::string& id : Ids(sql, source.table)) {
    if (!before.contains(id)) ids.insert(id);
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(3 * txns));
  std::vector<Record> records = ReadUntilAllKeys({topic}, ids, absl::Seconds(60));
  std::set<std::string> keys;
  for (const Record& r : records) keys.insert(r.key);
  EXPECT_TRUE(std::includes(keys.begin(), keys.end(), ids.begin(), ids.end())) << outboxd.Log();
  return LastCommitLsn(records);
}

TEST_F(FaultsTest, StateFileRecordsTheSlotAndTheLastConfirmedPosition) {
  source_ = CreateDefaultSource(sql_, "state");
  const std::string dir = MakeStateDir();
  OutboxdProcess& outboxd = StartStreaming({"--state-dir", dir});
  std::optional<replication::SavedState> state = ReadState();
  ASSERT_TRUE(state.has_value()) << "written as soon as the session streams";
  EXPECT_EQ(state->system_id, sql_.Scalar("SELECT system_identifier FROM pg_control_system()"));
  EXPECT_EQ(state->slot, source_.slot);
  EXPECT_EQ(state->timeline, std::stoi(sql_.Scalar("SELECT timeline_id FROM pg_control_checkpoint()")));
  const Lsn last_commit = StreamSome(sql_, source_, 0, 5, Topic(), outboxd);
  ASSERT_TRUE(WaitForConfirmedPast(sql_, source_.slot, last_commit, absl::Seconds(15)));
  // Throttled to once a second while streaming.
  ASSERT_TRUE(WaitFor([&] { auto s = ReadState(); return s && s->confirmed_lsn > last_commit; },
                      absl::Seconds(15)));
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
  EXPECT_EQ(ReadState()->confirmed_lsn, sql_.ConfirmedFlush(source_.slot)) << "written at stop";
}

TEST_F(FaultsTest, DroppedSlotIsAGapUntilTheOperatorAcceptsIt) {
  source_ = CreateDefaultSource(sql_, "gapdrop");
  const std::string dir = MakeStateDir();
  OutboxdProcess& first = StartStreaming({"--state-dir", dir});
  StreamSome(sql_, source_, 0, 3, Topic(), first);
  EXPECT_EQ(first.Stop(SIGTERM), 0);
  sql_.Exec(fmt::format("SELECT pg_drop_replication_slot('{}')", source_.slot));
  sql_.Exec(InsertTxnSql(source_.table, 100, 3));  // committed while there is no slot: lost to the stream

  OutboxdProcess& refused = NewOutboxd({"--state-dir", dir});
  refused.Start();
  EXPECT_EQ(WaitExit(refused, "gap upstream"), 1) << refused.Log();
  const std::string log = refused.Log();
  EXPECT_THAT(log, HasSubstr(fmt::format("replication slot \"{}\" does not exist", source_.slot)));
  EXPECT_THAT(log, HasSubstr("Republish them from the outbox table"));
  EXPECT_THAT(log, HasSubstr("--accept-gap"));
  EXPECT_EQ(sql_.ConfirmedFlush(source_.slot), Lsn::Invalid()) << "the slot must not be recreated";

  OutboxdProcess& accepted = StartStreaming({"--state-dir", dir, "--accept-gap"});
  EXPECT_THAT(accepted.Log(), HasSubstr("--accept-gap: created slot"));
  StreamSome(sql_, source_, 200, 3, Topic(), accepted);
  EXPECT_EQ(accepted.Stop(SIGTERM), 0);
  // From now on the new slot is the one on record: a plain restart streams.
  StartStreaming({"--state-dir", dir});
}

TEST_F(FaultsTest, AnotherSystemIdentifierIsAPossibleGap) {
  source_ = CreateDefaultSource(sql_, "gapsys");
  const std::string dir = MakeStateDir();
  OutboxdProcess& first = StartStreaming({"--state-dir", dir});
  EXPECT_EQ(first.Stop(SIGTERM), 0);
  replication::SavedState state = *ReadState();
  const std::string real_system = state.system_id;
  state.system_id = "1234567890123456789";  // as if the cluster had been restored from elsewhere
  ASSERT_TRUE(replication::WriteStateFile(replication::StateFilePath(dir, source_.slot), state).ok());

  OutboxdProcess& refused = NewOutboxd({"--state-dir", dir});
  refused.Start();
  EXPECT_EQ(WaitExit(refused, "gap upstream"), 1) << refused.Log();
  EXPECT_THAT(refused.Log(), HasSubstr("from system 1234567890123456789"));
  EXPECT_THAT(refused.Log(), HasSubstr("another cluster"));

  OutboxdProcess& accepted = StartStreaming({"--state-dir", dir, "--accept-gap"});
  EXPECT_EQ(ReadState()->system_id, real_system);
  StreamSome(sql_, source_, 0, 2, Topic(), accepted);
}

TEST_F(FaultsTest, InvalidatedSlotStopsWithAMetricAndIsRecreatedOnlyOnRequest) {
  source_ = CreateDefaultSource(sql_, "gaplost");
  const std::string dir = MakeStateDir();
  const std::string scratch = UniqueName("wal_filler");
  sql_.Exec(fmt::format("CREATE TABLE public.{} (body text)", scratch));
  {
    OutboxdProcess& first = StartStreaming({"--state-dir", dir});
    StreamSome(sql_, source_, 0, 2, Topic(), first);
    EXPECT_EQ(first.Stop(SIGTERM), 0);

    // Invalidate the slot for real: keep no WAL for slots, move to new
    // segments, and let a checkpoint remove what the slot needed.
    ServerSetting keep("max_slot_wal_keep_size", "1MB");
    for (int i = 0; i < 3 && sql_.Scalar(fmt::format(
                                 "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
                                 source_.slot)) != "lost";
         ++i) {
      sql_.Exec(fmt::format("INSERT INTO public.{} SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
                            scratch));
      sql_.Exec("SELECT pg_switch_wal()");
      sql_.Exec("SELECT pg_switch_wal()");
      sql_.Exec("CHECKPOINT");
    }
    ASSERT_EQ(sql_.Scalar(fmt::format("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
                                      source_.slot)),
              "lost");
  }  // max_slot_wal_keep_size restored
  sql_.Exec(fmt::format("DROP TABLE public.{}", scratch));

  // With the HTTP endpoint on: outboxd keeps serving /metrics before it exits,
  // so Prometheus sees outboxd_slot_invalidated 1 (alert OutboxdSlotInvalidated).
  const int port = FreePort();
  std::string config = ConfigFor(source_);
  const std::string off = "listen = \"off\"";
  ASSERT_NE(config.find(off), std::string::npos) << "ConfigFor no longer turns the endpoint off";
  config.replace(config.find(off), off.size(), fmt::format("listen = \"127.0.0.1:{}\"", port));
  outboxd_.push_back(std::make_unique<OutboxdProcess>(config));
  OutboxdProcess& refused = *outboxd_.back();
  refused.set_extra_args({"--state-dir", dir});
  refused.Start();
  ASSERT_TRUE(refused.WaitForLog("before exiting", absl::Seconds(30))) << refused.Log();
  const auto [metrics_status, scrape] = HttpGet(port, "/metrics");
  EXPECT_EQ(metrics_status, 200);
  EXPECT_THAT(scrape, HasSubstr("\n" + StreamSeries("outboxd_slot_invalidated", source_.slot) + " 1\n"));
  const auto [ready_status, ready_body] = HttpGet(port, "/readyz");
  EXPECT_EQ(ready_status, 503);
  EXPECT_THAT(ready_body, HasSubstr("invalidated"));
  // SIGTERM ends the wait at once, and the exit status stays 1.
  EXPECT_EQ(refused.Stop(SIGTERM, absl::Seconds(10)), 1) << refused.Log();
  EXPECT_THAT(refused.Log(), HasSubstr("gap upstream"));
  EXPECT_THAT(refused.Log(), HasSubstr("was invalidated by PostgreSQL (wal_status lost"));
  EXPECT_THAT(refused.Log(), HasSubstr("--accept-gap"));
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
                                    source_.slot)),
            "lost")
      << "never dropped without the operator";

  OutboxdProcess& accepted = StartStreaming({"--state-dir", dir, "--accept-gap"});
  EXPECT_THAT(accepted.Log(), HasSubstr("dropped the invalidated slot"));
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
                                    source_.slot)),
            "reserved");
  StreamSome(sql_, source_, 100, 2, Topic(), accepted);
}

TEST_F(FaultsTest, UnusableStateDirectoryIsAConfigurationError) {
  source_ = CreateDefaultSource(sql_, "statedir");
  OutboxdProcess& p = NewOutboxd({"--state-dir", "/proc/outboxd-cannot-be-here"});
  p.Start();
  EXPECT_EQ(WaitExit(p, "state directory"), 2) << p.Log();
  EXPECT_THAT(p.Log(), HasSubstr("cannot create the state directory /proc/outboxd-cannot-be-here"));
}

}  // namespace
}  // namespace outboxd::it
