// `outboxd check`, the outbox tables as outboxd will read them: their columns
// as pgoutput sends them (a publication's column list, generated columns),
// the publication's row filters, the topics each template renders for the
// rows present; and whether a walsender is free (check_doctor.h). Each is a
// mistake that `run` would otherwise meet row by row, as dead letters.
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "commands/check_doctor.h"
#include "commands/outbox_columns.h"
#include "common/format.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "outbox/routing.h"
#include "outbox/values.h"

namespace outboxd::commands::check {
namespace {

// The distinct values a topic check reads at most, and how long it may scan.
constexpr int kMaxDistinct = 1000;
constexpr char kScanTimeout[] = "5s";

std::string Quoted(const std::string& schema, const std::string& table) {
  return replication::QuoteIdentifier(schema) + "." + replication::QuoteIdentifier(table);
}

}  // namespace

void PostgresDoctor::CheckWalSenders() {
  auto rows = Query("wal_senders",
                    "SELECT (SELECT count(*) FROM pg_stat_replication), current_setting('max_wal_senders')::int, "
                    "(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active)",
                    {source_.slot});
  if (!rows) return;
  const int used = std::atoi(Value(*rows, 0, 0).c_str());
  const int max = std::atoi(Value(*rows, 0, 1).c_str());
  const bool ours_active = Value(*rows, 0, 2) != "0";
  if (used >= max && !ours_active) {
    report_.Fail("wal_senders",
                 fmt::format("all {} WAL senders (max_wal_senders) are in use: the server refuses outboxd's "
                             "replication connection (\"number of requested standby connections exceeds "
                             "max_wal_senders\") and outboxd would retry without streaming",
                             max),
                 "see who holds them (SELECT pid, application_name, client_addr, state FROM pg_stat_replication); "
                 "end an abandoned one, or raise max_wal_senders (ALTER SYSTEM SET max_wal_senders = ..., then "
                 "restart PostgreSQL)");
  } else {
    report_.Ok("wal_senders", fmt::format("{} of {} WAL senders (max_wal_senders) in use", used, max));
  }
}

void PostgresDoctor::CheckColumns() {
  const bool column_lists = pg_.server_version() >= 150000;
  for (const outbox::TableConfig& table : config_.outbox) {
    const std::string name = TableSql(table);
    auto rows = Query("columns",
                      "SELECT a.attname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, "
                      "format_type(a.atttypid, a.atttypmod), a.attgenerated <> '' "
                      "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                      "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped "
                      "ORDER BY a.attnum",
                      {Quoted(table.schema, table.table)});
    if (!rows) return;
    if (rows->empty()) continue;  // a missing table is the publication check's
    // The columns pgoutput sends: a column list (15+) limits them. Nothing to
    // say about a table that is not in the publication: the publication check
    // says it.
    std::set<std::string> published;
    bool in_publication = false;
    if (column_lists) {
      auto listed = Query("columns",
                          "SELECT unnest(attnames)::text FROM pg_publication_tables "
                          "WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                          {source_.publication, table.schema, table.table});
      if (!listed) return;
      in_publication = !listed->empty();
      for (size_t i = 0; i < listed->size(); ++i) published.insert(Value(*listed, i));
    }
    std::vector<TableColumn> columns;
    for (size_t i = 0; i < rows->size(); ++i) {
      TableColumn column{.name = Value(*rows, i, 0),
                         .type_oid = static_cast<uint32_t>(std::strtoul(Value(*rows, i, 1).c_str(), nullptr, 10)),
                         .type = Value(*rows, i, 2),
                         .unsent = ""};
      if (Value(*rows, i, 3) == "t" && pg_.server_version() < 180000) {
        column.unsent = "is a generated column, which pgoutput sends only from PostgreSQL 18 on";
      } else if (in_publication && !published.contains(column.name)) {
        column.unsent = fmt::format("is not in publication '{}''s column list", source_.publication);
      }
      columns.push_back(std::move(column));
    }
    for (const ColumnFinding& f : DiagnoseColumns(table, name, columns, SqlIdent(source_.publication))) {
      report_.Add(f.status, "columns", f.message, f.hint);
    }
  }
}

void PostgresDoctor::CheckRowFilters() {
  if (pg_.server_version() < 150000) return;  // no row filters before 15
  auto rows = Query("publication",
                    "SELECT schemaname, tablename, rowfilter FROM pg_publication_tables "
                    "WHERE pubname = $1 AND rowfilter IS NOT NULL ORDER BY 1, 2",
                    {source_.publication});
  if (!rows) return;
  for (size_t i = 0; i < rows->size(); ++i) {
    const std::string schema = Value(*rows, i, 0), table = Value(*rows, i, 1), filter = Value(*rows, i, 2);
    bool mapped = false;
    for (const outbox::TableConfig& t : config_.outbox) mapped = mapped || (t.schema == schema && t.table == table);
    if (!mapped) continue;
    const std::string name = TableSql(schema, table);
    if (config_.source.publications.size() > 1) {
      // Several publications: a row filter is how one table is sharded among them.
      report_.Ok("publication", fmt::format("'{}' publishes the rows of {} WHERE {} (a shard of a sharded outbox)",
                                            source_.publication, name, filter));
      continue;
    }
    report_.Warn("publication",
                 fmt::format("'{}' publishes only the rows of {} WHERE {}: the others never reach outboxd, so they "
                             "are neither published nor dead-lettered, and nothing counts them",
                             source_.publication, name, filter),
                 fmt::format("unless that is meant: in one transaction, ALTER PUBLICATION {0} DROP TABLE {1}; ALTER "
                             "PUBLICATION {0} ADD TABLE {1} (without WHERE)",
                             SqlIdent(source_.publication), name));
  }
}

// The rows present decide which topics a template names: each distinct value
// must make a valid Kafka topic name, or its events are dead-lettered; the
// valid ones are kept for the Kafka check (do they exist, will the brokers
// create them).
void PostgresDoctor::CheckTopicNames() {
  for (const outbox::TableConfig& table : config_.outbox) {
    const std::vector<std::string> fields = TemplateFields(table.topic);
    if (fields.empty()) continue;
    absl::StatusOr<outbox::TopicTemplate> topic = outbox::TopicTemplate::Parse(table.topic);
    if (!topic.ok()) continue;  // the config loader refused it already
    std::vector<std::string> columns;
    for (const std::string& field : fields) {
      const std::string& column = field == "aggregate_type" ? table.columns.aggregate_type
                                  : field == "event_type"   ? table.columns.event_type
                                                            : table.columns.destination;
      columns.push_back(replication::QuoteIdentifier(column));
    }
    // A bounded scan: a large table is reported as not checked, not waited for.
    if (!Query("topic", fmt::format("SET statement_timeout = '{}'", kScanTimeout))) return;
    auto values = pg_.Query(fmt::format("SELECT DISTINCT {} FROM {} LIMIT {}", fmt::join(columns, ", "),
                                        Quoted(table.schema, table.table), kMaxDistinct + 1));
    Query("topic", "RESET statement_timeout");
    const std::string where = TableName(table);
    if (!values.ok()) {
      const std::string state = replication::SqlStateOf(values.status()).value_or("");
      if (state == "57014") {
        report_.Ok("topic", fmt::format("'{}' ({}): the topics of the rows present were not checked (reading their "
                                        "distinct values took more than {})",
                                        table.topic, where, kScanTimeout));
      } else if (state != "42P01" && state != "42703" && state != "42501") {
        // A missing table or column, or no SELECT: the publication, column
        // and privilege checks say so.
        report_.Warn("topic",
                     fmt::format("'{}' ({}): the topics of the rows present were not checked: {}", table.topic,
                                 where, values.status().message()),
                     "see the server's message");
      }
      continue;
    }
    if (values->empty()) {
      report_.Ok("topic", fmt::format("'{}' ({}): the table has no rows yet to render topics from", table.topic,
                                      where));
      continue;
    }
    const bool truncated = values->size() > static_cast<size_t>(kMaxDistinct);
    if (truncated) values->pop_back();
    std::vector<std::string> bad, good;
    std::string first_problem;
    outbox::OutboxEvent event;
    event.source.schema = table.schema;
    event.source.table = table.table;
    std::string rendered;
    for (size_t i = 0; i < values->size(); ++i) {
      std::vector<std::string> described;
      for (size_t f = 0; f < fields.size(); ++f) {
        const std::optional<std::string>& v = (*values)[i][f];
        if (fields[f] == "aggregate_type") event.aggregate_type = v.value_or("");
        if (fields[f] == "event_type") event.event_type = v.value_or("");
        if (fields[f] == "destination") event.destination = v;
        described.push_back(fmt::format("{} {}", fields[f], v ? "'" + outbox::Printable(*v, 80) + "'" : "NULL"));
      }
      absl::Status status = topic->Render(event, &rendered);
      if (status.ok()) status = outbox::ValidateTopicName(rendered);
      if (!status.ok()) {
        bad.push_back(fmt::format("{}", fmt::join(described, ", ")));
        if (first_problem.empty()) first_problem = std::string(status.message());
        continue;
      }
      good.push_back(rendered);
      if (observed_ != nullptr && !observed_->topics.contains(rendered)) {
        observed_->topics[rendered] = fmt::format("{}, {}", where, fmt::join(described, ", "));
      }
    }
    const std::string scope = truncated ? fmt::format("the first {} distinct value(s)", kMaxDistinct)
                                        : fmt::format("{} distinct value(s)", values->size());
    if (!bad.empty()) {
      report_.Fail("topic",
                   fmt::format("'{}' ({}) renders no valid topic name for {} of the {} present ({}): their events "
                               "are dead-lettered (invalid_topic); first: {}",
                               table.topic, where, bad.size(), scope, NameList(bad), first_problem),
                   "Kafka topic names are 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-': fix those rows' "
                   "values where they are written, or route by another column (a generated column that cleans the "
                   "value, mapped as destination, with topic = \"{destination}\")");
    } else {
      report_.Ok("topic", fmt::format("'{}' ({}): the {} present render valid topic names: {}", table.topic, where,
                                      scope, NameList(good)));
    }
  }
}

}  // namespace outboxd::commands::check
