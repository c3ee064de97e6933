// Record: how one OutboxEvent becomes a Kafka record (key, value, headers,
// timestamp, partition) under a table's record options, so that outboxd can
// write what Debezium's Outbox Event Router writes (payload values, an `id`
// header, additional fields, traceparent, tombstones) or its own envelope.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "outbox/event.h"

namespace outboxd::outbox {

// value = "envelope" (outbox.v1.Envelope) or "payload" (the payload column as is).
enum class ValueFormat { kEnvelope, kPayload };

// Where an additional column goes: a record header, or the envelope's attributes.
enum class Placement { kHeader, kEnvelope };

// One entry of [[outbox.fields]] (Debezium's table.fields.additional.placement).
struct AdditionalField {
  std::string column;
  Placement placement = Placement::kHeader;
  std::string alias;  // the header or attribute name; empty: the column's name
  const std::string& name() const { return alias.empty() ? column : alias; }
};

// The record options of one [[outbox]] table (or of [messages]).
struct RecordConfig {
  ValueFormat value = ValueFormat::kEnvelope;
  // Payload mode only: the header that carries the event id (Debezium: "id").
  std::string id_header = "id";
  std::vector<AdditionalField> fields;
  std::string key_column;        // non-empty: the key is this column's text
  std::string timestamp_column;  // non-empty: the record timestamp comes from it
  std::string partition_column;  // non-empty: the partition comes from it
  // Debezium's Java-properties text holding traceparent; absent column: ignored.
  std::string tracing_column = "tracingspancontext";
  // A NULL or empty payload becomes a tombstone (null value) instead of a bad event.
  bool tombstone_on_empty_payload = false;
};

// Indexes into OutboxEvent::extra: the columns a RecordConfig reads besides the
// outbox fields. ExtraColumns() lists their names in this order ("" = unused).
enum ExtraSlot : size_t { kKeySlot = 0, kTimestampSlot, kPartitionSlot, kTracingSlot, kFirstFieldSlot };
std::vector<std::string> ExtraColumns(const RecordConfig& config);

struct Record {
  std::string_view key;
  std::string_view value;  // into `envelope` or the event's payload
  bool null_value = false;  // a tombstone
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  int64_t timestamp_ms = 0;  // Unix milliseconds; 0: the producer's clock
  int32_t partition = -1;    // -1: the partitioner chooses from the key
  std::string envelope;      // owned bytes of an envelope value
  std::string traceparent;   // owned value of the traceparent header
};

// Builds the record of `event` (views stay valid while `event` and `out` are
// unchanged). `default_key` is the key when no key_column is set. A bad key,
// timestamp or partition value is a BadEventError naming the column. Fields
// placed in the envelope are already in event.attributes (the mapper puts them
// there); header fields are read from event.extra.
absl::Status BuildRecord(const OutboxEvent& event, const RecordConfig& config,
                         std::string_view default_key, Record* out);

// The traceparent of Debezium's tracing span context (java.util.Properties
// text: "key=value" or "key: value" lines), or nullopt when it has none.
std::optional<std::string> TraceparentFromProperties(std::string_view properties);

}  // namespace outboxd::outbox
