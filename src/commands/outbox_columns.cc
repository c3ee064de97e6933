#include "commands/outbox_columns.h"

#include <algorithm>
#include <optional>
#include <set>

#include "config/parser.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "outbox/values.h"

namespace outboxd::commands {
namespace {

// What outboxd does with a column's values, for the type check.
enum class Kind {
  kAny,        // read as text: every type prints as text
  kId,         // a UUID: uuid, or text holding one
  kHeaders,    // a JSON object
  kTimestamp,  // created_at: a PostgreSQL timestamp
  kRecordTime, // timestamp_column: a timestamp or Unix milliseconds
  kPartition,  // partition_column: a partition number
};

// One column an [[outbox]] entry reads.
struct Wanted {
  std::string field;   // "event_type", "key_column", "fields #1"
  std::string key;     // how the config names it: "[outbox.columns] event_type", "key_column"
  std::string column;  // the configured column name
  bool required = false;
  // Optional columns only: set to something else than the default, so a
  // missing one is a mistake rather than an absent option.
  bool named = false;
  Kind kind = Kind::kAny;
  std::string missing;  // optional: what a missing or unsent column means
};

constexpr uint32_t kInt2Oid = 21, kInt4Oid = 23, kInt8Oid = 20, kNumericOid = 1700;

bool IsTextType(uint32_t oid) {
  return oid == outbox::kTextOid || oid == outbox::kVarcharOid || oid == outbox::kBpcharOid ||
         oid == outbox::kNameOid;
}
bool IsIntegerType(uint32_t oid) { return oid == kInt2Oid || oid == kInt4Oid || oid == kInt8Oid; }
bool IsTimestampType(uint32_t oid) { return oid == outbox::kTimestampOid || oid == outbox::kTimestamptzOid; }

// The status of a column of type `oid` for `kind`, and why when not ok.
std::pair<CheckStatus, std::string> TypeFits(Kind kind, uint32_t oid) {
  switch (kind) {
    case Kind::kAny:
      return {CheckStatus::kOk, ""};
    case Kind::kId:
      if (oid == outbox::kUuidOid || IsTextType(oid)) return {CheckStatus::kOk, ""};
      return {CheckStatus::kFail, "can never hold a UUID, so every row would be dead-lettered (invalid_uuid)"};
    case Kind::kHeaders:
      if (oid == outbox::kJsonbOid || oid == outbox::kJsonOid) return {CheckStatus::kOk, ""};
      if (IsTextType(oid)) {
        return {CheckStatus::kWarn, "is text: a row whose value is not a JSON object is dead-lettered"};
      }
      return {CheckStatus::kFail, "cannot hold a JSON object: every row with a value there would be dead-lettered"};
    case Kind::kTimestamp:
      if (IsTimestampType(oid)) return {CheckStatus::kOk, ""};
      if (IsTextType(oid)) {
        return {CheckStatus::kWarn, "is text: a row whose value is not a timestamp is dead-lettered"};
      }
      return {CheckStatus::kFail, "is not a timestamp: every row with a value there would be dead-lettered"};
    case Kind::kRecordTime:
      if (IsTimestampType(oid) || IsIntegerType(oid)) return {CheckStatus::kOk, ""};
      if (IsTextType(oid) || oid == kNumericOid) {
        return {CheckStatus::kWarn,
                "is neither a timestamp nor an integer: a row whose value is neither is dead-lettered"};
      }
      return {CheckStatus::kFail,
              "is neither a timestamp nor Unix milliseconds: every row with a value there would be dead-lettered"};
    case Kind::kPartition:
      if (IsIntegerType(oid)) return {CheckStatus::kOk, ""};
      if (IsTextType(oid) || oid == kNumericOid) {
        return {CheckStatus::kWarn, "is not an integer type: a row whose value is not a partition number is "
                                    "dead-lettered"};
      }
      return {CheckStatus::kFail, "cannot hold a partition number: every row with a value there would be "
                                  "dead-lettered"};
  }
  return {CheckStatus::kOk, ""};
}

// Debezium's and outboxd's names of the same field, for suggestions.
std::vector<std::string_view> Aliases(std::string_view field) {
  if (field == "aggregate_type") return {"aggregatetype", "aggregate_type"};
  if (field == "aggregate_id") return {"aggregateid", "aggregate_id"};
  if (field == "event_type") return {"type", "eventtype", "event_type"};
  if (field == "created_at") return {"created_at", "timestamp", "createdat"};
  return {field};
}

std::vector<Wanted> WantedColumns(const outbox::TableConfig& table) {
  const outbox::ColumnNames& c = table.columns;
  const outbox::ColumnNames defaults;
  const std::vector<std::string> in_topic = TemplateFields(table.topic);
  const bool topic_destination =
      std::find(in_topic.begin(), in_topic.end(), "destination") != in_topic.end();
  auto field = [](std::string name, std::string column, bool required, bool named, Kind kind,
                  std::string missing) {
    return Wanted{.field = name,
                  .key = "[outbox.columns] " + name,
                  .column = std::move(column),
                  .required = required,
                  .named = named,
                  .kind = kind,
                  .missing = std::move(missing)};
  };
  const std::string dead = "every row would be dead-lettered (missing_column)";
  std::vector<Wanted> wanted = {
      field("id", c.id, true, false, Kind::kId, dead),
      field("aggregate_type", c.aggregate_type, true, false, Kind::kAny, dead),
      field("aggregate_id", c.aggregate_id, true, false, Kind::kAny, dead),
      field("event_type", c.event_type, true, false, Kind::kAny, dead),
      field("payload", c.payload, true, false, Kind::kAny, dead),
      field("headers", c.headers, false, c.headers != defaults.headers, Kind::kHeaders,
            "no row's headers become Kafka headers"),
      field("destination", c.destination, topic_destination, c.destination != defaults.destination, Kind::kAny,
            topic_destination ? "the topic template's {destination} has no value, so every row would be "
                                "dead-lettered (invalid_topic)"
                              : "no row has a destination"),
      field("created_at", c.created_at, false, c.created_at != defaults.created_at, Kind::kTimestamp,
            "envelopes carry no created_at, and `outboxd replay --since` cannot select rows by it"),
  };
  const outbox::RecordConfig& record = table.record;
  auto option = [&wanted](std::string key, const std::string& column, Kind kind, std::string missing) {
    if (column.empty()) return;
    wanted.push_back(Wanted{.field = key, .key = key, .column = column, .required = false, .named = true,
                            .kind = kind, .missing = std::move(missing)});
  };
  option("key_column", record.key_column, Kind::kAny,
         "every record gets a null key: the partitioner spreads them, and an aggregate's events lose their order");
  option("timestamp_column", record.timestamp_column, Kind::kRecordTime,
         "record timestamps are the producer's clock at publish");
  option("partition_column", record.partition_column, Kind::kPartition,
         "the key chooses the partition");
  if (record.tracing_column != outbox::RecordConfig().tracing_column) {
    option("tracing_column", record.tracing_column, Kind::kAny, "no traceparent header is written");
  }
  for (size_t i = 0; i < record.fields.size(); ++i) {
    const outbox::AdditionalField& f = record.fields[i];
    option(fmt::format("[[outbox.fields]] column = \"{}\"", f.column), f.column, Kind::kAny,
           fmt::format("no {} '{}' is written", f.placement == outbox::Placement::kHeader ? "header" : "attribute",
                       f.name()));
  }
  return wanted;
}

const TableColumn* FindColumn(const std::vector<TableColumn>& columns, const std::string& name) {
  for (const TableColumn& column : columns) {
    if (column.name == name) return &column;
  }
  return nullptr;
}

std::string ColumnList(const std::vector<TableColumn>& columns) {
  std::vector<std::string> listed;
  for (const TableColumn& column : columns) listed.push_back(fmt::format("{} {}", column.name, column.type));
  return fmt::format("{}", fmt::join(listed, ", "));
}

// The column the user probably meant for `wanted`: a close spelling, or the
// other convention's name (Debezium's "type" for event_type), among the
// columns no other field reads.
std::optional<std::string> Suggestion(const Wanted& wanted, const std::vector<TableColumn>& columns,
                                      const std::set<std::string>& used) {
  std::vector<std::string_view> free;
  for (const TableColumn& column : columns) {
    if (!used.contains(column.name)) free.push_back(column.name);
  }
  const std::string_view close = config::Suggest(wanted.column, free);
  if (!close.empty()) return std::string(close);
  for (std::string_view alias : Aliases(wanted.field)) {
    if (std::find(free.begin(), free.end(), alias) != free.end()) return std::string(alias);
  }
  return std::nullopt;
}

std::string SetKey(const Wanted& wanted, std::string_view column) {
  if (wanted.key.starts_with("[[outbox.fields]]")) return fmt::format("column = \"{}\" in that [[outbox.fields]]", column);
  return fmt::format("{} = \"{}\"", wanted.key, column);
}

}  // namespace

std::vector<std::string> TemplateFields(std::string_view topic_template) {
  std::vector<std::string> fields;
  for (std::string_view name : {"aggregate_type", "event_type", "destination"}) {
    if (topic_template.find(fmt::format("{{{}}}", name)) != std::string_view::npos) fields.emplace_back(name);
  }
  return fields;
}

std::vector<ColumnFinding> DiagnoseColumns(const outbox::TableConfig& table, std::string_view table_sql,
                                           const std::vector<TableColumn>& columns,
                                           std::string_view publication) {
  const std::vector<Wanted> wanted = WantedColumns(table);
  std::set<std::string> used;
  for (const Wanted& w : wanted) {
    if (FindColumn(columns, w.column) != nullptr) used.insert(w.column);
  }
  std::vector<ColumnFinding> findings;
  std::vector<std::string> read;
  for (const Wanted& w : wanted) {
    const TableColumn* column = FindColumn(columns, w.column);
    const std::string named = w.field == w.column ? fmt::format("\"{}\"", w.column)
                                                  : fmt::format("\"{}\" ({})", w.column, w.field);
    const std::string what = "column " + named;
    if (column == nullptr) {
      if (!w.required && !w.named) continue;  // an optional column the table does not have
      const std::string source =
          w.key.starts_with("[outbox.columns]") && w.column == w.field ? w.key + ", the default name" : w.key;
      const std::optional<std::string> meant = Suggestion(w, columns, used);
      const std::string fix =
          meant ? fmt::format("did you mean \"{}\"? set {}", *meant, SetKey(w, *meant))
                : fmt::format("name the column that holds it ({} = \"<column>\"){}", w.key,
                              w.required ? ", or add the column to the table" : "");
      if (w.required) {
        findings.push_back(
            {CheckStatus::kFail,
             fmt::format("{} has no column \"{}\" ({}): {}", table_sql, w.column, source, w.missing),
             fmt::format("{}; the table's columns: {}", fix, ColumnList(columns))});
      } else {
        findings.push_back({CheckStatus::kWarn,
                            fmt::format("{} has no column \"{}\" ({}): {}", table_sql, w.column, source, w.missing),
                            fmt::format("{}, or remove the option; the table's columns: {}", fix, ColumnList(columns))});
      }
      continue;
    }
    if (!column->unsent.empty()) {
      const std::string resend = fmt::format(
          "publish the column: in one transaction, ALTER PUBLICATION {0} DROP TABLE {1}; ALTER PUBLICATION {0} "
          "ADD TABLE {1} (without a column list: every column)",
          publication, table_sql);
      if (w.required) {
        findings.push_back({CheckStatus::kFail,
                            fmt::format("{} {} {}: pgoutput never sends it, so {}", table_sql, what, column->unsent,
                                        w.missing),
                            resend});
      } else {
        findings.push_back({CheckStatus::kWarn,
                            fmt::format("{} {} {}: pgoutput never sends it, so {}", table_sql, what, column->unsent,
                                        w.missing.empty() ? "it is never read" : w.missing),
                            resend});
      }
      continue;
    }
    const auto [status, why] = TypeFits(w.kind, column->type_oid);
    if (status != CheckStatus::kOk) {
      std::string hint;
      if (w.kind == Kind::kId) {
        hint = fmt::format("outboxd needs a UUID per event (it keys and de-duplicates by it): add one (ALTER TABLE "
                           "{} ADD COLUMN event_id uuid NOT NULL DEFAULT gen_random_uuid()) and set {}",
                           table_sql, SetKey(w, "event_id"));
      } else {
        hint = fmt::format("point {} at a column of a fitting type, or change the column's type", w.key);
      }
      findings.push_back(
          {status, fmt::format("{} {} is of type {}: it {}", table_sql, what, column->type, why), hint});
      continue;
    }
    read.push_back(w.field == w.column ? fmt::format("{} ({})", w.column, column->type)
                                       : fmt::format("{} = {} ({})", w.field, w.column, column->type));
  }
  if (findings.empty()) {
    findings.push_back({CheckStatus::kOk,
                        fmt::format("{}: every column outboxd reads is there and sent: {}", table_sql,
                                    fmt::join(read, ", ")),
                        ""});
  }
  return findings;
}

}  // namespace outboxd::commands
