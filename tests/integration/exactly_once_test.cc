// Exactly-once mode ([sink] delivery = "exactly_once", issue 13) against the
// real stack: every case reads the event topic back with
// isolation.level=read_committed and expects each committed outbox row exactly
// once (none missing, none twice, nothing else) after a clean run, SIGKILLs
// (one between the Kafka commit and the slot confirmation, by the
// OUTBOXD_FAILPOINT test hook), a broker kill, a PostgreSQL crash, a
// transaction that outgrows transaction.timeout.ms, a fencing producer and a
// graceful stop. Each case has its own transactional_id and checkpoint topic.
#include <httplib.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "nlohmann/json.hpp"
#include "outbox/v1/envelope.pb.h"
#include "support/free_port.h"

namespace outboxd::it {
namespace {

using ::outboxd::test_support::FreePort;
using ::testing::HasSubstr;
using ::testing::Not;

// ---------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------

struct Tally {
  size_t records = 0;
  size_t missing = 0;     // ids of the table never read
  size_t duplicated = 0;  // records beyond the first of their id
  size_t unknown = 0;     // records whose key is no id of the table
  size_t order = 0;       // events out of insert order within their transaction
  uint64_t max_commit_lsn = 0;
};

// Counts `records` (offset order within each topic) against `ids`. Records of
// `event_topic` are envelopes and checked for order too; those of other topics
// (dead letters) are counted by key only.
Tally Count(const std::vector<Record>& records, const std::set<std::string>& ids,
            const std::string& event_topic) {
  Tally t;
  t.records = records.size();
  std::map<std::string, int> copies;
  std::map<uint32_t, int> last_seq;  // by xid
  for (const Record& r : records) {
    if (!ids.contains(r.key)) {
      ++t.unknown;
      continue;
    }
    if (++copies[r.key] > 1) ++t.duplicated;
    if (r.topic != event_topic) continue;
    const ::outbox::v1::Envelope e = Decode(r);
    t.max_commit_lsn = std::max(t.max_commit_lsn, e.source().commit_lsn());
    const int seq = std::stoi(e.aggregate_id().substr(e.aggregate_id().find('-') + 1));
    auto [it, fresh] = last_seq.try_emplace(e.source().xid(), seq);
    if ((fresh && seq != 1) || (!fresh && seq != it->second + 1)) ++t.order;
    it->second = seq;
  }
  for (const std::string& id : ids) t.missing += copies.contains(id) ? 0 : 1;
  return t;
}

// The skip line of the session log `log`: "exactly-once: skipped N event(s)
// in M transaction(s) already committed to Kafka (checkpoint LSN X)", summed
// over every session in `log`; {-1, -1} when no session logged one.
std::pair<int64_t, int64_t> Skipped(const std::string& log) {
  const std::string line = "exactly-once: skipped ";
  int64_t events = -1, txns = -1;
  for (size_t at = log.find(line); at != std::string::npos; at = log.find(line, at + 1)) {
    long long n = 0, m = 0;
    if (std::sscanf(log.c_str() + at + line.size(), "%lld event(s) in %lld transaction", &n, &m) == 2) {
      events = std::max<int64_t>(events, 0) + n;
      txns = std::max<int64_t>(txns, 0) + m;
    }
  }
  return {events, txns};
}

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The value of the sample `series` (name with labels, exactly as rendered) on
// 127.0.0.1:`port`/metrics; `fallback` when absent or nothing answers.
double Metric(int port, const std::string& series, double fallback = 0) {
  return ScrapeSample(port, series, fallback);
}

constexpr char kCommittedTransactions[] = "outboxd_kafka_transactions_total{result=\"committed\"}";

// Waits until `writer` has committed `txns` transactions and the outboxd
// process serving metrics on `port` has committed a Kafka transaction.
bool WaitForWritesAndAKafkaCommit(const Writer& writer, int txns, int port, absl::Duration timeout) {
  return WaitFor([&] { return writer.committed() >= txns && Metric(port, kCommittedTransactions) >= 1; },
                 timeout);
}

struct Checkpoint {
  int64_t offset = 0;
  nlohmann::json value;
  Lsn lsn;
};

class ExactlyOnceEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "the local stack is not up: run deploy/local/stack.sh up";
    // A broker restarted on a loaded 2-core CI machine may need more than the
    // script's default 120 s to accept an acks=all produce again.
    setenv("OUTBOXD_STACK_TIMEOUT", "300", /*overwrite=*/0);
    transactional_id_ = UniqueName("it_eos_txid");
    checkpoint_topic_ = UniqueName("it.eos.checkpoints");
    system_id_ = sql_.Scalar("SELECT system_identifier FROM pg_control_system()");
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
  }

  // ConfigFor's config in exactly-once mode: `sink` lines go to [sink] (after
  // delivery, transactional_id and checkpoint_topic), `kafka` lines to
  // [sink.kafka]; `http_port` > 0 turns the endpoint on.
  std::string EosConfig(const std::string& sink = "", const std::string& kafka = "",
                        int http_port = 0) const {
    std::string config = ConfigFor(source_);
    const std::string kafka_table = "[sink.kafka]\n";
    const size_t at = config.find(kafka_table);
    EXPECT_NE(at, std::string::npos) << "ConfigFor has no [sink.kafka]";
    const size_t line_end = config.find('\n', at + kafka_table.size());
    config.insert(line_end + 1, kafka);
    config.insert(at, fmt::format("[sink]\ndelivery = \"exactly_once\"\ntransactional_id = \"{}\"\n"
                                  "checkpoint_topic = \"{}\"\n{}\n",
                                  transactional_id_, checkpoint_topic_, sink));
    if (http_port > 0) {
      const std::string off = "listen = \"off\"";
      EXPECT_NE(config.find(off), std::string::npos) << "ConfigFor no longer turns the endpoint off";
      config.replace(config.find(off), off.size(), fmt::format("listen = \"127.0.0.1:{}\"", http_port));
    }
    return config;
  }
  OutboxdProcess& NewOutboxd(const std::string& config, std::map<std::string, std::string> env = {}) {
    outboxd_.push_back(std::make_unique<OutboxdProcess>(config));
    outboxd_.back()->set_env(std::move(env));
    return *outboxd_.back();
  }
  OutboxdProcess& StartStreaming(const std::string& config, std::map<std::string, std::string> env = {}) {
    OutboxdProcess& p = NewOutboxd(config, std::move(env));
    p.Start();
    EXPECT_TRUE(p.WaitForLog("streaming slot", absl::Seconds(60))) << p.Log();
    return p;
  }
  std::string Topic() const { return source_.topic_prefix + ".Order"; }
  std::string CheckpointKey() const { return system_id_ + "/" + source_.slot; }

  // Every checkpoint of this test's slot, read_committed, in offset order.
  std::vector<Checkpoint> Checkpoints() {
    std::vector<Checkpoint> out;
    for (const Record& r : ReadToEnd({checkpoint_topic_}, Isolation::kReadCommitted, absl::Seconds(60))) {
      if (r.key != CheckpointKey()) continue;
      Checkpoint c;
      c.offset = r.offset;
      c.value = nlohmann::json::parse(r.value, nullptr, /*allow_exceptions=*/false);
      EXPECT_TRUE(c.value.is_object()) << "checkpoint at offset " << r.offset << ": " << r.value;
      if (c.value.is_object() && c.value.contains("lsn") && c.value["lsn"].is_string()) {
        auto lsn = Lsn::Parse(c.value["lsn"].get<std::string>());
        EXPECT_TRUE(lsn.ok()) << r.value;
        if (lsn.ok()) c.lsn = *lsn;
      } else {
        ADD_FAILURE() << "checkpoint without an lsn: " << r.value;
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  // Waits until every id of the table arrived (read_committed) and the slot
  // confirmed the newest checkpoint (so no Kafka transaction of this run is
  // still to come), then reads the topic to its end and expects every id
  // exactly once, in order within each transaction.
  // `also`: more topics the ids may go to (dead letters).
  Tally ExpectExactlyOnce(const std::string& context, absl::Duration timeout = absl::Seconds(180),
                          const std::vector<std::string>& also = {}) {
    Sql sql;
    const std::set<std::string> ids = Ids(sql, source_.table);
    EXPECT_FALSE(ids.empty());
    std::vector<std::string> topics = {Topic()};
    topics.insert(topics.end(), also.begin(), also.end());
    ReadUntilAllKeys(topics, ids, timeout, Isolation::kReadCommitted);
    const std::vector<Checkpoint> checkpoints = Checkpoints();
    if (!checkpoints.empty()) {
      const Lsn newest = checkpoints.back().lsn;
      EXPECT_TRUE(WaitFor([&] { return sql.ConfirmedFlush(source_.slot) >= newest; }, absl::Seconds(30)))
          << "the slot never confirmed the newest checkpoint " << newest << "; at "
          << sql.ConfirmedFlush(source_.slot);
    }
    const Tally t = Count(ReadToEnd(topics, Isolation::kReadCommitted, absl::Seconds(120)), ids, Topic());
    EXPECT_EQ(t.missing, 0u) << context;
    EXPECT_EQ(t.duplicated, 0u) << context;
    EXPECT_EQ(t.unknown, 0u) << "records that are no row of the table\n" << context;
    EXPECT_EQ(t.order, 0u) << "events out of order within their transaction\n" << context;
    std::cout << "[ figures ] rows " << ids.size() << ", read_committed records " << t.records
              << ", missing " << t.missing << ", duplicated " << t.duplicated << ", checkpoints "
              << checkpoints.size() << "\n";
    return t;
  }

  Sql sql_;
  TestSource source_;
  std::string transactional_id_;
  std::string checkpoint_topic_;
  std::string system_id_;
  std::vector<std::unique_ptr<OutboxdProcess>> outboxd_;
};

// ---------------------------------------------------------------------------
// The reader itself
// ---------------------------------------------------------------------------

// What every case relies on: read_committed hides an aborted transaction's
// records that read_uncommitted shows, and ReadToEnd gets past the
// transaction markers at the end of a partition.
TEST_F(ExactlyOnceEndToEndTest, ReadCommittedHidesAbortedRecords) {
  const std::string topic = UniqueName("it.eos.reader");
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr),
            RD_KAFKA_CONF_OK);
  ASSERT_EQ(rd_kafka_conf_set(conf, "transactional.id", transactional_id_.c_str(), errstr, sizeof errstr),
            RD_KAFKA_CONF_OK);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  ASSERT_NE(rk, nullptr) << errstr;
  struct Destroy {
    rd_kafka_t* rk;
    ~Destroy() { rd_kafka_destroy(rk); }
  } destroy{rk};
  auto ok = [](rd_kafka_error_t* error) {
    const std::string text = error ? rd_kafka_error_string(error) : "";
    if (error) rd_kafka_error_destroy(error);
    return text;
  };
  ASSERT_EQ(ok(rd_kafka_init_transactions(rk, 60000)), "");
  auto produce = [&](std::string key) {
    ASSERT_EQ(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()),
                                RD_KAFKA_V_KEY(key.data(), key.size()),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  };
  ASSERT_EQ(ok(rd_kafka_begin_transaction(rk)), "");
  for (const char* key : {"c1", "c2", "c3"}) produce(key);
  ASSERT_EQ(ok(rd_kafka_commit_transaction(rk, 60000)), "");
  ASSERT_EQ(ok(rd_kafka_begin_transaction(rk)), "");
  for (const char* key : {"a1", "a2"}) produce(key);
  ASSERT_EQ(rd_kafka_flush(rk, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(ok(rd_kafka_abort_transaction(rk, 60000)), "");
  ASSERT_EQ(ok(rd_kafka_begin_transaction(rk)), "");
  produce("c4");
  ASSERT_EQ(ok(rd_kafka_commit_transaction(rk, 60000)), "");

  std::vector<std::string> committed, uncommitted;
  for (const Record& r : ReadToEnd({topic}, Isolation::kReadCommitted, absl::Seconds(60))) {
    committed.push_back(r.key);
  }
  for (const Record& r : ReadToEnd({topic}, Isolation::kReadUncommitted, absl::Seconds(60))) {
    uncommitted.push_back(r.key);
  }
  EXPECT_THAT(committed, ::testing::ElementsAre("c1", "c2", "c3", "c4"));
  EXPECT_THAT(uncommitted, ::testing::ElementsAre("c1", "c2", "c3", "a1", "a2", "c4"));
  EXPECT_EQ(ReadUntilAllKeys({topic}, {"c1", "c4"}, absl::Seconds(60), Isolation::kReadCommitted).size(), 4u);
}

// ---------------------------------------------------------------------------
// No fault
// ---------------------------------------------------------------------------

// Transactions of mixed sizes: each event once, and a checkpoint per Kafka
// commit, keyed <system_id>/<slot>, the newest past the last commit; the slot
// confirmed up to it; nothing aborted.
TEST_F(ExactlyOnceEndToEndTest, EveryEventOnceWithACheckpointPerKafkaTransaction) {
  source_ = CreateDefaultSource(sql_, "eosplain");
  const int port = FreePort();
  OutboxdProcess& outboxd = StartStreaming(EosConfig("", "", port));
  int events = 0;
  for (int t = 0; t < 300; ++t) {
    const int rows = t % 50 == 49 ? 500 : 1 + t % 10;
    sql_.Exec(InsertTxnSql(source_.table, t, rows));
    events += rows;
  }
  const Lsn written = sql_.CurrentLsn();
  const Tally tally = ExpectExactlyOnce(outboxd.Log());
  EXPECT_EQ(tally.records, static_cast<size_t>(events));

  const std::vector<Checkpoint> checkpoints = Checkpoints();
  ASSERT_FALSE(checkpoints.empty()) << "no checkpoint keyed " << CheckpointKey() << " on "
                                    << checkpoint_topic_ << "\n" << outboxd.Log();
  const std::string timeline = sql_.Scalar("SELECT timeline_id FROM pg_control_checkpoint()");
  Lsn previous;
  for (const Checkpoint& c : checkpoints) {
    EXPECT_EQ(c.value.value("system_id", ""), system_id_) << c.value.dump();
    EXPECT_EQ(c.value.value("slot", ""), source_.slot) << c.value.dump();
    EXPECT_EQ(c.value.value("transactional_id", ""), transactional_id_) << c.value.dump();
    EXPECT_EQ(std::to_string(c.value.value("timeline", -1)), timeline) << c.value.dump();
    EXPECT_FALSE(c.value.contains("partial")) << "no transaction here outgrows a Kafka transaction";
    EXPECT_GE(c.lsn, previous) << "checkpoints go forward";
    previous = c.lsn;
  }
  const Lsn newest = checkpoints.back().lsn;
  // The commit end LSN of the last transaction: past its commit record's start.
  EXPECT_GT(newest, Lsn(tally.max_commit_lsn)) << "the checkpoint does not cover the last commit";
  EXPECT_LE(newest, written);
  EXPECT_TRUE(WaitFor([&] { return sql_.ConfirmedFlush(source_.slot) >= newest; }, absl::Seconds(15)));

  // One checkpoint per committed Kafka transaction; whole PostgreSQL
  // transactions in each, so no more Kafka transactions than PostgreSQL ones.
  const double committed = Metric(port, kCommittedTransactions, -1);
  EXPECT_EQ(committed, static_cast<double>(checkpoints.size()));
  EXPECT_LE(checkpoints.size(), 300u);
  EXPECT_EQ(Metric(port, "outboxd_kafka_transactions_total{result=\"aborted\"}"), 0);
  EXPECT_EQ(Metric(port, "outboxd_events_skipped_total"), 0);
  EXPECT_EQ(Metric(port, "outboxd_transactions_split_total"), 0);
  // Nothing aborted is in the log either: read_uncommitted sees what read_committed does.
  EXPECT_EQ(ReadToEnd({Topic()}, Isolation::kReadUncommitted, absl::Seconds(60)).size(), tally.records);
  std::cout << "[ figures ] " << events << " events in 300 PostgreSQL transactions, "
            << checkpoints.size() << " Kafka transactions\n";
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
}

// At a low rate a Kafka transaction commits as soon as outboxd has caught up
// with the server (one commit round trip), and under a steady stream at least
// every transaction_interval; the slot, confirmed only after the Kafka commit,
// then passes the last commit. Only this test's table is in the slot's
// publication, so each committed Kafka transaction is one of its own.
TEST_F(ExactlyOnceEndToEndTest, KafkaTransactionsCommitWhenCaughtUpAndAtTheInterval) {
  source_ = CreateDefaultSource(sql_, "eoslatency");
  const int port = FreePort();
  OutboxdProcess& outboxd = StartStreaming(EosConfig("", "", port));
  // The first transaction waits for the topic to be created.
  sql_.Exec(InsertTxnSql(source_.table, 1000, 1));
  ASSERT_TRUE(WaitFor([&] { return Metric(port, kCommittedTransactions) >= 1; }, absl::Seconds(60)))
      << outboxd.Log();
  const double warm_up = Metric(port, kCommittedTransactions);
  std::vector<absl::Duration> waits;
  for (int t = 0; t < 10; ++t) {
    sql_.Exec(InsertTxnSql(source_.table, t, 1));
    const absl::Time start = absl::Now();
    EXPECT_TRUE(WaitFor([&] { return Metric(port, kCommittedTransactions) >= warm_up + t + 1; },
                        absl::Seconds(10), absl::Milliseconds(5)));
    waits.push_back(absl::Now() - start);
  }
  std::sort(waits.begin(), waits.end());
  EXPECT_LT(waits.back(), absl::Seconds(1)) << outboxd.Log();
  const double at_low_rate = Metric(port, kCommittedTransactions);
  EXPECT_EQ(at_low_rate - warm_up, 10) << "one Kafka transaction per PostgreSQL transaction at a low rate";
  // Every event once, and the slot passes the newest checkpoint (the last commit).
  ExpectExactlyOnce(outboxd.Log());

  // A steady stream for about 3 s (300 transactions 10 ms apart): at the
  // default 100ms interval, at least a Kafka commit per 500 ms.
  const absl::Time start = absl::Now();
  {
    Writer writer(source_.table, 300, 100);
    writer.Join();
  }
  const absl::Duration took = absl::Now() - start;
  ExpectExactlyOnce(outboxd.Log());
  const double in_stream = Metric(port, kCommittedTransactions) - at_low_rate;
  EXPECT_GE(in_stream, absl::ToDoubleSeconds(took) / 0.5) << outboxd.Log();
  std::cout << "[ figures ] low rate: Kafka commit " << waits.front() << " .. " << waits.back()
            << " after the PostgreSQL commit; steady stream of 300 transactions in " << took << ": "
            << in_stream << " Kafka transactions\n";
}

// ---------------------------------------------------------------------------
// outboxd killed
// ---------------------------------------------------------------------------

// SIGKILL right after the 3rd Kafka commit returned, before its position is
// confirmed: PostgreSQL re-sends those transactions, and the restart skips
// exactly the events the checkpoint covers beyond the slot's position.
TEST_F(ExactlyOnceEndToEndTest, KilledBetweenKafkaCommitAndSlotConfirmationSkipsOnRestart) {
  source_ = CreateDefaultSource(sql_, "eoskill");
  OutboxdProcess& doomed = StartStreaming(EosConfig(), {{"OUTBOXD_FAILPOINT", "kill_after_kafka_commit:3"}});
  // One at a time, each read back, so that each is a Kafka transaction of its own.
  int t = 0;
  std::optional<int> code;
  for (; t < 20 && !code; ++t) {
    sql_.Exec(InsertTxnSql(source_.table, t, 5));
    code = doomed.WaitExit(absl::Milliseconds(500));
  }
  if (!code) code = doomed.WaitExit(absl::Seconds(30));
  ASSERT_EQ(code, 128 + SIGKILL) << "the failpoint did not kill outboxd\n" << doomed.Log();
  // Once its walsender is gone, the slot holds every status update outboxd sent.
  ASSERT_TRUE(WaitFor(
      [&] {
        return sql_.Scalar(fmt::format(
                   "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
                   source_.slot)) == "0";
      },
      absl::Seconds(30)));
  const Lsn confirmed = sql_.ConfirmedFlush(source_.slot);
  const std::vector<Checkpoint> at_death = Checkpoints();
  ASSERT_FALSE(at_death.empty()) << doomed.Log();
  EXPECT_GT(at_death.back().lsn, confirmed)
      << "the last Kafka commit should be ahead of the slot when the failpoint fires";
  // What Kafka has that PostgreSQL will send again: committed at or after the
  // slot's position.
  std::set<std::string> all = Ids(sql_, source_.table);
  int64_t resent = 0;
  for (const Record& r : ReadToEnd({Topic()}, Isolation::kReadCommitted, absl::Seconds(60))) {
    if (Lsn(Decode(r).source().commit_lsn()) >= confirmed) ++resent;
  }
  ASSERT_GT(resent, 0);
  for (int more = 0; more < 10; ++more) sql_.Exec(InsertTxnSql(source_.table, 100 + more, 3));

  const int port = FreePort();
  OutboxdProcess& restarted = StartStreaming(EosConfig("", "", port));
  ExpectExactlyOnce(doomed.Log() + restarted.Log());
  ASSERT_TRUE(restarted.WaitForLog("exactly-once: skipped", absl::Seconds(10))) << restarted.Log();
  const auto [events, txns] = Skipped(restarted.Log());
  EXPECT_EQ(events, resent) << restarted.Log();
  EXPECT_GE(txns, 1);
  EXPECT_THAT(restarted.Log(), HasSubstr(fmt::format("(checkpoint LSN {})", at_death.back().lsn.ToString())));
  EXPECT_EQ(Metric(port, "outboxd_events_skipped_total"), static_cast<double>(resent));
  std::cout << "[ figures ] killed after Kafka commit 3 with the slot at " << confirmed
            << ", checkpoint at " << at_death.back().lsn << "; the restart skipped " << events
            << " event(s) in " << txns << " transaction(s)\n";
}

// The partition outboxd up to 9d4c84d kept a key's checkpoints in, whatever
// the topic held: FNV-1a of the key modulo the partition count of the day.
int32_t HashPartition(const std::string& key, int32_t partitions) {
  uint32_t h = 2166136261u;
  for (unsigned char c : key) {
    h ^= c;
    h *= 16777619u;
  }
  return static_cast<int32_t>(h % static_cast<uint32_t>(partitions));
}

// Gives `topic` `total` partitions (the Admin API's CreatePartitions) and
// waits until the broker's metadata shows them; "" on success, else why not.
std::string AddPartitions(const std::string& topic, int total) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (rk == nullptr) return errstr;
  rd_kafka_NewPartitions_t* np = rd_kafka_NewPartitions_new(topic.c_str(), total, errstr, sizeof errstr);
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATEPARTITIONS);
  rd_kafka_AdminOptions_set_operation_timeout(options, 30000, errstr, sizeof errstr);
  rd_kafka_CreatePartitions(rk, &np, 1, options, queue);
  std::string error = "no answer from the broker within 90 s";
  if (rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 90000); event != nullptr) {
    size_t n = 0;
    const rd_kafka_topic_result_t** topics =
        rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(event), &n);
    if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      error = rd_kafka_event_error_string(event);
    } else if (n != 1 || rd_kafka_topic_result_error(topics[0]) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      error = n == 1 ? rd_kafka_topic_result_error_string(topics[0]) : "no result for the topic";
    } else {
      error.clear();
    }
    rd_kafka_event_destroy(event);
  }
  rd_kafka_AdminOptions_destroy(options);
  rd_kafka_NewPartitions_destroy(np);
  rd_kafka_queue_destroy(queue);
  if (error.empty()) {
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    const bool shown = WaitFor(
        [&] {
          const rd_kafka_metadata_t* metadata = nullptr;
          if (rd_kafka_metadata(rk, 0, rkt, &metadata, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
          const bool all = metadata->topic_cnt == 1 && metadata->topics[0].partition_cnt == total;
          rd_kafka_metadata_destroy(metadata);
          return all;
        },
        absl::Seconds(60), absl::Milliseconds(200));
    if (!shown) error = fmt::format("the metadata never showed {} partitions", total);
    rd_kafka_topic_destroy(rkt);
  }
  rd_kafka_destroy(rk);
  return error;
}

// Produces one record (acks=all, not transactional) to `topic` / `partition`;
// "" on success, else why not.
std::string ProduceTo(const std::string& topic, int32_t partition, const std::string& key, const std::string& value) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (rk == nullptr) return errstr;
  rd_kafka_resp_err_t err = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
      RD_KAFKA_V_KEY(key.data(), key.size()), RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = rd_kafka_flush(rk, 30000);
  rd_kafka_destroy(rk);
  return err == RD_KAFKA_RESP_ERR_NO_ERROR ? "" : rd_kafka_err2str(err);
}

// Partitions added to the checkpoint topic (issue 20, defect 8) while the
// checkpoint is ahead of the slot: the restart finds the checkpoint where it
// is and skips what Kafka holds, and the key's next checkpoints stay there.
// outboxd up to 9d4c84d looked only in HashPartition of the new count, found
// nothing, and published those events again.
TEST_F(ExactlyOnceEndToEndTest, CheckpointTopicGivenMorePartitionsStillSkips) {
  source_ = CreateDefaultSource(sql_, "eosparts");
  OutboxdProcess& doomed = StartStreaming(EosConfig(), {{"OUTBOXD_FAILPOINT", "kill_after_kafka_commit:3"}});
  std::optional<int> code;
  for (int t = 0; t < 20 && !code; ++t) {
    sql_.Exec(InsertTxnSql(source_.table, t, 5));
    code = doomed.WaitExit(absl::Milliseconds(500));
  }
  if (!code) code = doomed.WaitExit(absl::Seconds(30));
  ASSERT_EQ(code, 128 + SIGKILL) << "the failpoint did not kill outboxd\n" << doomed.Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return sql_.Scalar(fmt::format(
                   "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
                   source_.slot)) == "0";
      },
      absl::Seconds(30)));
  const Lsn confirmed = sql_.ConfirmedFlush(source_.slot);
  const std::vector<Checkpoint> at_death = Checkpoints();
  ASSERT_FALSE(at_death.empty()) << doomed.Log();
  ASSERT_GT(at_death.back().lsn, confirmed) << "the checkpoint must be ahead of the slot for the restart to skip";
  int64_t resent = 0;
  for (const Record& r : ReadToEnd({Topic()}, Isolation::kReadCommitted, absl::Seconds(60))) {
    if (Lsn(Decode(r).source().commit_lsn()) >= confirmed) ++resent;
  }
  ASSERT_GT(resent, 0);

  // outboxd made the topic with one partition; grow it so that the key's hash
  // points elsewhere.
  int partitions = 2;
  while (HashPartition(CheckpointKey(), partitions) == 0) ++partitions;
  ASSERT_EQ(AddPartitions(checkpoint_topic_, partitions), "");
  for (int more = 0; more < 10; ++more) sql_.Exec(InsertTxnSql(source_.table, 100 + more, 3));

  const int port = FreePort();
  OutboxdProcess& restarted = StartStreaming(EosConfig("", "", port));
  ExpectExactlyOnce(doomed.Log() + restarted.Log());
  EXPECT_THAT(restarted.Log(), HasSubstr(fmt::format("checkpoint topic {} partition 0:", checkpoint_topic_)));
  ASSERT_TRUE(restarted.WaitForLog("exactly-once: skipped", absl::Seconds(10))) << restarted.Log();
  EXPECT_EQ(Skipped(restarted.Log()).first, resent) << restarted.Log();
  size_t elsewhere = 0, kept = 0;
  for (const Record& r : ReadToEnd({checkpoint_topic_}, Isolation::kReadCommitted, absl::Seconds(60))) {
    if (r.key != CheckpointKey()) continue;
    (r.partition == 0 ? kept : elsewhere) += 1;
  }
  EXPECT_EQ(elsewhere, 0u) << "the key's checkpoints moved to another partition";
  EXPECT_GT(kept, at_death.size()) << "the restart committed checkpoints of its own";

  // A newer record of the key in another partition (what an older outboxd started after the
  // partitions were added would have written there): the newest wins wherever it is, the key's
  // checkpoints go on there, and the start names the partition holding older ones.
  ASSERT_EQ(restarted.Stop(SIGTERM), 0) << restarted.Log();
  const std::vector<Checkpoint> at_stop = Checkpoints();
  ASSERT_FALSE(at_stop.empty());
  ASSERT_EQ(ProduceTo(checkpoint_topic_, 1, CheckpointKey(), at_stop.back().value.dump()), "");
  restarted.Start();
  ASSERT_TRUE(restarted.WaitForLog(fmt::format("checkpoint topic {} partition 1: transactions committed before "
                                               "LSN {} are in Kafka",
                                               checkpoint_topic_, at_stop.back().lsn.ToString()),
                                   absl::Seconds(60)))
      << restarted.Log();
  EXPECT_THAT(restarted.Log(), HasSubstr(fmt::format("holds older records of key \"{}\" in partition(s) 0 "
                                                     "besides partition 1",
                                                     CheckpointKey())));
  sql_.Exec(InsertTxnSql(source_.table, 200, 3));
  ExpectExactlyOnce(restarted.Log());
  size_t later = 0;
  for (const Record& r : ReadToEnd({checkpoint_topic_}, Isolation::kReadCommitted, absl::Seconds(60))) {
    later += r.key == CheckpointKey() && r.partition == 1 ? 1 : 0;
  }
  EXPECT_GT(later, 1u) << "the next checkpoints did not follow the newest record to partition 1";
  std::cout << "[ figures ] checkpoint topic grown to " << partitions << " partitions (the key's hash points to "
            << HashPartition(CheckpointKey(), partitions) << "); the restart skipped " << Skipped(restarted.Log()).first
            << " of " << resent << " event(s) Kafka held past the slot\n";
}

// Five SIGKILLs at random moments while a writer commits.
TEST_F(ExactlyOnceEndToEndTest, RepeatedSigkillMidStreamExactlyOnce) {
  source_ = CreateDefaultSource(sql_, "eoskills");
  const int port = FreePort();
  OutboxdProcess& outboxd = StartStreaming(EosConfig("", "", port));
  {
    Writer writer(source_.table, 300);
    for (int kill = 1; kill <= 5; ++kill) {
      // Each session commits to Kafka before it dies.
      ASSERT_TRUE(WaitForWritesAndAKafkaCommit(writer, kill * 50, port, absl::Seconds(90))) << outboxd.Log();
      EXPECT_EQ(outboxd.Stop(SIGKILL), 128 + SIGKILL);
      outboxd.Start();
      ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(60))) << outboxd.Log();
    }
    writer.Join();
    EXPECT_EQ(writer.committed(), 300);
  }
  ExpectExactlyOnce(outboxd.Log());
  const auto [events, txns] = Skipped(outboxd.Log());
  std::cout << "[ figures ] 5 SIGKILLs; restarts skipped " << std::max<int64_t>(events, 0)
            << " event(s) in " << std::max<int64_t>(txns, 0) << " transaction(s) in all\n";
}

// SIGTERM at a commit boundary commits and exits 0; the next start has nothing
// to skip. SIGTERM while a large PostgreSQL transaction is being published
// ends cleanly too (0, or 3 if its events stayed uncommitted), and the next
// start publishes it exactly once.
TEST_F(ExactlyOnceEndToEndTest, SigtermCommitsExitsZeroAndTheNextStartSkipsNothing) {
  source_ = CreateDefaultSource(sql_, "eosterm");
  const std::string config = EosConfig();
  OutboxdProcess& outboxd = StartStreaming(config);
  for (int t = 0; t < 30; ++t) sql_.Exec(InsertTxnSql(source_.table, t, 3));
  ASSERT_EQ(ReadUntilAllKeys({Topic()}, Ids(sql_, source_.table), absl::Seconds(60),
                             Isolation::kReadCommitted)
                .size(),
            90u);
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
  const std::vector<Checkpoint> at_stop = Checkpoints();
  ASSERT_FALSE(at_stop.empty());
  EXPECT_GE(sql_.ConfirmedFlush(source_.slot), at_stop.back().lsn)
      << "a graceful stop confirms what it committed";

  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(60))) << outboxd.Log();
  for (int t = 30; t < 60; ++t) sql_.Exec(InsertTxnSql(source_.table, t, 3));
  ExpectExactlyOnce(outboxd.Log());
  EXPECT_LE(Skipped(outboxd.Log()).first, 0) << "nothing to skip after a graceful stop\n" << outboxd.Log();

  // A large transaction: stop once its first events are in Kafka (uncommitted).
  sql_.Exec(InsertTxnSql(source_.table, 1000, 50000));
  bool appended = false;
  size_t checked = 0;
  ReadTopicsUntil(
      {Topic()},
      [&](const std::vector<Record>& records) {
        for (; checked < records.size() && !appended; ++checked) {
          appended = Decode(records[checked]).aggregate_id() == "t1000-1";
        }
        return appended;
      },
      absl::Seconds(60), Isolation::kReadUncommitted);
  EXPECT_TRUE(appended) << "the large transaction's first event never reached Kafka\n" << outboxd.Log();
  const int code = outboxd.Stop(SIGTERM);
  EXPECT_TRUE(code == 0 || code == 3) << code << "\n" << outboxd.Log();
  if (code == 3) {
    EXPECT_THAT(outboxd.Log(), HasSubstr("exit code 3"));
  }
  const size_t third_start = outboxd.Log().size();
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(60))) << outboxd.Log();
  ExpectExactlyOnce(outboxd.Log());
  EXPECT_LE(Skipped(outboxd.Log().substr(third_start)).first, 0)
      << "a graceful stop confirmed what it committed: nothing to skip\n" << outboxd.Log();
  std::cout << "[ figures ] SIGTERM inside a 50,000-event transaction: exit " << code << "\n";
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
}

// ---------------------------------------------------------------------------
// Broker, PostgreSQL
// ---------------------------------------------------------------------------

// The broker SIGKILLed while a writer commits, so that a Kafka transaction is
// open; brought back at once. `kafka` goes to [sink.kafka]; with
// `until_aborted` the broker stays down until outboxd gave up on its open
// transaction (its commit timeout is transaction.timeout.ms).
class ExactlyOnceBrokerKillTest : public ExactlyOnceEndToEndTest {
 protected:
  void Run(const std::string& kafka, bool until_aborted) {
    source_ = CreateDefaultSource(sql_, "eosbroker");
    const int port = FreePort();
    OutboxdProcess& outboxd = StartStreaming(EosConfig("", kafka, port));
    {
      Writer writer(source_.table, 300);
      ASSERT_TRUE(WaitForWritesAndAKafkaCommit(writer, 60, port, absl::Seconds(60))) << outboxd.Log();
      ASSERT_TRUE(Stack("stop kafka kill"));
      // Transactions keep coming while the broker is away.
      ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 120; }, absl::Seconds(60)));
      if (until_aborted) {
        ASSERT_TRUE(outboxd.WaitForLog("Kafka transaction aborted", absl::Seconds(90))) << outboxd.Log();
      }
      ASSERT_TRUE(Stack("start kafka"));
      writer.Join();
      EXPECT_EQ(writer.committed(), 300);
    }
    ExpectExactlyOnce(outboxd.Log(), absl::Seconds(300));
    const double aborted = Metric(port, "outboxd_kafka_transactions_total{result=\"aborted\"}");
    if (until_aborted) {
      EXPECT_GE(aborted, 1);
    }
    std::cout << "[ figures ] broker SIGKILL: Kafka transactions committed "
              << Metric(port, kCommittedTransactions) << ", aborted "
              << aborted << ", events skipped " << Metric(port, "outboxd_events_skipped_total") << "\n";
  }
};

// The default transaction.timeout.ms (60 s) outlasts the restart: the open
// transaction commits once the broker is back.
TEST_F(ExactlyOnceBrokerKillTest, BrokerKilledMidTransactionExactlyOnce) { Run("", false); }

// A commit timeout shorter than the outage: the open transaction is aborted,
// the session restarts from the slot and skips what the checkpoint covers.
TEST_F(ExactlyOnceBrokerKillTest, BrokerDownPastTheCommitTimeoutAbortsThenExactlyOnce) {
  Run("\"transaction.timeout.ms\" = 5000\n", true);
}

TEST_F(ExactlyOnceEndToEndTest, PostgresCrashedMidStreamExactlyOnce) {
  source_ = CreateDefaultSource(sql_, "eospg");
  OutboxdProcess& outboxd = StartStreaming(EosConfig());
  {
    Writer writer(source_.table, 200);
    ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 50; }, absl::Seconds(60)));
    ASSERT_TRUE(Stack("stop postgres immediate"));
    ASSERT_TRUE(outboxd.WaitForLog("reconnecting to postgres in", absl::Seconds(30))) << outboxd.Log();
    ASSERT_TRUE(Stack("start postgres"));
    ASSERT_TRUE(WaitFor([&] { return Occurrences(outboxd.Log(), "streaming slot") >= 2; },
                        absl::Seconds(60)))
        << outboxd.Log();
    writer.Join();
    EXPECT_EQ(writer.committed(), 200);
    EXPECT_GT(writer.failures(), 0) << "the writer should have seen the server go away";
  }
  ExpectExactlyOnce(outboxd.Log());
  EXPECT_THAT(outboxd.Log(), Not(HasSubstr("fenced")));
}

// ---------------------------------------------------------------------------
// A PostgreSQL transaction larger than one Kafka transaction
// ---------------------------------------------------------------------------

// transaction.timeout.ms small, one PostgreSQL transaction of many events:
// outboxd commits it in pieces with partial checkpoints (a warning, a metric);
// read_committed still shows each event once.
constexpr int kSplitTimeoutMs = 2000;
constexpr int kLargeTxnRows = 150000;  // streams for seconds (tens under ASan): split at 1 s

std::string SplitKafkaConfig() {
  return fmt::format("\"transaction.timeout.ms\" = {}\n", kSplitTimeoutMs);
}

TEST_F(ExactlyOnceEndToEndTest, TransactionOutgrowingTheTimeoutIsSplitExactlyOnce) {
  source_ = CreateDefaultSource(sql_, "eossplit");
  // Timestamps stamped by the broker as it appends: how long each piece's
  // transaction was open at the broker.
  ASSERT_EQ(CreateTopic(Topic(), 1, {{"message.timestamp.type", "LogAppendTime"}}), "");
  const int port = FreePort();
  OutboxdProcess& outboxd = StartStreaming(EosConfig("", SplitKafkaConfig(), port));
  sql_.Exec(InsertTxnSql(source_.table, 0, 5));
  const absl::Time start = absl::Now();
  sql_.Exec(InsertTxnSql(source_.table, 1, kLargeTxnRows));
  sql_.Exec(InsertTxnSql(source_.table, 2, 5));
  ExpectExactlyOnce(outboxd.Log(), absl::Seconds(300));
  const absl::Duration took = absl::Now() - start;
  const double splits = Metric(port, "outboxd_transactions_split_total");
  EXPECT_GE(splits, 1) << "published in " << took << ": no split\n" << outboxd.Log();
  const std::string log = outboxd.Log();
  EXPECT_TRUE(log.find("in pieces") != std::string::npos || log.find("split") != std::string::npos)
      << "the split is logged as a warning\n" << log;
  for (size_t at = log.find("in pieces"); at != std::string::npos; at = log.find("in pieces", at + 1)) {
    const size_t begin = log.rfind('\n', at) + 1;
    std::cout << "[ figures ] " << log.substr(begin, log.find('\n', at) - begin) << "\n";
  }
  const std::vector<Checkpoint> checkpoints = Checkpoints();
  int partial = 0;
  std::vector<Lsn> through;  // where each piece ends (inclusive)
  for (const Checkpoint& c : checkpoints) {
    if (c.value.contains("partial")) through.push_back(*Lsn::Parse(c.value["partial"].value("through_lsn", "")));
  }
  for (const Checkpoint& c : checkpoints) {
    if (!c.value.contains("partial")) continue;
    ++partial;
    const nlohmann::json& p = c.value["partial"];
    EXPECT_TRUE(p.contains("commit_lsn") && p.contains("through_lsn") && p.contains("index")) << c.value.dump();
  }
  EXPECT_GE(partial, 1) << "no partial checkpoint";
  // How long each piece's transaction stayed open at the broker: from its
  // first event's append to its last one's (the commit follows at once).
  // Under transaction.timeout.ms, or the broker may abort it.
  std::vector<std::pair<int64_t, int64_t>> span(through.size() + 1, {INT64_MAX, 0});
  for (const Record& r : ReadToEnd({Topic()}, Isolation::kReadCommitted, absl::Seconds(120))) {
    const ::outbox::v1::Envelope e = Decode(r);
    if (!e.aggregate_id().starts_with("t1-")) continue;
    const Lsn lsn(e.source().lsn());
    const size_t piece = std::lower_bound(through.begin(), through.end(), lsn) - through.begin();
    span[piece].first = std::min(span[piece].first, r.timestamp_ms);
    span[piece].second = std::max(span[piece].second, r.timestamp_ms);
  }
  int64_t longest_ms = 0;
  for (const auto& [first, last] : span) {
    if (last >= first) longest_ms = std::max(longest_ms, last - first);
  }
  EXPECT_EQ(Metric(port, "outboxd_kafka_transactions_total{result=\"aborted\"}"), 0);
  std::cout << "[ figures ] one transaction of " << kLargeTxnRows << " events, transaction.timeout.ms "
            << kSplitTimeoutMs << ": published in " << took << ", " << partial
            << " partial checkpoint(s), outboxd_transactions_split_total " << splits
            << "; longest Kafka transaction open " << longest_ms << " ms\n";
  EXPECT_LT(longest_ms, kSplitTimeoutMs) << "a Kafka transaction outlived transaction.timeout.ms";
}

// Killed right after the first piece of a split transaction was committed:
// the restart skips exactly that piece's events and publishes the rest.
TEST_F(ExactlyOnceEndToEndTest, KilledAfterAPartialCommitSkipsExactlyThatPiece) {
  source_ = CreateDefaultSource(sql_, "eossplitkill");
  OutboxdProcess& doomed = StartStreaming(EosConfig("", SplitKafkaConfig()),
                                          {{"OUTBOXD_FAILPOINT", "kill_after_kafka_commit:1"}});
  sql_.Exec(InsertTxnSql(source_.table, 1, kLargeTxnRows));
  const absl::Time committed_in_pg = absl::Now();
  ASSERT_EQ(doomed.WaitExit(absl::Seconds(180)), 128 + SIGKILL) << doomed.Log();
  const absl::Time first_piece_committed = absl::Now();
  const std::vector<Checkpoint> at_death = Checkpoints();
  ASSERT_FALSE(at_death.empty()) << doomed.Log();
  ASSERT_TRUE(at_death.back().value.contains("partial")) << at_death.back().value.dump();
  const size_t piece = ReadToEnd({Topic()}, Isolation::kReadCommitted, absl::Seconds(60)).size();
  ASSERT_GT(piece, 0u);
  ASSERT_LT(piece, static_cast<size_t>(kLargeTxnRows)) << "the first commit should be a piece of it";

  OutboxdProcess& restarted = StartStreaming(EosConfig("", SplitKafkaConfig()));
  // The skip line comes with the first transaction past the checkpoint.
  sql_.Exec(InsertTxnSql(source_.table, 2, 3));
  ExpectExactlyOnce(doomed.Log() + restarted.Log(), absl::Seconds(300));
  EXPECT_EQ(Skipped(restarted.Log()).first, static_cast<int64_t>(piece)) << restarted.Log();
  std::cout << "[ figures ] killed after the first piece (" << piece << " of " << kLargeTxnRows
            << " events, " << at_death.back().value["partial"].dump() << "), committed "
            << (first_piece_committed - committed_in_pg) << " after the PostgreSQL commit; restart skipped "
            << Skipped(restarted.Log()).first << "\n";
}

// ---------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------

std::string HeaderOf(const Record& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "<absent>";
}

// A row that cannot be mapped (NULL aggregate_id) is dead-lettered inside its
// transaction's Kafka transaction; a record the broker refuses (over its
// message.max.bytes) aborts the Kafka transaction and is dead-lettered in its
// place by the next session. Every id is read once, in the event topic or in
// the dead-letter topic.
TEST_F(ExactlyOnceEndToEndTest, DeadLettersAreWrittenOnceInTheTransaction) {
  source_ = CreateDefaultSource(sql_, "eosdlq");
  sql_.Exec(fmt::format("ALTER TABLE public.{} ALTER COLUMN aggregate_id DROP NOT NULL", source_.table));
  const std::string dlq = source_.topic_prefix + ".dlq";
  // The producer accepts up to 10 MB; the broker (message.max.bytes ~1 MB) refuses.
  std::string config = EosConfig("", "\"message.max.bytes\" = \"10000000\"\n", FreePort());
  const int port = std::stoi(config.substr(config.find("listen = \"127.0.0.1:") + 20));
  config += fmt::format("\n[errors]\ndead_letter_topic = \"{}\"\n", dlq);
  OutboxdProcess& outboxd = StartStreaming(config);
  auto insert = [&](const std::string& aggregate_id, const std::string& payload_sql) {
    return fmt::format(
        "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) VALUES ('Order', {}, "
        "'OrderCreated', {});",
        source_.table, aggregate_id, payload_sql);
  };
  sql_.Exec("BEGIN;" + insert("'t0-1'", "'{}'") + insert("NULL", "'{}'") + insert("'t0-2'", "'{}'") + "COMMIT;");
  sql_.Exec("BEGIN;" + insert("'t1-1'", "'{}'") + insert("'t1-2'", "'{}'") +
            insert("'t1-3'", "jsonb_build_object('pad', repeat('y', 2000000))") + "COMMIT;");
  for (int t = 2; t < 12; ++t) sql_.Exec(InsertTxnSql(source_.table, t, 3));

  const Tally tally = ExpectExactlyOnce(outboxd.Log(), absl::Seconds(180), {dlq});
  EXPECT_EQ(tally.records, 36u);
  std::map<std::string, int> reasons;
  for (const Record& r : ReadToEnd({dlq}, Isolation::kReadCommitted, absl::Seconds(60))) {
    ++reasons[HeaderOf(r, "outboxd-dlq-reason")];
  }
  EXPECT_EQ(reasons, (std::map<std::string, int>{{"message_too_large", 1}, {"null_column", 1}}));
  EXPECT_GE(Metric(port, "outboxd_kafka_transactions_total{result=\"aborted\"}"), 1)
      << "the refused record aborts its Kafka transaction";
  std::cout << "[ figures ] dead letters: " << reasons.size() << " reasons, Kafka transactions aborted "
            << Metric(port, "outboxd_kafka_transactions_total{result=\"aborted\"}") << "\n";
}

// on_bad_event = "stop" inside a PostgreSQL transaction whose first rows are
// already in the open Kafka transaction: outboxd exits 1, and aborts that
// transaction on its way out. read_committed consumers of the partition are
// not held back until transaction.timeout.ms (60 s here): a record produced
// after the exit is visible to them within seconds. (Left open, the
// transaction's records would hold the partition's last stable offset.)
TEST_F(ExactlyOnceEndToEndTest, AFatalStopAbortsTheOpenKafkaTransactionSoReadCommittedConsumersGoOn) {
  source_ = CreateDefaultSource(sql_, "eosstop");
  sql_.Exec(fmt::format("ALTER TABLE public.{} ALTER COLUMN aggregate_id DROP NOT NULL", source_.table));
  ASSERT_EQ(CreateTopic(Topic(), 1), "");
  const std::string config =
      EosConfig("transaction_interval = \"20s\"\n") + "\n[errors]\non_bad_event = \"stop\"\n";
  OutboxdProcess& outboxd = StartStreaming(config);
  auto insert = [&](const std::string& aggregate_id) {
    return fmt::format(
        "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) VALUES ('Order', {}, "
        "'OrderCreated', '{{}}');",
        source_.table, aggregate_id);
  };
  // Good rows first, more than the producer queue holds (20,000), so that the
  // broker has appended some of them to the open Kafka transaction; then the
  // bad one.
  sql_.Exec(fmt::format("BEGIN; INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) "
                        "SELECT 'Order', 's-' || g, 'OrderCreated', '{{}}' FROM generate_series(1, 25000) g;",
                        source_.table) +
            insert("NULL") + "COMMIT;");
  EXPECT_EQ(outboxd.WaitExit(absl::Seconds(60)), std::optional<int>(1)) << outboxd.Log();
  EXPECT_THAT(outboxd.Log(), HasSubstr("on_bad_event"));
  EXPECT_THAT(outboxd.Log(), HasSubstr("aborting it, so that read_committed consumers do not wait"));

  // A record produced now, after the exit, by a plain producer.
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr),
            RD_KAFKA_CONF_OK);
  rd_kafka_t* producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  ASSERT_NE(producer, nullptr) << errstr;
  std::string key = "after-the-exit";
  const std::string topic = Topic();
  ASSERT_EQ(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                              RD_KAFKA_V_VALUE(key.data(), key.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_END),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  EXPECT_EQ(rd_kafka_flush(producer, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(producer);
  const absl::Time produced = absl::Now();
  const std::vector<Record> seen = ReadTopicsUntil(
      {topic}, [&](const auto& records) {
        return std::any_of(records.begin(), records.end(), [&](const Record& r) { return r.key == key; });
      },
      absl::Seconds(20), Isolation::kReadCommitted);
  const bool visible = std::any_of(seen.begin(), seen.end(), [&](const Record& r) { return r.key == key; });
  EXPECT_TRUE(visible) << "read_committed consumers wait for the abandoned transaction's timeout";
  for (const Record& r : seen) EXPECT_EQ(r.key, key) << "a record of the aborted transaction is visible";
  std::cout << "[ figures ] the record after the exit was visible to read_committed after "
            << absl::FormatDuration(absl::Now() - produced) << "\n";
}

// ---------------------------------------------------------------------------
// Fencing, and the slot as the lock
// ---------------------------------------------------------------------------

// Another producer initializes the same transactional.id: outboxd logs that it
// was fenced, ends the session, returns to the slot and takes over again
// (fencing the intruder in turn, whose open transaction is aborted). Nothing
// is lost or duplicated, and the intruder's record never becomes visible.
TEST_F(ExactlyOnceEndToEndTest, FencedProducerStopsAndTheRelayTakesOverAgain) {
  source_ = CreateDefaultSource(sql_, "eosfence");
  const int port = FreePort();
  OutboxdProcess& outboxd = StartStreaming(EosConfig("", "", port));
  Writer writer(source_.table, 250);
  ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 50; }, absl::Seconds(60)));

  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr),
            RD_KAFKA_CONF_OK);
  ASSERT_EQ(rd_kafka_conf_set(conf, "transactional.id", transactional_id_.c_str(), errstr, sizeof errstr),
            RD_KAFKA_CONF_OK);
  std::atomic<int> delivered{0};
  rd_kafka_conf_set_opaque(conf, &delivered);
  rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) ++*static_cast<std::atomic<int>*>(opaque);
  });
  rd_kafka_t* intruder = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  ASSERT_NE(intruder, nullptr) << errstr;
  struct Destroy {
    rd_kafka_t* rk;
    ~Destroy() { rd_kafka_destroy(rk); }
  } destroy{intruder};
  rd_kafka_error_t* error = rd_kafka_init_transactions(intruder, 60000);
  ASSERT_EQ(error, nullptr) << rd_kafka_error_string(error);
  ASSERT_TRUE(outboxd.WaitForLog(
      fmt::format("another producer with transactional.id '{}' took over", transactional_id_),
      absl::Seconds(60)))
      << outboxd.Log();
  EXPECT_THAT(outboxd.Log(), HasSubstr("fenced: "));
  // An open transaction of the intruder's, unless outboxd fenced it already.
  bool began = false;
  if ((error = rd_kafka_begin_transaction(intruder)) == nullptr) {
    began = true;
    std::string key = "intruder";
    const std::string topic = Topic();
    rd_kafka_producev(intruder, RD_KAFKA_V_TOPIC(topic.c_str()),
                      RD_KAFKA_V_KEY(key.data(), key.size()), RD_KAFKA_V_VALUE(key.data(), key.size()),
                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    rd_kafka_flush(intruder, 10000);
  } else {
    rd_kafka_error_destroy(error);
  }

  // The session ended, and a new one streams.
  ASSERT_TRUE(WaitFor([&] { return Occurrences(outboxd.Log(), "streaming slot") >= 2; }, absl::Seconds(90)))
      << outboxd.Log();
  writer.Join();
  EXPECT_EQ(writer.committed(), 250);
  ExpectExactlyOnce(outboxd.Log());
  EXPECT_GE(Metric(port, "outboxd_producer_fenced_total"), 1);
  const std::vector<Record> uncommitted = ReadToEnd({Topic()}, Isolation::kReadUncommitted, absl::Seconds(60));
  const bool intruder_in_log = std::any_of(uncommitted.begin(), uncommitted.end(),
                                           [](const Record& r) { return r.key == "intruder"; });
  if (delivered.load() > 0) {
    EXPECT_TRUE(intruder_in_log) << "the intruder's record was acknowledged: read_uncommitted sees it";
  }
  std::cout << "[ figures ] fenced once; intruder transaction begun " << began << ", record appended "
            << (delivered.load() > 0) << " (aborted: read_committed did not show it)\n";
}

// A second instance with the same slot and transactional_id waits as a
// standby without touching Kafka (it never fences the active one), and takes
// over after the active one is SIGKILLed.
TEST_F(ExactlyOnceEndToEndTest, SecondInstanceWaitsOnTheSlotWithoutFencing) {
  source_ = CreateDefaultSource(sql_, "eosstandby");
  const int port = FreePort();
  OutboxdProcess& active = StartStreaming(EosConfig("", "", port));
  OutboxdProcess& standby = NewOutboxd(EosConfig());
  standby.Start();
  ASSERT_TRUE(standby.WaitForLog("standby: ", absl::Seconds(30))) << standby.Log();
  {
    Writer writer(source_.table, 100);
    ASSERT_TRUE(WaitForWritesAndAKafkaCommit(writer, 60, port, absl::Seconds(60))) << active.Log();
    EXPECT_THAT(active.Log(), Not(HasSubstr("fenced"))) << "the standby touched Kafka";
    EXPECT_EQ(active.Stop(SIGKILL), 128 + SIGKILL);
    ASSERT_TRUE(standby.WaitForLog("streaming slot", absl::Seconds(60))) << standby.Log();
    writer.Join();
  }
  ExpectExactlyOnce(active.Log() + standby.Log());
  EXPECT_THAT(standby.Log(), Not(HasSubstr("fenced")));
}

}  // namespace
}  // namespace outboxd::it
