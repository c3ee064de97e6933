// `outboxd check`, PostgreSQL: the role, the server settings, and per
// database the outbox tables' privileges, who may emit messages, and the
// publication (check_doctor.h).
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "commands/check_doctor.h"
#include "common/format.h"
#include "fmt/format.h"
#include "fmt/ranges.h"

namespace outboxd::commands::check {

using replication::QuoteIdentifier;

std::string Value(const std::vector<Row>& rows, size_t row, size_t col) {
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
std::string NameList(const std::vector<std::string>& names, size_t limit) {
  if (names.size() <= limit) return fmt::format("{}", fmt::join(names, ", "));
  std::vector<std::string> head(names.begin(), names.begin() + limit);
  return fmt::format("{} and {} more", fmt::join(head, ", "), names.size() - limit);
}

// Runs a query; a failure is reported under `check` and gives nullopt.
std::optional<std::vector<Row>> PostgresDoctor::Query(std::string_view check, const std::string& sql,
                                                                     const std::vector<std::string>& params) {
  auto rows = pg_.QueryParams(sql, params);
  if (!rows.ok()) {
    report_.Fail(check, fmt::format("query failed: {}", rows.status().message()),
                 "see the server's message; outboxd's role may lack a privilege this check needs");
    return std::nullopt;
  }
  return std::move(*rows);
}

void PostgresDoctor::CheckRolePrivileges() {
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
}

void PostgresDoctor::CheckTablePrivileges() {
  auto role = Query("privileges", "SELECT current_user");
  if (!role) return;
  const std::string user = Value(*role, 0, 0);
  std::vector<std::string> no_select;
  size_t existing = 0;
  for (const outbox::TableConfig& table : config_.outbox) {
    auto rows = Query("privileges",
                      "SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c JOIN pg_namespace n "
                      "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                      {table.schema, table.table});
    if (!rows) return;
    // A missing table is reported by the publication check: nothing to grant on it.
    if (rows->empty()) continue;
    ++existing;
    if (Value(*rows) != "t") no_select.push_back(TableSql(table));
  }
  if (!no_select.empty()) {
    report_.Fail("privileges",
                 fmt::format("role {} may not SELECT {}: `outboxd replay` cannot read them", user,
                             NameList(no_select)),
                 fmt::format("as the tables' owner: GRANT SELECT ON {} TO {} (sql/role.sql does it)",
                             fmt::join(no_select, ", "), SqlIdent(user)));
  } else if (existing > 0) {
    const size_t missing = config_.outbox.size() - existing;
    report_.Ok("privileges", fmt::format("role {} may SELECT the {} outbox table(s){}", user, existing,
                                         missing == 0 ? "" : fmt::format(" that exist ({} do(es) not: see publication)",
                                                                         missing)));
  }
}

void PostgresDoctor::CheckWalLevel() {
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

void PostgresDoctor::CheckWalKeepSize() {
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

void PostgresDoctor::CheckSenderTimeout() {
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
void PostgresDoctor::CheckMessagesPrivilege() {
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

void PostgresDoctor::CheckPublication() {
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

}  // namespace outboxd::commands::check
