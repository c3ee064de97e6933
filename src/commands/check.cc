#include "commands/check.h"

#include <librdkafka/rdkafka.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/format.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "commands/run.h"
#include "kafka/rdkafka_sink.h"
#include "registry/schema_registry_client.h"
#include "telemetry/metrics.h"
#include "replication/pg_connection.h"
#include "replication/pg_replication_stream.h"

namespace outboxd::commands {
namespace {

using replication::PgConnection;
using replication::QuoteIdentifier;
using replication::Row;

enum class Level { kOk, kWarn, kFail };

// Findings, one per line: "ok    <check>  <what>" and, for WARN and FAIL, a
// second line "      <indent>  -> <what to do>".
class Report {
 public:
  explicit Report(std::ostream& out) : out_(out) {}

  void Add(Level level, std::string_view check, std::string_view what, std::string_view todo = "") {
    static constexpr std::string_view kLabel[] = {"ok", "WARN", "FAIL"};
    out_ << fmt::format("{:<5} {:<12} {}\n", kLabel[static_cast<int>(level)], check, what);
    if (!todo.empty()) out_ << fmt::format("{:<5} {:<12} -> {}\n", "", "", todo);
    ++counts_[static_cast<int>(level)];
  }
  void Ok(std::string_view check, std::string_view what) { Add(Level::kOk, check, what); }
  void Warn(std::string_view check, std::string_view what, std::string_view todo) {
    Add(Level::kWarn, check, what, todo);
  }
  void Fail(std::string_view check, std::string_view what, std::string_view todo = "") {
    Add(Level::kFail, check, what, todo);
  }
  void Summary() {
    out_ << fmt::format("{} ok, {} warning(s), {} failure(s)\n", counts_[0], counts_[1], counts_[2]);
  }
  bool failed() const { return counts_[2] > 0; }

 private:
  std::ostream& out_;
  int counts_[3] = {0, 0, 0};
};

std::string Value(const std::vector<Row>& rows, size_t row = 0, size_t col = 0) {
  if (rows.size() <= row || rows[row].size() <= col || !rows[row][col]) return "";
  return *rows[row][col];
}

// An identifier as an operator would type it: bare when PostgreSQL would fold
// it to itself, quoted otherwise (upper case, odd characters, common reserved
// words), so that the printed SQL can be pasted as it is.
std::string SqlIdent(const std::string& name) {
  static const std::set<std::string> kReserved = {
      "all", "analyse", "analyze", "and", "any", "array", "as", "check", "column", "constraint",
      "create", "default", "desc", "distinct", "do", "end", "except", "for", "foreign", "from",
      "grant", "group", "having", "in", "into", "limit", "not", "null", "offset", "on", "or",
      "order", "primary", "references", "select", "table", "to", "union", "unique", "user",
      "using", "when", "where", "with"};
  bool bare = !name.empty() && !(name[0] >= '0' && name[0] <= '9') && !kReserved.contains(name);
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) bare = false;
  }
  return bare ? name : QuoteIdentifier(name);
}
std::string TableName(const outbox::TableConfig& table) { return table.schema + "." + table.table; }
std::string TableSql(const std::string& schema, const std::string& table) {
  return SqlIdent(schema) + "." + SqlIdent(table);
}
std::string TableSql(const outbox::TableConfig& table) { return TableSql(table.schema, table.table); }

// Up to `limit` names, then "and N more".
std::string NameList(const std::vector<std::string>& names, size_t limit = 5) {
  if (names.size() <= limit) return fmt::format("{}", fmt::join(names, ", "));
  std::vector<std::string> head(names.begin(), names.begin() + limit);
  return fmt::format("{} and {} more", fmt::join(head, ", "), names.size() - limit);
}

class PostgresDoctor {
 public:
  PostgresDoctor(const config::Config& config, PgConnection& pg, Report& report)
      : config_(config), source_(config.source), pg_(pg), report_(report) {}

  void Run() {
    CheckPrivileges();
    CheckWalLevel();
    CheckWalKeepSize();
    CheckSenderTimeout();
    CheckMessagesPrivilege();
    CheckPublication();
    CheckSlot();
    CheckFailover();
  }

 private:
  // Runs a query; a failure is reported under `check` and gives nullopt.
  std::optional<std::vector<Row>> Query(std::string_view check, const std::string& sql,
                                        const std::vector<std::string>& params = {}) {
    auto rows = pg_.QueryParams(sql, params);
    if (!rows.ok()) {
      report_.Fail(check, fmt::format("query failed: {}", rows.status().message()),
                   "see the server's message; outboxd's role may lack a privilege this check needs");
      return std::nullopt;
    }
    return std::move(*rows);
  }

  void CheckPrivileges() {
    auto role = Query("privileges",
                      "SELECT current_user, rolsuper, rolreplication OR COALESCE((SELECT "
                      "pg_has_role(current_user, oid, 'member') FROM pg_roles WHERE rolname = "
                      "'rds_replication'), false) FROM pg_roles WHERE rolname = current_user");
    if (!role) return;
    const std::string user = Value(*role, 0, 0);
    if (Value(*role, 0, 1) == "t") {
      report_.Warn("privileges",
                   fmt::format("role {} is a superuser: outboxd works, but its credentials could read "
                               "and change every table and setting of the server",
                               user),
                   "create a least-privilege role with sql/role.sql (LOGIN REPLICATION, SELECT on the "
                   "outbox tables only) and use it in [source] dsn");
    } else if (Value(*role, 0, 2) != "t") {
      report_.Fail("privileges",
                   fmt::format("role {} lacks REPLICATION: it cannot create or stream from a "
                               "replication slot",
                               user),
                   fmt::format("as a superuser: ALTER ROLE {} REPLICATION (or run sql/role.sql; on "
                               "RDS/Aurora: GRANT rds_replication TO {})",
                               SqlIdent(user), SqlIdent(user)));
    } else {
      report_.Ok("privileges", fmt::format("role {} has REPLICATION and is not a superuser", user));
    }

    std::vector<std::string> no_select;
    for (const outbox::TableConfig& table : config_.outbox) {
      auto rows = Query("privileges",
                        "SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                        {table.schema, table.table});
      if (!rows) return;
      // A missing table is reported by the publication check.
      if (!rows->empty() && Value(*rows) != "t") no_select.push_back(TableSql(table));
    }
    if (!no_select.empty()) {
      report_.Fail("privileges",
                   fmt::format("role {} may not SELECT {}: `outboxd replay` cannot read them", user,
                               NameList(no_select)),
                   fmt::format("as the tables' owner: GRANT SELECT ON {} TO {} (sql/role.sql does it)",
                               fmt::join(no_select, ", "), SqlIdent(user)));
    } else if (!config_.outbox.empty()) {
      report_.Ok("privileges", fmt::format("role {} may SELECT the {} outbox table(s)", user,
                                           config_.outbox.size()));
    }
  }

  void CheckWalLevel() {
    auto rows = Query("wal_level", "SELECT current_setting('wal_level')");
    if (!rows) return;
    if (Value(*rows) == "logical") {
      report_.Ok("wal_level", "logical");
    } else {
      report_.Fail("wal_level",
                   fmt::format("is '{}': the server writes no logical decoding information, so no "
                               "slot can stream",
                               Value(*rows)),
                   "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) "
                   "and restart PostgreSQL");
    }
  }

  void CheckWalKeepSize() {
    auto rows = Query("wal_keep",
                      "SELECT setting, pg_size_pretty(setting::bigint * 1024 * 1024) FROM pg_settings "
                      "WHERE name = 'max_slot_wal_keep_size'");
    if (!rows || rows->empty()) return;  // PostgreSQL < 13 has no such setting
    if (Value(*rows) == "-1") {
      report_.Warn("wal_keep",
                   "max_slot_wal_keep_size = -1 (unbounded): while outboxd is down or stuck, the slot "
                   "keeps every WAL segment, so the server's disk can fill up and stop all writes; a "
                   "bound instead invalidates the slot past it, and the events in the dropped WAL are "
                   "lost (outboxd then stops and tells you)",
                   "choose: set max_slot_wal_keep_size (e.g. ALTER SYSTEM SET max_slot_wal_keep_size = "
                   "'50GB'; SELECT pg_reload_conf()) to what the disk can spare and your WAL rate times "
                   "the longest outage to ride out, or keep -1 and alert on retained WAL "
                   "(sql/monitoring.sql, outboxd_replication_lag_bytes)");
    } else {
      report_.Ok("wal_keep", fmt::format("max_slot_wal_keep_size = {}: a slot retaining more is "
                                         "invalidated (alert on retained WAL well before that)",
                                         Value(*rows, 0, 1)));
    }
  }

  void CheckSenderTimeout() {
    auto rows = Query("wal_sender", "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'");
    if (!rows || rows->empty()) return;
    const long long timeout_ms = std::atoll(Value(*rows).c_str());
    const long long interval_ms = absl::ToInt64Milliseconds(source_.status_interval);
    bool tight = false;
    if (absl::Status works = config::CheckStatusInterval(source_.status_interval,
                                                         absl::Milliseconds(timeout_ms), &tight);
        !works.ok()) {
      report_.Fail("wal_sender", std::string(works.message()),
                   "outboxd run refuses to start with these values");
    } else if (tight) {
      report_.Warn("wal_sender",
                   fmt::format("wal_sender_timeout = {} ms but [source] status_interval = {} ms: an idle "
                               "stream may be dropped by the server between two status updates",
                               timeout_ms, interval_ms),
                   "set status_interval to less than half of wal_sender_timeout");
    } else {
      report_.Ok("wal_sender", fmt::format("wal_sender_timeout = {} ms, status_interval = {} ms",
                                           timeout_ms, interval_ms));
    }
  }

  // With [messages] on, whoever may call pg_logical_emit_message may publish
  // events. PostgreSQL grants EXECUTE on it to PUBLIC (a NULL proacl is that
  // default; has_function_privilege cannot ask about PUBLIC, so read the ACL).
  void CheckMessagesPrivilege() {
    if (!config_.messages.enabled) return;
    auto rows = Query("messages",
                      "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p "
                      "WHERE p.proname = 'pg_logical_emit_message' "
                      "AND p.pronamespace = 'pg_catalog'::regnamespace "
                      "AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a "
                      "WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')) ORDER BY 1");
    if (!rows) return;
    if (rows->empty()) {
      report_.Ok("messages", "[messages] is enabled and PUBLIC cannot execute pg_logical_emit_message: "
                             "only roles granted EXECUTE can emit events");
      return;
    }
    std::vector<std::string> functions;
    for (size_t i = 0; i < rows->size(); ++i) functions.push_back(Value(*rows, i));
    report_.Fail("messages",
                 fmt::format("[messages] is enabled and PUBLIC may execute {}: any role that can "
                             "connect (a read-only reporting user too) can publish forged events to "
                             "any topic the template allows",
                             fmt::join(functions, ", ")),
                 "as a superuser: psql -v app_roles=<the roles that emit events> -f sql/messages.sql "
                 "(revokes EXECUTE from PUBLIC, grants it to those roles); or set [messages] enabled = "
                 "false if no service emits messages");
  }

  void CheckPublication() {
    const std::string& name = source_.publication;
    const std::string pub_sql = SqlIdent(name);
    auto pub = Query("publication",
                     "SELECT pubinsert, pubupdate OR pubdelete OR pubtruncate, pubviaroot, puballtables "
                     "FROM pg_publication WHERE pubname = $1",
                     {name});
    if (!pub) return;
    if (pub->empty()) {
      report_.Fail("publication", fmt::format("'{}' does not exist: outboxd cannot stream", name),
                   fmt::format("as the outbox tables' owner: run sql/outbox.sql, or CREATE PUBLICATION {} "
                               "FOR TABLE <outbox tables> WITH (publish = 'insert')",
                               pub_sql));
      return;
    }
    const bool inserts = Value(*pub, 0, 0) == "t";
    const bool other_changes = Value(*pub, 0, 1) == "t";
    const bool via_root = Value(*pub, 0, 2) == "t";
    const bool all_tables = Value(*pub, 0, 3) == "t";
    if (!inserts) {
      report_.Fail("publication",
                   fmt::format("'{}' does not publish inserts: no outbox row would ever reach outboxd", name),
                   fmt::format("ALTER PUBLICATION {} SET (publish = 'insert')", pub_sql));
    }

    auto published = Query("publication",
                           "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1 "
                           "ORDER BY 1, 2",
                           {name});
    if (!published) return;
    std::set<std::pair<std::string, std::string>> in_pub;
    for (const Row& row : *published) in_pub.emplace(row[0].value_or(""), row[1].value_or(""));

    std::vector<std::string> missing_tables, not_in_pub, not_via_root;
    bool any_partitioned = false;
    std::set<std::pair<std::string, std::string>> mapped;
    for (const outbox::TableConfig& table : config_.outbox) {
      mapped.emplace(table.schema, table.table);
      auto kind = Query("publication",
                        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = $1 AND c.relname = $2",
                        {table.schema, table.table});
      if (!kind) return;
      const bool partitioned = !kind->empty() && Value(*kind) == "p";
      any_partitioned = any_partitioned || partitioned;
      if (kind->empty()) {
        missing_tables.push_back(TableSql(table));
      } else if (partitioned && !via_root) {
        not_via_root.push_back(TableSql(table));
      } else if (!in_pub.contains({table.schema, table.table})) {
        not_in_pub.push_back(TableSql(table));
      }
    }
    if (!missing_tables.empty()) {
      report_.Fail("publication", fmt::format("outbox table(s) {} do not exist", NameList(missing_tables)),
                   "create them (sql/outbox.sql creates public.outbox) or fix the [[outbox]] table names "
                   "(spelled as PostgreSQL stores them, case matters)");
    }
    if (!not_via_root.empty()) {
      report_.Fail("publication",
                   fmt::format("{} partitioned but '{}' has publish_via_partition_root = false: inserts "
                               "would arrive under each partition's name, which no [[outbox]] maps, and "
                               "be ignored",
                               fmt::format("{} {}", NameList(not_via_root),
                                           not_via_root.size() == 1 ? "is" : "are"),
                               name),
                   fmt::format("ALTER PUBLICATION {} SET (publish_via_partition_root = true) "
                               "(sql/purge.sql does it)",
                               pub_sql));
    }
    if (!not_in_pub.empty()) {
      report_.Fail("publication",
                   fmt::format("'{}' lacks {}: their rows would never reach outboxd", name,
                               NameList(not_in_pub)),
                   fmt::format("as the tables' owner: ALTER PUBLICATION {} ADD TABLE {}", pub_sql,
                               fmt::join(not_in_pub, ", ")));
    }

    std::vector<std::string> unmapped;
    for (const auto& [schema, table] : in_pub) {
      if (!mapped.contains({schema, table})) unmapped.push_back(TableSql(schema, table));
    }
    if (!unmapped.empty()) {
      report_.Warn("publication",
                   fmt::format("'{}' also publishes {}, which no [[outbox]] maps: the server decodes and "
                               "sends their inserts, and outboxd counts and drops them "
                               "(outboxd_changes_ignored_total)",
                               name, NameList(unmapped)),
                   all_tables ? fmt::format("'{}' is FOR ALL TABLES: replace it with a publication FOR "
                                            "TABLE <the outbox tables> WITH (publish = 'insert')",
                                            name)
                              : fmt::format("add an [[outbox]] entry for each, or ALTER PUBLICATION {} DROP "
                                            "TABLE {}",
                                            pub_sql, fmt::join(unmapped, ", ")));
    }
    if (inserts && other_changes) {
      report_.Warn("publication",
                   fmt::format("'{}' publishes updates, deletes or truncates too: outboxd ignores them, "
                               "but the server still decodes and sends them (a purge of a million rows "
                               "becomes a million messages)",
                               name),
                   fmt::format("ALTER PUBLICATION {} SET (publish = 'insert')", pub_sql));
    }
    if (inserts && missing_tables.empty() && not_via_root.empty() && not_in_pub.empty()) {
      report_.Ok("publication", fmt::format("'{}' publishes inserts of all {} outbox table(s){}", name,
                                            config_.outbox.size(),
                                            any_partitioned ? " (partitioned ones via their root)" : ""));
    }
  }

  void CheckSlot() {
    const std::string& slot = source_.slot;
    auto rows = Query("slot",
                      "SELECT plugin, slot_type, database, wal_status, active_pid::text, "
                      "confirmed_flush_lsn::text, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                      "restart_lsn)), pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                      "confirmed_flush_lsn)), pg_size_pretty(safe_wal_size) "
                      "FROM pg_replication_slots WHERE slot_name = $1",
                      {slot});
    if (!rows) return;
    if (rows->empty()) {
      auto capacity = Query("slot",
                            "SELECT (SELECT count(*) FROM pg_replication_slots), "
                            "current_setting('max_replication_slots')::int");
      if (!capacity) return;
      const int used = std::atoi(Value(*capacity, 0, 0).c_str());
      const int max = std::atoi(Value(*capacity, 0, 1).c_str());
      if (used >= max) {
        report_.Fail("slot",
                     fmt::format("'{}' is missing and all {} replication slots are in use: it cannot be "
                                 "created",
                                 slot, max),
                     "drop an abandoned slot (SELECT * FROM outboxd_slot_status, sql/monitoring.sql) or "
                     "raise max_replication_slots and restart PostgreSQL");
      } else if (source_.create_slot) {
        report_.Ok("slot", fmt::format("'{}' is missing and will be created on start (create_slot = true); "
                                       "events are captured from then on",
                                       slot));
      } else {
        report_.Fail("slot", fmt::format("'{}' is missing and create_slot = false", slot),
                     fmt::format("create it: SELECT pg_create_logical_replication_slot('{}', 'pgoutput'), or "
                                 "set create_slot = true",
                                 slot));
      }
      return;
    }
    const std::string plugin = Value(*rows, 0, 0), type = Value(*rows, 0, 1), database = Value(*rows, 0, 2);
    const std::string wal_status = Value(*rows, 0, 3), active = Value(*rows, 0, 4);
    const std::string retained = Value(*rows, 0, 6), lag = Value(*rows, 0, 7), safe = Value(*rows, 0, 8);
    if (type != "logical" || plugin != "pgoutput") {
      report_.Fail("slot",
                   fmt::format("'{}' is a {} slot with plugin '{}'; outboxd needs a logical pgoutput slot",
                               slot, type, plugin),
                   "choose another [source] slot name (outboxd creates it), or drop this one if nothing "
                   "uses it");
      return;
    }
    auto db = Query("slot", "SELECT current_database()");
    if (db && Value(*db) != database) {
      report_.Fail("slot", fmt::format("'{}' belongs to database '{}', not '{}'", slot, database, Value(*db)),
                   "fix dbname in [source] dsn, or choose another [source] slot name");
      return;
    }
    const std::string where = fmt::format("'{}' wal_status {}, confirmed {}, lag {}, retains {} of WAL{}",
                                          slot, wal_status, Value(*rows, 0, 5), lag, retained,
                                          active.empty() ? ", not in use"
                                                         : fmt::format(", in use by PID {}", active));
    if (wal_status == "lost") {
      report_.Fail("slot",
                   fmt::format("'{}' was invalidated by PostgreSQL (wal_status lost): it retained more than "
                               "max_slot_wal_keep_size, and events in the removed WAL are gone",
                               slot),
                   "follow docs/operations.md, \"Invalidated slot\": replay the gap from the outbox "
                   "table, then drop the slot and let outboxd create a new one");
    } else if (wal_status == "unreserved") {
      report_.Warn("slot",
                   fmt::format("{}: past max_slot_wal_keep_size, the next checkpoint invalidates it "
                               "unless outboxd catches up now",
                               where),
                   "make sure outboxd runs and Kafka accepts (outboxd_replication_lag_bytes must fall); "
                   "raise max_slot_wal_keep_size to buy time");
    } else if (wal_status == "extended") {
      report_.Warn("slot",
                   fmt::format("{}: retains more than max_wal_size{}", where,
                               safe.empty() ? "" : fmt::format(", {} left before invalidation", safe)),
                   "outboxd is behind or was down: check that it streams (docs/operations.md, \"Lag "
                   "growing\")");
    } else {
      report_.Ok("slot", where);
    }
  }

  // Whether a failover of the primary would keep the slot: a failover slot
  // (PostgreSQL 17+), synchronized_standby_slots on the primary, and, where
  // [source] standby_dsn reaches a standby, its slot synchronization settings.
  void CheckFailover() {
    const int version = pg_.server_version();
    auto standbys = Query("failover",
                          "SELECT count(*) FROM pg_stat_replication r WHERE NOT EXISTS (SELECT 1 FROM "
                          "pg_replication_slots s WHERE s.active_pid = r.pid AND s.slot_type = 'logical')");
    if (!standbys) return;
    const int physical = std::atoi(Value(*standbys).c_str());
    if (!source_.failover) {
      if (physical > 0) {
        report_.Warn("failover",
                     fmt::format("{} physical standby(s) stream from this server, but failover = false: if one "
                                 "is promoted, the slot is not there and events need a replay",
                                 physical),
                     version >= 170000
                         ? "set [source] failover = true and configure the standby (docs/operations.md, "
                           "\"Failover\")"
                         : "PostgreSQL 16 and older have no failover slots: follow docs/operations.md "
                           "(\"Failover on PostgreSQL 16 and older\")");
      }
      return;
    }
    if (version < 170000) {
      report_.Fail("failover",
                   fmt::format("failover = true needs PostgreSQL 17 or later; the server is {}", version / 10000),
                   "set failover = false; see docs/operations.md (\"Failover on PostgreSQL 16 and older\")");
      return;
    }
    auto slot = Query("failover", "SELECT failover FROM pg_replication_slots WHERE slot_name = $1", {source_.slot});
    if (!slot) return;
    if (!slot->empty() && Value(*slot) != "t") {
      report_.Ok("failover", fmt::format("slot '{}' is not a failover slot yet; outboxd sets FAILOVER on start",
                                         source_.slot));
    }
    auto sync = Query("failover", "SELECT current_setting('synchronized_standby_slots')");
    if (!sync) return;
    const std::string standby_slots = Value(*sync);
    if (standby_slots.empty()) {
      report_.Warn("failover",
                   "synchronized_standby_slots is empty: outboxd may publish a transaction that no standby "
                   "has yet, and after a failover the synchronized slot may lag behind",
                   "set synchronized_standby_slots = '<the physical slot of each failover standby>' on the "
                   "primary (ALTER SYSTEM, then SELECT pg_reload_conf())");
    } else {
      auto slots = Query("failover",
                         "SELECT n, s.slot_type, s.active FROM unnest(string_to_array(replace($1, ' ', ''), ',')) "
                         "n LEFT JOIN pg_replication_slots s ON s.slot_name = n",
                         {standby_slots});
      if (!slots) return;
      std::vector<std::string> bad;
      for (const Row& row : *slots) {
        if (row[1].value_or("") != "physical" || row[2].value_or("f") != "t") bad.push_back(row[0].value_or(""));
      }
      if (bad.empty()) {
        report_.Ok("failover", fmt::format("synchronized_standby_slots = '{}': every slot is an active physical "
                                           "slot",
                                           standby_slots));
      } else {
        report_.Warn("failover",
                     fmt::format("synchronized_standby_slots names {} but no active physical slot of that name: "
                                 "outboxd waits for it, so streaming stalls while that standby is away",
                                 NameList(bad)),
                     "start the standby, or remove the slot from synchronized_standby_slots");
      }
    }
    if (source_.standby_dsn.empty()) {
      report_.Ok("failover", fmt::format("{} physical standby(s) stream from this server; set [source] standby_dsn "
                                         "to have check verify one",
                                         physical));
      return;
    }
    CheckStandby(standby_slots);
  }

  void CheckStandby(const std::string& standby_slots) {
    auto conn = PgConnection::Connect(source_.standby_dsn, false);
    if (!conn.ok()) {
      report_.Fail("standby", std::string(conn.status().message()), "check [source] standby_dsn");
      return;
    }
    auto rows = (*conn)->Query(
        "SELECT pg_is_in_recovery(), current_setting('sync_replication_slots'), "
        "current_setting('hot_standby_feedback'), current_setting('primary_slot_name'), "
        "(SELECT synced FROM pg_replication_slots WHERE slot_name = " +
        replication::QuoteLiteral(source_.slot) + ")");
    if (!rows.ok()) {
      report_.Fail("standby", fmt::format("query failed: {}", rows.status().message()),
                   "[source] standby_dsn must reach a PostgreSQL 17+ standby");
      return;
    }
    const std::string where = (*conn)->Describe();
    if (Value(*rows, 0, 0) != "t") {
      report_.Fail("standby", fmt::format("{} is not a standby (pg_is_in_recovery() is false)", where),
                   "point [source] standby_dsn at a physical standby of this primary");
      return;
    }
    std::vector<std::string> todo;
    if (Value(*rows, 0, 1) != "on") todo.push_back("sync_replication_slots = on");
    if (Value(*rows, 0, 2) != "on") todo.push_back("hot_standby_feedback = on");
    const std::string primary_slot = Value(*rows, 0, 3);
    if (primary_slot.empty()) {
      todo.push_back("primary_slot_name = '<its physical slot on the primary>'");
    } else if (("," + standby_slots + ",").find("," + primary_slot + ",") == std::string::npos) {
      todo.push_back(fmt::format("'{}' in the primary's synchronized_standby_slots", primary_slot));
    }
    if (!todo.empty()) {
      report_.Fail("standby", fmt::format("{}: a promotion would not keep slot '{}'", where, source_.slot),
                   fmt::format("set {} (and dbname in primary_conninfo); docs/operations.md, \"Failover\"",
                               fmt::join(todo, ", ")));
    } else if (Value(*rows, 0, 4) != "t") {
      report_.Warn("standby",
                   fmt::format("{}: settings are right, but slot '{}' is not synchronized there yet", where,
                               source_.slot),
                   "wait for the slot sync worker (it needs dbname in primary_conninfo and a slot that has "
                   "streamed once), then check again");
    } else {
      report_.Ok("standby", fmt::format("{}: slot '{}' is synchronized; a promotion keeps it", where, source_.slot));
    }
  }

  const config::Config& config_;
  const config::SourceConfig& source_;
  PgConnection& pg_;
  Report& report_;
};

void CheckPostgres(const config::Config& config, Report& report) {
  absl::StatusOr<std::unique_ptr<PgConnection>> conn = PgConnection::Connect(config.source.dsn, false);
  if (!conn.ok()) {
    report.Fail("connect", std::string(conn.status().message()),
                "check [source] dsn, that PostgreSQL runs, and that pg_hba.conf admits this user");
    return;
  }
  PgConnection& pg = **conn;
  report.Ok("connect", fmt::format("{} (server {})", pg.Describe(), pg.server_version()));
  if (absl::Status supported = replication::CheckServerVersion(pg.server_version()); !supported.ok()) {
    report.Fail("version", std::string(supported.message()));
    return;
  }
  if (pg.server_version() >= replication::kNewestTestedServerVersion + 10000) {
    report.Warn("version",
                fmt::format("PostgreSQL {} is newer than outboxd was tested against ({})", pg.server_version() / 10000,
                            replication::kSupportedVersions),
                "it probably works; run outboxd's integration tests against it, or pin a tested version");
  } else {
    report.Ok("version", fmt::format("PostgreSQL {}: supported ({})", pg.server_version() / 10000,
                                     replication::kSupportedVersions));
  }

  // The replication connection is a separate pg_hba.conf entry (database
  // keyword "replication"), often forgotten.
  auto repl = PgConnection::Connect(config.source.dsn, true);
  if (!repl.ok()) {
    report.Fail("replication", std::string(repl.status().message()),
                "pg_hba.conf needs a line with database 'replication' for this user (e.g. hostssl "
                "replication outboxd 10.0.0.0/8 scram-sha-256), and the role needs REPLICATION");
  } else if (auto identify = (*repl)->Query("IDENTIFY_SYSTEM"); !identify.ok()) {
    report.Fail("replication", fmt::format("IDENTIFY_SYSTEM failed: {}", identify.status().message()),
                "the role needs REPLICATION (sql/role.sql)");
  } else {
    report.Ok("replication", fmt::format("replication connection works (system {}, WAL at {})",
                                         Value(*identify, 0, 0), Value(*identify, 0, 2)));
  }
  PostgresDoctor(config, pg, report).Run();
}

// ---- Kafka ---------------------------------------------------------------------

// The brokers' auto.create.topics.enable and num.partitions, or nullopt when the
// principal may not describe broker configs.
struct BrokerDefaults {
  bool auto_create = false;
  std::string partitions;
  std::string replication;
};

std::optional<BrokerDefaults> DescribeBroker(rd_kafka_t* rk, int32_t broker_id) {
  char errstr[512];
  const std::string id = std::to_string(broker_id);
  rd_kafka_ConfigResource_t* resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_BROKER, id.c_str());
  rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
  rd_kafka_AdminOptions_set_request_timeout(options, 5000, errstr, sizeof errstr);
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_DescribeConfigs(rk, &resource, 1, options, queue);
  rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 7000);
  std::optional<BrokerDefaults> out;
  if (event != nullptr && rd_kafka_event_type(event) == RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT &&
      rd_kafka_event_error(event) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    size_t count = 0;
    const rd_kafka_ConfigResource_t** results =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(event), &count);
    if (count == 1 && rd_kafka_ConfigResource_error(results[0]) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      BrokerDefaults defaults;
      size_t entries = 0;
      const rd_kafka_ConfigEntry_t** configs = rd_kafka_ConfigResource_configs(results[0], &entries);
      for (size_t i = 0; i < entries; ++i) {
        const std::string name = rd_kafka_ConfigEntry_name(configs[i]);
        const char* value = rd_kafka_ConfigEntry_value(configs[i]);
        if (value == nullptr) continue;
        if (name == "auto.create.topics.enable") defaults.auto_create = std::string(value) == "true";
        if (name == "num.partitions") defaults.partitions = value;
        if (name == "default.replication.factor") defaults.replication = value;
      }
      out = defaults;
    }
  }
  if (event != nullptr) rd_kafka_event_destroy(event);
  rd_kafka_queue_destroy(queue);
  rd_kafka_AdminOptions_destroy(options);
  rd_kafka_ConfigResource_destroy(resource);
  return out;
}

struct TopicInfo {
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  int partitions = 0;
};

TopicInfo DescribeTopic(rd_kafka_t* rk, const std::string& topic) {
  TopicInfo info;
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  info.err = rd_kafka_metadata(rk, 0, rkt, &metadata, 5000);
  if (info.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (metadata->topic_cnt == 1) {
      info.err = metadata->topics[0].err;
      info.partitions = metadata->topics[0].partition_cnt;
    }
    rd_kafka_metadata_destroy(metadata);
  }
  rd_kafka_topic_destroy(rkt);
  return info;
}

void CheckKafka(const config::Config& config, Report& report) {
  // The check never creates a topic: metadata requests must not auto-create.
  kafka::KafkaProperties properties = config.kafka.properties;
  properties.emplace_back("allow.auto.create.topics", "false");
  auto sink = kafka::RdKafkaSink::Create(properties);
  if (!sink.ok()) {
    report.Fail("kafka", std::string(sink.status().message()), "fix the property in [sink.kafka]");
    return;
  }
  absl::Status reachable = (*sink)->CheckReachable(absl::Seconds(5));
  if (!reachable.ok()) {
    // The sink's message names the brokers and what to check.
    report.Fail("kafka", std::string(reachable.message()));
    return;
  }
  rd_kafka_t* rk = (*sink)->handle();
  const rd_kafka_metadata_t* metadata = nullptr;
  int32_t broker_id = -1;
  int brokers = 0;
  if (rd_kafka_metadata(rk, 0, nullptr, &metadata, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    brokers = metadata->broker_cnt;
    if (brokers > 0) broker_id = metadata->brokers[0].id;
    rd_kafka_metadata_destroy(metadata);
  }
  std::string servers;
  for (const auto& [key, value] : config.kafka.properties) {
    if (key == "bootstrap.servers") servers = value;
  }
  report.Ok("kafka", fmt::format("{} answers: {} broker(s)", servers, brokers));

  const std::optional<BrokerDefaults> broker = broker_id >= 0 ? DescribeBroker(rk, broker_id) : std::nullopt;
  std::string auto_create = "unknown (the principal may not describe broker configs)";
  if (broker) {
    auto_create = broker->auto_create ? fmt::format("on (new topics get {} partition(s), replication factor {})",
                                                    broker->partitions, broker->replication)
                                      : "off";
  }

  // Fixed topics can be looked up now; templated ones only exist once events name them.
  std::vector<std::pair<std::string, std::string>> topics;  // template, where it comes from
  for (const outbox::TableConfig& table : config.outbox) topics.emplace_back(table.topic, TableName(table));
  if (config.messages.enabled) topics.emplace_back(config.messages.topic, "[messages]");
  std::set<std::string> seen;
  for (const auto& [topic, from] : topics) {
    if (!seen.insert(topic).second) continue;
    if (topic.find('{') != std::string::npos) {
      if (broker && !broker->auto_create) {
        report.Warn("topic",
                    fmt::format("'{}' ({}) names topics per event, and the brokers' "
                                "auto.create.topics.enable is off: an event for a topic that does not "
                                "exist yet cannot be delivered",
                                topic, from),
                    "create every topic the template can produce before events arrive, or use a fixed "
                    "topic name");
      } else {
        report.Ok("topic", fmt::format("'{}' ({}) names topics per event; they are created on first use "
                                       "only if the brokers auto-create topics: auto-create {}",
                                       topic, from, auto_create));
      }
      continue;
    }
    const TopicInfo info = DescribeTopic(rk, topic);
    if (info.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      report.Ok("topic", fmt::format("'{}' ({}) exists with {} partition(s)", topic, from, info.partitions));
    } else if (info.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      const std::string create = fmt::format("create it: kafka-topics.sh --bootstrap-server {} --create "
                                             "--topic {} --partitions <n> --replication-factor <n>",
                                             servers, topic);
      if (broker && !broker->auto_create) {
        report.Fail("topic",
                    fmt::format("'{}' ({}) does not exist and the brokers do not auto-create topics: "
                                "events for it cannot be delivered",
                                topic, from),
                    create);
      } else {
        report.Warn("topic",
                    fmt::format("'{}' ({}) does not exist yet; it is created on the first event only if "
                                "the brokers auto-create topics: auto-create {}",
                                topic, from, auto_create),
                    create + ", to choose its partitions and replication yourself");
      }
    } else if (info.err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
      report.Fail("topic",
                  fmt::format("'{}' ({}): the Kafka principal is not authorized for it", topic, from),
                  "grant the principal Describe and Write on the topic (kafka-acls.sh --add "
                  "--allow-principal User:<name> --operation Write --operation Describe --topic ...)");
    } else {
      report.Fail("topic", fmt::format("'{}' ({}): metadata request failed: {}", topic, from,
                                       rd_kafka_err2str(info.err)),
                  "check the brokers' health and the topic name");
    }
  }

  if (config.kafka.delivery == config::Delivery::kExactlyOnce) {
    // Not init_transactions: that would fence a running instance.
    const std::string& topic = config.kafka.checkpoint_topic;
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    const rd_kafka_metadata_t* checkpoint = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &checkpoint, 5000);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      err = checkpoint->topic_cnt == 1 ? checkpoint->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
      rd_kafka_metadata_destroy(checkpoint);
    }
    rd_kafka_topic_destroy(rkt);
    const std::string id = config.kafka.transactional_id.empty()
                               ? fmt::format("outboxd-<system identifier>-{}", config.source.slot)
                               : config.kafka.transactional_id;
    report.Ok("delivery", fmt::format("exactly_once: Kafka transactions with transactional.id '{}'; consumers must "
                                      "read with isolation.level=read_committed to see each event once",
                                      id));
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      report.Ok("delivery", fmt::format("checkpoint topic '{}' exists (it must be compacted: cleanup.policy=compact)", topic));
    } else if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
      report.Ok("delivery", fmt::format("checkpoint topic '{}' does not exist yet: outboxd creates it, compacted, "
                                        "on its first start (the principal needs Create on it)",
                                        topic));
    } else {
      report.Fail("delivery", fmt::format("checkpoint topic '{}': {}", topic, rd_kafka_err2str(err)),
                  "grant the principal Describe, Read and Write on the checkpoint topic, and Write and Describe on "
                  "the transactional id");
    }
  } else {
    report.Ok("delivery", "at_least_once: after a fault an event may be published twice; consumers de-duplicate "
                          "by the outbox id");
  }

  // The idempotent producer asks for a producer id as soon as it connects; the
  // brokers refuse it to a principal that may write no topic at all.
  (*sink)->Poll(absl::Milliseconds(500));
  absl::Status fatal = (*sink)->FatalError();
  if (!fatal.ok()) {
    report.Fail("kafka", std::string(fatal.message()),
                "grant the principal Write on the outbox topics (and IdempotentWrite on the cluster "
                "for brokers older than 2.8)");
  }
}

// [schema_registry]: the registry answers, and each subject known before the
// first event has a compatibility level (and, without auto_register, a schema).
void CheckSchemaRegistry(const config::Config& config, Report& report) {
  const config::SchemaRegistryConfig& reg = config.schema_registry;
  if (!reg.enabled) return;
  telemetry::ProcessMetrics metrics;
  auto client = registry::SchemaRegistryClient::Create(RegistryClientOptions(reg), &metrics);
  if (!client.ok()) {
    report.Fail("registry", std::string(client.status().message()), "fix [schema_registry] url");
    return;
  }
  absl::StatusOr<std::string> global = (*client)->GlobalCompatibilityLevel();
  if (!global.ok()) {
    report.Fail("registry", std::string(global.status().message()),
                absl::IsPermissionDenied(global.status())
                    ? "check [schema_registry] username and password"
                    : "check [schema_registry] url (for Apicurio: .../apis/ccompat/v7), ca_file, and that the "
                      "registry runs");
    return;
  }
  report.Ok("registry", fmt::format("{} answers: default compatibility {}, subject strategy {}", reg.url, *global,
                                    registry::SubjectStrategyName(reg.subject_strategy)));
  if (reg.schema_id.has_value()) {
    report.Ok("registry", fmt::format("every envelope is framed with the fixed schema id {}", *reg.schema_id));
  }
  std::vector<std::string> topics = FixedTopics(config);
  std::set<std::string> subjects;
  for (const std::string& topic : topics) subjects.insert(registry::SubjectName(reg.subject_strategy, topic));
  if (!registry::SubjectIsPerTopic(reg.subject_strategy)) subjects.insert(registry::SubjectName(reg.subject_strategy, ""));
  for (const std::string& subject : subjects) {
    absl::StatusOr<std::string> level = (*client)->CompatibilityLevel(subject);
    if (!level.ok()) {
      report.Fail("registry", fmt::format("subject {}: {}", subject, level.status().message()));
      continue;
    }
    if (reg.auto_register || reg.schema_id.has_value()) {
      report.Ok("registry", fmt::format("subject {}: compatibility {}", subject, *level));
      continue;
    }
    absl::StatusOr<int32_t> id = (*client)->LatestId(subject);
    if (id.ok()) {
      report.Ok("registry", fmt::format("subject {}: compatibility {}, latest schema id {}", subject, *level, *id));
    } else {
      report.Fail("registry", fmt::format("subject {}: compatibility {}; no latest version: {}", subject, *level,
                                          id.status().message()),
                  "register proto/outbox/v1/envelope.proto under it, or set [schema_registry] auto_register = true");
    }
  }
}

}  // namespace

int RunCheck(const config::Config& config, std::ostream& out) {
  Report report(out);
  CheckPostgres(config, report);
  CheckKafka(config, report);
  CheckSchemaRegistry(config, report);
  report.Summary();
  return report.failed() ? 1 : 0;
}

}  // namespace outboxd::commands
