// Integration test harness: the real local PostgreSQL and Kafka started by
// deploy/local/stack.sh, an outboxd process under test, a Kafka reader, and
// waiting on conditions with deadlines.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "common/lsn.h"
#include "outbox/v1/envelope.pb.h"
#include "replication/pg_connection.h"

namespace outboxd::it {

std::string PgPort();
std::string KafkaBootstrap();
// host=127.0.0.1 port=... dbname=app user=postgres
std::string PgDsn();
// A name unique to this process and call, e.g. "it_ab12cd_3".
std::string UniqueName(const std::string& prefix);

// Waits until `condition` holds, polling every `every`; false at the deadline.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
             absl::Duration every = absl::Milliseconds(50));

// An SQL session on the app database. Aborts the test on error via ADD_FAILURE
// and returns an empty result.
class Sql {
 public:
  Sql();
  // On another server or database than the local stack's app database.
  explicit Sql(const std::string& dsn);
  std::vector<replication::Row> Query(const std::string& sql);
  // The first column of the first row, or "" if none / NULL.
  std::string Scalar(const std::string& sql);
  void Exec(const std::string& sql) { Query(sql); }
  Lsn CurrentLsn();
  // The slot's confirmed_flush_lsn, Invalid when the slot is missing.
  Lsn ConfirmedFlush(const std::string& slot);
  // pg_current_wal_lsn() - restart_lsn of the slot, in bytes.
  int64_t RetainedWal(const std::string& slot);
  void DropSlotWhenInactive(const std::string& slot);

 private:
  std::unique_ptr<replication::PgConnection> conn_;
};

// An outbox table, publication and slot made for one test, dropped at the end.
struct TestSource {
  std::string table;        // unqualified, in schema public
  std::string publication;
  std::string slot;
  std::string topic_prefix;  // topics are topic_prefix + "." + aggregate_type
};

// Creates the default outbox table layout (as sql/outbox.sql) under a unique
// name, with its own publication.
TestSource CreateDefaultSource(Sql& sql, const std::string& name);
void DropSource(Sql& sql, const TestSource& source);

// Sets a server parameter with ALTER SYSTEM for the test's lifetime (reset and
// reloaded when it goes out of scope). Tests that use it run alone (SERIAL).
class ServerSetting {
 public:
  ServerSetting(std::string name, const std::string& value);
  ~ServerSetting();
  ServerSetting(const ServerSetting&) = delete;
  ServerSetting& operator=(const ServerSetting&) = delete;

 private:
  std::string name_;
};

struct Record {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  int64_t timestamp_ms = -1;  // the producer's CreateTime: when outboxd published it
  std::string key;
  std::string value;
  bool null_value = false;  // a tombstone
  std::vector<std::pair<std::string, std::string>> headers;
};

// The envelope an outboxd event record holds (ADD_FAILURE if it holds none).
::outbox::v1::Envelope Decode(const Record& record);
// The newest source.commit_lsn among event records (envelopes). The slot has
// confirmed that transaction once its confirmed_flush_lsn is past it: a
// transaction ends after its commit record starts.
Lsn LastCommitLsn(const std::vector<Record>& records);
// Waits until `slot` has confirmed the transaction whose commit record is at
// `commit_lsn`; false at the deadline. Unlike waiting for pg_current_wal_lsn()
// read after a commit, this needs no keepalive for other sessions' WAL.
bool WaitForConfirmedPast(Sql& sql, const std::string& slot, Lsn commit_lsn, absl::Duration timeout);

// What a reader sees of transactional records (the consumer's isolation.level).
// kReadCommitted, librdkafka's default, hides records of open and aborted
// transactions; kReadUncommitted shows every record appended, aborted ones too.
enum class Isolation { kReadCommitted, kReadUncommitted };

// Reads every record of the given topics from offset 0 (a fresh consumer
// group each time), until `expected` records or the deadline.
std::vector<Record> ReadTopics(const std::vector<std::string>& topics, size_t expected,
                               absl::Duration timeout,
                               Isolation isolation = Isolation::kReadCommitted);
// Same, reading until `done(records so far)` holds or the deadline.
std::vector<Record> ReadTopicsUntil(const std::vector<std::string>& topics,
                                    const std::function<bool(const std::vector<Record>&)>& done,
                                    absl::Duration timeout,
                                    Isolation isolation = Isolation::kReadCommitted);

// Reads from offset 0 until every key in `keys` was seen (duplicates after a
// fault make a plain record count stop early) or the deadline.
std::vector<Record> ReadUntilAllKeys(const std::vector<std::string>& topics,
                                     const std::set<std::string>& keys, absl::Duration timeout,
                                     Isolation isolation = Isolation::kReadCommitted);

// Reads every partition of the given topics from offset 0 to its end: to the
// high watermark found at the start, and with kReadCommitted until every
// transaction open at the start has ended too (the last stable offset caught
// up with that watermark). For topics nobody writes to any more; a failure
// (ADD_FAILURE) at the deadline.
std::vector<Record> ReadToEnd(const std::vector<std::string>& topics, Isolation isolation,
                              absl::Duration timeout);

// Creates `topic` with `partitions` partitions (replication factor 1) and the
// given topic configs, e.g. {{"message.timestamp.type", "LogAppendTime"}}.
// "" on success, else the broker's or librdkafka's words.
std::string CreateTopic(const std::string& topic, int partitions,
                        const std::map<std::string, std::string>& configs = {});

// A finished command: its exit code (-1 if a signal ended it) and its stdout
// and stderr together.
struct CommandResult {
  int code;
  std::string output;
};
// Runs `command` with sh, stderr merged into the output.
CommandResult RunShell(const std::string& command);
// Runs the outboxd under test with `args` (e.g. "check --config FILE").
CommandResult RunOutboxd(const std::string& args);

// An outboxd process running `run --config` with a config file written from
// `config_toml`; its output goes to a log file read by Log().
class OutboxdProcess {
 public:
  explicit OutboxdProcess(std::string config_toml);
  ~OutboxdProcess();
  void Start();
  // Arguments after `run --config FILE` for the next Start(), e.g. {"--accept-gap"}.
  void set_extra_args(std::vector<std::string> args) { extra_args_ = std::move(args); }
  // Environment variables added to (or replacing) the test's own for the next
  // Start(), e.g. {{"OUTBOXD_FAILPOINT", "kill_after_kafka_commit:3"}}.
  void set_env(std::map<std::string, std::string> env) { env_ = std::move(env); }
  // Sends `signal` and waits for the exit; returns the exit code (or 128+sig).
  int Stop(int signal, absl::Duration timeout = absl::Seconds(60));
  // Waits for the process to exit by itself (no signal sent); its exit code
  // (or 128+sig), nullopt if it still runs at the deadline.
  std::optional<int> WaitExit(absl::Duration timeout);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  std::string Log() const;
  // Waits until the log written since the last Start() contains `text`.
  bool WaitForLog(const std::string& text, absl::Duration timeout);

 private:
  std::string config_path_;
  std::string log_path_;
  std::vector<std::string> extra_args_;
  std::map<std::string, std::string> env_;
  pid_t pid_ = -1;
  size_t log_offset_ = 0;  // log size at the last Start()
};

// The ids of every row of `table` (unqualified, schema public).
std::set<std::string> Ids(Sql& sql, const std::string& table);

// One transaction of `rows` events in `table` (unqualified, schema public):
// aggregate type "Order", aggregate_id "t<txn>-<seq>", seq 1..rows in insert
// order.
std::string InsertTxnSql(const std::string& table, int txn, int rows);

// Commits transactions `first`..`first + txns - 1` of 1..7 rows (InsertTxnSql),
// 10 ms apart, on its own thread and connection, for at most 4 minutes;
// reconnects when PostgreSQL goes away (a COMMIT that got no answer may or may
// not have committed: the table, not this writer, is the truth).
class Writer {
 public:
  Writer(std::string table, int txns, int first = 0);
  ~Writer() { Join(); }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  void Join();
  int committed() const { return committed_.load(); }
  int failures() const { return failures_.load(); }

 private:
  void Loop();

  std::string table_;
  int txns_;
  int first_;
  std::atomic<int> committed_{0};
  std::atomic<int> failures_{0};
  std::thread thread_;
};

// The config for a test source against the local stack.
std::string ConfigFor(const TestSource& source, const std::string& extra_outbox_keys = "");

// The Prometheus series `series` ("name" or "name{label=\"v\",...}") of the
// one stream of an outboxd on the local stack, as outboxd renders it: with
// database="app" (the DSN's database) and slot="<slot>" as its first labels.
std::string StreamSeries(const std::string& series, const std::string& slot, const std::string& database = "app");

// A /metrics scrape with the database and slot labels of every per-stream
// series removed: for tests of a single stream that look series up by name.
std::string WithoutStreamLabels(const std::string& scrape);

// The value of the sample `series` ("name" or "name{label=\"v\",...}", exactly
// as rendered, without the stream labels) on 127.0.0.1:`port`/metrics, or
// `absent` when there is no such sample or nothing answers.
double ScrapeSample(int port, const std::string& series, double absent = -1);

// Runs deploy/local/stack.sh with the arguments; true on exit 0.
bool Stack(const std::string& args);

}  // namespace outboxd::it
