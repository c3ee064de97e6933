// `outboxd replay`: a cursor over the outbox table in one read-only snapshot,
// each batch of rows handed to the live path's mapper, router and envelope,
// produced through the same idempotent producer, every delivery report awaited.
#include "commands/replay.h"

#include <libpq-fe.h>

#include <algorithm>
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
  std::optional<std::string> table, since, until, database;
  ReplayOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--dry-run") {
      options.dry_run = true;
      continue;
    }
    bool known = false;
    const std::pair<std::string_view, std::optional<std::string>*> flags[] = {
        {"--table", &table}, {"--since", &since}, {"--until", &until}, {"--database", &database}};
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
  if (!since) {
    return absl::InvalidArgumentError("replay needs --since TIME, e.g. --since 2026-11-27T03:00:00Z");
  }
  options.table = *table;
  if (database) {
    if (database->empty()) return absl::InvalidArgumentError("--database needs a database name");
    options.database = *database;
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
  ReplayPublisher publisher(*table, sink.get());

  struct {
    std::string created_at, id;
  } const columns{QuoteIdentifier(table->columns.created_at), QuoteIdentifier(table->columns.id)};
  std::vector<std::string> params = {Rfc3339Utc(options.since)};
  std::string where = fmt::format("{} >= $1::timestamptz", columns.created_at);
  if (options.until.has_value()) {
    params.push_back(Rfc3339Utc(*options.until));
    where += fmt::format(" AND {} < $2::timestamptz", columns.created_at);
  }
  const std::string window = fmt::format("created_at >= {}{}", params[0],
                                         options.until ? " and < " + params[1] : "");
  const std::string context = fmt::format("replay of {}", qualified);

  absl::Status status = Exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {}, context);
  if (status.ok()) {
    status = Exec(pg,
                  fmt::format("DECLARE {} NO SCROLL CURSOR FOR SELECT * FROM {}.{} WHERE {} ORDER BY {}, {}",
                              kCursor, QuoteIdentifier(table->schema), QuoteIdentifier(table->table),
                              where, columns.created_at, columns.id),
                  params, context);
  }
  if (!status.ok() && replication::SqlStateOf(status) == "42703") {
    status = absl::Status(status.code(),
                          fmt::format("{}; replay selects rows by the column named in [[outbox]] "
                                      "columns.created_at (\"{}\") and orders them by it and the id",
                                      MessageOf(status), table->columns.created_at));
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
    RETURN_IF_ERROR(Exec(pg,
                         fmt::format("DECLARE {} NO SCROLL CURSOR FOR SELECT * FROM {}.{}", kCursor,
                                     QuoteIdentifier(table.schema), QuoteIdentifier(table.table)),
                         {}, context));
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
