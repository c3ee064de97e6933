// Config: the TOML file of `outboxd run|check --config FILE`. Every key, its
// default and an example are in docs/configuration.md. ${NAME} inside a string
// value is replaced by the environment variable NAME (an unset variable is an
// error), and ${file:PATH} by the content of the file PATH without its trailing
// newline (an unreadable file is an error), so secrets stay out of the file.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "outbox/dead_letter.h"
#include "outbox/table_mapping.h"
#include "registry/wire_format.h"

namespace outboxd::config {

// [source] databases: which databases of the cluster are streamed.
enum class DatabaseSelection {
  kDsn,   // no `databases` key: the DSN's own database only (one stream, as before)
  kList,  // databases = ["orders", "billing"]
  kAll,   // databases = "*": every database that allows connections and has the publication
};

struct SourceConfig {
  // libpq connection string, without replication=. With `databases`, it names
  // the cluster: its dbname, if any, is only where discovery connects.
  std::string dsn;
  DatabaseSelection selection = DatabaseSelection::kDsn;
  std::vector<std::string> databases;  // kList: the names, in file order
  // kAll: how often the databases are listed again.
  absl::Duration discovery_interval = absl::Seconds(30);
  // The slot name as written: a template when it holds {database} or
  // {publication} (required as soon as several streams can exist; see
  // config/streams.h for the expansion).
  std::string slot_template = "outboxd";
  // The slot name of a single-stream config (no `databases` key, one
  // publication): the template with its placeholders filled in. Empty when the
  // config can give several streams: each stream's slot is then
  // config::PlanStreams's.
  std::string slot = "outboxd";
  // Every publication; one stream per database and publication (a sharded
  // outbox lists several).
  std::vector<std::string> publications = {"outboxd"};
  // The first publication: the single-stream config's one.
  std::string publication = "outboxd";
  // How many slots one process streams at most (0: no cap), so that replicas
  // of the process spread the streams between them.
  int max_active_slots = 0;
  bool create_slot = true;
  // PostgreSQL 17+: create the slot with FAILOVER, or set it on an existing
  // slot, so that standbys with sync_replication_slots keep a copy of it.
  bool failover = false;
  // Optional: a physical standby that `outboxd check` inspects to tell whether
  // a failover would keep the slot (sync_replication_slots and friends).
  std::string standby_dsn;
  // When `dsn` reaches a hot standby (PostgreSQL 16+): its primary, where
  // outboxd asks for a standby snapshot (pg_log_standby_snapshot()) while its
  // slot's creation on the standby waits, and which `outboxd check` inspects
  // (wal_level, the standby's physical slot). Empty: none.
  std::string primary_dsn;
  absl::Duration status_interval = absl::Seconds(10);
  // Directory of the state file that detects gaps upstream; empty: not set
  // (run --state-dir wins; see README "Faults and what outboxd does").
  std::string state_dir;
  // snapshot = "initial": when outboxd creates the slot, publish the rows the
  // outbox tables hold at that instant first (see docs/configuration.md).
  bool snapshot_initial = false;
};

// Table-less events: transactional pg_logical_emit_message(true, prefix, json).
// Off unless enabled: any role that can connect may call pg_logical_emit_message
// until EXECUTE is revoked from PUBLIC (sql/messages.sql), so turning it on is a
// decision about who may publish (docs/configuration.md, [messages]).
struct MessagesConfig {
  bool enabled = false;
  std::string prefix = "outbox";
  std::string topic = "outbox.event.{aggregate_type}";
  outbox::KeySource key = outbox::KeySource::kId;
  outbox::RecordConfig record;  // value and id_header only: a message has no other columns
};

// [sink] delivery: at least once (the default: the idempotent producer, and a
// fault re-publishes what was in flight) or exactly once (Kafka transactions
// with a checkpoint record; see docs/operations.md, "Exactly-once mode").
enum class Delivery { kAtLeastOnce, kExactlyOnce };

struct KafkaConfig {
  // [sink.kafka]: librdkafka properties, passed through as is, in file order.
  std::vector<std::pair<std::string, std::string>> properties;
  Delivery delivery = Delivery::kAtLeastOnce;
  // Exactly-once only. Empty: "outboxd-<system identifier>-<slot>".
  std::string transactional_id;
  // The compacted topic of checkpoint records, keyed by system identifier and slot.
  std::string checkpoint_topic = "outboxd.checkpoints";
  // A Kafka transaction commits at a PostgreSQL commit once outboxd caught up
  // with the server, or once it was open this long, or held this many events.
  absl::Duration transaction_interval = absl::Milliseconds(100);
  int64_t transaction_max_events = 10000;
  // The pause between a Kafka commit and the next Kafka transaction's first
  // record, so the broker has written the commit's markers (see
  // pipeline::ExactlyOnceOptions::transaction_gap).
  absl::Duration transaction_gap = absl::Milliseconds(3);
};

// librdkafka's transaction.timeout.ms as [sink.kafka] sets it (60 s by
// default). Exactly-once commits a PostgreSQL transaction in pieces once it
// has been open in one Kafka transaction for half of it.
absl::Duration TransactionTimeout(const KafkaConfig& kafka);

// [errors]: what a bad event (NULL or missing required column, id not a UUID,
// oversize payload, invalid topic name) does.
struct ErrorsConfig {
  outbox::BadEventPolicy on_bad_event = outbox::BadEventPolicy::kDeadLetter;
  std::string dead_letter_topic = "outboxd.dlq";
};

struct HttpConfig {
  std::string listen = "127.0.0.1:9187";
};

// [schema_registry]: envelope values in Confluent's wire format, with the
// schema id of a Confluent-compatible registry. Off when the section is absent.
struct SchemaRegistryConfig {
  bool enabled = false;
  std::string url;       // http(s)://host[:port][/path], e.g. .../apis/ccompat/v7 for Apicurio
  std::string username;  // basic auth, with password
  std::string password;
  std::string ca_file;    // PEM CA bundle for https; empty: the system's
  std::string cert_file;  // client certificate and key (PEM) for mutual TLS
  std::string key_file;
  absl::Duration timeout = absl::Seconds(10);  // per request
  registry::SubjectStrategy subject_strategy = registry::SubjectStrategy::kTopicName;
  bool auto_register = true;  // false: the subject's latest registered version
  std::optional<int32_t> schema_id;  // a fixed id: no registry call at all
};

// [shutdown]: on SIGTERM/SIGINT, how long outboxd waits for Kafka to
// acknowledge what is in flight before it confirms what was acknowledged and
// exits (3 when something was left). A supervisor's grace period must exceed
// it by kStopMargin (docs/deployment.md, "Stopping"; tests/deploy checks the
// shipped unit, chart and compose file against it).
inline constexpr absl::Duration kMinStopFlushTimeout = absl::Seconds(1);
inline constexpr absl::Duration kMaxStopFlushTimeout = absl::Minutes(10);
inline constexpr absl::Duration kStopMargin = absl::Seconds(10);
struct ShutdownConfig {
  absl::Duration stop_flush_timeout = absl::Seconds(30);
};

struct LogConfig {
  std::string level = "info";   // debug, info, warn, error
  std::string format = "text";  // text, json
};

struct Config {
  // True when this config can give more than one stream (a `databases` key,
  // or several publications); such a config runs under the stream supervisor.
  bool MultiStream() const {
    return source.selection != DatabaseSelection::kDsn || source.publications.size() > 1;
  }

  SourceConfig source;
  KafkaConfig kafka;
  std::vector<outbox::TableConfig> outbox;  // [[outbox]]
  MessagesConfig messages;
  ErrorsConfig errors;
  HttpConfig http;
  LogConfig log;
  SchemaRegistryConfig schema_registry;
  ShutdownConfig shutdown;
};

using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

// Parses TOML text. InvalidArgumentError naming the key (and line) on any
// mistake: unknown key, wrong type, bad value, unset ${VAR}. Messages read
// "config: line N: <key path> ...: <what to do>"; "$$" stands for a literal "$".
absl::StatusOr<Config> ParseConfig(std::string_view toml_text, const EnvLookup& env);
// Reads and parses a file, expanding ${VAR} from the process environment;
// errors then start with "config PATH: line N:". NotFoundError when it cannot
// be read.
absl::StatusOr<Config> LoadConfig(const std::string& path);

// Whether [source] status_interval works with the server's wal_sender_timeout
// (0: no timeout). The walsender drops a connection that sent no status update
// for wal_sender_timeout; outboxd sends one every status_interval when idle, so
// an interval at or above the timeout cannot work: FailedPreconditionError with
// what to do. Over half of it leaves no margin for one late update: the caller
// warns (`*tight` true). OK otherwise.
absl::Status CheckStatusInterval(absl::Duration status_interval, absl::Duration wal_sender_timeout,
                                 bool* tight);

// The DSN (key/value or postgresql:// URI) with the values of password and
// sslpassword replaced by "********", for logs and errors. Never fails: on
// malformed input it masks more, not less.
std::string RedactDsn(std::string_view dsn);

// The database a DSN connects to, as libpq resolves it: its dbname, else
// PGDATABASE, else the user name (its user, PGUSER, or the login name). For
// the `database` label of a single-stream process and {database} in its slot.
std::string DsnDatabase(std::string_view dsn);

// The DSN with its dbname replaced by `database`: every other option kept as
// libpq parsed it (PQconninfoParse), written back as key='value' pairs.
// InvalidArgumentError when libpq rejects the DSN.
absl::StatusOr<std::string> DsnWithDatabase(std::string_view dsn, std::string_view database);

}  // namespace outboxd::config
