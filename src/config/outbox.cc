// [[outbox]] and [messages]: what is published, and how each record is shaped.
#include "config/tables.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "absl/strings/match.h"
#include "common/format.h"
#include "common/status_macros.h"
#include "config/parser.h"
#include "outbox/routing.h"

namespace outboxd::config {

const std::vector<std::string_view>& OutboxKeys() {
  static const auto* keys =
      new std::vector<std::string_view>{"table", "database", "publication", "topic", "key", "columns", "value", "id_header",
                                        "key_column", "timestamp_column", "partition_column",
                                        "tracing_column", "tombstone_on_empty_payload", "fields"};
  return *keys;
}
const std::vector<std::string_view>& FieldKeys() {
  static const auto* keys = new std::vector<std::string_view>{"column", "placement", "alias"};
  return *keys;
}
const std::vector<std::string_view>& ColumnKeys() {
  static const auto* keys = new std::vector<std::string_view>{
      "id", "aggregate_type", "aggregate_id", "event_type",
      "payload", "headers", "destination", "created_at"};
  return *keys;
}
const std::vector<std::string_view>& MessagesKeys() {
  static const auto* keys = new std::vector<std::string_view>{"enabled", "prefix", "topic", "key",
                                                              "value", "id_header"};
  return *keys;
}

namespace {

absl::Status GetKeySource(const Parser& p, const toml::table& table, std::string_view path,
                                           outbox::KeySource* out) {
  const toml::node* node = table.get("key");
  if (node == nullptr) return absl::OkStatus();
  std::string value;
  RETURN_IF_ERROR(p.GetString(table, "key", path, &value));
  if (value == "id") {
    *out = outbox::KeySource::kId;
  } else if (value == "aggregate_id") {
    *out = outbox::KeySource::kAggregateId;
  } else {
    return p.Error(node, fmt::format("{} = \"{}\": expected \"id\" (the outbox UUID) or "
                                     "\"aggregate_id\" (per-aggregate partition order)",
                                     path, value));
  }
  return absl::OkStatus();
}

absl::Status GetValueFormat(const Parser& p, const toml::table& table, std::string_view path,
                                             outbox::ValueFormat* out) {
  const toml::node* node = table.get("value");
  if (node == nullptr) return absl::OkStatus();
  std::string value;
  RETURN_IF_ERROR(p.GetString(table, "value", path, &value));
  if (value == "envelope") {
    *out = outbox::ValueFormat::kEnvelope;
  } else if (value == "payload") {
    *out = outbox::ValueFormat::kPayload;
  } else {
    return p.Error(node, fmt::format("{} = \"{}\": expected \"envelope\" (outbox.v1.Envelope) or "
                                     "\"payload\" (the payload column as is, as Debezium writes it)",
                                     path, value));
  }
  return absl::OkStatus();
}

// The Debezium-compatible record options of one [[outbox]] entry.
absl::Status ParseRecord(const Parser& p, const toml::table& entry, const std::string& prefix,
                                          outbox::RecordConfig* out) {
  RETURN_IF_ERROR(GetValueFormat(p, entry, prefix + " value", &out->value));
  RETURN_IF_ERROR(p.GetString(entry, "id_header", prefix + " id_header", &out->id_header));
  RETURN_IF_ERROR(p.GetString(entry, "key_column", prefix + " key_column", &out->key_column));
  RETURN_IF_ERROR(
      p.GetString(entry, "timestamp_column", prefix + " timestamp_column", &out->timestamp_column));
  RETURN_IF_ERROR(
      p.GetString(entry, "partition_column", prefix + " partition_column", &out->partition_column));
  RETURN_IF_ERROR(
      p.GetString(entry, "tracing_column", prefix + " tracing_column", &out->tracing_column));
  RETURN_IF_ERROR(p.GetBool(entry, "tombstone_on_empty_payload",
                            prefix + " tombstone_on_empty_payload",
                            &out->tombstone_on_empty_payload));
  if (!out->key_column.empty() && entry.get("key") != nullptr) {
    return p.Error(entry.get("key_column"),
                   fmt::format("{} sets both key and key_column; keep one (key_column names any "
                               "column, key chooses \"id\" or \"aggregate_id\")",
                               prefix));
  }
  const toml::node* fields = entry.get("fields");
  if (fields == nullptr) return absl::OkStatus();
  if (!fields->is_array_of_tables()) {
    return p.Error(fields, fmt::format("{} fields must be an array of tables: write "
                                       "[[outbox.fields]] once per column; it is {} here",
                                       prefix, TypeName(*fields)));
  }
  const toml::array& list = *fields->as_array();
  for (size_t i = 0; i < list.size(); ++i) {
    const toml::table& item = *list[i].as_table();
    const std::string path = fmt::format("{} fields #{}", prefix, i + 1);
    RETURN_IF_ERROR(p.CheckKeys(item, path + " ", FieldKeys(), "[[outbox.fields]]"));
    outbox::AdditionalField field;
    if (item.get("column") == nullptr) {
      return p.Error(&item, fmt::format("{} column is missing: name the outbox column to place, "
                                        "e.g. column = \"tenant\"",
                                        path));
    }
    RETURN_IF_ERROR(p.GetNonEmptyString(item, "column", path + " column", &field.column));
    RETURN_IF_ERROR(p.GetString(item, "alias", path + " alias", &field.alias));
    std::string placement = "header";
    RETURN_IF_ERROR(p.GetString(item, "placement", path + " placement", &placement));
    if (placement == "header") {
      field.placement = outbox::Placement::kHeader;
    } else if (placement == "envelope") {
      field.placement = outbox::Placement::kEnvelope;
      if (out->value == outbox::ValueFormat::kPayload) {
        return p.Error(item.get("placement"),
                       fmt::format("{} placement = \"envelope\" needs value = \"envelope\": a "
                                   "payload value has no envelope; use placement = \"header\"",
                                   path));
      }
    } else {
      return p.Error(item.get("placement"),
                     fmt::format("{} placement = \"{}\": expected \"header\" (a record header) or "
                                 "\"envelope\" (the envelope's attributes); for the partition use "
                                 "partition_column",
                                 path, placement));
    }
    out->fields.push_back(std::move(field));
  }
  return absl::OkStatus();
}

absl::Status GetTopic(const Parser& p, const toml::table& table, std::string_view path, std::string* out) {
  RETURN_IF_ERROR(p.GetNonEmptyString(table, "topic", path, out));
  absl::StatusOr<outbox::TopicTemplate> parsed = outbox::TopicTemplate::Parse(*out);
  if (!parsed.ok()) {
    return p.Error(table.get("topic"), fmt::format("{} = \"{}\": {}", path, *out,
                                                   std::string(parsed.status().message())));
  }
  return absl::OkStatus();
}

absl::Status ParseOutboxEntry(const Parser& p, const toml::table& entry, const std::string& prefix,
                                               outbox::TableConfig* out) {
  RETURN_IF_ERROR(p.CheckKeys(entry, prefix + " ", OutboxKeys(), "[[outbox]]"));
  const toml::node* table_node = entry.get("table");
  if (table_node == nullptr) {
    return p.Error(&entry, fmt::format("{} table is missing: name the outbox table, e.g. "
                                       "table = \"public.outbox\"",
                                       prefix));
  }
  std::string name;
  RETURN_IF_ERROR(p.GetNonEmptyString(entry, "table", prefix + " table", &name));
  const size_t dot = name.find('.');
  if (dot == std::string::npos) {
    out->schema = "public";
    out->table = name;
  } else {
    out->schema = name.substr(0, dot);
    out->table = name.substr(dot + 1);
  }
  const bool bad = out->schema.empty() || out->table.empty() ||
                   out->table.find('.') != std::string::npos ||
                   name.find_first_of("\"' \t") != std::string::npos;
  if (bad) {
    return p.Error(table_node, fmt::format("{} table = \"{}\": expected \"schema.table\" or "
                                           "\"table\" (schema public), without quotes, spelled as "
                                           "PostgreSQL stores the name",
                                           prefix, name));
  }

  // Where it applies; checked against [source] in validate.cc.
  for (const auto& [key, field] : {std::pair<std::string_view, std::string*>{"database", &out->database},
                                   std::pair<std::string_view, std::string*>{"publication", &out->publication}}) {
    if (entry.get(key) != nullptr) {
      RETURN_IF_ERROR(p.GetNonEmptyString(entry, key, fmt::format("{} {}", prefix, key), field));
    }
  }
  RETURN_IF_ERROR(GetTopic(p, entry, prefix + " topic", &out->topic));
  RETURN_IF_ERROR(GetKeySource(p, entry, prefix + " key", &out->key));
  RETURN_IF_ERROR(ParseRecord(p, entry, prefix, &out->record));

  ASSIGN_OR_RETURN(const toml::table* columns, p.GetSection(entry, "columns", prefix + " columns", "[outbox.columns]"));
  if (columns != nullptr) {
    const std::string column_prefix = prefix + " columns.";
    RETURN_IF_ERROR(p.CheckKeys(*columns, column_prefix, ColumnKeys(), "[outbox.columns]"));
    outbox::ColumnNames& names = out->columns;
    const std::pair<std::string_view, std::string*> fields[] = {
        {"id", &names.id},
        {"aggregate_type", &names.aggregate_type},
        {"aggregate_id", &names.aggregate_id},
        {"event_type", &names.event_type},
        {"payload", &names.payload},
        {"headers", &names.headers},
        {"destination", &names.destination},
        {"created_at", &names.created_at}};
    for (const auto& [key, field] : fields) {
      RETURN_IF_ERROR(
          p.GetNonEmptyString(*columns, key, fmt::format("{}{}", column_prefix, key), field));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseOutbox(const Parser& p, const toml::table& root, std::vector<outbox::TableConfig>* out) {
  const toml::node* node = root.get("outbox");
  if (node == nullptr) return absl::OkStatus();
  if (!node->is_array_of_tables()) {
    return p.Error(node, fmt::format("outbox must be an array of tables: write [[outbox]] (double "
                                     "brackets) once per outbox table; it is {} here",
                                     TypeName(*node)));
  }
  const toml::array& entries = *node->as_array();
  for (size_t i = 0; i < entries.size(); ++i) {
    const toml::table& entry = *entries[i].as_table();
    const std::string prefix = fmt::format("[[outbox]] #{}", i + 1);
    outbox::TableConfig table;
    RETURN_IF_ERROR(ParseOutboxEntry(p, entry, prefix, &table));
    // One table may have an entry per database or publication, never two
    // entries for the same stream (which one would map its rows?).
    const auto overlap = [](const std::string& a, const std::string& b) { return a.empty() || b.empty() || a == b; };
    for (size_t j = 0; j < out->size(); ++j) {
      const outbox::TableConfig& other = (*out)[j];
      if (other.schema == table.schema && other.table == table.table && overlap(other.database, table.database) &&
          overlap(other.publication, table.publication)) {
        const bool scoped = !other.database.empty() || !other.publication.empty() || !table.database.empty() ||
                            !table.publication.empty();
        return p.Error(entry.get("table"),
                       fmt::format("{} table = \"{}.{}\" is already configured by [[outbox]] #{}; list each "
                                   "table once{}",
                                   prefix, table.schema, table.table, j + 1,
                                   scoped ? " per database and publication (an entry without database or "
                                            "publication applies to every one)"
                                          : ""));
      }
    }
    out->push_back(std::move(table));
  }
  return absl::OkStatus();
}

absl::Status ParseMessages(const Parser& p, const toml::table& root, MessagesConfig* out) {
  ASSIGN_OR_RETURN(const toml::table* messages, p.GetSection(root, "messages", "messages", "[messages]"));
  if (messages == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(p.CheckKeys(*messages, "messages.", MessagesKeys(), "[messages]"));
  RETURN_IF_ERROR(p.GetBool(*messages, "enabled", "messages.enabled", &out->enabled));
  RETURN_IF_ERROR(p.GetNonEmptyString(*messages, "prefix", "messages.prefix", &out->prefix));
  RETURN_IF_ERROR(GetTopic(p, *messages, "messages.topic", &out->topic));
  RETURN_IF_ERROR(GetKeySource(p, *messages, "messages.key", &out->key));
  RETURN_IF_ERROR(GetValueFormat(p, *messages, "messages.value", &out->record.value));
  RETURN_IF_ERROR(p.GetString(*messages, "id_header", "messages.id_header", &out->record.id_header));
  // A message has no other columns: no key/timestamp/partition/tracing columns.
  out->record.tracing_column.clear();
  return absl::OkStatus();
}

}  // namespace outboxd::config
