// `outboxd replay`: a cursor over the outbox table in one read-only snapshot,
// each batch of rows handed to the live path's mapper, router and envelope,
// produced through the same idempotent producer, every delivery report awaited.
#include "commands/replay.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <utility>

#include "common/format.h"
#include "config/streams.h"
#include "fmt/ranges.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "kafka/rdkafka_sink.h"
#include "telemetry/logging.h"
#include "outbox/envelope.h"
#include "outbox/routing.h"
#include "replication/pg_connection.h"

namespace outboxd::commands {
namespace {

using replication::PgConnection;
using replication::QuoteIdentifier;

constexpr char kCursor[] = "outboxd_replay";
constexpr size_t kMaxLoggedFailures = 20;
// The relation OID handed to the mapper: any value, the mapper only keys on it.
constexpr uint32_t kReplayRelationOid = 1;

std::string_view MessageOf(const absl::Status& status) {
  return std::string_view(status.message().data(), status.message().size());
}

std::string Rfc3339Utc(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

const outbox::TableConfig* FindTable(const config::Config& config, std::string_view name) {
  const size_t dot = name.find('.');
  const std::string schema = dot == std::string_view::npos ? "public" : std::string(name.substr(0, dot));
  const std::string table(dot == std::string_view::npos ? name : name.substr(dot + 1));
  for (const outbox::TableConfig& entry : config.outbox) {
    if (entry.schema == schema && entry.table == table) return &entry;
  }
  return nullptr;
}

// Runs one statement on the replay connection; the status names what we were doing.
absl::Status Exec(PgConnection& pg, std::string_view sql, const std::vector<std::string>& params,
                  std::string_view context) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  PGresult* res = PQexecParams(pg.raw(), std::string(sql).c_str(), static_cast<int>(values.size()),
                               nullptr, values.data(), nullptr, nullptr, 0);
  const ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  absl::Status status = absl::OkStatus();
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    status = replication::StatusFromResult(res, pg.raw(), context);
  }
  PQclear(res);
  return status;
}

struct ResultDeleter {
  void operator()(PGresult* res) const { PQclear(res); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// Reading the outbox table needs SELECT on it: say so where PostgreSQL says
// "permission denied".
absl::Status WithPrivilegeHint(absl::Status status, const outbox::TableConfig& table) {
  if (status.ok() || replication::SqlStateOf(status) != "42501") return status;
  return absl::Status(status.code(),
                      fmt::format("{}; outboxd's role needs SELECT on the outbox table to read it: as its owner, "
                                  "GRANT SELECT ON {}.{} TO <outboxd's role> (sql/role.sql does it)",
                                  MessageOf(status), QuoteIdentifier(table.schema), QuoteIdentifier(table.table)));
}

// How the replay's cursor selects and orders rows.
struct RowSelection {
  std::string where;  // "" for every row
  std::vector<std::string> params;
  std::string order;
  std::string what;         // for messages: "created_at >= ... and < ...", "every row"
  std::string untimed_sql;  // counts the rows a commit-time window cannot see; "" when not one
};

// The selection for `options` on `table` as the server has it: a time window
// reads created_at, or for a table without that column (Debezium's) the
// commit time of the inserting transaction when track_commit_timestamp is on;
// otherwise InvalidArgumentError saying which selection applies.
absl::StatusOr<RowSelection> SelectRows(PgConnection& pg, const outbox::TableConfig& table,
                                        const ReplayOptions& options) {
  const std::string created_at = QuoteIdentifier(table.columns.created_at);
  const std::string id = QuoteIdentifier(table.columns.id);
  const std::string qualified = QuoteIdentifier(table.schema) + "." + QuoteIdentifier(table.table);
  ASSIGN_OR_RETURN(std::vector<replication::Row> facts,
                   pg.QueryParams("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND "
                                  "attname = $2 AND attnum > 0 AND NOT attisdropped), "
                                  "current_setting('track_commit_timestamp')",
                                  {qualified, table.columns.created_at}));
  const bool has_created_at = !facts.empty() && facts[0][0].value_or("f") == "t";
  const bool commit_times = !facts.empty() && facts[0][1].value_or("off") == "on";
  // Without created_at: the order the rows were inserted in, as near as the
  // server can tell (commit time, else the inserting transaction's age).
  const std::string commit_time = "pg_catalog.pg_xact_commit_timestamp(xmin)";
  const std::string natural = has_created_at ? fmt::format("{}, {}", created_at, id)
                              : commit_times ? fmt::format("{}, {}", commit_time, id)
                                             : "pg_catalog.age(xmin) DESC, ctid";
  RowSelection out;
  switch (options.selection) {
    case ReplaySelection::kAll:
      out.order = natural;
      out.what = "--all (every row in the table)";
      return out;
    case ReplaySelection::kIdRange: {
      std::vector<std::string> bounds;
      if (!options.from_id.empty()) {
        out.params.push_back(options.from_id);
        bounds.push_back(fmt::format("{} >= ${}", id, out.params.size()));
      }
      if (!options.to_id.empty()) {
        out.params.push_back(options.to_id);
        bounds.push_back(fmt::format("{} <= ${}", id, out.params.size()));
      }
      out.where = fmt::format("{}", fmt::join(bounds, " AND "));
      out.order = id;
      out.what = fmt::format("{} from {} to {}", table.columns.id,
                             options.from_id.empty() ? "the first" : options.from_id,
                             options.to_id.empty() ? "the last" : options.to_id);
      return out;
    }
    case ReplaySelection::kTime:
      break;
  }
  std::string column;
  if (has_created_at) {
    column = created_at;
    out.what = table.columns.created_at;
  } else if (commit_times) {
    column = commit_time;
    out.what = "commit time";
    out.untimed_sql = fmt::format("SELECT count(*) FROM {} WHERE {} IS NULL", qualified, commit_time);
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "--since selects rows by their created_at, and {}.{} has no column \"{}\" ([outbox.columns] created_at), "
        "and the server's track_commit_timestamp is off, so no time is known for its rows. Replay by id instead, "
        "--from-id ID --to-id ID (ids in time order, such as UUIDv7, make that a time window), or every row still "
        "in the table with --all; or turn track_commit_timestamp on (ALTER SYSTEM SET track_commit_timestamp = on, "
        "then restart PostgreSQL), after which --since selects by the commit time of rows committed from then on",
        table.schema, table.table, table.columns.created_at));
  }
  out.params.push_back(Rfc3339Utc(options.since));
  out.where = fmt::format("{} >= $1::timestamptz", column);
  if (options.until.has_value()) {
    out.params.push_back(Rfc3339Utc(*options.until));
    out.where += fmt::format(" AND {} < $2::timestamptz", column);
  }
  out.what = fmt::format("{} >= {}{}", out.what, out.params[0], options.until ? " and < " + out.params[1] : "");
  out.order = natural;
  return out;
}

}  // namespace

absl::StatusOr<absl::Time> ParseReplayTime(std::string_view flag, std::string_view text) {
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &time, &error)) {
    return absl::InvalidArgumentError(fmt::format(
        "{} \"{}\" is not an RFC 3339 timestamp: write it with a date, a time and an offset, "
        "e.g. 2026-11-27T03:00:00Z or 2026-11-27T04:00:00.5+01:00",
        flag, text));
  }
  return time;
}

absl::StatusOr<ReplayOptions> ParseReplayFlags(const std::vector<std::string_view>& args) {
  std::optional<std::string> table, since, until, database, from_id, to_id;
  bool all = false;
  ReplayOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--dry-run") {
      options.dry_run = true;
      continue;
    }
    if (arg == "--all") {
      all = true;
      continue;
    }
    bool known = false;
    const std::pair<std::string_view, std::optional<std::string>*> flags[] = {
        {"--table", &table},     {"--since", &since},     {"--until", &until},
        {"--database", &database}, {"--from-id", &from_id}, {"--to-id", &to_id}};
    for (const auto& [name, value] : flags) {
      if (arg == name && i + 1 < args.size()) {
        *value = std::string(args[++i]);
        known = true;
      } else if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=') {
        *value = std::string(arg.substr(name.size() + 1));
        known = true;
      }
      if (known) break;
    }
    if (!known) return absl::InvalidArgumentError(fmt::format("unknown argument '{}'", arg));
  }
  if (!table || table->empty()) {
    return absl::InvalidArgumentError("replay needs --table T, one of the config's [[outbox]] tables");
  }
  const bool ids = from_id.has_value() || to_id.has_value();
  if (static_cast<int>(since.has_value() || until.has_value()) + static_cast<int>(ids) + static_cast<int>(all) > 1) {
    return absl::InvalidArgumentError(
        "replay takes one selection of rows: a time window (--since, --until), an id range (--from-id, --to-id) "
        "or --all");
  }
  options.table = *table;
  if (database) {
    if (database->empty()) return absl::InvalidArgumentError("--database needs a database name");
    options.database = *database;
  }
  if (all) {
    options.selection = ReplaySelection::kAll;
    return options;
  }
  if (ids) {
    if ((from_id && from_id->empty()) || (to_id && to_id->empty())) {
      return absl::InvalidArgumentError("--from-id and --to-id need an id");
    }
    options.selection = ReplaySelection::kIdRange;
    options.from_id = from_id.value_or("");
    options.to_id = to_id.value_or("");
    return options;
  }
  if (!since) {
    return absl::InvalidArgumentError(
        "replay needs --since TIME (a window of created_at, e.g. --since 2026-11-27T03:00:00Z), --from-id/--to-id "
        "ID (a range of ids) or --all (every row still in the table)");
  }
  ASSIGN_OR_RETURN(options.since, ParseReplayTime("--since", *since));
  if (until) {
    ASSIGN_OR_RETURN(const absl::Time end, ParseReplayTime("--until", *until));
    if (end <= options.since) return absl::InvalidArgumentError("--until must be later than --since");
    options.until = end;
  }
  return options;
}

ReplayPublisher::ReplayPublisher(const outbox::TableConfig& table, kafka::EventSink* sink)
    : mapper_({table}), sink_(sink) {
  // The config loader already validated the template.
  absl::StatusOr<outbox::TopicTemplate> topic = outbox::TopicTemplate::Parse(table.topic);
  if (topic.ok()) topic_ = *std::move(topic);
  if (sink_ != nullptr) {
    sink_->SetDeliveryHandler([this](uint64_t, const absl::Status& status) {
      if (status.ok()) {
        ++result_.sent;
      } else {
        Fail(absl::Status(status.code(), fmt::format("a Kafka delivery failed: {}", MessageOf(status))));
      }
    });
  }
}

absl::Status ReplayPublisher::Bind(const std::vector<pgoutput::RelationColumn>& columns) {
  const outbox::TableConfig& table = mapper_.tables().front();
  pgoutput::RelationMessage relation;
  relation.oid = kReplayRelationOid;
  relation.schema = table.schema;
  relation.name = table.table;
  relation.columns = columns;
  mapper_.OnRelation(relation);
  binding_ = mapper_.Find(kReplayRelationOid);
  if (binding_ == nullptr) return absl::InternalError("replay: the outbox table did not bind");
  return absl::OkStatus();
}

void ReplayPublisher::Fail(absl::Status status) {
  ++result_.failed;
  if (result_.failed <= kMaxLoggedFailures) {
    telemetry::LogWarn("{}", MessageOf(status));
  } else if (result_.failed == kMaxLoggedFailures + 1) {
    telemetry::LogWarn("more rows failed; only the first {} are logged", kMaxLoggedFailures);
  }
  if (first_error_.ok()) first_error_ = std::move(status);
}

absl::Status ReplayPublisher::Publish(const pgoutput::TupleData& row) {
  if (binding_ == nullptr) return absl::FailedPreconditionError("replay: Publish before Bind");
  ++result_.rows;
  if (absl::Status mapped = mapper_.MapInsert(*binding_, row, &event_); !mapped.ok()) {
    Fail(absl::InvalidArgumentError(fmt::format("row {} of the replay: {}", result_.rows, MessageOf(mapped))));
    return absl::OkStatus();
  }
  // Only the table is known: a replayed row has no commit LSN, xid or commit time.
  event_.source.schema = binding_->schema;
  event_.source.table = binding_->table;
  if (absl::Status rendered = topic_.Render(event_, &topic_name_); !rendered.ok()) {
    Fail(absl::InvalidArgumentError(
        fmt::format("cannot route outbox row {}: {}", event_.id, MessageOf(rendered))));
    return absl::OkStatus();
  }
  if (sink_ == nullptr) return absl::OkStatus();
  if (absl::Status built = outbox::BuildRecord(
          event_, binding_->config->record, outbox::RecordKey(event_, binding_->config->key),
          &record_);
      !built.ok()) {
    Fail(absl::InvalidArgumentError(
        fmt::format("cannot build the record of outbox row {}: {}", event_.id, MessageOf(built))));
    return absl::OkStatus();
  }
  const kafka::ProduceRequest request{
      .topic = topic_name_,
      .key = record_.key,
      .value = record_.value,
      .headers = &record_.headers,
      .token = result_.rows,
      .null_value = record_.null_value,
      .timestamp_ms = record_.timestamp_ms,
      .partition = record_.partition,
  };
  while (true) {
    absl::Status produced = sink_->Produce(request);
    if (produced.ok()) return absl::OkStatus();
    if (!absl::IsResourceExhausted(produced)) {
      if (absl::IsInvalidArgument(produced)) {  // this record only, e.g. too large
        Fail(absl::InvalidArgumentError(fmt::format("cannot produce outbox row {} to {}: {}",
                                                    event_.id, topic_name_, MessageOf(produced))));
        return absl::OkStatus();
      }
      return absl::Status(produced.code(), fmt::format("cannot produce outbox row {} to {}: {}",
                                                       event_.id, topic_name_, MessageOf(produced)));
    }
    sink_->Poll(absl::Milliseconds(10));  // queue full: serve delivery reports, then retry
  }
}

absl::Status ReplayPublisher::Finish(absl::Duration timeout) {
  if (sink_ == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(sink_->Flush(timeout));
  return sink_->FatalError();
}

absl::StatusOr<config::Config> ReplayConfig(const config::Config& config, std::string_view database) {
  const config::SourceConfig& source = config.source;
  if (source.selection == config::DatabaseSelection::kDsn) {
    const std::string own = config::DsnDatabase(source.dsn);
    if (!database.empty() && database != own) {
      return absl::InvalidArgumentError(fmt::format(
          "--database {}: this config streams the DSN's database \"{}\" only (no [source] databases); drop "
          "--database, or point [source] dsn at that database",
          database, own));
    }
    if (!config.MultiStream()) return config;
    database = own;  // several publications in one database
  } else if (database.empty()) {
    return absl::InvalidArgumentError(
        "the config names several databases ([source] databases): say which one to replay from with "
        "--database NAME");
  } else if (source.selection == config::DatabaseSelection::kList &&
             std::find(source.databases.begin(), source.databases.end(), database) == source.databases.end()) {
    return absl::InvalidArgumentError(fmt::format("--database {} is not in [source] databases ({})", database,
                                                  fmt::join(source.databases, ", ")));
  }
  // Replay reads tables, not the publication: every publication's entries
  // that apply to this database, each table once.
  ASSIGN_OR_RETURN(config::StreamPlan plan,
                   config::PlanStreams(config, {{std::string(database), source.publications}}, ""));
  if (plan.streams.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "--database {}: {}", database,
        plan.refused.empty() ? std::string("no [[outbox]] entry applies to it") : plan.refused.front().reason));
  }
  config::Config out = config::StreamConfig(config, plan.streams.front());
  for (size_t i = 1; i < plan.streams.size(); ++i) {
    for (const outbox::TableConfig& table : plan.streams[i].tables) {
      const bool seen = std::any_of(out.outbox.begin(), out.outbox.end(), [&](const outbox::TableConfig& t) {
        return t.schema == table.schema && t.table == table.table;
      });
      if (!seen) out.outbox.push_back(table);
    }
  }
  return out;
}

int RunReplay(const config::Config& cluster_config, const ReplayOptions& options, std::ostream& out) {
  absl::StatusOr<config::Config> chosen = ReplayConfig(cluster_config, options.database);
  if (!chosen.ok()) {
    telemetry::LogError("replay: {}", chosen.status().message());
    return 2;
  }
  const config::Config& config = *chosen;
  const outbox::TableConfig* table = FindTable(config, options.table);
  if (table == nullptr) {
    std::string known;
    for (const outbox::TableConfig& entry : config.outbox) {
      known += fmt::format("{}{}.{}", known.empty() ? "" : ", ", entry.schema, entry.table);
    }
    telemetry::LogError("replay: --table {} is not an [[outbox]] table of the config ({}); replay uses that "
             "entry's columns, topic and key",
             options.table, known.empty() ? "it has none" : "it has " + known);
    return 2;
  }
  const std::string qualified = table->schema + "." + table->table;

  absl::StatusOr<std::unique_ptr<PgConnection>> conn = PgConnection::Connect(config.source.dsn, false);
  if (!conn.ok()) {
    telemetry::LogError("replay: {}", conn.status().message());
    return 1;
  }
  PgConnection& pg = **conn;

  std::unique_ptr<kafka::RdKafkaSink> sink;
  if (!options.dry_run) {
    kafka::RdKafkaSinkOptions sink_options{
        .log = [](int level, std::string_view facility, std::string_view message) {
          telemetry::Log(level <= 3 ? telemetry::LogLevel::kError : level == 4 ? telemetry::LogLevel::kWarn : telemetry::LogLevel::kDebug,
              "kafka {}: {}", facility, message);
        },
        .error = [](const absl::Status& error) { telemetry::LogWarn("kafka: {}", error.message()); },
        .brokers_up = nullptr,
        .transactional_id = "",  // replay stays at-least-once
    };
    absl::StatusOr<std::unique_ptr<kafka::RdKafkaSink>> created =
        kafka::RdKafkaSink::Create(config.kafka.properties, sink_options);
    if (!created.ok()) {
      telemetry::LogError("replay: {}", created.status().message());
      return 1;
    }
    sink = *std::move(created);
  }
  absl::StatusOr<RowSelection> rows = SelectRows(pg, *table, options);
  if (!rows.ok()) {
    telemetry::LogError("replay of {}: {}", qualified, rows.status().message());
    return absl::IsInvalidArgument(rows.status()) ? 2 : 1;
  }
  ReplayPublisher publisher(*table, sink.get());
  const std::vector<std::string>& params = rows->params;
  const std::string& window = rows->what;
  const std::string context = fmt::format("replay of {}", qualified);

  absl::Status status = Exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {}, context);
  if (status.ok()) {
    status = Exec(pg,
                  fmt::format("DECLARE {} NO SCROLL CURSOR FOR SELECT * FROM {}.{}{} ORDER BY {}", kCursor,
                              QuoteIdentifier(table->schema), QuoteIdentifier(table->table),
                              rows->where.empty() ? "" : " WHERE " + rows->where, rows->order),
                  params, context);
    status = WithPrivilegeHint(std::move(status), *table);
  }
  uint64_t untimed = 0;  // rows the commit-time window cannot see
  if (status.ok() && !rows->untimed_sql.empty()) {
    Result res(PQexec(pg.raw(), rows->untimed_sql.c_str()));
    if (res != nullptr && PQresultStatus(res.get()) == PGRES_TUPLES_OK && PQntuples(res.get()) == 1) {
      untimed = std::strtoull(PQgetvalue(res.get(), 0, 0), nullptr, 10);
    }
  }
  const std::string fetch = fmt::format("FETCH FORWARD {} FROM {}", options.batch_rows, kCursor);
  bool bound = false;
  pgoutput::TupleData row;
  while (status.ok()) {
    Result res(PQexec(pg.raw(), fetch.c_str()));
    if (res == nullptr || PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
      status = replication::StatusFromResult(res.get(), pg.raw(), context);
      break;
    }
    const int rows = PQntuples(res.get());
    const int fields = PQnfields(res.get());
    if (!bound) {
      std::vector<pgoutput::RelationColumn> relation_columns(static_cast<size_t>(fields));
      for (int f = 0; f < fields; ++f) {
        relation_columns[f].name = PQfname(res.get(), f);
        relation_columns[f].type_oid = PQftype(res.get(), f);
      }
      status = publisher.Bind(relation_columns);
      bound = true;
    }
    for (int r = 0; r < rows && status.ok(); ++r) {
      row.values.assign(static_cast<size_t>(fields), pgoutput::TupleValue{});
      for (int f = 0; f < fields; ++f) {
        if (PQgetisnull(res.get(), r, f)) continue;  // kNull
        row.values[f].kind = pgoutput::TupleValue::Kind::kText;
        row.values[f].data = std::string_view(PQgetvalue(res.get(), r, f),
                                              static_cast<size_t>(PQgetlength(res.get(), r, f)));
      }
      status = publisher.Publish(row);
    }
    if (sink != nullptr) sink->Poll(absl::ZeroDuration());
    if (rows < static_cast<int>(options.batch_rows)) break;
  }
  if (status.ok()) status = Exec(pg, "COMMIT", {}, context);
  if (status.ok()) status = publisher.Finish(options.flush_timeout);
  if (!status.ok()) {
    if (sink != nullptr) {
      (void)sink->Flush(absl::Seconds(10));  // reports of what was produced, for the count
    }
    const ReplayResult& r = publisher.result();
    telemetry::LogError("replay of {} failed after {} row(s), {} sent: {}", qualified, r.rows, r.sent,
             MessageOf(status));
    return 1;
  }
  const ReplayResult& r = publisher.result();
  if (untimed > 0) {
    out << fmt::format("note: {} row(s) of {} have no commit time (committed before track_commit_timestamp was on, "
                       "or frozen since) and are outside any --since window: --all or --from-id/--to-id replays "
                       "them\n",
                       untimed, qualified);
  }
  if (options.dry_run) {
    out << fmt::format("dry run: {} row(s) of {} with {} would be replayed ({} could not be "
                       "mapped or routed); nothing was produced\n",
                       r.rows, qualified, window, r.failed);
    return r.failed == 0 ? 0 : 1;
  }
  out << fmt::format("replayed {} of {} row(s) of {} with {}: {} sent, {} failed\n", r.sent, r.rows,
                     qualified, window, r.sent, r.failed);
  if (r.failed > 0 || r.sent != r.rows) {
    telemetry::LogError("replay incomplete: {} row(s) were not delivered{}{}; run the replay again for the "
             "same window once fixed (consumers de-duplicate by outbox id)",
             r.rows - r.sent, publisher.first_error().ok() ? "" : ", first error: ",
             MessageOf(publisher.first_error()));
    return 1;
  }
  return 0;
}

absl::Status PublishSnapshot(const config::Config& config, std::string_view snapshot_name,
                             const std::atomic<bool>& stop) {
  ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> conn, PgConnection::Connect(config.source.dsn, false));
  PgConnection& pg = *conn;
  kafka::RdKafkaSinkOptions sink_options{
      .log = [](int level, std::string_view facility, std::string_view message) {
        telemetry::Log(level <= 3 ? telemetry::LogLevel::kError : level == 4 ? telemetry::LogLevel::kWarn : telemetry::LogLevel::kDebug,
            "kafka {}: {}", facility, message);
      },
      .error = [](const absl::Status& error) { telemetry::LogWarn("kafka: {}", error.message()); },
      .brokers_up = nullptr,
      .transactional_id = "",  // the snapshot stays at-least-once
  };
  ASSIGN_OR_RETURN(std::unique_ptr<kafka::RdKafkaSink> sink,
                   kafka::RdKafkaSink::Create(config.kafka.properties, sink_options));
  const std::string context = "initial snapshot";
  RETURN_IF_ERROR(Exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {}, context));
  if (!snapshot_name.empty()) {
    RETURN_IF_ERROR(Exec(pg, fmt::format("SET TRANSACTION SNAPSHOT {}", replication::QuoteLiteral(snapshot_name)),
                         {}, context));
  }
  constexpr int kBatchRows = 1000;
  uint64_t total = 0;
  for (const outbox::TableConfig& table : config.outbox) {
    const std::string qualified = table.schema + "." + table.table;
    ReplayPublisher publisher(table, sink.get());
    RETURN_IF_ERROR(WithPrivilegeHint(
        Exec(pg,
             fmt::format("DECLARE {} NO SCROLL CURSOR FOR SELECT * FROM {}.{}", kCursor, QuoteIdentifier(table.schema),
                         QuoteIdentifier(table.table)),
             {}, context),
        table));
    const std::string fetch = fmt::format("FETCH FORWARD {} FROM {}", kBatchRows, kCursor);
    bool bound = false;
    pgoutput::TupleData row;
    while (true) {
      if (stop.load()) return absl::UnavailableError("initial snapshot: stopped before it was complete");
      Result res(PQexec(pg.raw(), fetch.c_str()));
      if (res == nullptr || PQresultStatus(res.get()) != PGRES_TUPLES_OK) {
        return replication::StatusFromResult(res.get(), pg.raw(), context);
      }
      const int rows = PQntuples(res.get());
      const int fields = PQnfields(res.get());
      if (!bound) {
        std::vector<pgoutput::RelationColumn> columns(static_cast<size_t>(fields));
        for (int f = 0; f < fields; ++f) {
          columns[f].name = PQfname(res.get(), f);
          columns[f].type_oid = PQftype(res.get(), f);
        }
        RETURN_IF_ERROR(publisher.Bind(columns));
        bound = true;
      }
      for (int r = 0; r < rows; ++r) {
        row.values.assign(static_cast<size_t>(fields), pgoutput::TupleValue{});
        for (int f = 0; f < fields; ++f) {
          if (PQgetisnull(res.get(), r, f)) continue;
          row.values[f].kind = pgoutput::TupleValue::Kind::kText;
          row.values[f].data = std::string_view(PQgetvalue(res.get(), r, f),
                                                static_cast<size_t>(PQgetlength(res.get(), r, f)));
        }
        absl::Status published = publisher.Publish(row);
        if (!published.ok()) {
          return absl::UnavailableError(fmt::format("initial snapshot of {}: {}", qualified, MessageOf(published)));
        }
      }
      sink->Poll(absl::ZeroDuration());
      if (rows < kBatchRows) break;
    }
    RETURN_IF_ERROR(Exec(pg, fmt::format("CLOSE {}", kCursor), {}, context));
    // Every delivery of this table, with a deadline so that a stop is honoured.
    while (sink->InFlight() > 0) {
      if (stop.load()) return absl::UnavailableError("initial snapshot: stopped before every row was delivered");
      (void)publisher.Finish(absl::Milliseconds(200));
    }
    const ReplayResult& result = publisher.result();
    if (result.failed > 0) {
      // Rows that cannot be mapped or routed stay bad; failed deliveries may pass later.
      const bool bad_rows = absl::IsInvalidArgument(publisher.first_error());
      return absl::Status(bad_rows ? absl::StatusCode::kFailedPrecondition : absl::StatusCode::kUnavailable,
                          fmt::format(
          "initial snapshot of {}: {} of {} row(s) could not be published (first: {}); fix them and "
          "restart: the snapshot is redone",
          qualified, result.failed, result.rows, MessageOf(publisher.first_error())));
    }
    if (absl::Status fatal = sink->FatalError(); !fatal.ok()) {
      return absl::UnavailableError(fmt::format("initial snapshot: {}", MessageOf(fatal)));
    }
    total += result.rows;
    telemetry::LogInfo("initial snapshot: published {} row(s) of {}", result.rows, qualified);
  }
  RETURN_IF_ERROR(Exec(pg, "COMMIT", {}, context));
  telemetry::LogInfo("initial snapshot{}: {} row(s) published and acknowledged",
                     snapshot_name.empty() ? " (redone)" : "", total);
  return absl::OkStatus();
}

}  // namespace outboxd::commands
