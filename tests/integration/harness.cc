#include "harness.h"

#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <random>
#include <sstream>

#include "common/format.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include <httplib.h>

namespace outboxd::it {

std::string PgPort() {
  const char* port = std::getenv("OUTBOXD_PG_PORT");
  return port && *port ? port : "54329";
}

std::string KafkaBootstrap() {
  const char* port = std::getenv("OUTBOXD_KAFKA_PORT");
  return fmt::format("127.0.0.1:{}", port && *port ? port : "59092");
}

std::string PgDsn() { return fmt::format("host=127.0.0.1 port={} dbname=app user=postgres", PgPort()); }

std::string UniqueName(const std::string& prefix) {
  static const std::string run = [] {
    std::random_device rd;
    return fmt::format("{:06x}", rd() & 0xffffff);
  }();
  static std::atomic<int> counter{0};
  return fmt::format("{}_{}_{}", prefix, run, counter++);
}

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout, absl::Duration every) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(every);
  }
}

Sql::Sql() : Sql(PgDsn()) {}

Sql::Sql(const std::string& dsn) {
  auto conn = replication::PgConnection::Connect(dsn, false);
  if (!conn.ok()) {
    ADD_FAILURE() << "cannot connect to PostgreSQL at " << dsn << " (deploy/local/stack.sh up): "
                  << conn.status();
    return;
  }
  conn_ = std::move(*conn);
}

std::vector<replication::Row> Sql::Query(const std::string& sql) {
  if (!conn_) return {};
  auto rows = conn_->Query(sql);
  if (!rows.ok()) {
    ADD_FAILURE() << "SQL failed: " << sql << "\n" << rows.status();
    return {};
  }
  return *rows;
}

std::string Sql::Scalar(const std::string& sql) {
  auto rows = Query(sql);
  if (rows.empty() || rows[0].empty() || !rows[0][0]) return "";
  return *rows[0][0];
}

::outbox::v1::Envelope Decode(const Record& record) {
  ::outbox::v1::Envelope envelope;
  EXPECT_TRUE(envelope.ParseFromString(record.value))
      << "not an envelope: " << record.topic << " offset " << record.offset;
  return envelope;
}

Lsn LastCommitLsn(const std::vector<Record>& records) {
  uint64_t last = 0;
  for (const Record& r : records) last = std::max(last, Decode(r).source().commit_lsn());
  return Lsn(last);
}

bool WaitForConfirmedPast(Sql& sql, const std::string& slot, Lsn commit_lsn, absl::Duration timeout) {
  return WaitFor([&] { return sql.ConfirmedFlush(slot) > commit_lsn; }, timeout);
}

std::set<std::string> Ids(Sql& sql, const std::string& table) {
  std::set<std::string> ids;
  for (const auto& row : sql.Query(fmt::format("SELECT id FROM public.{}", table))) ids.insert(*row[0]);
  return ids;
}

std::string InsertTxnSql(const std::string& table, int txn, int rows) {
  return fmt::format(
      "BEGIN; INSERT INTO public.{0} (aggregate_type, aggregate_id, event_type, payload) "
      "SELECT 'Order', 't{1}-' || g, 'OrderCreated', jsonb_build_object('txn', {1}, 'seq', g) "
      "FROM generate_series(1, {2}) AS g ORDER BY g; COMMIT;",
      table, txn, rows);
}

Writer::Writer(std::string table, int txns, int first)
    : table_(std::move(table)), txns_(txns), first_(first), thread_([this] { Loop(); }) {}

void Writer::Join() {
  if (thread_.joinable()) thread_.join();
}

void Writer::Loop() {
  std::unique_ptr<replication::PgConnection> conn;
  const absl::Time deadline = absl::Now() + absl::Minutes(4);
  for (int t = 0; t < txns_ && absl::Now() < deadline;) {
    if (!conn) {
      auto c = replication::PgConnection::Connect(PgDsn(), /*replication=*/false);
      if (!c.ok()) {
        absl::SleepFor(absl::Milliseconds(100));
        continue;
      }
      conn = std::move(*c);
    }
    if (!conn->Query(InsertTxnSql(table_, first_ + t, 1 + t % 7)).ok()) {
      ++failures_;
      conn.reset();
      continue;
    }
    committed_ = ++t;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

Lsn Sql::CurrentLsn() { return *Lsn::Parse(Scalar("SELECT pg_current_wal_lsn()")); }

Lsn Sql::ConfirmedFlush(const std::string& slot) {
  std::string text = Scalar(fmt::format(
      "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'", slot));
  if (text.empty()) return Lsn();
  return *Lsn::Parse(text);
}

int64_t Sql::RetainedWal(const std::string& slot) {
  std::string text = Scalar(fmt::format(
      "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots "
      "WHERE slot_name = '{}'",
      slot));
  return text.empty() ? -1 : std::stoll(text);
}

void Sql::DropSlotWhenInactive(const std::string& slot) {
  WaitFor(
      [&] {
        return Scalar(fmt::format("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' "
                                  "AND active",
                                  slot)) == "0";
      },
      absl::Seconds(20));
  Query(fmt::format("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE "
                    "slot_name = '{}'",
                    slot));
}

TestSource CreateDefaultSource(Sql& sql, const std::string& name) {
  TestSource source{
      .table = UniqueName(name + "_outbox"),
      .publication = UniqueName(name + "_pub"),
      .slot = UniqueName(name + "_slot"),
      .topic_prefix = UniqueName("it." + name),
  };
  sql.Exec(fmt::format(
      "CREATE TABLE public.{} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text "
      "NOT NULL, aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, "
      "headers jsonb, destination text, created_at timestamptz NOT NULL DEFAULT now())",
      source.table));
  sql.Exec(fmt::format("CREATE PUBLICATION {} FOR TABLE public.{} WITH (publish = 'insert')",
                       source.publication, source.table));
  return source;
}

void DropSource(Sql& sql, const TestSource& source) {
  sql.DropSlotWhenInactive(source.slot);
  sql.Exec(fmt::format("DROP PUBLICATION IF EXISTS {}", source.publication));
  sql.Exec(fmt::format("DROP TABLE IF EXISTS public.{}", source.table));
}

std::string ConfigFor(const TestSource& source, const std::string& extra_outbox_keys) {
  return fmt::format(R"([source]
dsn = "{}"
slot = "{}"
publication = "{}"
create_slot = true

[sink.kafka]
"bootstrap.servers" = "{}"

[[outbox]]
table = "public.{}"
topic = "{}.{{aggregate_type}}"
{}
[messages]
enabled = false

# Tests run several instances at once; observability_test sets a port.
[http]
listen = "off"

[log]
level = "debug"
)",
                     PgDsn(), source.slot, source.publication, KafkaBootstrap(), source.table,
                     source.topic_prefix, extra_outbox_keys);
}

std::string StreamSeries(const std::string& series, const std::string& slot, const std::string& database) {
  const std::string labels = fmt::format("database=\"{}\",slot=\"{}\"", database, slot);
  const size_t brace = series.find('{');
  if (brace == std::string::npos) return fmt::format("{}{{{}}}", series, labels);
  return fmt::format("{}{{{},{}", series.substr(0, brace), labels, series.substr(brace + 1));
}

std::string WithoutStreamLabels(const std::string& scrape) {
  static const std::regex kAlone(R"re(\{database="(?:[^"\\]|\\.)*",slot="(?:[^"\\]|\\.)*"\})re");
  static const std::regex kFirst(R"re(\{database="(?:[^"\\]|\\.)*",slot="(?:[^"\\]|\\.)*",)re");
  return std::regex_replace(std::regex_replace(scrape, kAlone, ""), kFirst, "{");
}

double ScrapeSample(int port, const std::string& series, double absent) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return absent;
  const std::string body = WithoutStreamLabels(res->body);
  const std::string prefix = series + " ";
  for (size_t at = body.find(prefix); at != std::string::npos; at = body.find(prefix, at + 1)) {
    if (at == 0 || body[at - 1] == '\n') return std::strtod(body.c_str() + at + prefix.size(), nullptr);
  }
  return absent;
}

std::vector<Record> ReadTopics(const std::vector<std::string>& topics, size_t expected,
                               absl::Duration timeout, Isolation isolation) {
  return ReadTopicsUntil(
      topics, [expected](const std::vector<Record>& records) { return records.size() >= expected; },
      timeout, isolation);
}

namespace {

// A consumer of a fresh group reading from the earliest offset; nullptr after
// an ADD_FAILURE.
rd_kafka_t* NewReader(Isolation isolation, bool partition_eof) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const char* k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k, v.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
      ADD_FAILURE() << k << ": " << errstr;
    }
  };
  set("bootstrap.servers", KafkaBootstrap());
  set("group.id", UniqueName("it_reader"));
  set("auto.offset.reset", "earliest");
  set("enable.auto.commit", "false");
  set("topic.metadata.refresh.interval.ms", "500");
  set("isolation.level",
      isolation == Isolation::kReadCommitted ? "read_committed" : "read_uncommitted");
  set("enable.partition.eof", partition_eof ? "true" : "false");
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (rk == nullptr) {
    ADD_FAILURE() << "consumer: " << errstr;
    return nullptr;
  }
  rd_kafka_poll_set_consumer(rk);
  return rk;
}

Record ToRecord(const rd_kafka_message_t* msg) {
  Record r;
  r.topic = rd_kafka_topic_name(msg->rkt);
  r.partition = msg->partition;
  r.offset = msg->offset;
  r.timestamp_ms = rd_kafka_message_timestamp(msg, nullptr);
  if (msg->key) r.key.assign(static_cast<const char*>(msg->key), msg->key_len);
  if (msg->payload) r.value.assign(static_cast<const char*>(msg->payload), msg->len);
  r.null_value = msg->payload == nullptr;
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(msg, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name;
    const void* value;
    size_t size;
    for (size_t i = 0;
         rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
         ++i) {
      r.headers.emplace_back(name, std::string(static_cast<const char*>(value), size));
    }
  }
  return r;
}

}  // namespace

std::vector<Record> ReadTopicsUntil(const std::vector<std::string>& topics,
                                    const std::function<bool(const std::vector<Record>&)>& done,
                                    absl::Duration timeout, Isolation isolation) {
  std::vector<Record> records;
  rd_kafka_t* rk = NewReader(isolation, /*partition_eof=*/false);
  if (rk == nullptr) return records;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(topics.size());
  for (const std::string& topic : topics) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), RD_KAFKA_PARTITION_UA);
  }
  rd_kafka_subscribe(rk, list);
  rd_kafka_topic_partition_list_destroy(list);

  const absl::Time deadline = absl::Now() + timeout;
  while (!done(records) && absl::Now() < deadline) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk, 200);
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) records.push_back(ToRecord(msg));
    rd_kafka_message_destroy(msg);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return records;
}

std::vector<Record> ReadToEnd(const std::vector<std::string>& topics, Isolation isolation,
                              absl::Duration timeout) {
  std::vector<Record> records;
  rd_kafka_t* rk = NewReader(isolation, /*partition_eof=*/true);
  if (rk == nullptr) return records;
  // (topic, partition) -> high watermark at the start.
  std::map<std::pair<std::string, int32_t>, int64_t> end;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(4);
  for (const std::string& topic : topics) {
    const rd_kafka_metadata_t* metadata = nullptr;
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &metadata, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || metadata->topic_cnt != 1 ||
        metadata->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      ADD_FAILURE() << "no metadata for topic " << topic << ": "
                    << rd_kafka_err2str(err != RD_KAFKA_RESP_ERR_NO_ERROR ? err
                                        : metadata->topic_cnt == 1 ? metadata->topics[0].err
                                                                   : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC);
      if (metadata != nullptr) rd_kafka_metadata_destroy(metadata);
      continue;
    }
    for (int i = 0; i < metadata->topics[0].partition_cnt; ++i) {
      const int32_t partition = metadata->topics[0].partitions[i].id;
      int64_t low = 0, high = 0;
      const rd_kafka_resp_err_t werr =
          rd_kafka_query_watermark_offsets(rk, topic.c_str(), partition, &low, &high, 10000);
      if (werr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ADD_FAILURE() << "watermarks of " << topic << " [" << partition << "]: " << rd_kafka_err2str(werr);
        continue;
      }
      end[{topic, partition}] = high;
      rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset =
          RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_metadata_destroy(metadata);
  }
  rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);

  // A partition is done once the reader stands at or past its start-time high
  // watermark: read_uncommitted reports EOF there, read_committed at the last
  // stable offset, which reaches it once the transactions open then ended.
  std::set<std::pair<std::string, int32_t>> pending;
  for (const auto& [partition, high] : end) pending.insert(partition);
  const absl::Time deadline = absl::Now() + timeout;
  while (!pending.empty() && absl::Now() < deadline) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk, 200);
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      records.push_back(ToRecord(msg));
    } else if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && msg->rkt != nullptr) {
      const std::pair<std::string, int32_t> at{rd_kafka_topic_name(msg->rkt), msg->partition};
      auto it = end.find(at);
      if (it != end.end() && msg->offset >= it->second) pending.erase(at);
    }
    rd_kafka_message_destroy(msg);
  }
  for (const auto& [topic, partition] : pending) {
    ADD_FAILURE() << "could not read " << topic << " [" << partition << "] up to offset "
                  << end[{topic, partition}] << " within " << timeout
                  << (isolation == Isolation::kReadCommitted
                          ? " (read_committed: a transaction stays open?)"
                          : "");
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return records;
}

OutboxdProcess::OutboxdProcess(std::string config_toml) {
  const std::string base = fmt::format("/tmp/{}", UniqueName("outboxd_it"));
  config_path_ = base + ".toml";
  log_path_ = base + ".log";
  std::ofstream(config_path_) << config_toml;
}

OutboxdProcess::~OutboxdProcess() {
  if (pid_ > 0) Stop(SIGKILL);
  // Keep the log of a failed test for the post-mortem.
  if (!::testing::Test::HasFailure()) {
    std::remove(config_path_.c_str());
    std::remove(log_path_.c_str());
  }
}

void OutboxdProcess::Start() {
  ASSERT_LE(pid_, 0) << "already running";
  log_offset_ = Log().size();
  std::vector<std::string> args = {OUTBOXD_BINARY, "run", "--config", config_path_};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  // The environment is built before fork: the child only calls what is safe
  // after fork in a threaded process.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (!env_.contains(entry.substr(0, entry.find('=')))) env.push_back(entry);
  }
  for (const auto& [name, value] : env_) env.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (std::string& entry : env) envp.push_back(entry.data());
  envp.push_back(nullptr);
  pid_ = fork();
  ASSERT_GE(pid_, 0);
  if (pid_ == 0) {
    int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    execve(OUTBOXD_BINARY, argv.data(), envp.data());
    _exit(127);
  }
}

std::optional<int> OutboxdProcess::WaitExit(absl::Duration timeout) {
  if (pid_ <= 0) return std::nullopt;
  int status = 0;
  const absl::Time deadline = absl::Now() + timeout;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (absl::Now() > deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(20));
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

int OutboxdProcess::Stop(int signal, absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  int status = 0;
  const absl::Time deadline = absl::Now() + timeout;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (absl::Now() > deadline) {
      ADD_FAILURE() << "outboxd did not exit within " << timeout << " of signal " << signal;
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::string OutboxdProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool OutboxdProcess::WaitForLog(const std::string& text, absl::Duration timeout) {
  return WaitFor([&] { return Log().find(text, log_offset_) != std::string::npos; }, timeout,
                 absl::Milliseconds(20));
}

std::string CreateTopic(const std::string& topic, int partitions,
                        const std::map<std::string, std::string>& configs) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (rk == nullptr) return errstr;
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof errstr);
  if (nt == nullptr) {
    rd_kafka_destroy(rk);
    return errstr;
  }
  std::string error;
  for (const auto& [name, value] : configs) {
    if (rd_kafka_NewTopic_set_config(nt, name.c_str(), value.c_str()) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      error = "cannot set " + name;
    }
  }
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_operation_timeout(options, 30000, errstr, sizeof errstr);
  rd_kafka_AdminOptions_set_request_timeout(options, 60000, errstr, sizeof errstr);
  if (error.empty()) {
    rd_kafka_CreateTopics(rk, &nt, 1, options, queue);
    rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 90000);
    error = "no answer from the broker within 90 s";
    if (event != nullptr) {
      const rd_kafka_CreateTopics_result_t* result = rd_kafka_event_CreateTopics_result(event);
      size_t n = 0;
      const rd_kafka_topic_result_t** topics =
          result ? rd_kafka_CreateTopics_result_topics(result, &n) : nullptr;
      if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        error = rd_kafka_event_error_string(event);
      } else if (n != 1) {
        error = "no result for the topic";
      } else if (rd_kafka_topic_result_error(topics[0]) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        error = rd_kafka_topic_result_error_string(topics[0]);
      } else {
        error.clear();
      }
      rd_kafka_event_destroy(event);
    }
  }
  rd_kafka_AdminOptions_destroy(options);
  rd_kafka_NewTopic_destroy(nt);
  rd_kafka_queue_destroy(queue);
  rd_kafka_destroy(rk);
  return error;
}

bool Stack(const std::string& args) {
  const std::string command =
      fmt::format("bash {}/deploy/local/stack.sh {} >/dev/null 2>&1", OUTBOXD_SOURCE_DIR, args);
  return std::system(command.c_str()) == 0;
}

std::vector<Record> ReadUntilAllKeys(const std::vector<std::string>& topics,
                                     const std::set<std::string>& keys, absl::Duration timeout,
                                     Isolation isolation) {
  // Counted as records come (not a set inclusion per poll): a test may wait
  // for a few hundred thousand keys.
  std::set<std::string> seen;
  size_t read = 0;
  return ReadTopicsUntil(
      topics,
      [&](const std::vector<Record>& records) {
        for (; read < records.size(); ++read) {
          if (keys.contains(records[read].key)) seen.insert(records[read].key);
        }
        return seen.size() == keys.size();
      },
      timeout, isolation);
}

CommandResult RunShell(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

CommandResult RunOutboxd(const std::string& args) {
  return RunShell(fmt::format("{} {}", OUTBOXD_BINARY, args));
}

ServerSetting::ServerSetting(std::string name, const std::string& value) : name_(std::move(name)) {
  Sql sql;
  sql.Exec(fmt::format("ALTER SYSTEM SET {} = '{}'", name_, value));
  sql.Exec("SELECT pg_reload_conf()");
}

ServerSetting::~ServerSetting() {
  Sql sql;
  sql.Exec(fmt::format("ALTER SYSTEM RESET {}", name_));
  sql.Exec("SELECT pg_reload_conf()");
}

}  // namespace outboxd::it
