// Internal to `outboxd check`: the helpers and checkers its files share
// (check_postgres.cc: the server and each database; check_slot.cc: slot and
// failover; check_kafka.cc; check_registry.cc), around the report model of
// check_report.h. check.cc decides which run, for which database.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commands/check_report.h"
#include "config/config.h"
#include "outbox/table_mapping.h"
#include "replication/pg_connection.h"

namespace outboxd::commands::check {

using replication::PgConnection;
using replication::Row;

// The text of rows[row][col], "" when absent or NULL.
std::string Value(const std::vector<Row>& rows, size_t row = 0, size_t col = 0);
// An identifier as an operator would type it: bare when PostgreSQL would fold
// it to itself, quoted otherwise, so that printed SQL can be pasted as it is.
std::string SqlIdent(const std::string& name);
std::string TableName(const outbox::TableConfig& table);
std::string TableSql(const std::string& schema, const std::string& table);
std::string TableSql(const outbox::TableConfig& table);
// Up to `limit` names, then "and N more".
std::string NameList(const std::vector<std::string>& names, size_t limit = 5);

// What the PostgreSQL checks learned that the Kafka and registry checks use.
struct Observed {
  std::string system_id;  // IDENTIFY_SYSTEM's, for exactly-once's transactional.id
  std::vector<std::string> slots;  // the slots checked (one per stream)
  // The topics the [[outbox]] templates render for the rows present now, each
  // with where it comes from ("public.outbox, aggregate_type 'order'").
  std::map<std::string, std::string> topics;
};

// The PostgreSQL checks over one connection. `config` is a single-stream
// config (config::StreamConfig for one stream of a cluster): its DSN's
// database, slot, publication and [[outbox]] entries are the ones checked.
class PostgresDoctor {
 public:
  PostgresDoctor(const config::Config& config, PgConnection& pg, CheckReport& report, Observed* observed = nullptr)
      : config_(config), source_(config.source), pg_(pg), report_(report), observed_(observed) {}

  // Server-wide: the role's REPLICATION, wal_level, max_slot_wal_keep_size,
  // wal_sender_timeout against status_interval.
  void CheckRolePrivileges();
  void CheckWalLevel();
  // max_wal_senders: whether a walsender is free for outboxd's replication
  // connection (check_outbox.cc).
  void CheckWalSenders();
  void CheckWalKeepSize();
  void CheckSenderTimeout();
  // Per database: SELECT on its outbox tables, who may emit messages, the
  // publication.
  void CheckTablePrivileges();
  void CheckMessagesPrivilege();
  void CheckPublication();
  // Per database, check_outbox.cc: each outbox table's columns as pgoutput
  // sends them (outbox_columns.h), the publication's row filters, and the
  // topics the templates render for the rows present (into Observed).
  void CheckColumns();
  void CheckRowFilters();
  void CheckTopicNames();
  // Per slot (check_slot.cc).
  void CheckSlot();
  // Failover has a server part (physical standbys, synchronized_standby_slots)
  // and a slot part (the slot's failover flag, its copy on a standby).
  enum class Part { kAll, kServer, kSlot };
  void CheckFailover(Part part);
  // Decoding on a hot standby and what 16 to 18 say about a slot
  // (check_hot_standby.cc). Server-wide: when [source] dsn reaches a standby,
  // what decoding there needs (16+, hot_standby_feedback, primary_slot_name,
  // and through [source] primary_dsn the primary's wal_level, that physical
  // slot, pg_log_standby_snapshot()); the limits that can invalidate a slot
  // before the alerts give an operator time (idle_replication_slot_timeout,
  // max_slot_wal_keep_size at the primary's WAL rate). Per slot: conflicting,
  // synced, inactive_since, and 18's idle timeout drawing near.
  void CheckHotStandby();
  void CheckSlotLimits();
  void CheckSlotFacts();

 private:
  // Runs a query; a failure is reported under `check` and gives nullopt.
  std::optional<std::vector<Row>> Query(std::string_view check, const std::string& sql,
                                        const std::vector<std::string>& params = {});
  void CheckStandby(const std::string& standby_slots);
  void MissingSlot();
  // Why the invalidated `slot` was invalidated and what prevents it, for
  // CheckSlot's failure (check_hot_standby.cc).
  std::string InvalidationOf(const std::string& slot);

  const config::Config& config_;
  const config::SourceConfig& source_;
  PgConnection& pg_;
  CheckReport& report_;
  Observed* observed_;
};

// check_kafka.cc: reachability, broker defaults, the fixed topics and those
// the rows present route to, the delivery mode (and whether the brokers can
// run transactions).
void CheckKafka(const config::Config& config, CheckReport& report, const Observed& observed = {});
// What `run` asks of Kafka before it streams (preflight.h): the topics the rows
// present route to, and in exactly-once mode whether the brokers can run
// transactions; nothing when neither applies. A metadata request or two.
void CheckKafkaForRun(const config::Config& config, CheckReport& report, const Observed& observed);
// check_registry.cc: [schema_registry], when enabled.
void CheckSchemaRegistry(const config::Config& config, CheckReport& report, const Observed& observed = {});

}  // namespace outboxd::commands::check
