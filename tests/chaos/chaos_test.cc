// Chaos suite: writers commit outbox rows into the real PostgreSQL while
// outboxd is SIGKILLed, the Kafka broker is SIGKILLed, PostgreSQL crashes
// (pg_ctl stop -m immediate) and the walsender is terminated. An oracle then
// compares G (every outbox row committed, read from the table at the end) with
// K (every record of the topic, read from offset 0):
//   - G is a subset of K, and K holds nothing that is not in G;
//   - duplicates after each fault stay within what was in flight at the fault;
//   - events of one transaction arrive in their order (a replay starts again
//     at the transaction's first event);
//   - events of one aggregate arrive in commit order across transactions: the
//     writers draw aggregate ids from a small pool (CHAOS_AGGREGATES), so one
//     aggregate is written by many transactions of every writer, and outboxd
//     keys records by aggregate_id (key = "aggregate_id"); the first copy of
//     each event must come after every event of its aggregate seen before it;
//   - the slot's confirmed_flush_lsn, sampled during the run and as outboxd
//     logged it at each session start, never passes a transaction that was
//     not yet entirely in Kafka. "In Kafka" is the broker's LogAppendTime: the
//     topic is created with message.timestamp.type=LogAppendTime before outboxd
//     produces, so a record's timestamp is stamped when the broker appends it,
//     before it acknowledges, rather than when the producer queued it (a
//     confirmation between produce and acknowledgement is caught).
//
// Two modes, one test case each: at-least-once (the default delivery), and
// exactly-once (issue 13: [sink] delivery = "exactly_once", K read with
// isolation.level=read_committed), where the oracle also requires that no
// event is duplicated at all, whatever the faults. CHAOS_DELIVERY
// (at_least_once or exactly_once), when set, runs that mode's case only.
//
// Parameters (environment): CHAOS_EVENTS, CHAOS_OUTBOXD_KILLS, CHAOS_BROKER_KILLS,
// CHAOS_PG_CRASHES, CHAOS_WALSENDER_KILLS, CHAOS_RATE (events per second the
// writers aim at), CHAOS_WRITERS, CHAOS_AGGREGATES, CHAOS_SEED (printed at the
// start; set it to replay a run's schedule of faults and transactions),
// CHAOS_DELIVERY. The defaults are the short form that `make test` runs (both
// modes, one ctest case each); `make chaos` sets the long form.
#include <librdkafka/rdkafka.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/format.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"
#include "replication/pg_connection.h"

namespace outboxd::it {
namespace {

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::strtoll(value, nullptr, 10) : fallback;
}

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

struct Params {
  int64_t events = EnvInt("CHAOS_EVENTS", 20000);
  int outboxd_kills = static_cast<int>(EnvInt("CHAOS_OUTBOXD_KILLS", 4));
  int broker_kills = static_cast<int>(EnvInt("CHAOS_BROKER_KILLS", 1));
  int pg_crashes = static_cast<int>(EnvInt("CHAOS_PG_CRASHES", 1));
  int walsender_kills = static_cast<int>(EnvInt("CHAOS_WALSENDER_KILLS", 1));
  int64_t rate = EnvInt("CHAOS_RATE", 400);
  int writers = static_cast<int>(EnvInt("CHAOS_WRITERS", 3));
  int aggregates = static_cast<int>(std::max<int64_t>(1, EnvInt("CHAOS_AGGREGATES", 50)));
  uint64_t seed = static_cast<uint64_t>(EnvInt("CHAOS_SEED", 0));
};

enum class Delivery { kAtLeastOnce, kExactlyOnce };
const char* Name(Delivery d) { return d == Delivery::kExactlyOnce ? "exactly_once" : "at_least_once"; }

enum class Fault { kOutboxdKill, kBrokerKill, kPgCrash, kWalsenderKill };
const char* Name(Fault f) {
  switch (f) {
    case Fault::kOutboxdKill: return "outboxd SIGKILL";
    case Fault::kBrokerKill: return "broker SIGKILL";
    case Fault::kPgCrash: return "postgres crash";
    case Fault::kWalsenderKill: return "walsender terminated";
  }
  return "?";
}

using Uuid = std::pair<uint64_t, uint64_t>;

// "8-4-4-4-12" hex -> 128 bits; {0,0} if malformed.
Uuid ParseUuid(std::string_view text) {
  Uuid out{0, 0};
  int nibbles = 0;
  for (char c : text) {
    if (c == '-') continue;
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0 || nibbles >= 32) return {0, 0};
    uint64_t& half = nibbles < 16 ? out.first : out.second;
    half = (half << 4) | static_cast<uint64_t>(v);
    ++nibbles;
  }
  return nibbles == 32 ? out : Uuid{0, 0};
}

// event_type "w<writer>-t<txn>-<seq>" -> (transaction key, seq).
bool ParseEventType(std::string_view text, uint64_t* txn, int* seq) {
  unsigned w = 0, t = 0;
  int s = 0;
  if (std::sscanf(std::string(text).c_str(), "w%u-t%u-%d", &w, &t, &s) != 3) return false;
  *txn = (static_cast<uint64_t>(w) << 32) | t;
  *seq = s;
  return true;
}

// Runs `sql` on a connection of its own, reconnecting after a failure; used by
// writers and the sampler, which must outlive PostgreSQL restarts.
class ResilientSql {
 public:
  absl::StatusOr<std::vector<replication::Row>> Query(const std::string& sql) {
    if (!conn_) {
      auto conn = replication::PgConnection::Connect(PgDsn(), false);
      if (!conn.ok()) return conn.status();
      conn_ = std::move(*conn);
    }
    auto rows = conn_->Query(sql);
    // Whatever failed (a crash, a terminated backend), start on a fresh
    // session rather than reason about the old one's transaction state.
    if (!rows.ok()) conn_.reset();
    return rows;
  }

 private:
  std::unique_ptr<replication::PgConnection> conn_;
};

struct Sample {
  int64_t t_ms;  // taken after the query returned: the value held by then
  Lsn confirmed;
};

struct FaultRecord {
  Fault kind;
  int64_t t_ms;           // just before the fault was injected
  Lsn confirmed_before;   // the last sample before it
  int64_t done_ms = 0;    // once injected (for an outboxd kill: the process is gone)
};

struct Session {
  int64_t t_ms;  // outboxd's log time of "streaming slot ... from X"
  Lsn start;
};

// "2026-11-27T05:01:02.345Z ... streaming slot 'x' of system N from 0/1A2B ..."
std::vector<Session> ParseSessions(const std::string& log) {
  std::vector<Session> sessions;
  size_t pos = 0;
  while ((pos = log.find("streaming slot '", pos)) != std::string::npos) {
    size_t line_start = log.rfind('\n', pos);
    line_start = line_start == std::string::npos ? 0 : line_start + 1;
    size_t from = log.find(" from ", pos);
    size_t end = log.find_first_of(" \n", from + 6);
    absl::Time t;
    std::string err;
    std::string stamp = log.substr(line_start, 24);
    if (from != std::string::npos &&
        absl::ParseTime("%Y-%m-%dT%H:%M:%E*SZ", stamp, &t, &err)) {
      auto lsn = Lsn::Parse(log.substr(from + 6, end - from - 6));
      if (lsn.ok()) sessions.push_back({absl::ToUnixMillis(t), *lsn});
    }
    pos += 16;
  }
  return sessions;
}

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// aggregate_id "a<n>" -> n; -1 if malformed.
int ParseAggregateId(std::string_view text) {
  int n = -1;
  char tail = 0;
  if (std::sscanf(std::string(text).c_str(), "a%d%c", &n, &tail) != 1 || n < 0) return -1;
  return n;
}

// One record of K, kept small: a million of them must fit comfortably.
struct KRecord {
  int64_t offset = 0;
  int64_t ts_ms = 0;  // the broker's LogAppendTime
  Uuid id{0, 0};
  uint64_t txn = 0;
  int seq = 0;
  int aggregate = -1;
  uint64_t commit_lsn = 0;
  uint64_t lsn = 0;
};

// Reads every record of `topic` (one partition) from offset 0 to its high
// watermark. `bad` counts records that are not chaos envelopes, whose key is
// not their aggregate_id or whose timestamp is not a LogAppendTime. With
// `read_committed` (exactly-once mode), records of aborted transactions are
// not returned, and neither the last records nor the transaction markers need
// be: the end is the partition EOF at the high watermark (the last stable
// offset equals it once no transaction is open).
std::vector<KRecord> ReadAll(const std::string& topic, bool read_committed, int* bad,
                             int64_t* high_watermark) {
  std::vector<KRecord> out;
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr);
  rd_kafka_conf_set(conf, "group.id", UniqueName("chaos_reader").c_str(), errstr, sizeof errstr);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
  rd_kafka_conf_set(conf, "isolation.level", read_committed ? "read_committed" : "read_uncommitted",
                    errstr, sizeof errstr);
  rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (rk == nullptr) {
    ADD_FAILURE() << "consumer: " << errstr;
    return out;
  }
  const rd_kafka_metadata_t* metadata = nullptr;
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  if (rd_kafka_metadata(rk, 0, rkt, &metadata, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    EXPECT_EQ(metadata->topic_cnt, 1);
    if (metadata->topic_cnt == 1) {
      EXPECT_EQ(metadata->topics[0].partition_cnt, 1)
          << "the oracle reads one partition; the stack creates topics with num.partitions=1";
    }
    rd_kafka_metadata_destroy(metadata);
  }
  rd_kafka_topic_destroy(rkt);
  int64_t low = 0, high = 0;
  rd_kafka_resp_err_t err =
      rd_kafka_query_watermark_offsets(rk, topic.c_str(), 0, &low, &high, 10000);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    ADD_FAILURE() << "watermarks of " << topic << ": " << rd_kafka_err2str(err);
    rd_kafka_destroy(rk);
    return out;
  }
  EXPECT_EQ(low, 0) << "records were deleted from " << topic;
  *high_watermark = high;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  out.reserve(static_cast<size_t>(high));
  ::outbox::v1::Envelope envelope;
  int64_t next = low;
  bool at_end = false;  // EOF at the high watermark
  const absl::Time deadline = absl::Now() + absl::Minutes(5);
  while (next < high && !at_end && absl::Now() < deadline) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk, 500);
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      at_end = msg->offset >= high;
    } else if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      next = msg->offset + 1;
      KRecord r{};
      r.offset = msg->offset;
      rd_kafka_timestamp_type_t ts_type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
      r.ts_ms = rd_kafka_message_timestamp(msg, &ts_type);
      uint64_t txn = 0;
      int seq = 0;
      if (!envelope.ParseFromArray(msg->payload, static_cast<int>(msg->len)) ||
          !ParseEventType(envelope.event_type(), &txn, &seq) ||
          (r.id = ParseUuid(envelope.id())) == Uuid{0, 0} ||
          (r.aggregate = ParseAggregateId(envelope.aggregate_id())) < 0 ||
          std::string_view(static_cast<const char*>(msg->key), msg->key_len) !=
              envelope.aggregate_id()) {
        if ((*bad)++ < 5) ADD_FAILURE() << "not a chaos envelope keyed by aggregate_id at offset " << msg->offset;
      } else if (ts_type != RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME) {
        if ((*bad)++ < 5) ADD_FAILURE() << "offset " << msg->offset << " has no LogAppendTime";
      } else {
        r.txn = txn;
        r.seq = seq;
        r.commit_lsn = envelope.source().commit_lsn();
        r.lsn = envelope.source().lsn();
        out.push_back(r);
      }
    }
    rd_kafka_message_destroy(msg);
  }
  EXPECT_TRUE(next >= high || at_end)
      << "could not read " << topic << " up to its end offset " << high
      << (read_committed ? " (read_committed: a transaction stays open?)" : "");
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

class ChaosTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A broker restarted on a busy machine may need longer than stack.sh's
    // default 120 s to serve a produce again.
    setenv("OUTBOXD_STACK_TIMEOUT", "300", /*overwrite=*/0);
    ASSERT_TRUE(Stack("status")) << "the local stack is not up: run deploy/local/stack.sh up";
  }
};

// The whole run in one delivery mode; the two test cases below call it.
void RunChaos(Delivery delivery) {
  if (const char* only = std::getenv("CHAOS_DELIVERY"); only != nullptr && *only != 0) {
    if (std::string_view(only) != "at_least_once" && std::string_view(only) != "exactly_once") {
      FAIL() << "CHAOS_DELIVERY=" << only << ": say at_least_once or exactly_once";
    }
    if (std::string_view(only) != Name(delivery)) {
      GTEST_SKIP() << "CHAOS_DELIVERY=" << only << " runs the other mode only";
    }
  }
  const bool eos = delivery == Delivery::kExactlyOnce;
  const Params p;
  const uint64_t seed = p.seed ? p.seed : std::random_device{}();
  // Printed first, so that a failed run can be replayed with CHAOS_SEED (the
  // faults' kinds, order and moments and the writers' transactions follow it;
  // the machine's timing does not).
  fmt::print(stderr, "chaos: delivery {}, seed {} (CHAOS_SEED={} replays this schedule)\n",
             Name(delivery), seed, seed);
  std::fflush(stderr);
  std::mt19937_64 rng(seed);
  Sql sql;
  TestSource source = CreateDefaultSource(sql, "chaos");
  const std::string topic = source.topic_prefix + ".Chaos";
  // Before outboxd produces: a topic it auto-created would stamp CreateTime.
  ASSERT_EQ(CreateTopic(topic, 1, {{"message.timestamp.type", "LogAppendTime"}}), "")
      << "creating " << topic << " with LogAppendTime";
  // Records keyed by aggregate_id: the per-aggregate order below is the
  // guarantee this setting documents.
  std::string config = ConfigFor(source, "key = \"aggregate_id\"\n");
  // The default test config logs at debug; a long run needs info only.
  config.replace(config.find("level = \"debug\""), 15, "level = \"info\"");
  if (eos) {
    // The run's own transactional.id and checkpoint topic; the defaults otherwise.
    const std::string at = "[sink.kafka]\n";
    ASSERT_NE(config.find(at), std::string::npos);
    config.insert(config.find(at),
                  fmt::format("[sink]\ndelivery = \"exactly_once\"\ntransactional_id = \"{}\"\n"
                              "checkpoint_topic = \"{}\"\n\n",
                              UniqueName("chaos_txid"), source.topic_prefix + ".checkpoints"));
  }
  OutboxdProcess outboxd(config);
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(60))) << outboxd.Log();

  std::atomic<bool> writers_stop{false}, sampler_stop{false};
  std::atomic<int64_t> reserved{0}, committed{0};
  std::atomic<int64_t> write_errors{0};
  const absl::Time started = absl::Now();
  std::vector<Sample> samples;
  std::mutex samples_mu;
  std::vector<std::thread> writers;
  std::thread sampler;
  // However the test ends, the threads stop and are joined.
  struct Joiner {
    std::function<void()> fn;
    ~Joiner() { fn(); }
  } joiner{[&] {
    writers_stop = true;
    sampler_stop = true;
    for (auto& t : writers) {
      if (t.joinable()) t.join();
    }
    if (sampler.joinable()) sampler.join();
  }};

  // Writers: mixed transaction sizes, paced at p.rate events per second.
  for (int w = 0; w < p.writers; ++w) {
    writers.emplace_back([&, w, seed = rng()] {
      std::mt19937_64 wrng(seed);
      ResilientSql conn;
      uint32_t txn = 0;
      while (!writers_stop.load()) {
        const double dice = std::uniform_real_distribution<double>(0, 1)(wrng);
        int n = dice < 0.5    ? 1
                : dice < 0.8  ? std::uniform_int_distribution<int>(2, 10)(wrng)
                : dice < 0.97 ? std::uniform_int_distribution<int>(11, 200)(wrng)
                              : std::uniform_int_distribution<int>(500, 2000)(wrng);
        const int64_t before = reserved.fetch_add(n);
        if (before >= p.events) break;
        n = static_cast<int>(std::min<int64_t>(n, p.events - before));
        while (!writers_stop.load() &&
               static_cast<double>(before) >
                   p.rate * absl::ToDoubleSeconds(absl::Now() - started)) {
          absl::SleepFor(absl::Milliseconds(5));
        }
        ++txn;
        // The aggregates of this transaction: a<(base + g * stride) % pool>,
        // drawn from the writer's seeded generator; a small pool makes every
        // aggregate appear in many transactions of every writer.
        const int base = std::uniform_int_distribution<int>(0, p.aggregates - 1)(wrng);
        const int stride = std::uniform_int_distribution<int>(0, 3)(wrng);
        // Retry the same transaction number until a commit is known to have
        // happened; an ambiguous failure may have committed it too, which is
        // fine: G is read from the table, and the seq numbers make the copies
        // distinct transactions (different txn numbers).
        while (!writers_stop.load()) {
          auto done = conn.Query(fmt::format(
              "BEGIN; INSERT INTO public.{0} (aggregate_type, aggregate_id, event_type, payload) "
              "SELECT 'Chaos', 'a' || (({4} + g * {5}) % {6}), 'w{1}-t{2}-' || g, "
              "jsonb_build_object('w', {1}, 't', {2}, 'seq', g) FROM generate_series(1, {3}) AS g "
              "ORDER BY g; COMMIT;",
              source.table, w, txn, n, base, stride, p.aggregates));
          if (done.ok()) {
            committed.fetch_add(n);
            break;
          }
          write_errors.fetch_add(1);
          ++txn;  // a new number: the failed attempt may have committed
          absl::SleepFor(absl::Milliseconds(100));
        }
      }
    });
  }

  // Sampler: the slot's confirmed_flush_lsn over time.
  sampler = std::thread([&] {
    ResilientSql conn;
    while (!sampler_stop.load()) {
      auto rows = conn.Query(fmt::format(
          "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
          source.slot));
      const int64_t t = NowMs() + 1;  // ms floor: round up to stay after the read
      if (rows.ok() && !rows->empty() && (*rows)[0][0]) {
        auto lsn = Lsn::Parse(*(*rows)[0][0]);
        if (lsn.ok()) {
          std::lock_guard lock(samples_mu);
          samples.push_back({t, *lsn});
        }
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  });
  auto last_sample = [&] {
    std::lock_guard lock(samples_mu);
    return samples.empty() ? Lsn() : samples.back().confirmed;
  };

  // The fault schedule: kinds shuffled, spread over the run by progress.
  std::vector<Fault> schedule;
  schedule.insert(schedule.end(), p.outboxd_kills, Fault::kOutboxdKill);
  schedule.insert(schedule.end(), p.broker_kills, Fault::kBrokerKill);
  schedule.insert(schedule.end(), p.pg_crashes, Fault::kPgCrash);
  schedule.insert(schedule.end(), p.walsender_kills, Fault::kWalsenderKill);
  std::shuffle(schedule.begin(), schedule.end(), rng);
  std::vector<FaultRecord> faults;
  std::map<Fault, int> injected;
  ResilientSql control;
  auto slot_active = [&] {
    auto rows = control.Query(fmt::format(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}' AND active_pid IS "
        "NOT NULL",
        source.slot));
    return rows.ok() && !rows->empty();
  };
  auto uniform_ms = [&](int lo, int hi) {
    return absl::Milliseconds(std::uniform_int_distribution<int>(lo, hi)(rng));
  };
  const size_t total_faults = schedule.size();
  for (size_t i = 0; i < total_faults; ++i) {
    const double jitter = std::uniform_real_distribution<double>(-0.4, 0.4)(rng);
    const auto threshold =
        static_cast<int64_t>(p.events * (i + 0.5 + jitter) / static_cast<double>(total_faults));
    ASSERT_TRUE(WaitFor([&] { return committed.load() >= threshold; }, absl::Minutes(30)))
        << "writers stalled at " << committed.load() << " events";
    // Each fault hits a relay that is streaming again after the last one.
    ASSERT_TRUE(WaitFor(slot_active, absl::Minutes(3), absl::Milliseconds(100)))
        << "outboxd did not resume streaming after " << (faults.empty() ? "start" : Name(faults.back().kind))
        << "\n" << outboxd.Log().substr(outboxd.Log().size() > 4000 ? outboxd.Log().size() - 4000 : 0);
    absl::SleepFor(uniform_ms(0, 400));  // a random moment, not a round one
    const Fault kind = schedule[i];
    faults.push_back({kind, NowMs(), last_sample()});
    switch (kind) {
      case Fault::kOutboxdKill:
        outboxd.Stop(SIGKILL);
        faults.back().done_ms = NowMs() + 1;
        absl::SleepFor(uniform_ms(0, 500));
        outboxd.Start();
        break;
      case Fault::kBrokerKill:
        ASSERT_TRUE(Stack("stop kafka kill"));
        absl::SleepFor(uniform_ms(500, 2000));
        ASSERT_TRUE(Stack("start kafka")) << "the broker did not come back";
        break;
      case Fault::kPgCrash:
        ASSERT_TRUE(Stack("stop postgres immediate"));
        absl::SleepFor(uniform_ms(200, 1000));
        ASSERT_TRUE(Stack("start postgres")) << "PostgreSQL did not come back";
        break;
      case Fault::kWalsenderKill: {
        auto rows = control.Query(fmt::format(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = "
            "'{}' AND active_pid IS NOT NULL",
            source.slot));
        ASSERT_TRUE(rows.ok() && !rows->empty()) << "no walsender to terminate";
        break;
      }
    }
    if (kind != Fault::kOutboxdKill) faults.back().done_ms = NowMs() + 1;
    ++injected[kind];
    fmt::print(stderr, "chaos: fault {}/{} {} at {} events committed\n", i + 1, total_faults,
               Name(kind), committed.load());
  }
  for (auto& t : writers) t.join();
  const int64_t committed_events = committed.load();

  // Drain: wait until the slot confirms past the last commit, which outboxd
  // only does once Kafka acknowledged everything; then stop it cleanly.
  Sql end_sql;
  const Lsn end_lsn = end_sql.CurrentLsn();
  ASSERT_TRUE(WaitFor([&] { return end_sql.ConfirmedFlush(source.slot) >= end_lsn; },
                      absl::Minutes(10), absl::Milliseconds(200)))
      << "the slot never confirmed " << end_lsn.ToString() << "; at "
      << end_sql.ConfirmedFlush(source.slot).ToString();
  // A process started by the last fault may not have installed its signal
  // handlers yet; once it streams, SIGTERM is a graceful stop.
  EXPECT_TRUE(WaitFor(slot_active, absl::Minutes(3), absl::Milliseconds(100)));
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0);
  sampler_stop = true;
  sampler.join();
  const std::string log = outboxd.Log();

  // G: every committed outbox row, keyset-paged to bound memory.
  absl::flat_hash_map<Uuid, std::pair<uint64_t, int>> g;  // id -> (txn, seq)
  absl::flat_hash_map<Uuid, int> g_aggregate;             // id -> aggregate
  absl::flat_hash_map<uint64_t, int> txn_size;
  std::string after = "00000000-0000-0000-0000-000000000000";
  while (true) {
    auto rows = end_sql.Query(fmt::format(
        "SELECT id::text, event_type, aggregate_id FROM public.{} WHERE id > '{}' ORDER BY id "
        "LIMIT 100000",
        source.table, after));
    if (rows.empty()) break;
    for (const auto& row : rows) {
      uint64_t txn;
      int seq;
      ASSERT_TRUE(ParseEventType(*row[1], &txn, &seq)) << *row[1];
      g[ParseUuid(*row[0])] = {txn, seq};
      g_aggregate[ParseUuid(*row[0])] = ParseAggregateId(*row[2]);
      ++txn_size[txn];
    }
    after = *rows.back()[0];
  }

  // K: every record from offset 0.
  int undecodable = 0;
  int64_t high_watermark = 0;
  const std::vector<KRecord> k = ReadAll(topic, eos, &undecodable, &high_watermark);
  EXPECT_EQ(undecodable, 0) << "records that are not chaos envelopes keyed by aggregate_id with a LogAppendTime";

  // Per id: copies in offset order (K is one partition, read in order).
  absl::flat_hash_map<Uuid, std::vector<int>> copies;  // id -> indexes into k
  for (size_t i = 0; i < k.size(); ++i) copies[k[i].id].push_back(static_cast<int>(i));
  int64_t lost = 0, phantom = 0, duplicates = 0, max_copies = 0, wrong_aggregate = 0;
  for (const auto& [id, where] : g) {
    if (!copies.contains(id)) ++lost;
  }
  for (const KRecord& r : k) {
    auto it = g_aggregate.find(r.id);
    if (it != g_aggregate.end() && it->second != r.aggregate) ++wrong_aggregate;
  }
  for (const auto& [id, where] : copies) {
    if (!g.contains(id)) ++phantom;
    duplicates += static_cast<int64_t>(where.size()) - 1;
    max_copies = std::max<int64_t>(max_copies, static_cast<int64_t>(where.size()));
  }

  // Order within each transaction: each event follows its predecessor, or a
  // replay starts the transaction again at its first event. Every copy of a
  // transaction carries the same commit LSN.
  int64_t order_violations = 0, lsn_mismatches = 0;
  absl::flat_hash_map<uint64_t, std::pair<int, uint64_t>> last;  // txn -> (seq, commit_lsn)
  for (const KRecord& r : k) {
    auto [it, fresh] = last.try_emplace(r.txn, 0, r.commit_lsn);
    if (r.seq != it->second.first + 1 && r.seq != 1) {
      if (order_violations++ < 5) {
        ADD_FAILURE() << "transaction w" << (r.txn >> 32) << "-t" << (r.txn & 0xffffffff)
                      << ": seq " << r.seq << " after " << it->second.first << " at offset "
                      << r.offset;
      }
    }
    if (it->second.second != r.commit_lsn) ++lsn_mismatches;
    it->second.first = r.seq;
  }

  // Order per aggregate across transactions: walking K in offset order, the
  // first copy of each event must come after (commit LSN, LSN) every event of
  // its aggregate seen so far. Later copies are replays of what was already
  // there and may go back; a new event never may.
  int64_t aggregate_order_violations = 0;
  {
    absl::flat_hash_map<int, std::pair<uint64_t, uint64_t>> newest;  // aggregate -> position
    for (size_t i = 0; i < k.size(); ++i) {
      const KRecord& r = k[i];
      if (copies[r.id][0] != static_cast<int>(i)) continue;
      const std::pair<uint64_t, uint64_t> at{r.commit_lsn, r.lsn};
      auto [it, fresh] = newest.try_emplace(r.aggregate, at);
      if (fresh) continue;
      if (at <= it->second) {
        if (aggregate_order_violations++ < 5) {
          ADD_FAILURE() << "aggregate a" << r.aggregate << ": the event at offset " << r.offset
                        << " (commit " << Lsn(r.commit_lsn).ToString() << ", lsn "
                        << Lsn(r.lsn).ToString() << ") arrived after a later one (commit "
                        << Lsn(it->second.first).ToString() << ", lsn "
                        << Lsn(it->second.second).ToString() << ")";
        }
      } else {
        it->second = at;
      }
    }
  }

  // When was each transaction entirely in Kafka? The broker stamps a record
  // (LogAppendTime) when it appends it, before it acknowledges it, so a
  // confirmation at time t is only sound if every event of every transaction
  // it covers has a copy appended at or before t.
  struct TxnInfo {
    uint64_t commit_lsn = 0;
    int64_t ready_ms = 0;  // max over its events of the earliest copy
    int seen = 0;
  };
  absl::flat_hash_map<uint64_t, TxnInfo> txns;
  for (const auto& [id, where] : copies) {
    auto git = g.find(id);
    if (git == g.end()) continue;
    int64_t first = INT64_MAX;
    for (int i : where) first = std::min(first, k[i].ts_ms);
    TxnInfo& info = txns[git->second.first];
    info.commit_lsn = k[where[0]].commit_lsn;
    info.ready_ms = std::max(info.ready_ms, first);
    ++info.seen;
  }
  std::vector<TxnInfo> ordered;
  for (auto& [txn, info] : txns) {
    if (info.seen < txn_size[txn]) info.ready_ms = INT64_MAX;  // not all there: never ready
    ordered.push_back(info);
  }
  std::sort(ordered.begin(), ordered.end(),
            [](const TxnInfo& a, const TxnInfo& b) { return a.commit_lsn < b.commit_lsn; });
  std::vector<int64_t> ready_prefix(ordered.size());
  for (size_t i = 0; i < ordered.size(); ++i) {
    ready_prefix[i] = std::max(i ? ready_prefix[i - 1] : 0, ordered[i].ready_ms);
  }
  // The newest time any transaction below `confirmed` was complete in Kafka.
  auto ready_below = [&](Lsn confirmed) -> int64_t {
    auto it = std::lower_bound(
        ordered.begin(), ordered.end(), confirmed.value(),
        [](const TxnInfo& info, uint64_t lsn) { return info.commit_lsn < lsn; });
    const size_t n = static_cast<size_t>(it - ordered.begin());
    return n == 0 ? 0 : ready_prefix[n - 1];
  };
  const std::vector<Session> sessions = ParseSessions(log);
  int64_t premature = 0;
  for (const Sample& s : samples) {
    if (ready_below(s.confirmed) > s.t_ms && premature++ < 5) {
      ADD_FAILURE() << "confirmed_flush_lsn " << s.confirmed.ToString() << " at " << s.t_ms
                    << " ms covers a transaction not yet entirely in Kafka (complete at "
                    << ready_below(s.confirmed) << " ms)";
    }
  }
  for (const Session& s : sessions) {
    if (ready_below(s.start) > s.t_ms && premature++ < 5) {
      ADD_FAILURE() << "outboxd logged a session start from " << s.start.ToString() << " at "
                    << s.t_ms << " ms, past a transaction not yet entirely in Kafka";
    }
  }

  // Duplicates per fault. A record is a duplicate if its id has an earlier
  // copy; it belongs to the fault epoch its timestamp falls in. The sound
  // bound for the epoch after fault f: ids already in Kafka before the epoch's
  // last session start whose transaction lies at or after the lowest position
  // a session of the epoch resumed from. Faults that leave PostgreSQL up must
  // resume at or after the confirmed position sampled before the fault.
  std::vector<int64_t> epoch_dups(faults.size() + 1, 0);
  auto epoch_of = [&](int64_t ts) {
    size_t e = 0;
    while (e < faults.size() && faults[e].t_ms <= ts) ++e;
    return e;  // 0 = before the first fault
  };
  for (const auto& [id, where] : copies) {
    for (size_t c = 1; c < where.size(); ++c) ++epoch_dups[epoch_of(k[where[c]].ts_ms)];
  }
  EXPECT_EQ(epoch_dups[0], 0) << "duplicates before any fault";
  std::map<Fault, int64_t> dups_by_kind, window_by_kind, inflight_by_kind;
  for (size_t f = 0; f < faults.size(); ++f) {
    const int64_t from = faults[f].t_ms;
    const int64_t to = f + 1 < faults.size() ? faults[f + 1].t_ms : INT64_MAX;
    Lsn min_start;
    int64_t last_start_ms = from;
    bool any = false;
    for (const Session& s : sessions) {
      if (s.t_ms < from || s.t_ms >= to) continue;
      min_start = any ? std::min(min_start, s.start) : s.start;
      last_start_ms = std::max(last_start_ms, s.t_ms);
      any = true;
    }
    // In flight at the fault: produced before it was over and not confirmed.
    // Timestamps are append times, so "produced before" needs a cut-off later
    // than the fault: for an outboxd kill, the successor's first session start
    // (nothing is appended for the successor before it streams, and a request
    // the dead process had sent may still be appended after it died); for the
    // other faults, whose outboxd lives on and may hold records in its queue
    // while the broker or the stream is down, a few seconds after the fault.
    int64_t inflight_cutoff = std::min(to, faults[f].done_ms + 5000);
    if (faults[f].kind == Fault::kOutboxdKill) {
      inflight_cutoff = to;
      for (const Session& s : sessions) {
        if (s.t_ms >= faults[f].done_ms) {
          inflight_cutoff = std::min(inflight_cutoff, s.t_ms);
          break;
        }
      }
    }
    int64_t window = 0, inflight = 0;
    for (const auto& [id, where] : copies) {
      const KRecord& first = k[where[0]];
      if (any && first.ts_ms < last_start_ms && first.commit_lsn >= min_start.value()) ++window;
      if (first.ts_ms <= inflight_cutoff &&
          first.commit_lsn >= faults[f].confirmed_before.value()) {
        ++inflight;
      }
    }
    if (faults[f].kind != Fault::kPgCrash && any) {
      EXPECT_GE(min_start, faults[f].confirmed_before)
          << Name(faults[f].kind) << " #" << f << ": outboxd resumed before the position the slot "
          << "had confirmed: the slot went backwards";
    }
    // Two sources of duplicates: outboxd replaying from the slot (window), and
    // the producer re-sending what it had in flight when the broker died
    // (librdkafka's idempotence does not survive every broker crash): records
    // produced before the fault was over and not yet confirmed (inflight).
    EXPECT_LE(epoch_dups[f + 1], window + inflight)
        << Name(faults[f].kind) << " #" << f << ": more duplicates than were in flight";
    // A killed outboxd produces nothing after its death, and its successor
    // resumes at or after what the slot had confirmed before the kill: only
    // what was produced and not yet confirmed then may come again.
    if (faults[f].kind == Fault::kOutboxdKill) {
      EXPECT_LE(epoch_dups[f + 1], inflight)
          << "outboxd kill #" << f << ": more duplicates than were in flight at the kill";
    }
    dups_by_kind[faults[f].kind] += epoch_dups[f + 1];
    window_by_kind[faults[f].kind] = std::max(window_by_kind[faults[f].kind], window);
    inflight_by_kind[faults[f].kind] = std::max(inflight_by_kind[faults[f].kind], inflight);
  }

  fmt::print("chaos: {} events committed by writers ({} rows in G, {} transactions), {} write "
             "errors, {:.0f} s\n",
             committed_events, g.size(), txn_size.size(), write_errors.load(),
             absl::ToDoubleSeconds(absl::Now() - started));
  fmt::print("chaos: kills: outboxd {}, broker {}, postgres {}, walsender {}; outboxd sessions {}, "
             "slot samples {}\n",
             injected[Fault::kOutboxdKill], injected[Fault::kBrokerKill], injected[Fault::kPgCrash],
             injected[Fault::kWalsenderKill], sessions.size(), samples.size());
  fmt::print("chaos: K {} records, {} distinct; lost {}, duplicated {}, phantom {}, max copies "
             "of one event {}, order violations {} (per aggregate {}), premature confirmations {} "
             "(judged by LogAppendTime)\n",
             k.size(), copies.size(), lost, duplicates, phantom, max_copies, order_violations,
             aggregate_order_violations, premature);
  for (Fault kind : {Fault::kOutboxdKill, Fault::kBrokerKill, Fault::kPgCrash,
                     Fault::kWalsenderKill}) {
    if (!injected[kind]) continue;
    fmt::print("chaos:   after {}: {} duplicates in all; largest in-flight at a fault {} "
               "(produced, not confirmed), largest replay window {}\n",
               Name(kind), dups_by_kind[kind], inflight_by_kind[kind], window_by_kind[kind]);
  }
  if (eos) {
    // What the restarts skipped ("exactly-once: skipped N event(s) in M
    // transaction(s) ..." once per session), and what read_committed hid:
    // offsets that are records of aborted transactions or transaction markers.
    int64_t skipped_events = 0, skipped_txns = 0, skip_lines = 0;
    const std::string line = "exactly-once: skipped ";
    for (size_t at = log.find(line); at != std::string::npos; at = log.find(line, at + 1)) {
      long long n = 0, m = 0;
      if (std::sscanf(log.c_str() + at + line.size(), "%lld event(s) in %lld transaction", &n, &m) == 2) {
        skipped_events += n;
        skipped_txns += m;
        ++skip_lines;
      }
    }
    fmt::print("chaos: exactly-once, read_committed: {} offsets, {} committed records, {} aborted "
               "records or transaction markers; {} sessions skipped {} events in {} transactions "
               "already in Kafka; fenced {} times\n",
               high_watermark, k.size(), high_watermark - static_cast<int64_t>(k.size()), skip_lines,
               skipped_events, skipped_txns, Occurrences(log, "fenced: "));
    EXPECT_EQ(duplicates, 0) << "exactly-once: events read twice with read_committed";
  }
  EXPECT_EQ(lost, 0) << "events committed in PostgreSQL but never in Kafka";
  EXPECT_EQ(phantom, 0) << "events in Kafka that were never committed";
  EXPECT_EQ(order_violations, 0);
  EXPECT_EQ(aggregate_order_violations, 0) << "events of one aggregate out of commit order";
  EXPECT_EQ(wrong_aggregate, 0) << "records whose aggregate_id is not the row's";
  EXPECT_EQ(lsn_mismatches, 0) << "copies of one transaction with different commit LSNs";
  EXPECT_EQ(premature, 0);
  EXPECT_GE(committed_events, p.events);
  EXPECT_EQ(sessions.size() >= 1 + static_cast<size_t>(p.outboxd_kills), true)
      << "expected a session start per outboxd start";

  // A failed run keeps its table, slot and topic for the post-mortem.
  if (!::testing::Test::HasFailure()) DropSource(end_sql, source);
}

TEST_F(ChaosTest, NoLossBoundedDuplicatesUnderFaults) { RunChaos(Delivery::kAtLeastOnce); }

// Exactly-once mode: read_committed, lost 0 and duplicated 0.
TEST_F(ChaosTest, ExactlyOnceNoLossNoDuplicatesUnderFaults) { RunChaos(Delivery::kExactlyOnce); }

}  // namespace
}  // namespace outboxd::it
