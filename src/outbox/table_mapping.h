// Outbox table mapping: which tables are outbox tables, which of their columns
// hold the event's fields, and how a Relation + inserted TupleData becomes an
// OutboxEvent. Column names are configurable per table so that a Debezium outbox
// table (id, aggregatetype, aggregateid, type, payload) works with config alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "outbox/event.h"
#include "outbox/record.h"
#include "pgoutput/messages.h"

namespace outboxd::outbox {

// Column names of one outbox table. Required: id, aggregate_type, aggregate_id,
// event_type, payload (present and NOT NULL). Optional: headers, destination,
// created_at (absent or NULL is fine).
struct ColumnNames {
  std::string id = "id";
  std::string aggregate_type = "aggregate_type";
  std::string aggregate_id = "aggregate_id";
  std::string event_type = "event_type";
  std::string payload = "payload";
  std::string headers = "headers";
  std::string destination = "destination";
  std::string created_at = "created_at";
};

enum class KeySource { kId, kAggregateId };

// One [[outbox]] entry of the config.
struct TableConfig {
  std::string schema = "public";
  std::string table = "outbox";
  std::string topic = "outbox.event.{aggregate_type}";
  KeySource key = KeySource::kId;
  ColumnNames columns;
  RecordConfig record;  // value format, headers, key/timestamp/partition columns
  // Where the entry applies ([[outbox]] database, publication): empty for
  // every database / every publication of [source].
  std::string database;
  std::string publication;
};

// Column positions of one outbox table, bound from its newest Relation message.
// A position is -1 when the relation has no such column.
struct TableBinding {
  const TableConfig* config = nullptr;
  size_t config_index = 0;
  int id = -1, aggregate_type = -1, aggregate_id = -1, event_type = -1, payload = -1;
  int headers = -1, destination = -1, created_at = -1;
  uint32_t payload_type_oid = 0;
  std::vector<uint32_t> type_oids;  // every column's type OID, in relation order
  // Positions of ExtraColumns(config->record), slot by slot (-1: unused or absent),
  // and of the fields placed in the envelope, parallel to config->record.fields.
  std::vector<int> extra;
  std::vector<std::string> extra_names;
  std::vector<int> envelope_fields;
  std::string schema, table;
  size_t column_count = 0;
};

class TableMapper {
 public:
  explicit TableMapper(std::vector<TableConfig> tables);
  // Bindings point into tables_: a copy would point into the original.
  TableMapper(const TableMapper&) = delete;
  TableMapper& operator=(const TableMapper&) = delete;
  TableMapper(TableMapper&&) = default;
  TableMapper& operator=(TableMapper&&) = default;

  // Called for every Relation message: (re)binds the relation when it is a
  // configured outbox table, forgets it otherwise (an OID may be reused).
  void OnRelation(const pgoutput::RelationMessage& relation);

  // The binding for a relation OID, or nullptr when it is not an outbox table.
  // Valid until the next OnRelation call.
  const TableBinding* Find(uint32_t relation_oid) const;

  // Fills `out` (after Clear()) from an inserted row. InvalidArgumentError naming
  // the table and column for a missing or NULL required column, an id that is
  // not a UUID, an unchanged-TOAST marker, a value that cannot be decoded.
  // Does not fill out->source.
  absl::Status MapInsert(const TableBinding& binding, const pgoutput::TupleData& row,
                         OutboxEvent* out) const;

  const std::vector<TableConfig>& tables() const { return tables_; }

 private:
  std::vector<TableConfig> tables_;
  absl::flat_hash_map<uint32_t, TableBinding> bindings_;
};

// Fills `out` (after Clear()) from the content of a transactional logical
// decoding message: a JSON object with the default column names as keys (id,
// aggregate_type, aggregate_id, event_type, payload, and optional headers,
// destination, created_at). `payload` may be any JSON value except null; it is
// kept as its JSON text exactly as written (a string keeps its quotes, numbers
// keep their digits), content type application/json. InvalidArgumentError
// naming the field on bad content.
absl::Status MapLogicalMessage(std::string_view content, OutboxEvent* out);

// Parses a UUID in any case, with or without hyphens or braces, into canonical
// lower-case 8-4-4-4-12 text. InvalidArgumentError otherwise.
absl::StatusOr<std::string> CanonicalUuid(std::string_view text);

}  // namespace outboxd::outbox
