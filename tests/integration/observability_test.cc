// End to end: the HTTP endpoint (/metrics, /readyz) and the logs of a real
// outboxd run against the local PostgreSQL and Kafka (deploy/local/stack.sh up).
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "support/free_port.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "nlohmann/json.hpp"

namespace outboxd::it {
namespace {

// ConfigFor's config with the HTTP endpoint on 127.0.0.1:`port` instead of off.
std::string WithListen(std::string config, int port) {
  const std::string off = "listen = \"off\"";
  const size_t at = config.find(off);
  EXPECT_NE(at, std::string::npos) << "ConfigFor no longer turns the endpoint off";
  if (at != std::string::npos) config.replace(at, off.size(), fmt::format("listen = \"127.0.0.1:{}\"", port));
  return config;
}

using ::testing::HasSubstr;
using ::testing::StartsWith;

using ::outboxd::test_support::FreePort;

struct HttpResult {
  int status = 0;  // 0: no answer
  std::string body;
};

HttpResult Get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  auto res = client.Get(path.c_str());
  if (!res) return {};
  return {res->status, res->body};
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// The value of the sample `series` (name with labels, exactly as rendered).
std::optional<double> Sample(const std::string& scrape, const std::string& series) {
  for (const std::string& line : Lines(scrape)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

double SampleOr(const std::string& scrape, const std::string& series, double fallback = -1) {
  return Sample(scrape, series).value_or(fallback);
}

// Runs a shell command; returns its exit code and output (stdout + stderr).
std::pair<int, std::string> Shell(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

void InsertRows(Sql& sql, const std::string& table, int txn, int rows,
                const std::string& aggregate_type = "Order") {
  sql.Exec(fmt::format(
      "INSERT INTO public.{0} (aggregate_type, aggregate_id, event_type, payload) "
      "SELECT '{1}', 't{2}-' || g, 'OrderCreated', jsonb_build_object('seq', g) "
      "FROM generate_series(1, {3}) AS g",
      table, aggregate_type, txn, rows));
}

class ObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "the local stack is not up: run deploy/local/stack.sh up";
    source_ = CreateDefaultSource(sql_, "obs");
  }
  void TearDown() override {
    for (auto& p : processes_) p->Stop(SIGKILL);
    processes_.clear();
    if (!role_.empty()) {
      sql_.DropSlotWhenInactive(source_.slot);
      sql_.Exec(fmt::format("DROP OWNED BY {0}; DROP ROLE IF EXISTS {0}", role_));
    }
    DropSource(sql_, source_);
  }
  // The test source's config with the HTTP endpoint on `port`.
  std::string Config(int port, const std::string& extra_sections = "") const {
    return WithListen(ConfigFor(source_), port) + extra_sections;
  }
  // A per-stream series of the test's one stream (database "app", its slot).
  std::string S(const std::string& series) const { return StreamSeries(series, source_.slot); }
  OutboxdProcess* Start(const std::string& config) {
    processes_.push_back(std::make_unique<OutboxdProcess>(config));
    processes_.back()->Start();
    return processes_.back().get();
  }
  bool WaitReady(int port, int status, const std::string& body_part, absl::Duration timeout,
                 HttpResult* last) {
    return WaitFor(
        [&] {
          *last = Get(port, "/readyz");
          return last->status == status && last->body.find(body_part) != std::string::npos;
        },
        timeout, absl::Milliseconds(200));
  }

  Sql sql_;
  TestSource source_;
  std::string role_;
  std::vector<std::unique_ptr<OutboxdProcess>> processes_;
};

TEST_F(ObservabilityTest, MetricsMoveDuringARunAndPassPromtool) {
  const int port = FreePort();
  OutboxdProcess* outboxd = Start(Config(port));
  HttpResult ready;
  ASSERT_TRUE(WaitReady(port, 200, "ready: streaming", absl::Seconds(60), &ready))
      << ready.status << " " << ready.body << outboxd->Log();
  EXPECT_EQ(Get(port, "/healthz").status, 200);
  // One stream, named by its database (the DSN's) and slot.
  const nlohmann::json readyz = nlohmann::json::parse(ready.body);
  ASSERT_EQ(readyz["streams"].size(), 1u) << ready.body;
  EXPECT_EQ(readyz["streams"][0]["database"], "app");
  EXPECT_EQ(readyz["streams"][0]["slot"], source_.slot);
  EXPECT_EQ(readyz["streams"][0]["state"], "streaming");

  constexpr int kTxns = 4, kRows = 25;
  for (int t = 0; t < kTxns; ++t) InsertRows(sql_, source_.table, t, kRows);
  const std::string published =
      S(fmt::format("outboxd_events_published_total{{topic=\"{}.Order\"}}", source_.topic_prefix));
  std::string scrape;
  ASSERT_TRUE(WaitFor(
      [&] {
        scrape = Get(port, "/metrics").body;
        return SampleOr(scrape, published) == kTxns * kRows;
      },
      absl::Seconds(60), absl::Milliseconds(200)))
      << scrape << outboxd->Log();

  // The confirmed position reaches the slot; the metric and the slot agree.
  ASSERT_TRUE(WaitFor(
      [&] {
        scrape = Get(port, "/metrics").body;
        const Lsn slot = sql_.ConfirmedFlush(source_.slot);
        return slot.value() != 0 &&
               SampleOr(scrape, S("outboxd_confirmed_flush_lsn")) == static_cast<double>(slot.value()) &&
               SampleOr(scrape, S("outboxd_inflight_events")) == 0 &&
               Sample(scrape, S("outboxd_slot_retained_wal_bytes")).has_value();
      },
      absl::Seconds(60), absl::Milliseconds(200)))
      << scrape;
  EXPECT_GE(SampleOr(scrape, S("outboxd_transactions_total")), kTxns);
  EXPECT_EQ(SampleOr(scrape, S("outboxd_publish_latency_seconds_count")), kTxns * kRows);
  EXPECT_GT(SampleOr(scrape, S("outboxd_publish_latency_seconds_sum")), 0);
  EXPECT_GE(SampleOr(scrape, S("outboxd_received_lsn")), SampleOr(scrape, S("outboxd_confirmed_flush_lsn")));
  EXPECT_EQ(SampleOr(scrape, S("outboxd_producer_queue_bytes")), 0);
  EXPECT_GE(SampleOr(scrape, S("outboxd_replication_lag_bytes")), 0);
  EXPECT_EQ(SampleOr(scrape, "outboxd_up"), 1);
  EXPECT_EQ(SampleOr(scrape, S("outboxd_standby")), 0);
  EXPECT_EQ(SampleOr(scrape, S("outboxd_streaming")), 1);
  EXPECT_GE(SampleOr(scrape, "outboxd_kafka_brokers_up"), 1);
  EXPECT_EQ(SampleOr(scrape, S("outboxd_slot_active")), 1);
  EXPECT_EQ(SampleOr(scrape, S("outboxd_slot_wal_status{status=\"reserved\"}")), 1);
  EXPECT_GT(SampleOr(scrape, S("outboxd_slot_retained_wal_bytes")), 0);

  // Unrelated writes move the server's WAL end; with the outbox idle, outboxd
  // confirms the keepalive's position, and the lag metric (computed from the
  // stream, no query) comes back under what the writes added.
  const std::string noise = UniqueName("obs_noise");
  sql_.Exec(fmt::format("CREATE TABLE {0} AS SELECT g, repeat('n', 100) AS t FROM "
                        "generate_series(1, 20000) g; DROP TABLE {0}",
                        noise));
  const Lsn after_noise = sql_.CurrentLsn();
  EXPECT_TRUE(WaitFor(
      [&] {
        scrape = Get(port, "/metrics").body;
        return SampleOr(scrape, S("outboxd_confirmed_flush_lsn")) >= static_cast<double>(after_noise.value()) &&
               SampleOr(scrape, S("outboxd_received_lsn")) >= static_cast<double>(after_noise.value()) &&
               SampleOr(scrape, S("outboxd_replication_lag_bytes"), 1e18) < 1024 * 1024;
      },
      absl::Seconds(90), absl::Milliseconds(250)))
      << "after " << after_noise.ToString() << "\n" << scrape;

  // Keep the scrape for the report and check it with promtool.
  const char* out_dir = std::getenv("OUTBOXD_ARTIFACT_DIR");
  const std::string path = std::string(out_dir != nullptr ? out_dir : ".") + "/metrics_scrape.txt";
  std::ofstream(path) << scrape;
  const auto [code, output] = Shell("promtool check metrics < " + path);
  EXPECT_EQ(code, 0) << "promtool check metrics:\n" << output << "\n" << scrape;
  std::ofstream(path + ".promtool.txt") << "$ promtool check metrics < metrics_scrape.txt\n"
                                        << output << "exit " << code << "\n";

  EXPECT_EQ(outboxd->Stop(SIGTERM), 0) << outboxd->Log();
}

TEST_F(ObservabilityTest, ReadyzIs503WhileKafkaIsDownAnd200After) {
  const int port = FreePort();
  OutboxdProcess* outboxd = Start(Config(port));
  HttpResult ready;
  ASSERT_TRUE(WaitReady(port, 200, "ready: streaming", absl::Seconds(60), &ready))
      << ready.status << " " << ready.body << outboxd->Log();

  ASSERT_TRUE(Stack("stop kafka"));
  const bool went_down = WaitReady(port, 503, "Kafka unreachable", absl::Seconds(60), &ready);
  const bool kafka_back = Stack("start kafka");
  ASSERT_TRUE(went_down) << ready.status << " " << ready.body << outboxd->Log();
  ASSERT_TRUE(kafka_back);
  EXPECT_EQ(Get(port, "/healthz").status, 200);
  ASSERT_TRUE(WaitReady(port, 200, "ready: streaming", absl::Seconds(90), &ready))
      << ready.status << " " << ready.body << outboxd->Log();

  // And events flow again.
  InsertRows(sql_, source_.table, 1, 5);
  const std::string published =
      S(fmt::format("outboxd_events_published_total{{topic=\"{}.Order\"}}", source_.topic_prefix));
  std::string scrape;
  EXPECT_TRUE(WaitFor([&] { return SampleOr(scrape = Get(port, "/metrics").body, published) == 5; },
                      absl::Seconds(60), absl::Milliseconds(200)))
      << scrape;
}

// An active + standby pair: both Ready (so a Deployment of two becomes
// Available), only the streaming one active; the standby becomes active when
// the first one stops.
TEST_F(ObservabilityTest, StandbyIsReadyButNotActiveUntilItTakesOver) {
  const int active_port = FreePort();
  OutboxdProcess* active = Start(Config(active_port));
  HttpResult ready;
  ASSERT_TRUE(WaitReady(active_port, 200, "ready: streaming", absl::Seconds(60), &ready))
      << ready.body << active->Log();

  const int standby_port = FreePort();
  OutboxdProcess* standby = Start(Config(standby_port));
  ASSERT_TRUE(WaitReady(standby_port, 200, "ready: standby", absl::Seconds(60), &ready))
      << ready.status << " " << ready.body << standby->Log();
  const std::string scrape = Get(standby_port, "/metrics").body;
  EXPECT_EQ(SampleOr(scrape, S("outboxd_standby")), 1) << scrape;
  EXPECT_EQ(SampleOr(scrape, S("outboxd_streaming")), 0) << scrape;
  EXPECT_EQ(Get(standby_port, "/healthz").status, 200);
  const HttpResult standby_active = Get(standby_port, "/active");
  EXPECT_EQ(standby_active.status, 503);
  EXPECT_EQ(standby_active.body, "{\"active\":false,\"streams\":[]}\n");
  EXPECT_EQ(Get(active_port, "/readyz").status, 200);
  EXPECT_EQ(Get(active_port, "/active").status, 200);

  EXPECT_EQ(active->Stop(SIGTERM), 0);
  ASSERT_TRUE(WaitReady(standby_port, 200, "ready: streaming", absl::Seconds(90), &ready))
      << ready.status << " " << ready.body << standby->Log();
  EXPECT_EQ(Get(standby_port, "/active").status, 200);
  EXPECT_EQ(SampleOr(Get(standby_port, "/metrics").body, S("outboxd_standby")), 0);
}

// Every line of a run with a DSN password and a Kafka secret in the config,
// through events, a reconnect and an error: neither secret appears; in JSON
// mode every line is an object with ts, level and msg.
class LogSecretsTest : public ObservabilityTest, public ::testing::WithParamInterface<bool> {};

TEST_P(LogSecretsTest, NoSecretInAnyLogLine) {
  const bool json = GetParam();
  const std::string password = "pw-" + UniqueName("Secret");
  const std::string kafka_secret = "kafkaSecret-" + UniqueName("x");
  role_ = UniqueName("obs_role");
  sql_.Exec(fmt::format("CREATE ROLE {} LOGIN REPLICATION PASSWORD '{}'", role_, password));
  sql_.Exec(fmt::format("GRANT SELECT ON public.{} TO {}", source_.table, role_));

  std::string config = ConfigFor(source_);
  const std::string dsn = PgDsn();
  const std::string secret_dsn = fmt::format("host=127.0.0.1 port={} dbname=app user={} password={}",
                                             PgPort(), role_, password);
  config.replace(config.find(dsn), dsn.size(), secret_dsn);
  const std::string servers = "\"bootstrap.servers\" = \"" + KafkaBootstrap() + "\"";
  config.replace(config.find(servers), servers.size(),
                 servers + "\n\"sasl.password\" = \"" + kafka_secret +
                     "\"\n\"sasl.username\" = \"outboxd\"\n\"debug\" = \"generic,conf\"");
  if (json) config += "format = \"json\"\n";
  const int port = FreePort();
  config = WithListen(config, port);

  OutboxdProcess* outboxd = Start(config);
  ASSERT_TRUE(outboxd->WaitForLog("streaming slot", absl::Seconds(60))) << outboxd->Log();
  // Events.
  InsertRows(sql_, source_.table, 1, 10);
  const std::string published =
      S(fmt::format("outboxd_events_published_total{{topic=\"{}.Order\"}}", source_.topic_prefix));
  ASSERT_TRUE(WaitFor([&] { return SampleOr(Get(port, "/metrics").body, published) == 10; },
                      absl::Seconds(60), absl::Milliseconds(200)))
      << outboxd->Log();
  // A reconnect: the walsender is terminated under it.
  sql_.Exec(fmt::format(
      "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{}'",
      source_.slot));
  ASSERT_TRUE(WaitFor(
      [&] {
        return SampleOr(Get(port, "/metrics").body, S("outboxd_reconnects_total{target=\"postgres\"}"), 0) >= 1;
      },
      absl::Seconds(60), absl::Milliseconds(200)))
      << outboxd->Log();
  HttpResult ready;
  ASSERT_TRUE(WaitReady(port, 200, "ready", absl::Seconds(60), &ready)) << ready.body << outboxd->Log();
  // An error: a row whose topic Kafka cannot take.
  InsertRows(sql_, source_.table, 2, 1, "bad type!");
  ASSERT_TRUE(outboxd->WaitForLog("bad type!", absl::Seconds(60))) << outboxd->Log();
  outboxd->Stop(SIGTERM);

  const std::string log = outboxd->Log();
  int lines = 0;
  for (const std::string& line : Lines(log)) {
    ++lines;
    EXPECT_EQ(line.find(password), std::string::npos) << line;
    EXPECT_EQ(line.find(kafka_secret), std::string::npos) << line;
    if (json) {
      const nlohmann::json entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      ASSERT_TRUE(entry.is_object()) << "not a JSON object: " << line;
      EXPECT_TRUE(entry.contains("ts") && entry["ts"].is_string()) << line;
      EXPECT_TRUE(entry.contains("level") && entry["level"].is_string()) << line;
      EXPECT_TRUE(entry.contains("msg") && entry["msg"].is_string()) << line;
    } else {
      EXPECT_THAT(line, ::testing::MatchesRegex("[0-9]{4}-[0-9-]{5}T[0-9:.]{12}Z (debug|info|warn|error) .*"));
    }
  }
  // The run did log the things that could leak: the connection, the reconnect, the error.
  EXPECT_GT(lines, 10);
  EXPECT_THAT(log, HasSubstr("streaming slot"));
  EXPECT_THAT(log, HasSubstr("reconnecting to postgres"));
  EXPECT_THAT(log, HasSubstr("bad type!"));
}

INSTANTIATE_TEST_SUITE_P(TextAndJson, LogSecretsTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Json" : "Text"; });

}  // namespace
}  // namespace outboxd::it
