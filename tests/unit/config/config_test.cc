#include "config/config.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "config/log_secrets.h"

namespace outboxd::config {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

// An environment made of the given variables only.
EnvLookup Env(std::map<std::string, std::string> vars = {}) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

constexpr std::string_view kMinimal = R"(
[source]
dsn = "host=db dbname=app user=outboxd"
[sink.kafka]
"bootstrap.servers" = "kafka:9092"
)";

// Appended to kMinimal where a test needs the file to be valid as a whole:
// with messages off by default, kMinimal alone relays nothing.
constexpr std::string_view kMessagesOn = "[messages]\nenabled = true\n";

// kMinimal followed by `extra`.
std::string Minimal(std::string_view extra) { return std::string(kMinimal) + std::string(extra); }

// The error of parsing `text`, which must fail with InvalidArgument.
std::string ErrorOf(std::string_view text, const EnvLookup& env = Env()) {
  absl::StatusOr<Config> config = ParseConfig(text, env);
  EXPECT_FALSE(config.ok()) << text;
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(ParseConfigTest, MessagesAreOptIn) {
  // Any role may call pg_logical_emit_message until EXECUTE is revoked: relaying
  // messages is a decision, not a default.
  absl::StatusOr<Config> config = ParseConfig(Minimal("[[outbox]]\ntable = \"outbox\"\n"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->messages.enabled);
  EXPECT_THAT(ErrorOf(kMinimal), HasSubstr("nothing to relay"));
}

TEST(ParseConfigTest, MinimalConfigTakesEveryDefault) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(kMessagesOn), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.dsn, "host=db dbname=app user=outboxd");
  EXPECT_EQ(config->source.slot, "outboxd");
  EXPECT_EQ(config->source.publication, "outboxd");
  EXPECT_TRUE(config->source.create_slot);
  EXPECT_EQ(config->source.status_interval, absl::Seconds(10));
  EXPECT_EQ(config->source.state_dir, "");
  EXPECT_FALSE(config->source.failover);
  EXPECT_EQ(config->source.standby_dsn, "");
  EXPECT_EQ(config->source.primary_dsn, "");
  EXPECT_THAT(config->kafka.properties, ElementsAre(Pair("bootstrap.servers", "kafka:9092")));
  EXPECT_TRUE(config->outbox.empty());
  EXPECT_TRUE(config->messages.enabled);
  EXPECT_EQ(config->messages.prefix, "outbox");
  EXPECT_EQ(config->messages.topic, "outbox.event.{aggregate_type}");
  EXPECT_EQ(config->messages.key, outbox::KeySource::kId);
  EXPECT_EQ(config->http.listen, "127.0.0.1:9187");
  EXPECT_EQ(config->log.level, "info");
  EXPECT_EQ(config->log.format, "text");
}

TEST(ParseConfigTest, DeliveryIsAtLeastOnceUnlessExactlyOnceIsAskedFor) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(kMessagesOn), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kafka.delivery, Delivery::kAtLeastOnce);

  config = ParseConfig(Minimal(std::string(kMessagesOn) + "[sink]\ndelivery = \"exactly_once\"\n"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kafka.delivery, Delivery::kExactlyOnce);
  EXPECT_EQ(config->kafka.transactional_id, "");
  EXPECT_EQ(config->kafka.checkpoint_topic, "outboxd.checkpoints");
  EXPECT_EQ(config->kafka.transaction_interval, absl::Milliseconds(100));
  EXPECT_EQ(config->kafka.transaction_max_events, 10000);
  EXPECT_EQ(config->kafka.transaction_gap, absl::Milliseconds(3));

  config = ParseConfig(Minimal(std::string(kMessagesOn) +
                               "[sink]\ndelivery = \"exactly_once\"\ntransactional_id = \"orders\"\n"
                               "checkpoint_topic = \"orders.checkpoints\"\ntransaction_interval = \"20ms\"\n"
                               "transaction_max_events = 500\ntransaction_gap = \"0ms\"\n"),
                       Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kafka.transactional_id, "orders");
  EXPECT_EQ(config->kafka.checkpoint_topic, "orders.checkpoints");
  EXPECT_EQ(config->kafka.transaction_interval, absl::Milliseconds(20));
  EXPECT_EQ(config->kafka.transaction_max_events, 500);
  EXPECT_EQ(config->kafka.transaction_gap, absl::ZeroDuration());
}

TEST(ParseConfigTest, ExactlyOnceKeysAreCheckedAndNeedTheMode) {
  const std::string on = std::string(kMessagesOn) + "[sink]\ndelivery = \"exactly_once\"\n";
  EXPECT_THAT(ErrorOf(Minimal(std::string(kMessagesOn) + "[sink]\ndelivery = \"twice\"\n")),
              HasSubstr("sink.delivery = \"twice\": expected \"at_least_once\""));
  EXPECT_THAT(ErrorOf(Minimal(std::string(kMessagesOn) + "[sink]\ntransactional_id = \"x\"\n")),
              HasSubstr("sink.transactional_id applies to delivery = \"exactly_once\" only"));
  EXPECT_THAT(ErrorOf(Minimal(on + "transactional_id = \"\"\n")), HasSubstr("must not be empty"));
  EXPECT_THAT(ErrorOf(Minimal(on + "checkpoint_topic = \"a b\"\n")), HasSubstr("sink.checkpoint_topic"));
  EXPECT_THAT(ErrorOf(Minimal(on + "transaction_interval = \"1ms\"\n")), HasSubstr("from 10ms to 60s"));
  EXPECT_THAT(ErrorOf(Minimal(on + "transaction_max_events = 0\n")), HasSubstr("from 1 to 1000000"));
  EXPECT_THAT(ErrorOf(Minimal(on + "transaction_gap = \"101ms\"\n")),
              HasSubstr("sink.transaction_gap = \"101ms\": must be from 0s to 100ms"));
  EXPECT_THAT(ErrorOf(Minimal(on + "transaction_gap = \"5\"\n")),
              HasSubstr("sink.transaction_gap = \"5\": expected a duration with a unit"));
  EXPECT_THAT(ErrorOf(Minimal(std::string(kMessagesOn) + "[sink]\ntransaction_gap = \"5ms\"\n")),
              HasSubstr("sink.transaction_gap applies to delivery = \"exactly_once\" only"));
}

TEST(ParseConfigTest, OutboxEntryDefaults) {
  absl::StatusOr<Config> config = ParseConfig(Minimal("[[outbox]]\ntable = \"outbox\"\n"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->outbox.size(), 1u);
  const outbox::TableConfig& table = config->outbox[0];
  EXPECT_EQ(table.schema, "public");
  EXPECT_EQ(table.table, "outbox");
  EXPECT_EQ(table.topic, "outbox.event.{aggregate_type}");
  EXPECT_EQ(table.key, outbox::KeySource::kId);
  EXPECT_EQ(table.columns.id, "id");
  EXPECT_EQ(table.columns.aggregate_type, "aggregate_type");
  EXPECT_EQ(table.columns.payload, "payload");
  EXPECT_EQ(table.columns.created_at, "created_at");
}

TEST(ParseConfigTest, FullExample) {
  absl::StatusOr<Config> config = ParseConfig(R"(
[source]
dsn = "host=10.0.0.5 port=5432 dbname=shop user=outboxd"
slot = "shop_outbox"
publication = "shop_pub"
create_slot = false
status_interval = "500ms"
state_dir = "/var/lib/shop-outboxd"
failover = true
standby_dsn = "host=10.0.0.6 dbname=shop user=outboxd"

[sink.kafka]
"bootstrap.servers" = "k1:9092,k2:9092"
"linger.ms" = 5
"enable.idempotence" = true
"compression.type" = "zstd"
"batch.size" = 1000000

[[outbox]]
table = "orders.outbox"
topic = "orders.{event_type}"
key = "aggregate_id"

[[outbox]]
table = "billing.outbox"
topic = "{destination}"

[messages]
enabled = false
prefix = "shop"
topic = "shop.messages"
key = "aggregate_id"

[http]
listen = "0.0.0.0:9000"

[log]
level = "debug"
format = "json"
)",
                                              Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.slot, "shop_outbox");
  EXPECT_EQ(config->source.publication, "shop_pub");
  EXPECT_FALSE(config->source.create_slot);
  EXPECT_EQ(config->source.status_interval, absl::Milliseconds(500));
  EXPECT_EQ(config->source.state_dir, "/var/lib/shop-outboxd");
  EXPECT_TRUE(config->source.failover);
  EXPECT_EQ(config->source.standby_dsn, "host=10.0.0.6 dbname=shop user=outboxd");
  // File order, not toml++'s sorted order; integers and booleans as librdkafka text.
  EXPECT_THAT(config->kafka.properties,
              ElementsAre(Pair("bootstrap.servers", "k1:9092,k2:9092"), Pair("linger.ms", "5"),
                          Pair("enable.idempotence", "true"), Pair("compression.type", "zstd"),
                          Pair("batch.size", "1000000")));
  ASSERT_EQ(config->outbox.size(), 2u);
  EXPECT_EQ(config->outbox[0].schema, "orders");
  EXPECT_EQ(config->outbox[0].table, "outbox");
  EXPECT_EQ(config->outbox[0].topic, "orders.{event_type}");
  EXPECT_EQ(config->outbox[0].key, outbox::KeySource::kAggregateId);
  EXPECT_EQ(config->outbox[1].schema, "billing");
  EXPECT_EQ(config->outbox[1].topic, "{destination}");
  EXPECT_EQ(config->outbox[1].key, outbox::KeySource::kId);
  EXPECT_FALSE(config->messages.enabled);
  EXPECT_EQ(config->messages.prefix, "shop");
  EXPECT_EQ(config->messages.topic, "shop.messages");
  EXPECT_EQ(config->messages.key, outbox::KeySource::kAggregateId);
  EXPECT_EQ(config->http.listen, "0.0.0.0:9000");
  EXPECT_EQ(config->log.level, "debug");
  EXPECT_EQ(config->log.format, "json");
}

TEST(ParseConfigTest, DebeziumColumns) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(R"(
[[outbox]]
table = "inventory.outboxevent"
topic = "outbox.event.{aggregate_type}"
key = "aggregate_id"
[outbox.columns]
aggregate_type = "aggregatetype"
aggregate_id = "aggregateid"
event_type = "type"
)"),
                                              Env());
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->outbox.size(), 1u);
  const outbox::ColumnNames& columns = config->outbox[0].columns;
  EXPECT_EQ(config->outbox[0].schema, "inventory");
  EXPECT_EQ(config->outbox[0].table, "outboxevent");
  EXPECT_EQ(columns.id, "id");
  EXPECT_EQ(columns.aggregate_type, "aggregatetype");
  EXPECT_EQ(columns.aggregate_id, "aggregateid");
  EXPECT_EQ(columns.event_type, "type");
  EXPECT_EQ(columns.payload, "payload");
  EXPECT_EQ(columns.headers, "headers");
}

TEST(ParseConfigTest, AllColumnOverrides) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(R"(
[[outbox]]
table = "t"
columns = { id = "a", aggregate_type = "b", aggregate_id = "c", event_type = "d", payload = "e", headers = "f", destination = "g", created_at = "h" }
)"),
                                              Env());
  ASSERT_TRUE(config.ok()) << config.status();
  const outbox::ColumnNames& c = config->outbox[0].columns;
  EXPECT_EQ(c.id + c.aggregate_type + c.aggregate_id + c.event_type + c.payload + c.headers +
                c.destination + c.created_at,
            "abcdefgh");
}

TEST(ParseConfigTest, ExpandsEnvironmentVariables) {
  absl::StatusOr<Config> config = ParseConfig(R"(
[source]
dsn = "host=${PGHOST} user=outboxd password=${PGPASSWORD} options=$$x cost=$5"
slot = "${SLOT}_1"
[sink.kafka]
"bootstrap.servers" = "${BROKERS}"
"sasl.password" = "${KAFKA_SECRET}"
"literal" = "$${NOT_EXPANDED}"
[messages]
enabled = true
)",
                                              Env({{"PGHOST", "db.internal"},
                                                   {"PGPASSWORD", "s3cret"},
                                                   {"SLOT", "relay"},
                                                   {"BROKERS", "k:9092"},
                                                   {"KAFKA_SECRET", "kpass"}}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.dsn, "host=db.internal user=outboxd password=s3cret options=$x cost=$5");
  EXPECT_EQ(config->source.slot, "relay_1");
  EXPECT_THAT(config->kafka.properties,
              ElementsAre(Pair("bootstrap.servers", "k:9092"), Pair("sasl.password", "kpass"),
                          Pair("literal", "${NOT_EXPANDED}")));
}

TEST(ParseConfigTest, UnsetVariableNamesVariableAndKey) {
  const std::string error = ErrorOf(R"(
[source]
dsn = "host=db password=${PGPASSWORD}"
[sink.kafka]
"bootstrap.servers" = "k:9092"
)");
  EXPECT_EQ(error,
            "config: line 3: source.dsn: environment variable PGPASSWORD is not set; set it in "
            "outboxd's environment (or write \"$${\" for a literal \"${\")");

  EXPECT_THAT(ErrorOf(Minimal("[http]\nlisten = \"${ADDR}\"\n")),
              HasSubstr("http.listen: environment variable ADDR is not set"));
  EXPECT_THAT(ErrorOf(Minimal("[log]\nlevel = \"${LEVEL\"\n")),
              HasSubstr("log.level: \"${\" without a closing \"}\""));
  EXPECT_THAT(ErrorOf(Minimal("[log]\nlevel = \"${}\"\n")),
              HasSubstr("log.level: \"${}\" is not a valid environment variable reference"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "\"sasl.password\" = \"${KAFKA_SECRET}\"\n"),
              HasSubstr("sink.kafka.\"sasl.password\": environment variable KAFKA_SECRET is not set"));
}

// A file under the test's temporary directory holding `content`.
std::string SecretFile(const std::string& name, const std::string& content) {
  const std::string path = ::testing::TempDir() + "/config_test_" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  return path;
}

TEST(ParseConfigTest, ExpandsSecretFilesWithoutTheirTrailingNewline) {
  const std::string pg = SecretFile("pg_password", "pg s3cret\n");
  const std::string kafka = SecretFile("kafka_password", "k$pass{}\r\n");
  const std::string bare = SecretFile("bare", "no-newline");
  const std::string two = SecretFile("two_newlines", "a\n\n");
  absl::StatusOr<Config> config = ParseConfig(fmt::format(R"(
[source]
dsn = "host=db user=outboxd password='${{file:{}}}'"
[sink.kafka]
"bootstrap.servers" = "k:9092"
"sasl.password" = "${{file:{}}}"
"ssl.key.password" = "${{file:{}}}-${{USER_SUFFIX}}"
"x" = "${{file:{}}}"
[messages]
enabled = true
)",
                                                          pg, kafka, bare, two),
                                              Env({{"USER_SUFFIX", "env"}}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.dsn, "host=db user=outboxd password='pg s3cret'");
  EXPECT_THAT(config->kafka.properties,
              ElementsAre(Pair("bootstrap.servers", "k:9092"), Pair("sasl.password", "k$pass{}"),
                          Pair("ssl.key.password", "no-newline-env"), Pair("x", "a\n")));
}

TEST(ParseConfigTest, UnreadableSecretFileNamesKeyAndPathNotContent) {
  const std::string missing = ::testing::TempDir() + "/config_test_does_not_exist";
  EXPECT_EQ(ErrorOf(fmt::format("[source]\ndsn = \"password=${{file:{}}}\"\n", missing)),
            fmt::format("config: line 2: source.dsn: cannot read secret file {}: No such file or "
                        "directory; check the path and that outboxd's user may read it",
                        missing));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + fmt::format("\"sasl.password\" = \"${{file:{}}}\"\n",
                                                          ::testing::TempDir())),
              HasSubstr("sink.kafka.\"sasl.password\": cannot read secret file"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "\"sasl.password\" = \"${file:}\"\n"),
              HasSubstr("sink.kafka.\"sasl.password\": \"${file:}\" names no file"));
  // "$${file:...}" stays literal text.
  absl::StatusOr<Config> literal =
      ParseConfig(std::string(kMinimal) + "\"x\" = \"$${file:/nope}\"\n" + std::string(kMessagesOn),
                  Env());
  ASSERT_TRUE(literal.ok()) << literal.status();
  EXPECT_THAT(literal->kafka.properties, Contains(Pair("x", "${file:/nope}")));
}

TEST(ParseConfigTest, ErrorsAfterASecretNeverQuoteIt) {
  // A bad value elsewhere in the file: the message names that key only.
  const std::string secret_file = SecretFile("quiet", "Hush-Hush-42\n");
  const std::string error = ErrorOf(fmt::format(R"(
[source]
dsn = "host=db password=${{file:{}}}"
slot = "Bad-Slot"
[sink.kafka]
"bootstrap.servers" = "k:9092"
"sasl.password" = "${{file:{}}}"
)",
                                                secret_file, secret_file));
  EXPECT_THAT(error, HasSubstr("source.slot"));
  EXPECT_THAT(error, Not(HasSubstr("Hush-Hush-42")));
}

TEST(ParseConfigTest, UnknownKeySuggestsTheClosestName) {
  EXPECT_EQ(ErrorOf(R"(
[source]
dns = "host=db"
)"),
            "config: line 3: unknown key source.dns; did you mean dsn?");
  EXPECT_EQ(ErrorOf(Minimal("[[outbox]]\ntable = \"t\"\ntopci = \"x\"\n")),
            "config: line 8: unknown key [[outbox]] #1 topci; did you mean topic?");
  EXPECT_EQ(ErrorOf(Minimal("[[outbox]]\ntable = \"t\"\n[outbox.columns]\naggregatetype = \"x\"\n")),
            "config: line 9: unknown key [[outbox]] #1 columns.aggregatetype; did you mean "
            "aggregate_type?");
  EXPECT_EQ(ErrorOf(Minimal("[log]\nlevle = \"info\"\n")),
            "config: line 7: unknown key log.levle; did you mean level?");
  EXPECT_EQ(ErrorOf(Minimal("[sorce]\n")),
            "config: line 6: unknown key sorce; did you mean source?");
  // Nothing close: list the section's keys instead.
  EXPECT_EQ(ErrorOf(Minimal("[http]\nport = 9187\n")),
            "config: line 7: unknown key http.port; the keys of [http] are: listen");
  // A section key written above every [section] header.
  EXPECT_EQ(ErrorOf("dsn = \"host=db\"\n"),
            "config: line 1: unknown key dsn; did you mean source.dsn? Put it under [source]");
  EXPECT_EQ(ErrorOf(Minimal("[sink.rabbitmq]\n")),
            "config: line 6: unknown key sink.rabbitmq; the keys of [sink] are: kafka, delivery, "
            "transactional_id, checkpoint_topic, transaction_interval, transaction_max_events, "
            "transaction_gap");
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"h\"\non_bad_event = \"stop\"\n"),
            "config: line 3: unknown key source.on_bad_event; the keys of [source] are: dsn, databases, "
            "discovery_interval, slot, max_active_slots, publication, create_slot, status_interval, state_dir, "
            "failover, standby_dsn, snapshot, primary_dsn");
}

TEST(ParseConfigTest, StopFlushTimeoutIsAShutdownKeyWithARange) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(kMessagesOn), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->shutdown.stop_flush_timeout, absl::Seconds(30));
  config = ParseConfig(Minimal(std::string(kMessagesOn) + "[shutdown]\nstop_flush_timeout = \"2m\"\n"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->shutdown.stop_flush_timeout, absl::Minutes(2));
  EXPECT_EQ(ErrorOf(Minimal("[shutdown]\nstop_flush_timeout = \"500ms\"\n")),
            "config: line 7: shutdown.stop_flush_timeout = \"500ms\": must be from 1s to 600s; the supervisor's "
            "grace period (systemd TimeoutStopSec, Kubernetes terminationGracePeriodSeconds) must exceed it by 10s "
            "(docs/deployment.md, \"Stopping\")");
  EXPECT_THAT(ErrorOf(Minimal("[shutdown]\nstop_flush_timeout = \"11m\"\n")), HasSubstr("must be from 1s to 600s"));
  EXPECT_THAT(ErrorOf(Minimal("[shutdown]\nstop_flush_timeout = 30\n")),
              HasSubstr("shutdown.stop_flush_timeout must be a string"));
  EXPECT_EQ(ErrorOf(Minimal("[shutdown]\nstop_timeout = \"30s\"\n")),
            "config: line 7: unknown key shutdown.stop_timeout; the keys of [shutdown] are: stop_flush_timeout");
  // Where README once wrote it: the error says where it belongs.
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"h\"\nstop_flush_timeout = \"30s\"\n"),
            "config: line 3: source.stop_flush_timeout: the stop budget is a key of its own table: put it under "
            "[shutdown] (shutdown.stop_flush_timeout = \"30s\")");
  EXPECT_EQ(ErrorOf("stop_flush_timeout = \"30s\"\n"),
            "config: line 1: unknown key stop_flush_timeout; did you mean shutdown.stop_flush_timeout? Put it under "
            "[shutdown]");
}

TEST(ParseConfigTest, WrongTypesNameKeyAndType) {
  EXPECT_EQ(ErrorOf(R"(
[source]
dsn = "host=db"
create_slot = "yes"
)"),
            "config: line 4: source.create_slot must be true or false (no quotes), not a string");
  EXPECT_EQ(ErrorOf("[source]\ndsn = 5\n"),
            "config: line 2: source.dsn must be a string (in double quotes), not an integer");
  EXPECT_EQ(ErrorOf("source = \"x\"\n"),
            "config: line 1: source must be a table: write [source] on a line of its own, then its "
            "keys, one per line; it is a string here");
  EXPECT_EQ(ErrorOf(Minimal("[outbox]\ntable = \"t\"\n")),
            "config: line 6: outbox must be an array of tables: write [[outbox]] (double brackets) "
            "once per outbox table; it is a table here");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "\"acks\" = [\"all\"]\n"),
            "config: line 6: sink.kafka.\"acks\" must be a string, an integer or a boolean, not an "
            "array");
  EXPECT_EQ(ErrorOf(Minimal("[messages]\nenabled = 1\n")),
            "config: line 7: messages.enabled must be true or false (no quotes), not an integer");
  EXPECT_EQ(ErrorOf(Minimal("[http]\nlisten = 9187\n")),
            "config: line 7: http.listen must be a string (in double quotes), not an integer");
  EXPECT_EQ(ErrorOf(Minimal("[[outbox]]\ntable = \"t\"\ncolumns = \"id\"\n")),
            "config: line 8: [[outbox]] #1 columns must be a table: write [outbox.columns] on a "
            "line of its own, then its keys, one per line; it is a string here");
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"h\"\nstatus_interval = 10\n"),
            "config: line 3: source.status_interval must be a string (in double quotes), not an "
            "integer");
}

TEST(ParseConfigTest, UnquotedDottedKafkaPropertyIsExplained) {
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"h\"\n[sink.kafka]\nbootstrap.servers = \"k:9092\"\n"),
            "config: line 4: sink.kafka.bootstrap is a table: quote librdkafka property names that "
            "contain dots, e.g. \"bootstrap.servers\" = \"host:port\"");
}

TEST(ParseConfigTest, MessageTimeoutZeroIsRefused) {
  // 0 = no delivery deadline: with Kafka down a stop could never complete.
  for (std::string_view name : {"message.timeout.ms", "delivery.timeout.ms"}) {
    for (std::string_view value : {"0", "\"0\""}) {
      const std::string error = ErrorOf(std::string(kMinimal) + "\"" + std::string(name) +
                                        "\" = " + std::string(value) + "\n" +
                                        std::string(kMessagesOn));
      EXPECT_THAT(error, HasSubstr("config: line 6: sink.kafka.\"" + std::string(name) +
                                   "\" = 0 (no delivery deadline) is refused"))
          << value;
      EXPECT_THAT(error, HasSubstr("a stop could never complete")) << value;
    }
  }
  absl::StatusOr<Config> config = ParseConfig(
      std::string(kMinimal) + "\"message.timeout.ms\" = 1\n" + std::string(kMessagesOn), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->kafka.properties, Contains(Pair("message.timeout.ms", "1")));
}

TEST(CheckStatusIntervalTest, RefusesAnIntervalTheServerTimeoutCannotWorkWith) {
  bool tight = true;
  // wal_sender_timeout = 0: the server never drops an idle stream.
  EXPECT_TRUE(CheckStatusInterval(absl::Seconds(10), absl::ZeroDuration(), &tight).ok());
  EXPECT_FALSE(tight);
  EXPECT_TRUE(CheckStatusInterval(absl::Seconds(10), absl::Seconds(60), &tight).ok());
  EXPECT_FALSE(tight);
  // Exactly half: still a full interval of margin.
  EXPECT_TRUE(CheckStatusInterval(absl::Seconds(5), absl::Seconds(10), &tight).ok());
  EXPECT_FALSE(tight);
  EXPECT_TRUE(CheckStatusInterval(absl::Milliseconds(5001), absl::Seconds(10), &tight).ok());
  EXPECT_TRUE(tight);
  EXPECT_TRUE(CheckStatusInterval(absl::Milliseconds(9999), absl::Seconds(10), &tight).ok());
  EXPECT_TRUE(tight);
  const absl::Status equal = CheckStatusInterval(absl::Seconds(10), absl::Seconds(10), &tight);
  EXPECT_EQ(equal.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(equal.message()),
              HasSubstr("status_interval = 10000 ms is not below the server's wal_sender_timeout "
                        "= 10000 ms"));
  EXPECT_THAT(std::string(equal.message()), HasSubstr("\"4999ms\""));
  EXPECT_EQ(CheckStatusInterval(absl::Seconds(30), absl::Seconds(5), &tight).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ParseConfigTest, KafkaFloatsAndNegativeIntegersBecomeText) {
  absl::StatusOr<Config> config =
      ParseConfig(std::string(kMinimal) + "\"queue.buffering.max.ms\" = 0.5\n\"x\" = -1\n" +
                      std::string(kMessagesOn),
                  Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->kafka.properties,
              ElementsAre(Pair("bootstrap.servers", "kafka:9092"),
                          Pair("queue.buffering.max.ms", "0.5"), Pair("x", "-1")));
}

TEST(ParseConfigTest, BadKeySource) {
  EXPECT_EQ(ErrorOf(Minimal(R"(
[[outbox]]
table = "a"
[[outbox]]
table = "b"
key = "aggregateid"
)")),
            "config: line 11: [[outbox]] #2 key = \"aggregateid\": expected \"id\" (the outbox "
            "UUID) or \"aggregate_id\" (per-aggregate partition order)");
  EXPECT_THAT(ErrorOf(Minimal("[messages]\nkey = \"uuid\"\n")),
              HasSubstr("line 7: messages.key = \"uuid\": expected \"id\""));
}

TEST(ParseConfigTest, BadLogLevelAndFormat) {
  EXPECT_EQ(ErrorOf(Minimal("[log]\nlevel = \"verbose\"\n")),
            "config: line 7: log.level = \"verbose\": expected \"debug\", \"info\", \"warn\" or "
            "\"error\"");
  EXPECT_EQ(ErrorOf(Minimal("[log]\nlevel = \"INFO\"\n")),
            "config: line 7: log.level = \"INFO\": expected \"debug\", \"info\", \"warn\" or "
            "\"error\"");
  EXPECT_EQ(ErrorOf(Minimal("[log]\nformat = \"logfmt\"\n")),
            "config: line 7: log.format = \"logfmt\": expected \"text\" or \"json\"");
}

TEST(ParseConfigTest, ListenAddress) {
  for (const char* good : {"127.0.0.1:9187", "0.0.0.0:1", "localhost:65535", "[::1]:9187",
                           "[::]:80", "metrics-host.internal:9187", "", "off"}) {
    absl::StatusOr<Config> config =
        ParseConfig(Minimal(std::string("[http]\nlisten = \"") + good + "\"\n" + std::string(kMessagesOn)),
                    Env());
    ASSERT_TRUE(config.ok()) << good << ": " << config.status();
    EXPECT_EQ(config->http.listen, good);
  }
  const std::pair<const char*, const char*> bad[] = {
      {"9187", "expected \"host:port\""},
      {":9187", "the host is missing"},
      {"127.0.0.1:", "the port must be a number from 1 to 65535"},
      {"127.0.0.1:0", "the port must be a number from 1 to 65535"},
      {"127.0.0.1:65536", "the port must be a number from 1 to 65535"},
      {"127.0.0.1:http", "the port must be a number from 1 to 65535"},
      {"::1:9187", "write an IPv6 address in brackets"},
      {"[::1]9187", "expected \"[ipv6]:port\""},
      {"[zz]:9187", "the address in brackets is not an IPv6 address"},
      {"my host:9187", "the host is not an IP address or host name"},
      {"Off", "expected \"host:port\""},
  };
  for (const auto& [listen, problem] : bad) {
    const std::string error = ErrorOf(Minimal(std::string("[http]\nlisten = \"") + listen + "\"\n"));
    EXPECT_THAT(error, HasSubstr(std::string("line 7: http.listen = \"") + listen + "\": " + problem))
        << listen;
  }
}

TEST(ParseConfigTest, MissingRequiredKeys) {
  EXPECT_EQ(ErrorOf("[sink.kafka]\n\"bootstrap.servers\" = \"k:9092\"\n"),
            "config: [source] is missing: add it with at least dsn = \"host=... dbname=... "
            "user=...\" (the libpq connection string of the database to relay from)");
  EXPECT_EQ(ErrorOf("[source]\nslot = \"s\"\n[sink.kafka]\n\"bootstrap.servers\" = \"k:9092\"\n"),
            "config: line 1: source.dsn is missing: set it to the libpq connection string, e.g. "
            "dsn = \"host=127.0.0.1 port=5432 dbname=app user=outboxd password=${PGPASSWORD}\"");
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"\"\n"), "config: line 2: source.dsn must not be empty");
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"host=db\"\n"),
            "config: [sink.kafka] is missing: add it with at least \"bootstrap.servers\" = "
            "\"host:port\" (librdkafka properties, quoted because they contain dots)");
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"host=db\"\n[sink.kafka]\n\"client.id\" = \"x\"\n"),
            "config: line 3: sink.kafka.\"bootstrap.servers\" is missing: set it to the Kafka "
            "brokers, e.g. \"bootstrap.servers\" = \"kafka1:9092,kafka2:9092\"");
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"host=db\"\n[sink.kafka]\n\"bootstrap.servers\" = \"\"\n"),
              HasSubstr("line 4: sink.kafka.\"bootstrap.servers\" must not be empty"));
  EXPECT_EQ(ErrorOf(Minimal("[[outbox]]\ntopic = \"t\"\n")),
            "config: line 6: [[outbox]] #1 table is missing: name the outbox table, e.g. table = "
            "\"public.outbox\"");
}

TEST(ParseConfigTest, NothingToRelay) {
  EXPECT_EQ(ErrorOf(Minimal("[messages]\nenabled = false\n")),
            "config: nothing to relay: add an [[outbox]] table, or set messages.enabled = true to "
            "relay pg_logical_emit_message events");
  EXPECT_TRUE(ParseConfig(Minimal("[messages]\nenabled = false\n[[outbox]]\ntable = \"o\"\n"), Env())
                  .ok());
}

TEST(ParseConfigTest, DuplicateTable) {
  // "outbox" is public.outbox.
  EXPECT_EQ(ErrorOf(Minimal(R"(
[[outbox]]
table = "public.outbox"
[[outbox]]
table = "other.outbox"
[[outbox]]
table = "outbox"
)")),
            "config: line 12: [[outbox]] #3 table = \"public.outbox\" is already configured by "
            "[[outbox]] #1; list each table once");
}

TEST(ParseConfigTest, BadTableNames) {
  for (const char* bad : {"a.b.c", ".outbox", "public.", "\\\"Outbox\\\"", "my outbox"}) {
    EXPECT_THAT(ErrorOf(Minimal(std::string("[[outbox]]\ntable = \"") + bad + "\"\n")),
                HasSubstr("line 7: [[outbox]] #1 table = "))
        << bad;
  }
  EXPECT_THAT(ErrorOf(Minimal("[[outbox]]\ntable = \"\"\n")),
              HasSubstr("line 7: [[outbox]] #1 table must not be empty"));
}

TEST(ParseConfigTest, SlotAndPublicationNames) {
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"h\"\nslot = \"My-Slot\"\n"),
            "config: line 3: source.slot = \"My-Slot\": a replication slot name is 1 to 63 "
            "lower-case letters, digits and underscores (placeholders {database} and {publication} allowed)");
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"h\"\nslot = \"" + std::string(64, 's') + "\"\n"),
              HasSubstr("line 3: source.slot = "));
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"h\"\npublication = \"1pub\"\n"),
              HasSubstr("line 3: source.publication = \"1pub\": use 1 to 63 lower-case letters"));
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"h\"\npublication = \"a,b\"\n"),
              HasSubstr("line 3: source.publication = \"a,b\""));
  absl::StatusOr<Config> config =
      ParseConfig("[source]\ndsn = \"h\"\nslot = \"0_slot\"\npublication = \"_pub1\"\n"
                      "[sink.kafka]\n\"bootstrap.servers\" = \"k:1\"\n" +
                      std::string(kMessagesOn),
                  Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.slot, "0_slot");
  EXPECT_EQ(config->source.publication, "_pub1");
}

TEST(ParseConfigTest, StatusInterval) {
  const std::pair<const char*, absl::Duration> good[] = {{"100ms", absl::Milliseconds(100)},
                                                         {"10s", absl::Seconds(10)},
                                                         {"1m", absl::Minutes(1)},
                                                         {"2.5s", absl::Milliseconds(2500)},
                                                         {"1s500ms", absl::Milliseconds(1500)}};
  for (const auto& [text, expected] : good) {
    absl::StatusOr<Config> config = ParseConfig(
        std::string("[source]\ndsn = \"h\"\nstatus_interval = \"") + text +
            "\"\n[sink.kafka]\n\"bootstrap.servers\" = \"k:1\"\n" + std::string(kMessagesOn),
        Env());
    ASSERT_TRUE(config.ok()) << text << ": " << config.status();
    EXPECT_EQ(config->source.status_interval, expected) << text;
  }
  for (const char* bad : {"10", "0", "ten seconds", "", "10 s"}) {
    EXPECT_THAT(ErrorOf(std::string("[source]\ndsn = \"h\"\nstatus_interval = \"") + bad + "\"\n"),
                HasSubstr(std::string("line 3: source.status_interval = \"") + bad +
                          "\": expected a duration with a unit"))
        << bad;
  }
  for (const char* out_of_range : {"99ms", "61s", "2m", "-1s", "inf"}) {
    EXPECT_THAT(
        ErrorOf(std::string("[source]\ndsn = \"h\"\nstatus_interval = \"") + out_of_range + "\"\n"),
        HasSubstr(std::string("line 3: source.status_interval = \"") + out_of_range +
                  "\": must be from 100ms to 60s"))
        << out_of_range;
  }
}

TEST(ParseConfigTest, DsnMustNotAskForReplication) {
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"host=db replication=database\"\n"),
            "config: line 2: source.dsn must not set replication: outboxd opens its replication "
            "connection itself; remove replication=... from the DSN");
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"postgresql://u@db/app?sslmode=require&replication=true\"\n"),
              HasSubstr("source.dsn must not set replication"));
  absl::StatusOr<Config> config = ParseConfig(
      "[source]\ndsn = \"host=db application_name='replication=x'\"\n"
      "[sink.kafka]\n\"bootstrap.servers\" = \"k:1\"\n" + std::string(kMessagesOn),
      Env());
  EXPECT_TRUE(config.ok()) << config.status();
}

// [source] primary_dsn: the primary of a standby that dsn reaches; an ordinary
// connection, and its password is a secret like dsn's.
TEST(ParseConfigTest, PrimaryDsnIsAnOrdinaryConnectionAndItsPasswordASecret) {
  absl::StatusOr<Config> config = ParseConfig(
      "[source]\ndsn = \"host=replica dbname=app user=outboxd\"\n"
      "primary_dsn = \"host=primary dbname=app user=outboxd password=pr1mary-secret\"\n"
      "[sink.kafka]\n\"bootstrap.servers\" = \"k:1\"\n" + std::string(kMessagesOn),
      Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.primary_dsn, "host=primary dbname=app user=outboxd password=pr1mary-secret");
  EXPECT_THAT(ConfigSecrets(*config), Contains("pr1mary-secret"));
  EXPECT_EQ(ErrorOf("[source]\ndsn = \"host=replica\"\nprimary_dsn = \"host=primary replication=database\"\n"),
            "config: line 3: source.primary_dsn must not set replication: outboxd asks the primary for a "
            "standby snapshot over an ordinary connection; remove replication=... from it");
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"host=replica\"\nprimary_dsn = 5\n"), HasSubstr("source.primary_dsn"));
}

// libpq (PQconninfoParse) decides what the DSN sets: its spacing, quoting and
// percent-decoding, not a second parser of ours.
TEST(ParseConfigTest, ReplicationIsFoundAsLibpqReadsIt) {
  for (const char* dsn : {"host=db replication = database", "host=db replication='true'",
                          "postgresql://db/app?repl%69cation=database",
                          "postgres://db/app?sslmode=require&replication=true"}) {
    EXPECT_THAT(ErrorOf(fmt::format("[source]\ndsn = \"{}\"\n", dsn)),
                HasSubstr("source.dsn must not set replication"))
        << dsn;
  }
  for (const char* dsn : {"host=db dbname='replication=x'", "postgresql://db/replication",
                          "host=db options='-c replication=x'"}) {
    absl::StatusOr<Config> config = ParseConfig(
        fmt::format("[source]\ndsn = \"{}\"\n[sink.kafka]\n\"bootstrap.servers\" = \"k:1\"\n{}", dsn, kMessagesOn),
        Env());
    EXPECT_TRUE(config.ok()) << dsn << ": " << config.status();
  }
}

TEST(ParseConfigTest, SyntaxErrorNamesLineAndColumn) {
  const std::string error = ErrorOf("[source]\ndsn = host=db\n");
  EXPECT_THAT(error, HasSubstr("config: line 2, column "));
  EXPECT_THAT(error, HasSubstr("invalid TOML"));
  // Duplicate keys are a TOML error too.
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"a\"\ndsn = \"b\"\n"), HasSubstr("config: line 3, column"));
}

TEST(ParseConfigTest, InvalidTopicTemplateNamesKey) {
  EXPECT_THAT(ErrorOf(Minimal("[[outbox]]\ntable = \"t\"\ntopic = \"orders.{aggregate}\"\n")),
              HasSubstr("config: line 8: [[outbox]] #1 topic = \"orders.{aggregate}\": "));
  EXPECT_THAT(ErrorOf(Minimal("[messages]\ntopic = \"orders.{event_type\"\n")),
              HasSubstr("config: line 7: messages.topic = \"orders.{event_type\": "));
  EXPECT_THAT(ErrorOf(Minimal("[messages]\ntopic = \"no spaces allowed\"\n")),
              HasSubstr("config: line 7: messages.topic = \"no spaces allowed\": "));
  EXPECT_THAT(ErrorOf(Minimal("[messages]\ntopic = \"\"\n")),
              HasSubstr("config: line 7: messages.topic must not be empty"));
}

TEST(RedactDsnTest, KeywordValueForms) {
  const std::pair<const char*, const char*> cases[] = {
      {"host=db password=s3cret user=u", "host=db password=******** user=u"},
      {"password=s3cret", "password=********"},
      {"host=db password = s3cret", "host=db password = ********"},
      {"host=db password='a b\\' c' user=u", "host=db password=******** user=u"},
      {"host=db PASSWORD=s3cret", "host=db PASSWORD=********"},
      {"host=db sslpassword=keypass sslmode=verify-full",
       "host=db sslpassword=******** sslmode=verify-full"},
      {"host=db password=a\\ b user=u", "host=db password=******** user=u"},
      {"host=db password='unterminated", "host=db password=********"},
      {"host=db password secret", "host=db password ********"},
      {"host=db user=u", "host=db user=u"},
      {"", ""},
      // dbname may hold a whole connection string.
      {"dbname='postgresql://u:s3cret@db/app' user=u", "dbname='postgresql://u:********@db/app' user=u"},
      {"dbname='host=db password=s3cret'", "dbname='host=db password=********'"},
      {"dbname=app", "dbname=app"},
  };
  for (const auto& [dsn, expected] : cases) EXPECT_EQ(RedactDsn(dsn), expected) << dsn;
}

TEST(RedactDsnTest, UriForms) {
  const std::pair<const char*, const char*> cases[] = {
      {"postgresql://user:s3cret@db:5432/app", "postgresql://user:********@db:5432/app"},
      {"postgres://user:s3cret@db/app?sslmode=require", "postgres://user:********@db/app?sslmode=require"},
      {"postgresql://user:p@ss@db/app", "postgresql://user:********@db/app"},
      {"postgresql://user@db:5432/app?password=s3cret&sslmode=require",
       "postgresql://user@db:5432/app?password=********&sslmode=require"},
      {"postgresql://db/app?sslpassword=s3cret", "postgresql://db/app?sslpassword=********"},
      {"postgresql://db/app?pass%77ord=s3cret", "postgresql://db/app?pass%77ord=********"},
      {"POSTGRESQL://user:s3cret@db/app", "POSTGRESQL://user:********@db/app"},
      {"postgresql://user@db:5432/app", "postgresql://user@db:5432/app"},
      {"postgresql://", "postgresql://"},
      {"postgresql://db?dbname=host%3Ddb%20password%3Ds3cret", "postgresql://db?dbname=host=db password=********"},
  };
  for (const auto& [dsn, expected] : cases) EXPECT_EQ(RedactDsn(dsn), expected) << dsn;
}

TEST(RedactDsnTest, NeverContainsThePassword) {
  for (const char* dsn :
       {"password=s3cret", "password='s3cret'", "password = 's3 cret'", "  password=s3cret  ",
        "postgresql://u:s3cret@h/db", "postgresql://u:s3cret@h/db?password=s3cret",
        "host=h password=s3cret password=s3cret", "dbname='password=s3cret'",
        "dbname=password=s3cret", "dbname='postgresql://u:s3cret@h'"}) {
    EXPECT_THAT(RedactDsn(dsn), Not(HasSubstr("s3")));
  }
}

TEST(LoadConfigTest, MissingFileIsNotFound) {
  absl::StatusOr<Config> config = LoadConfig("/nonexistent/outboxd.toml");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr("/nonexistent/outboxd.toml"));
}

TEST(LoadConfigTest, DirectoryIsNotFound) {
  absl::StatusOr<Config> config = LoadConfig(::testing::TempDir());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr("is a directory"));
}

TEST(LoadConfigTest, ReadsFileAndNamesItInErrors) {
  const std::string path = ::testing::TempDir() + "/config_test_load.toml";
  {
    std::ofstream file(path);
    file << kMinimal << "[log]\nlevel = \"loud\"\n";
  }
  absl::StatusOr<Config> config = LoadConfig(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(),
              HasSubstr("config " + path + ": line 7: log.level = \"loud\""));
  {
    std::ofstream file(path);
    file << kMinimal << kMessagesOn;
  }
  config = LoadConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.dsn, "host=db dbname=app user=outboxd");
  std::remove(path.c_str());
}

TEST(ShippedConfigTest, LocalStackConfigParses) {
  const std::string path = std::string(OUTBOXD_SOURCE_DIR) + "/deploy/local/outboxd.toml";
  absl::StatusOr<Config> config = ParseConfig(ReadFile(path), Env());
  ASSERT_TRUE(config.ok()) << path << ": " << config.status();
  EXPECT_EQ(config->source.dsn, "host=127.0.0.1 port=54329 dbname=app user=postgres");
  EXPECT_THAT(config->kafka.properties, testing::Contains(Pair("bootstrap.servers", "127.0.0.1:59092")));
  ASSERT_EQ(config->outbox.size(), 1u);
  EXPECT_EQ(config->outbox[0].schema, "public");
  EXPECT_EQ(config->outbox[0].table, "outbox");
}

// Every ```toml block of docs/configuration.md is a complete file that must
// parse, with any ${NAME} set.
TEST(ShippedConfigTest, EveryDocumentedExampleParses) {
  const std::string path = std::string(OUTBOXD_SOURCE_DIR) + "/docs/configuration.md";
  std::istringstream doc(ReadFile(path));
  std::vector<std::pair<int, std::string>> blocks;
  std::string line;
  int line_number = 0;
  bool in_block = false;
  while (std::getline(doc, line)) {
    ++line_number;
    if (!in_block && line == "```toml") {
      in_block = true;
      blocks.emplace_back(line_number, "");
    } else if (in_block && line == "```") {
      in_block = false;
    } else if (in_block) {
      blocks.back().second += line + "\n";
    }
  }
  ASSERT_FALSE(in_block) << "unterminated ```toml block in " << path;
  ASSERT_GE(blocks.size(), 4u) << path;
  const EnvLookup any = [](std::string_view name) -> std::optional<std::string> {
    return "value_of_" + std::string(name);
  };
  for (const auto& [start, text] : blocks) {
    absl::StatusOr<Config> config = ParseConfig(text, any);
    EXPECT_TRUE(config.ok()) << path << ":" << start << ": " << config.status();
  }
}

}  // namespace
}  // namespace outboxd::config

namespace outboxd::config {
namespace {

TEST(ParseConfigTest, ErrorsSection) {
  absl::StatusOr<Config> defaults = ParseConfig(Minimal(kMessagesOn), Env());
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->errors.on_bad_event, outbox::BadEventPolicy::kDeadLetter);
  EXPECT_EQ(defaults->errors.dead_letter_topic, "outboxd.dlq");

  absl::StatusOr<Config> stop =
      ParseConfig(Minimal(std::string(kMessagesOn) +
                          "[errors]\non_bad_event = \"stop\"\ndead_letter_topic = \"app.dlq\"\n"),
                  Env());
  ASSERT_TRUE(stop.ok()) << stop.status();
  EXPECT_EQ(stop->errors.on_bad_event, outbox::BadEventPolicy::kStop);
  EXPECT_EQ(stop->errors.dead_letter_topic, "app.dlq");

  EXPECT_THAT(ErrorOf(Minimal("[errors]\non_bad_event = \"skip\"\n")),
              HasSubstr("errors.on_bad_event = \"skip\": expected \"dead_letter\""));
  EXPECT_THAT(ErrorOf(Minimal("[errors]\ndead_letter_topic = \"bad topic\"\n")),
              HasSubstr("errors.dead_letter_topic = \"bad topic\""));
  EXPECT_THAT(ErrorOf(Minimal("[errors]\ndead_letter = \"x\"\n")),
              HasSubstr("unknown key errors.dead_letter"));
}

TEST(SchemaRegistryConfigTest, AbsentMeansOff) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(kMessagesOn), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->schema_registry.enabled);
}

TEST(SchemaRegistryConfigTest, DefaultsAndEveryKey) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(std::string(kMessagesOn) + R"(
[schema_registry]
url = "http://127.0.0.1:8080/apis/ccompat/v7"
)"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  const SchemaRegistryConfig& reg = config->schema_registry;
  EXPECT_TRUE(reg.enabled);
  EXPECT_EQ(reg.url, "http://127.0.0.1:8080/apis/ccompat/v7");
  EXPECT_EQ(reg.timeout, absl::Seconds(10));
  EXPECT_EQ(reg.subject_strategy, registry::SubjectStrategy::kTopicName);
  EXPECT_TRUE(reg.auto_register);
  EXPECT_FALSE(reg.schema_id.has_value());

  config = ParseConfig(Minimal(std::string(kMessagesOn) + R"(
[schema_registry]
url = "https://sr.example:8081"
username = "outboxd"
password = "${SR_PASSWORD}"
ca_file = "/etc/outboxd/ca.pem"
cert_file = "/etc/outboxd/client.pem"
key_file = "/etc/outboxd/client.key"
timeout = "2500ms"
subject_strategy = "topic_record_name"
auto_register = false
)"), Env({{"SR_PASSWORD", "s3cret"}}));
  ASSERT_TRUE(config.ok()) << config.status();
  const SchemaRegistryConfig& full = config->schema_registry;
  EXPECT_EQ(full.username, "outboxd");
  EXPECT_EQ(full.password, "s3cret");
  EXPECT_EQ(full.ca_file, "/etc/outboxd/ca.pem");
  EXPECT_EQ(full.cert_file, "/etc/outboxd/client.pem");
  EXPECT_EQ(full.key_file, "/etc/outboxd/client.key");
  EXPECT_EQ(full.timeout, absl::Milliseconds(2500));
  EXPECT_EQ(full.subject_strategy, registry::SubjectStrategy::kTopicRecordName);
  EXPECT_FALSE(full.auto_register);
  EXPECT_THAT(ConfigSecrets(*config), Contains("s3cret"));  // masked in every log line
}

TEST(SchemaRegistryConfigTest, FixedSchemaId) {
  absl::StatusOr<Config> config =
      ParseConfig(Minimal(std::string(kMessagesOn) + "[schema_registry]\nurl = \"http://sr:8081\"\nschema_id = 42\n"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->schema_registry.schema_id, 42);
  EXPECT_FALSE(config->schema_registry.auto_register);
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr:8081\"\nschema_id = 42\nauto_register = true\n")),
              HasSubstr("exclude each other"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr:8081\"\nschema_id = \"42\"\n")),
              HasSubstr("schema_registry.schema_id must be a non-negative integer"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr:8081\"\nschema_id = -1\n")),
              HasSubstr("schema_registry.schema_id must be a non-negative integer"));
}

TEST(SchemaRegistryConfigTest, Mistakes) {
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\n")), HasSubstr("schema_registry.url must be http://"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"sr:8081\"\n")), HasSubstr("schema_registry.url must be"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr\"\nsubject_strategy = \"TopicNameStrategy\"\n")),
              HasSubstr("schema_registry.subject_strategy: unknown subject strategy"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr\"\ntimeout = \"0\"\n")),
              HasSubstr("schema_registry.timeout"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr\"\ntimeout = \"31s\"\n")),
              HasSubstr("from 100ms to 30s"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr\"\nusername = \"u\"\n")),
              HasSubstr("both username and password"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"https://sr\"\ncert_file = \"c.pem\"\n")),
              HasSubstr("both cert_file and key_file"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr\"\nca_file = \"ca.pem\"\n")),
              HasSubstr("need an https:// url"));
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr\"\nsubject = \"x\"\n")),
              HasSubstr("unknown key schema_registry.subject"));
  // The unset variable is named; the password never appears in errors.
  EXPECT_THAT(ErrorOf(Minimal("[schema_registry]\nurl = \"http://sr\"\nusername = \"u\"\npassword = \"${SR_PW}\"\n")),
              HasSubstr("SR_PW"));
}

}  // namespace
}  // namespace outboxd::config

namespace outboxd::config {
namespace {

TEST(ParseConfigTest, DebeziumRecordOptions) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(R"(
[[outbox]]
table = "public.outboxevent"
topic = "outbox.event.{aggregate_type}"
value = "payload"
id_header = "eventId"
key_column = "tenant"
timestamp_column = "created_at"
partition_column = "part"
tracing_column = "span"
tombstone_on_empty_payload = true
[[outbox.fields]]
column = "type"
alias = "eventType"
[[outbox.fields]]
column = "region"
placement = "header"
[messages]
value = "payload"
id_header = "x-id"
)"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  const outbox::RecordConfig& record = config->outbox.at(0).record;
  EXPECT_EQ(record.value, outbox::ValueFormat::kPayload);
  EXPECT_EQ(record.id_header, "eventId");
  EXPECT_EQ(record.key_column, "tenant");
  EXPECT_EQ(record.timestamp_column, "created_at");
  EXPECT_EQ(record.partition_column, "part");
  EXPECT_EQ(record.tracing_column, "span");
  EXPECT_TRUE(record.tombstone_on_empty_payload);
  ASSERT_EQ(record.fields.size(), 2u);
  EXPECT_EQ(record.fields[0].column, "type");
  EXPECT_EQ(record.fields[0].name(), "eventType");
  EXPECT_EQ(record.fields[0].placement, outbox::Placement::kHeader);
  EXPECT_EQ(record.fields[1].name(), "region");
  EXPECT_EQ(config->messages.record.value, outbox::ValueFormat::kPayload);
  EXPECT_EQ(config->messages.record.id_header, "x-id");
}

TEST(ParseConfigTest, RecordOptionDefaultsKeepTheEnvelope) {
  absl::StatusOr<Config> config = ParseConfig(Minimal("[[outbox]]\ntable = \"outbox\"\n"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  const outbox::RecordConfig& record = config->outbox.at(0).record;
  EXPECT_EQ(record.value, outbox::ValueFormat::kEnvelope);
  EXPECT_EQ(record.id_header, "id");
  EXPECT_TRUE(record.key_column.empty());
  EXPECT_TRUE(record.timestamp_column.empty());
  EXPECT_TRUE(record.partition_column.empty());
  EXPECT_EQ(record.tracing_column, "tracingspancontext");
  EXPECT_FALSE(record.tombstone_on_empty_payload);
  EXPECT_TRUE(record.fields.empty());
  EXPECT_EQ(config->messages.record.value, outbox::ValueFormat::kEnvelope);
}

TEST(ParseConfigTest, EnvelopePlacementNeedsTheEnvelope) {
  absl::StatusOr<Config> config = ParseConfig(Minimal(R"(
[[outbox]]
table = "outbox"
[[outbox.fields]]
column = "tenant"
placement = "envelope"
)"), Env());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->outbox.at(0).record.fields.at(0).placement, outbox::Placement::kEnvelope);
  EXPECT_THAT(ErrorOf(Minimal(R"(
[[outbox]]
table = "outbox"
value = "payload"
[[outbox.fields]]
column = "tenant"
placement = "envelope"
)")), HasSubstr("needs value = \"envelope\""));
}

TEST(ParseConfigTest, BadRecordOptionsAreNamed) {
  EXPECT_THAT(ErrorOf(Minimal("[[outbox]]\ntable = \"outbox\"\nvalue = \"avro\"\n")),
              HasSubstr("value = \"avro\": expected \"envelope\""));
  EXPECT_THAT(ErrorOf(Minimal("[[outbox]]\ntable = \"outbox\"\ntombstone_on_empty_payload = 1\n")),
              HasSubstr("tombstone_on_empty_payload must be true or false"));
  EXPECT_THAT(ErrorOf(Minimal("[[outbox]]\ntable = \"outbox\"\nkey = \"id\"\nkey_column = \"x\"\n")),
              HasSubstr("sets both key and key_column"));
  EXPECT_THAT(ErrorOf(Minimal("[[outbox]]\ntable = \"outbox\"\n[[outbox.fields]]\nalias = \"a\"\n")),
              HasSubstr("fields #1 column is missing"));
  EXPECT_THAT(ErrorOf(Minimal(
                  "[[outbox]]\ntable = \"outbox\"\n[[outbox.fields]]\ncolumn = \"a\"\nplacement = \"partition\"\n")),
              HasSubstr("placement = \"partition\": expected \"header\""));
  EXPECT_THAT(ErrorOf(Minimal(
                  "[[outbox]]\ntable = \"outbox\"\n[[outbox.fields]]\ncolumn = \"a\"\nplace = \"header\"\n")),
              HasSubstr("unknown key"));
  EXPECT_THAT(ErrorOf(Minimal("[[outbox]]\ntable = \"outbox\"\nfields = \"a\"\n")),
              HasSubstr("fields must be an array of tables"));
  EXPECT_THAT(ErrorOf(Minimal("[messages]\nvalue = \"x\"\n")),
              HasSubstr("messages.value = \"x\""));
}

}  // namespace
}  // namespace outboxd::config
