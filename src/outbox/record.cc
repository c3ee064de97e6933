#include "outbox/record.h"

#include <charconv>
#include <limits>

#include "common/bad_event.h"
#include "common/time.h"
#include "fmt/format.h"
#include "outbox/envelope.h"
#include "outbox/values.h"

namespace outboxd::outbox {
namespace {

std::string_view Trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\f' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// The whole of `text` as a decimal integer, or nullopt.
std::optional<int64_t> ParseInteger(std::string_view text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

absl::Status ColumnError(const OutboxEvent& event, std::string_view column, std::string_view what) {
  return BadEventError(bad_event::kInvalidValue,
                       fmt::format("outbox table {}.{}: column \"{}\" {}", event.source.schema,
                                   event.source.table, column, what));
}

// Debezium's route.tombstone.on.empty.payload tests `payload == null ||
// payload.toString().trim().isEmpty()`: Java's trim drops every char up to U+0020, so a text
// payload of only spaces or control characters is empty too (in UTF-8 those are exactly the
// bytes <= 0x20). A bytea payload is empty only when it has no bytes (Debezium never treats a
// bytea as empty; see docs/migrating-from-debezium.md).
bool EmptyPayload(const OutboxEvent& event) {
  if (event.content_type == "application/octet-stream") return event.payload.empty();
  for (char c : event.payload) {
    if (static_cast<unsigned char>(c) > 0x20) return false;
  }
  return true;
}

const std::optional<std::string>* Extra(const OutboxEvent& event, size_t slot) {
  return slot < event.extra.size() ? &event.extra[slot] : nullptr;
}

}  // namespace

std::vector<std::string> ExtraColumns(const RecordConfig& config) {
  std::vector<std::string> names = {config.key_column, config.timestamp_column,
                                    config.partition_column, config.tracing_column};
  for (const AdditionalField& field : config.fields) {
    // Envelope fields go to the event's attributes, not to a slot.
    names.push_back(field.placement == Placement::kHeader ? field.column : "");
  }
  return names;
}

std::optional<std::string> TraceparentFromProperties(std::string_view properties) {
  size_t pos = 0;
  while (pos < properties.size()) {
    size_t end = properties.find('\n', pos);
    if (end == std::string_view::npos) end = properties.size();
    const std::string_view line = Trim(properties.substr(pos, end - pos));
    pos = end + 1;
    if (line.empty() || line.front() == '#' || line.front() == '!') continue;
    const size_t sep = line.find_first_of("=:");
    if (sep == std::string_view::npos) continue;
    if (Trim(line.substr(0, sep)) != "traceparent") continue;
    const std::string_view value = Trim(line.substr(sep + 1));
    if (value.empty()) return std::nullopt;
    return std::string(value);
  }
  return std::nullopt;
}

absl::Status BuildRecord(const OutboxEvent& event, const RecordConfig& config,
                         std::string_view default_key, Record* out) {
  out->headers.clear();
  out->timestamp_ms = 0;
  out->partition = -1;
  out->null_value = false;

  out->key = default_key;
  if (!config.key_column.empty()) {
    const std::optional<std::string>* key = Extra(event, kKeySlot);
    // A NULL key column gives a null key: the partitioner then spreads the records.
    out->key = (key != nullptr && key->has_value()) ? std::string_view(**key) : std::string_view();
  }

  if (!config.timestamp_column.empty()) {
    const std::optional<std::string>* text = Extra(event, kTimestampSlot);
    if (text != nullptr && text->has_value()) {
      // An integer is Unix milliseconds (Debezium's convention for a bigint
      // column); anything else is a PostgreSQL timestamp.
      if (std::optional<int64_t> ms = ParseInteger(**text); ms.has_value()) {
        out->timestamp_ms = *ms;
      } else if (absl::StatusOr<int64_t> micros = ParsePgTimestamp(**text); micros.ok()) {
        int64_t pg_ms = *micros / 1000;
        if (*micros % 1000 < 0) --pg_ms;  // floor: times before 2000 stay in their millisecond
        out->timestamp_ms = pg_ms + kPgEpochOffsetSeconds * 1000;
      } else {
        return ColumnError(event, config.timestamp_column,
                           fmt::format("(the record timestamp) is neither Unix milliseconds nor a "
                                       "timestamp: {}",
                                       std::string(micros.status().message())));
      }
      if (out->timestamp_ms < 0) {
        return ColumnError(event, config.timestamp_column,
                           "(the record timestamp) is before 1970, which Kafka cannot store");
      }
    }
  }

  if (!config.partition_column.empty()) {
    const std::optional<std::string>* text = Extra(event, kPartitionSlot);
    if (text != nullptr && text->has_value()) {
      const std::optional<int64_t> partition = ParseInteger(**text);
      if (!partition.has_value() || *partition < 0 ||
          *partition > std::numeric_limits<int32_t>::max()) {
        return ColumnError(event, config.partition_column,
                           fmt::format("(the record partition) holds \"{}\", not a partition "
                                       "number from 0 to 2147483647",
                                       Printable(**text)));
      }
      out->partition = static_cast<int32_t>(*partition);
    }
  }

  const bool tombstone = config.tombstone_on_empty_payload && EmptyPayload(event);
  if (config.value == ValueFormat::kPayload) {
    if (!config.id_header.empty()) out->headers.emplace_back(config.id_header, event.id);
    for (const Header& header : event.headers) out->headers.emplace_back(header.key, header.value);
    out->value = event.payload;
  } else {
    RecordHeaders(event, &out->headers);
    if (!tombstone) {
      EncodeEnvelope(event, &out->envelope);
      out->value = out->envelope;
    }
  }
  if (tombstone) {
    out->null_value = true;
    out->value = std::string_view();
  }

  for (size_t i = 0; i < config.fields.size(); ++i) {
    const AdditionalField& field = config.fields[i];
    if (field.placement != Placement::kHeader) continue;
    const std::optional<std::string>* value = Extra(event, kFirstFieldSlot + i);
    // Kafka headers have no NULL distinct from absent: a NULL column adds none.
    if (value != nullptr && value->has_value()) out->headers.emplace_back(field.name(), **value);
  }

  const std::optional<std::string>* tracing = Extra(event, kTracingSlot);
  if (tracing != nullptr && tracing->has_value()) {
    if (std::optional<std::string> traceparent = TraceparentFromProperties(**tracing)) {
      out->traceparent = std::move(*traceparent);
      out->headers.emplace_back("traceparent", out->traceparent);
    }
  }
  return absl::OkStatus();
}

}  // namespace outboxd::outbox
