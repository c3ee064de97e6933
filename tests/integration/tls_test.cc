// outboxd over TLS against real servers with certificates made at test time
// (tests/integration/tls_stack.sh, started by the ctest fixture "tls"):
// PostgreSQL with sslmode=verify-full and SCRAM, Kafka over SSL and over
// SASL_SSL with SCRAM-SHA-512. Secrets come from ${file:...} and never show in
// any output.
#include <librdkafka/rdkafka.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "replication/pg_connection.h"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// KEY=VALUE lines written by tls_stack.sh up.
std::map<std::string, std::string> TlsEnv() {
  std::map<std::string, std::string> env;
  std::ifstream in(std::string(OUTBOXD_SOURCE_DIR) + "/.run/tls/env");
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return env;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

using Result = CommandResult;

using Properties = std::vector<std::pair<std::string, std::string>>;

// The keys of every record of `topic`, read over TLS with `properties`, until
// all of `expected` arrived or the deadline.
std::set<std::string> ReadKeys(const Properties& properties, const std::string& topic,
                               const std::set<std::string>& expected, absl::Duration timeout) {
  std::set<std::string> keys;
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  Properties all = properties;
  all.emplace_back("group.id", UniqueName("tls_reader"));
  all.emplace_back("auto.offset.reset", "earliest");
  all.emplace_back("enable.auto.commit", "false");
  all.emplace_back("topic.metadata.refresh.interval.ms", "500");
  for (const auto& [k, v] : all) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
      ADD_FAILURE() << k << ": " << errstr;
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (rk == nullptr) {
    ADD_FAILURE() << "consumer: " << errstr;
    return keys;
  }
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  const absl::Time deadline = absl::Now() + timeout;
  auto done = [&] {
    for (const std::string& id : expected) {
      if (!keys.count(id)) return false;
    }
    return true;
  };
  while (!done() && absl::Now() < deadline) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk, 200);
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR && msg->key != nullptr) {
      keys.emplace(static_cast<const char*>(msg->key), msg->key_len);
    }
    rd_kafka_message_destroy(msg);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return keys;
}

// librdkafka before 2.6.1 computes the SCRAM proof over a doubled nonce, which
// Kafka 4.x rejects as invalid credentials (confluentinc/librdkafka#4895);
// Debian 12 ships 2.0.2.
bool ScramWorksWithKafka4() { return rd_kafka_version() >= 0x02060100; }

std::string LibrdkafkaVersion() { return rd_kafka_version_str(); }

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = TlsEnv();
    ASSERT_FALSE(env_["PG_PORT"].empty())
        << "no .run/tls/env: the ctest fixture tls_stack_up runs tests/integration/tls_stack.sh up";
    pg_password_ = ReadFile(env_["PG_PASSWORD_FILE"]);
    kafka_password_ = ReadFile(env_["KAFKA_PASSWORD_FILE"]);
    ASSERT_GE(pg_password_.size(), 16u);
    ASSERT_GE(kafka_password_.size(), 16u);
    // Set up as postgres over the Unix socket: TCP admits only outboxd, only over TLS.
    auto admin = replication::PgConnection::Connect(
        fmt::format("host={} port={} dbname=app user=postgres", env_["PG_SOCKET_DIR"], env_["PG_PORT"]),
        false);
    ASSERT_TRUE(admin.ok()) << admin.status();
    admin_ = std::move(*admin);
    table_ = UniqueName("tls_outbox");
    slot_ = UniqueName("tls_slot");
    topic_prefix_ = UniqueName("tls");
    Admin(fmt::format(
        "CREATE TABLE public.{0} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type "
        "text NOT NULL, aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT "
        "NULL, headers jsonb, destination text, created_at timestamptz NOT NULL DEFAULT now()); "
        "CREATE PUBLICATION {0} FOR TABLE public.{0} WITH (publish = 'insert'); "
        "GRANT SELECT ON public.{0} TO outboxd",
        table_));
  }

  void TearDown() override {
    if (admin_ == nullptr) return;
    (void)admin_->Query(fmt::format(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}' "
        "AND NOT active",
        slot_));
    (void)admin_->Query(fmt::format("DROP PUBLICATION IF EXISTS {0}; DROP TABLE IF EXISTS public.{0}", table_));
  }

  std::vector<replication::Row> Admin(const std::string& sql) {
    auto rows = admin_->Query(sql);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? *rows : std::vector<replication::Row>{};
  }

  std::string Dsn(const std::string& ca, const std::string& password_ref = "") const {
    return fmt::format(
        "host=127.0.0.1 port={} dbname=app user=outboxd password={} sslmode=verify-full "
        "sslrootcert={}",
        env_.at("PG_PORT"),
        password_ref.empty() ? fmt::format("${{file:{}}}", env_.at("PG_PASSWORD_FILE")) : password_ref,
        ca);
  }

  // librdkafka properties of a client over SSL, or SASL_SSL with `mechanism`.
  // `servers` is an env key naming the broker (default: the 4.x listener).
  Properties Kafka(bool sasl, const std::string& password,
                   const std::string& mechanism = "SCRAM-SHA-512", const std::string& servers = "") const {
    Properties p = {
        {"bootstrap.servers", env_.at(!servers.empty() ? servers : sasl ? "KAFKA_SASL_SSL" : "KAFKA_SSL")},
        {"security.protocol", sasl ? "sasl_ssl" : "ssl"},
        {"ssl.ca.location", env_.at("CA")},
        {"ssl.endpoint.identification.algorithm", "https"},
    };
    if (sasl) {
      p.emplace_back("sasl.mechanisms", mechanism);
      p.emplace_back("sasl.username", "outboxd");
      p.emplace_back("sasl.password", password);
    }
    return p;
  }

  // The SASL mechanism this librdkafka can use with the broker.
  static std::string Sasl() { return ScramWorksWithKafka4() ? "SCRAM-SHA-512" : "PLAIN"; }

  std::string Config(const std::string& dsn, const Properties& kafka) const {
    std::string sink;
    for (const auto& [k, v] : kafka) sink += fmt::format("\"{}\" = \"{}\"\n", k, v);
    return fmt::format(R"([source]
dsn = "{}"
slot = "{}"
publication = "{}"
[sink.kafka]
{}
[[outbox]]
table = "public.{}"
topic = "{}.{{aggregate_type}}"
[messages]
enabled = false
[http]
listen = "off"
[log]
level = "debug"
)",
                       dsn, slot_, table_, sink, table_, topic_prefix_);
  }

  std::string WriteConfig(const std::string& toml) const {
    const std::string path = fmt::format("/tmp/{}.toml", UniqueName("tls"));
    std::ofstream(path) << toml;
    return path;
  }

  std::set<std::string> InsertRows(int n) {
    std::set<std::string> ids;
    for (const auto& row : Admin(fmt::format(
             "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) SELECT "
             "'order', 'o-' || g, 'OrderPlaced', jsonb_build_object('n', g) FROM "
             "generate_series(1, {}) g RETURNING id",
             table_, n))) {
      ids.insert(*row[0]);
    }
    return ids;
  }

  // Streams rows through outboxd with `kafka` (the password as ${file:...}) and
  // checks, reading with `reader` (the password itself), that every id arrived.
  void StreamThrough(const Properties& kafka, const Properties& reader) {
    OutboxdProcess outboxd(Config(Dsn(env_["CA"]), kafka));
    outboxd.Start();
    ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(60))) << outboxd.Log();
    // Every connection of outboxd's role is TLS (pg_hba admits nothing else; this shows it).
    EXPECT_EQ(Admin("SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE "
                    "a.backend_type = 'walsender') FROM pg_stat_activity a JOIN pg_stat_ssl s "
                    "USING (pid) WHERE a.usename = 'outboxd'")[0],
              (replication::Row{"0", "1"}));
    const std::set<std::string> ids = InsertRows(50);
    ASSERT_EQ(ids.size(), 50u);
    EXPECT_EQ(ReadKeys(reader, topic_prefix_ + ".order", ids, absl::Seconds(90)), ids);
    EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
    const std::string log = outboxd.Log();
    EXPECT_THAT(log, Not(HasSubstr(pg_password_)));
    EXPECT_THAT(log, Not(HasSubstr(kafka_password_)));
  }

  std::map<std::string, std::string> env_;
  std::string pg_password_, kafka_password_;
  std::unique_ptr<replication::PgConnection> admin_;
  std::string table_, slot_, topic_prefix_;
};

TEST_F(TlsTest, PostgresVerifyFullAndKafkaSsl) {
  StreamThrough(Kafka(/*sasl=*/false, ""), Kafka(/*sasl=*/false, ""));
}

// KAFKA_SCRAM is the 4.x SASL_SSL listener, or, with a librdkafka older than
// 2.6.1, a Kafka 3.9 broker that tls_stack.sh starts for this test.
TEST_F(TlsTest, PostgresVerifyFullAndKafkaSaslSslScram) {
  ASSERT_FALSE(env_["KAFKA_SCRAM"].empty()) << "no KAFKA_SCRAM in .run/tls/env: rerun tls_stack.sh up";
  ASSERT_TRUE(ScramWorksWithKafka4() || env_["KAFKA_SCRAM"] != env_["KAFKA_SASL_SSL"])
      << "librdkafka " << LibrdkafkaVersion() << " needs the Kafka 3.9 broker for SCRAM";
  StreamThrough(Kafka(true, fmt::format("${{file:{}}}", env_["KAFKA_PASSWORD_FILE"]), "SCRAM-SHA-512", "KAFKA_SCRAM"),
                Kafka(true, kafka_password_, "SCRAM-SHA-512", "KAFKA_SCRAM"));
}

TEST_F(TlsTest, KafkaScramWrongPasswordFailsClearlyWithoutShowingIt) {
  const std::string wrong = "Wr0ngScramPassw0rd-" + UniqueName("x");
  const std::string config =
      WriteConfig(Config(Dsn(env_["CA"]), Kafka(true, wrong, "SCRAM-SHA-512", "KAFKA_SCRAM")));
  Result check = RunOutboxd("check --config " + config);
  EXPECT_EQ(check.code, 1) << check.output;
  EXPECT_THAT(check.output, HasSubstr("Authentication failed"));
  EXPECT_THAT(check.output, HasSubstr("SCRAM-SHA-512"));
  EXPECT_THAT(check.output, Not(HasSubstr(wrong)));
  EXPECT_THAT(check.output, Not(HasSubstr(kafka_password_)));
  std::remove(config.c_str());

  OutboxdProcess outboxd(Config(Dsn(env_["CA"]), Kafka(true, wrong, "SCRAM-SHA-512", "KAFKA_SCRAM")));
  outboxd.Start();
  EXPECT_TRUE(outboxd.WaitForLog("Authentication failed", absl::Seconds(60))) << outboxd.Log();
  outboxd.Stop(SIGTERM);
  EXPECT_THAT(outboxd.Log(), Not(HasSubstr(wrong)));
  EXPECT_THAT(outboxd.Log(), Not(HasSubstr(kafka_password_)));
  EXPECT_THAT(outboxd.Log(), Not(HasSubstr(pg_password_)));
}

TEST_F(TlsTest, PostgresVerifyFullAndKafkaSaslSslPlain) {
  StreamThrough(
      Kafka(/*sasl=*/true, fmt::format("${{file:{}}}", env_["KAFKA_PASSWORD_FILE"]), "PLAIN"),
      Kafka(/*sasl=*/true, kafka_password_, "PLAIN"));
}

// `outboxd check` and `outboxd replay` open ordinary (non-replication)
// connections: over TLS too.
TEST_F(TlsTest, CheckAndReplayOverTls) {
  const std::string config = WriteConfig(
      Config(Dsn(env_["CA"]), Kafka(true, fmt::format("${{file:{}}}", env_["KAFKA_PASSWORD_FILE"]), Sasl())));
  Result check = RunOutboxd("check --config " + config);
  EXPECT_EQ(check.code, 0) << check.output;
  EXPECT_THAT(check.output, HasSubstr("ok    connect"));

  const std::set<std::string> ids = InsertRows(7);
  Result replay = RunOutboxd(fmt::format("replay --config {} --table {} --since 2000-01-01T00:00:00Z",
                                         config, table_));
  EXPECT_EQ(replay.code, 0) << replay.output;
  EXPECT_THAT(replay.output, HasSubstr("7 sent, 0 failed"));
  EXPECT_EQ(ReadKeys(Kafka(true, kafka_password_, Sasl()), topic_prefix_ + ".order", ids, absl::Seconds(60)), ids);
  for (const Result* r : {&check, &replay}) {
    EXPECT_THAT(r->output, Not(HasSubstr(pg_password_)));
    EXPECT_THAT(r->output, Not(HasSubstr(kafka_password_)));
  }
  std::remove(config.c_str());
}

TEST_F(TlsTest, WrongCaFailsWithAClearErrorNamingTheFix) {
  const std::string config = WriteConfig(Config(Dsn(env_["OTHER_CA"]), Kafka(false, "")));
  Result check = RunOutboxd("check --config " + config);
  EXPECT_EQ(check.code, 1) << check.output;
  EXPECT_THAT(check.output, HasSubstr("certificate verify failed"));
  EXPECT_THAT(check.output, HasSubstr("set sslrootcert in [source] dsn to the CA certificate"));

  // The relay stops (exit 1) instead of retrying a configuration error forever.
  Result run = RunOutboxd("run --config " + config);
  EXPECT_EQ(run.code, 1) << run.output;
  EXPECT_THAT(run.output, HasSubstr("set sslrootcert in [source] dsn"));
  EXPECT_THAT(run.output, Not(HasSubstr(pg_password_)));
  std::remove(config.c_str());
}

TEST_F(TlsTest, BadPasswordsFailClearlyWithoutShowingThem) {
  const std::string wrong_pg = "Wr0ngPgPassw0rd-" + UniqueName("x");
  const std::string wrong_kafka = "Wr0ngKafkaPassw0rd-" + UniqueName("x");
  const std::string config = WriteConfig(Config(Dsn(env_["CA"], wrong_pg), Kafka(true, wrong_kafka, Sasl())));
  Result check = RunOutboxd("check --config " + config);
  EXPECT_EQ(check.code, 1) << check.output;
  EXPECT_THAT(check.output, HasSubstr("password authentication failed for user \"outboxd\""));
  EXPECT_THAT(check.output, HasSubstr("check the user and password of [source] dsn"));
  EXPECT_THAT(check.output, HasSubstr("Authentication failed"));
  EXPECT_THAT(check.output, Not(HasSubstr(wrong_pg)));
  EXPECT_THAT(check.output, Not(HasSubstr(wrong_kafka)));

  // The relay: a database authentication failure is fatal.
  Result run = RunOutboxd("run --config " + config);
  EXPECT_EQ(run.code, 1) << run.output;
  EXPECT_THAT(run.output, HasSubstr("password authentication failed"));
  EXPECT_THAT(run.output, Not(HasSubstr(wrong_pg)));
  EXPECT_THAT(run.output, Not(HasSubstr(wrong_kafka)));
  std::remove(config.c_str());

  // A wrong Kafka password with a good database: outboxd logs the broker's
  // refusal (and keeps retrying: credentials may be rotated) without the password.
  OutboxdProcess outboxd(Config(Dsn(env_["CA"]), Kafka(true, wrong_kafka, Sasl())));
  outboxd.Start();
  EXPECT_TRUE(outboxd.WaitForLog("Authentication failed", absl::Seconds(60))) << outboxd.Log();
  outboxd.Stop(SIGTERM);
  EXPECT_THAT(outboxd.Log(), Not(HasSubstr(wrong_kafka)));
  EXPECT_THAT(outboxd.Log(), Not(HasSubstr(pg_password_)));
}

}  // namespace
}  // namespace outboxd::it
