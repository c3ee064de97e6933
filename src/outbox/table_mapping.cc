#include "outbox/table_mapping.h"

#include <exception>
#include <iterator>
#include <limits>
#include <optional>
#include <utility>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/bad_event.h"
#include "common/status_macros.h"
#include "common/time.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "outbox/values.h"

namespace outboxd::outbox {
namespace {

using pgoutput::TupleData;
using pgoutput::TupleValue;
// ordered_json keeps object members in document order, which headers need.
using Json = nlohmann::ordered_json;

constexpr std::string_view kJsonContentType = "application/json";
constexpr std::string_view kTextContentType = "text/plain";
constexpr std::string_view kBytesContentType = "application/octet-stream";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// absl::string_view is not std::string_view in this abseil build.
std::string_view MessageOf(const absl::Status& status) {
  return std::string_view(status.message().data(), status.message().size());
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Reads exactly `n` decimal digits at *pos.
bool ReadDigits(std::string_view s, size_t* pos, size_t n, int* out) {
  if (*pos > s.size() || s.size() - *pos < n) return false;
  int value = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[*pos + i];
    if (!IsDigit(c)) return false;
    value = value * 10 + (c - '0');
  }
  *pos += n;
  *out = value;
  return true;
}

bool ReadChar(std::string_view s, size_t* pos, char c) {
  if (*pos < s.size() && s[*pos] == c) {
    ++*pos;
    return true;
  }
  return false;
}

// Into `out`, reusing its capacity: the hot path maps one id per event.
void FormatUuid(std::string_view bytes16, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->clear();
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out->push_back('-');
    const auto b = static_cast<unsigned char>(bytes16[i]);
    out->push_back(kHex[b >> 4]);
    out->push_back(kHex[b & 0xf]);
  }
}

// Canonical lower-case 8-4-4-4-12 text of a UUID given in any case, with or without hyphens
// or braces, into `out` (reusing its capacity); false when `text` is not a UUID.
bool CanonicalUuidInto(std::string_view text, std::string* out) {
  std::string_view s = text;
  if (s.size() >= 2 && s.front() == '{' && s.back() == '}') s = s.substr(1, s.size() - 2);
  const bool hyphenated = s.size() == 36;
  if (s.size() != 32 && !hyphenated) return false;
  static constexpr char kHex[] = "0123456789abcdef";
  out->clear();
  size_t digits = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (hyphenated && (i == 8 || i == 13 || i == 18 || i == 23)) {
      if (c != '-') return false;
      out->push_back('-');
      continue;
    }
    const int v = HexValue(c);
    if (v < 0) return false;
    if (!hyphenated && (digits == 8 || digits == 12 || digits == 16 || digits == 20)) {
      out->push_back('-');
    }
    out->push_back(kHex[v]);
    ++digits;
  }
  return true;
}

// nlohmann's DOM builder (its parser is iterative) with a nesting limit: beyond
// kMaxJsonDepth it stops the parse, so no document deeper than the limit is ever
// built, and dump() and the destructor, which recurse, only see shallow ones.
class DepthLimitedDomParser : public nlohmann::detail::json_sax_dom_parser<Json> {
 public:
  explicit DepthLimitedDomParser(Json& root)
      : json_sax_dom_parser(root, /*allow_exceptions_=*/false) {}

  bool start_object(std::size_t elements) {
    return Enter() && json_sax_dom_parser::start_object(elements);
  }
  bool end_object() {
    --depth_;
    return json_sax_dom_parser::end_object();
  }
  bool start_array(std::size_t elements) {
    return Enter() && json_sax_dom_parser::start_array(elements);
  }
  bool end_array() {
    --depth_;
    return json_sax_dom_parser::end_array();
  }

  bool too_deep() const { return too_deep_; }

 private:
  bool Enter() {
    if (++depth_ > kMaxJsonDepth) too_deep_ = true;
    return !too_deep_;
  }

  size_t depth_ = 0;
  bool too_deep_ = false;
};

// Parses `text` (one JSON value, nothing after it) into *doc within the limits.
// `what` names the text in errors ("headers", "content"). InvalidArgumentError
// "not valid JSON" untagged, or tagged bad_event::kJsonLimit beyond a limit:
// the caller wraps either into its own bad event.
absl::Status ParseJsonWithinLimits(std::string_view text, size_t max_bytes, std::string_view what,
                                   Json* doc) {
  if (text.size() > max_bytes) {
    return BadEventError(bad_event::kJsonLimit,
                         fmt::format("{} ({} bytes) are larger than the {} bytes outboxd reads",
                                     what, text.size(), max_bytes));
  }
  Json parsed;
  DepthLimitedDomParser sax(parsed);
  const bool ok = Json::sax_parse(text.begin(), text.end(), &sax, nlohmann::detail::input_format_t::json,
                                  /*strict=*/true);
  if (sax.too_deep()) {
    return BadEventError(bad_event::kJsonLimit,
                         fmt::format("{} nest arrays and objects deeper than the {} levels outboxd "
                                     "reads",
                                     what, kMaxJsonDepth));
  }
  if (!ok || sax.is_errored()) {
    return absl::InvalidArgumentError(fmt::format("{} are not valid JSON", what));
  }
  *doc = std::move(parsed);
  return absl::OkStatus();
}

absl::Status HeadersFromJson(const Json& doc, std::vector<Header>* out) {
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(fmt::format(
        "headers must be a JSON object such as {{\"traceparent\": \"00-...\"}}, not a JSON {}",
        doc.type_name()));
  }
  out->reserve(doc.size());
  for (const auto& [key, value] : doc.items()) {
    Header& header = out->emplace_back();
    header.key = key;
    if (value.is_string()) {
      header.value = value.get_ref<const std::string&>();
    } else {
      header.value = value.dump();
    }
  }
  return absl::OkStatus();
}

// ---- Raw JSON spans. nlohmann re-serializes numbers through double, which
// would change a payload's digits (12345678901234567890123, 0.10): the payload
// of a logical message is therefore cut out of the content as written. These
// helpers run only on content that nlohmann already accepted as valid JSON.

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t SkipJsonSpace(std::string_view s, size_t i) {
  while (i < s.size() && IsJsonSpace(s[i])) ++i;
  return i;
}

// End (one past the closing quote) of the JSON string starting at s[i] == '"'.
size_t JsonStringEnd(std::string_view s, size_t i) {
  for (size_t j = i + 1; j < s.size(); ++j) {
    if (s[j] == '\\') {
      ++j;
    } else if (s[j] == '"') {
      return j + 1;
    }
  }
  return std::string_view::npos;
}

// End of the JSON value starting at s[i].
size_t JsonValueEnd(std::string_view s, size_t i) {
  if (i >= s.size()) return std::string_view::npos;
  if (s[i] == '"') return JsonStringEnd(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    for (size_t j = i; j < s.size(); ++j) {
      const char c = s[j];
      if (c == '"') {
        j = JsonStringEnd(s, j);
        if (j == std::string_view::npos) return j;
        --j;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) return j + 1;
      }
    }
    return std::string_view::npos;
  }
  size_t j = i;
  while (j < s.size() && s[j] != ',' && s[j] != '}' && s[j] != ']' && !IsJsonSpace(s[j])) ++j;
  return j == i ? std::string_view::npos : j;
}

// The text of the top-level member `key` of a JSON object, as written. The last
// one wins on duplicate keys, as in nlohmann and jsonb.
std::optional<std::string_view> RawJsonMember(std::string_view s, std::string_view key) {
  size_t i = 0;
  if (s.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // nlohmann skips a UTF-8 BOM too
  i = SkipJsonSpace(s, i);
  if (i >= s.size() || s[i] != '{') return std::nullopt;
  ++i;
  std::optional<std::string_view> found;
  while (true) {
    i = SkipJsonSpace(s, i);
    if (i >= s.size()) return std::nullopt;
    if (s[i] == '}') return found;
    if (s[i] == ',') {
      ++i;
      continue;
    }
    if (s[i] != '"') return std::nullopt;
    const size_t key_end = JsonStringEnd(s, i);
    if (key_end == std::string_view::npos) return std::nullopt;
    const std::string_view raw_key = s.substr(i, key_end - i);
    bool match;
    if (raw_key.find('\\') == std::string_view::npos) {
      match = raw_key.substr(1, raw_key.size() - 2) == key;
    } else {
      const Json decoded = Json::parse(raw_key.begin(), raw_key.end(), nullptr, false);
      match = decoded.is_string() && decoded.get_ref<const std::string&>() == key;
    }
    i = SkipJsonSpace(s, key_end);
    if (i >= s.size() || s[i] != ':') return std::nullopt;
    i = SkipJsonSpace(s, i + 1);
    const size_t value_end = JsonValueEnd(s, i);
    if (value_end == std::string_view::npos) return std::nullopt;
    if (match) found = s.substr(i, value_end - i);
    i = value_end;
  }
}

// ---- Rows.

// Reads the values of one inserted row, with errors that name the table and
// the column.
class RowReader {
 public:
  RowReader(const TableBinding& binding, const TupleData& row) : binding_(binding), row_(row) {}

  // A bad row: `reason` is one of the bad_event codes (invalid_value unless
  // the caller knows better).
  absl::Status Error(std::string_view column, std::string_view what,
                     std::string_view reason = bad_event::kInvalidValue) const {
    return BadEventError(reason, fmt::format("outbox table {}.{}: column \"{}\" {}",
                                             binding_.schema, binding_.table, column, what));
  }

  // The value at `pos`. For an optional column, nullptr when the table has no
  // such column or the value is NULL; for a required one, an error.
  absl::StatusOr<const TupleValue*> Get(int pos, std::string_view column, bool required) const {
    if (pos < 0) {
      if (!required) return nullptr;
      return Error(column,
                   "does not exist; every outbox row needs it: add the column, or name the column "
                   "that holds it in the [[outbox]] entry's columns (see docs/configuration.md, "
                   "[[outbox]] columns)",
                   bad_event::kMissingColumn);
    }
    const TupleValue& value = row_.values[static_cast<size_t>(pos)];
    switch (value.kind) {
      case TupleValue::Kind::kText:
      case TupleValue::Kind::kBinary:
        return &value;
      case TupleValue::Kind::kNull:
        if (!required) return nullptr;
        return Error(column,
                     "is NULL; every outbox row needs it (see docs/configuration.md, [[outbox]] "
                     "columns)",
                     bad_event::kNullColumn);
      case TupleValue::Kind::kUnchangedToast:
        return Error(column,
                     "came as an unchanged TOASTed value ('u') without data, which an inserted "
                     "row never carries; the event cannot be read from the WAL");
    }
    return Error(column, fmt::format("has an unknown tuple value kind '{}'",
                                     static_cast<char>(value.kind)));
  }

  uint32_t TypeOid(int pos) const {
    const auto i = static_cast<size_t>(pos);
    return i < binding_.type_oids.size() ? binding_.type_oids[i] : 0;
  }

  // The value as text: text format as is; binary format only for the types
  // whose binary form is their text.
  absl::StatusOr<std::string_view> Text(const TupleValue& value, int pos,
                                        std::string_view column) const {
    if (value.kind == TupleValue::Kind::kText) return value.data;
    const uint32_t type = TypeOid(pos);
    switch (type) {
      case kTextOid:
      case kVarcharOid:
      case kBpcharOid:
      case kNameOid:
      case kJsonOid:
        return value.data;
      case kJsonbOid:
        // jsonb_send: a version byte (1), then the text.
        if (!value.data.empty() && value.data[0] == 1) return value.data.substr(1);
        return Error(column, "holds binary jsonb of an unknown format version");
      default:
        return BinaryError(column, type);
    }
  }

  absl::Status BinaryError(std::string_view column, uint32_t type) const {
    return Error(column,
                 fmt::format("came in pgoutput's binary format (type OID {}), which outboxd "
                             "cannot decode for this type; outboxd reads the text format",
                             type));
  }

  // A required text field, checked to be UTF-8 (the envelope's string fields
  // must be, or consumers fail to parse it).
  absl::Status RequiredText(int pos, std::string_view column, std::string* out) const {
    ASSIGN_OR_RETURN(const TupleValue* value, Get(pos, column, /*required=*/true));
    ASSIGN_OR_RETURN(std::string_view text, Text(*value, pos, column));
    if (!IsValidUtf8(text)) {
      return Error(column, "is not valid UTF-8; outbox fields must be UTF-8 text (is the "
                           "database encoding UTF8?)");
    }
    out->assign(text.data(), text.size());
    return absl::OkStatus();
  }

 private:
  const TableBinding& binding_;
  const TupleData& row_;
};

absl::Status MapId(const RowReader& reader, int pos, std::string_view column, std::string* out) {
  ASSIGN_OR_RETURN(const TupleValue* value, reader.Get(pos, column, /*required=*/true));
  if (value->kind == TupleValue::Kind::kBinary && reader.TypeOid(pos) == kUuidOid) {
    if (value->data.size() != 16) {
      return reader.Error(column,
                          fmt::format("holds a binary uuid of {} bytes instead of 16",
                                      value->data.size()),
                          bad_event::kInvalidUuid);
    }
    FormatUuid(value->data, out);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string_view text, reader.Text(*value, pos, column));
  if (CanonicalUuidInto(text, out)) return absl::OkStatus();
  // Not a UUID: CanonicalUuid says why.
  return reader.Error(column,
                      fmt::format("is not a UUID: {}", MessageOf(CanonicalUuid(text).status())),
                      bad_event::kInvalidUuid);
}

absl::Status MapPayload(const RowReader& reader, const TableBinding& binding,
                        std::string_view column, OutboxEvent* out) {
  ASSIGN_OR_RETURN(const TupleValue* value, reader.Get(binding.payload, column, /*required=*/true));
  switch (binding.payload_type_oid) {
    case kJsonbOid:
    case kJsonOid: {
      ASSIGN_OR_RETURN(std::string_view text, reader.Text(*value, binding.payload, column));
      out->payload.assign(text.data(), text.size());
      out->content_type = kJsonContentType;
      return absl::OkStatus();
    }
    case kTextOid:
    case kVarcharOid:
    case kBpcharOid: {
      ASSIGN_OR_RETURN(std::string_view text, reader.Text(*value, binding.payload, column));
      out->payload.assign(text.data(), text.size());
      out->content_type = kTextContentType;
      return absl::OkStatus();
    }
    case kByteaOid:
      if (value->kind == TupleValue::Kind::kBinary) {
        out->payload.assign(value->data.data(), value->data.size());
      } else if (absl::Status decoded = DecodeByteaHex(value->data, &out->payload); !decoded.ok()) {
        return reader.Error(column, MessageOf(decoded));
      }
      out->content_type = kBytesContentType;
      return absl::OkStatus();
    default:
      // Any other type travels as PostgreSQL prints it.
      if (value->kind != TupleValue::Kind::kText) {
        return reader.BinaryError(column, binding.payload_type_oid);
      }
      out->payload.assign(value->data.data(), value->data.size());
      out->content_type = kTextContentType;
      return absl::OkStatus();
  }
}

absl::Status MapCreatedAt(const RowReader& reader, int pos, std::string_view column,
                          OutboxEvent* out) {
  ASSIGN_OR_RETURN(const TupleValue* value, reader.Get(pos, column, /*required=*/false));
  if (value == nullptr) return absl::OkStatus();
  const uint32_t type = reader.TypeOid(pos);
  if (value->kind == TupleValue::Kind::kBinary &&
      (type == kTimestamptzOid || type == kTimestampOid)) {
    // timestamp_send: Int64 microseconds since 2000-01-01, big-endian; the
    // extremes stand for -infinity and infinity.
    if (value->data.size() != 8) {
      return reader.Error(column, fmt::format("holds a binary timestamp of {} bytes instead of 8",
                                              value->data.size()));
    }
    uint64_t bits = 0;
    for (char c : value->data) bits = (bits << 8) | static_cast<unsigned char>(c);
    const auto micros = static_cast<int64_t>(bits);
    if (micros == std::numeric_limits<int64_t>::max() ||
        micros == std::numeric_limits<int64_t>::min()) {
      return reader.Error(column, "is infinite; store a finite timestamp");
    }
    out->created_at = micros;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string_view text, reader.Text(*value, pos, column));
  absl::StatusOr<int64_t> micros = ParsePgTimestamp(text);
  if (!micros.ok()) return reader.Error(column, MessageOf(micros.status()));
  out->created_at = *micros;
  return absl::OkStatus();
}

// The columns the table's record options read (key, timestamp, partition,
// tracing, additional fields) as text. Optional: absent or NULL is nullopt,
// and a configured column the table lacks is caught by `outboxd check`.
absl::Status MapExtraColumns(const RowReader& reader, const TableBinding& binding,
                             OutboxEvent* out) {
  const RecordConfig& record = binding.config->record;
  const std::vector<std::string>& names = binding.extra_names;
  if (binding.extra.size() != names.size()) return absl::OkStatus();
  out->extra.resize(names.size());
  for (size_t k = 0; k < names.size(); ++k) {
    ASSIGN_OR_RETURN(const TupleValue* value,
                     reader.Get(binding.extra[k], names[k], /*required=*/false));
    if (value == nullptr) continue;
    ASSIGN_OR_RETURN(std::string_view text, reader.Text(*value, binding.extra[k], names[k]));
    out->extra[k].emplace(text.data(), text.size());
  }
  for (size_t f = 0; f < binding.envelope_fields.size(); ++f) {
    const AdditionalField& field = record.fields[f];
    ASSIGN_OR_RETURN(const TupleValue* value,
                     reader.Get(binding.envelope_fields[f], field.column, /*required=*/false));
    if (value == nullptr) continue;
    ASSIGN_OR_RETURN(std::string_view text,
                     reader.Text(*value, binding.envelope_fields[f], field.column));
    out->attributes.push_back(Header{field.name(), std::string(text)});
  }
  return absl::OkStatus();
}

// ---- Logical messages.

absl::Status MessageError(std::string_view what) {
  return BadEventError(bad_event::kBadPayload, fmt::format(
      "outbox logical message: {}; the content must be a JSON object with id, aggregate_type, "
      "aggregate_id, event_type and payload (optional headers, destination, created_at), as "
      "outbox_emit() writes it",
      what));
}

// The member `name`, or nullptr when absent or JSON null.
const Json* Member(const Json& doc, const char* name) {
  const auto it = doc.find(name);
  if (it == doc.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status RequiredString(const Json& doc, const char* name, std::string* out) {
  const Json* value = Member(doc, name);
  if (value == nullptr) return MessageError(fmt::format("field \"{}\" is missing or null", name));
  if (!value->is_string()) {
    return MessageError(
        fmt::format("field \"{}\" is a JSON {}, not a string", name, value->type_name()));
  }
  *out = value->get_ref<const std::string&>();
  return absl::OkStatus();
}

absl::Status MapLogicalMessageJson(std::string_view content, OutboxEvent* out) {
  Json doc;
  if (absl::Status parsed = ParseJsonWithinLimits(content, kMaxMessageJsonBytes, "contents", &doc);
      !parsed.ok()) {
    // No excerpt: the content is the event's payload, which stays out of logs.
    if (BadEventReason(parsed) == bad_event::kJsonLimit) {
      return BadEventError(bad_event::kJsonLimit,
                           fmt::format("outbox logical message: {}", MessageOf(parsed)));
    }
    return MessageError(fmt::format("content ({} bytes) is not valid JSON", content.size()));
  }
  if (!doc.is_object()) {
    return MessageError(fmt::format("content is a JSON {}, not an object", doc.type_name()));
  }

  std::string id;
  RETURN_IF_ERROR(RequiredString(doc, "id", &id));
  absl::StatusOr<std::string> uuid = CanonicalUuid(id);
  if (!uuid.ok()) {
    return MessageError(fmt::format("field \"id\" is not a UUID: {}", MessageOf(uuid.status())));
  }
  out->id = *std::move(uuid);
  RETURN_IF_ERROR(RequiredString(doc, "aggregate_type", &out->aggregate_type));
  // An aggregate id may well be a number (to_jsonb of a bigint key).
  if (const Json* aggregate_id = Member(doc, "aggregate_id");
      aggregate_id != nullptr && aggregate_id->is_number_integer()) {
    out->aggregate_id = aggregate_id->dump();
  } else {
    RETURN_IF_ERROR(RequiredString(doc, "aggregate_id", &out->aggregate_id));
  }
  RETURN_IF_ERROR(RequiredString(doc, "event_type", &out->event_type));

  if (Member(doc, "payload") == nullptr) {
    return MessageError("field \"payload\" is missing or null");
  }
  const std::optional<std::string_view> payload = RawJsonMember(content, "payload");
  if (!payload.has_value()) {
    return MessageError("cannot locate the payload in the content");
  }
  out->payload.assign(payload->data(), payload->size());
  out->content_type = kJsonContentType;

  if (const Json* headers = Member(doc, "headers"); headers != nullptr) {
    if (absl::Status status = HeadersFromJson(*headers, &out->headers); !status.ok()) {
      return MessageError(fmt::format("field \"headers\": {}", MessageOf(status)));
    }
  }
  if (const Json* destination = Member(doc, "destination"); destination != nullptr) {
    if (!destination->is_string()) {
      return MessageError(fmt::format("field \"destination\" is a JSON {}, not a string",
                                      destination->type_name()));
    }
    out->destination = destination->get_ref<const std::string&>();
  }
  if (const Json* created_at = Member(doc, "created_at"); created_at != nullptr) {
    if (!created_at->is_string()) {
      return MessageError(fmt::format("field \"created_at\" is a JSON {}, not a timestamp string",
                                      created_at->type_name()));
    }
    absl::StatusOr<int64_t> micros = ParsePgTimestamp(created_at->get_ref<const std::string&>());
    if (!micros.ok()) {
      return MessageError(fmt::format("field \"created_at\": {}", MessageOf(micros.status())));
    }
    out->created_at = *micros;
  }
  return absl::OkStatus();
}

}  // namespace

// ---- values.h

absl::StatusOr<int64_t> ParsePgTimestamp(std::string_view text) {
  const auto bad = [text](std::string_view why) {
    return absl::InvalidArgumentError(fmt::format(
        "\"{}\" is not a timestamp outboxd can read ({}); expected PostgreSQL's ISO form such as "
        "\"2026-11-27 03:09:58.123456+00\" (DateStyle = ISO) or ISO 8601 such as "
        "\"2026-11-27T03:09:58.123456+00:00\"",
        Printable(text), why));
  };
  if (text == "infinity" || text == "-infinity") {
    return absl::InvalidArgumentError(
        fmt::format("timestamp \"{}\" is not a point in time; store a finite timestamp", text));
  }
  size_t pos = 0;
  int year = 0, month = 0, day = 0;
  if (!ReadDigits(text, &pos, 4, &year) || !ReadChar(text, &pos, '-') ||
      !ReadDigits(text, &pos, 2, &month) || !ReadChar(text, &pos, '-') ||
      !ReadDigits(text, &pos, 2, &day)) {
    return bad("the date is not YYYY-MM-DD");
  }
  int hour = 0, minute = 0, second = 0;
  int64_t micros = 0;
  int64_t offset_seconds = 0;
  if (pos < text.size() && (text[pos] == ' ' || text[pos] == 'T' || text[pos] == 't')) {
    ++pos;
    if (!ReadDigits(text, &pos, 2, &hour) || !ReadChar(text, &pos, ':') ||
        !ReadDigits(text, &pos, 2, &minute)) {
      return bad("the time is not HH:MM:SS");
    }
    if (ReadChar(text, &pos, ':') && !ReadDigits(text, &pos, 2, &second)) {
      return bad("the time is not HH:MM:SS");
    }
    if (ReadChar(text, &pos, '.')) {
      const size_t start = pos;
      while (pos < text.size() && IsDigit(text[pos])) ++pos;
      const size_t digits = pos - start;
      if (digits == 0 || digits > 9) return bad("the fraction of a second needs 1 to 9 digits");
      for (size_t i = 0; i < 6; ++i) {
        micros = micros * 10 + (i < digits ? text[start + i] - '0' : 0);
      }
    }
    if (pos < text.size()) {
      const char sign = text[pos];
      if (sign == 'Z' || sign == 'z') {
        ++pos;
      } else if (sign == '+' || sign == '-') {
        ++pos;
        int offset_hours = 0, offset_minutes = 0, offset_secs = 0;
        if (!ReadDigits(text, &pos, 2, &offset_hours)) return bad("the UTC offset is not +HH[:MM]");
        if (ReadChar(text, &pos, ':')) {
          if (!ReadDigits(text, &pos, 2, &offset_minutes) ||
              (ReadChar(text, &pos, ':') && !ReadDigits(text, &pos, 2, &offset_secs))) {
            return bad("the UTC offset is not +HH[:MM[:SS]]");
          }
        } else if (pos < text.size() && IsDigit(text[pos]) &&
                   !ReadDigits(text, &pos, 2, &offset_minutes)) {
          return bad("the UTC offset is not +HHMM");
        }
        // PostgreSQL accepts offsets up to 15:59:59.
        if (offset_hours > 15 || offset_minutes > 59 || offset_secs > 59) {
          return bad("the UTC offset is out of range");
        }
        offset_seconds = (sign == '-' ? -1 : 1) *
                         (int64_t{offset_hours} * 3600 + offset_minutes * 60 + offset_secs);
      }
    }
  }
  if (text.substr(pos) == " BC") {
    return absl::InvalidArgumentError(fmt::format(
        "timestamp \"{}\" is before the common era, which an event timestamp cannot be",
        Printable(text)));
  }
  if (pos != text.size()) return bad("unexpected text after the timestamp");
  if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 ||
      second > 59) {
    return bad("a field is out of range");
  }
  const absl::CivilSecond civil(year, month, day, hour, minute, second);
  if (civil.month() != month || civil.day() != day) return bad("there is no such date");
  const absl::Time time = absl::FromCivil(civil, absl::UTCTimeZone());
  return TimeToPgTimestamp(time) - offset_seconds * 1000000 + micros;
}

absl::Status DecodeByteaHex(std::string_view text, std::string* out) {
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x') {
    return absl::InvalidArgumentError(fmt::format(
        "bytea value is not in hex form (\"\\x...\"); the server prints bytea with "
        "bytea_output = 'escape': set bytea_output = 'hex' (the default) for outboxd's role "
        "(ALTER ROLE ... SET bytea_output = 'hex')"));
  }
  const std::string_view digits = text.substr(2);
  if (digits.size() % 2 != 0) {
    return absl::InvalidArgumentError(fmt::format(
        "bytea value has an odd number of hex digits ({}), so it is truncated or corrupt",
        digits.size()));
  }
  out->clear();
  out->reserve(digits.size() / 2);
  for (size_t i = 0; i < digits.size(); i += 2) {
    const int hi = HexValue(digits[i]);
    const int lo = HexValue(digits[i + 1]);
    if (hi < 0 || lo < 0) {
      const size_t bad = hi < 0 ? i : i + 1;
      return absl::InvalidArgumentError(fmt::format(
          "bytea value has a character that is not a hex digit at offset {} (\"{}\")", bad + 2,
          Printable(digits.substr(bad, 1))));
    }
    out->push_back(static_cast<char>((hi << 4) | lo));
  }
  return absl::OkStatus();
}

absl::Status ParseHeadersJson(std::string_view json, std::vector<Header>* out) {
  out->clear();
  try {
    Json doc;
    if (absl::Status parsed = ParseJsonWithinLimits(json, kMaxHeadersJsonBytes, "headers", &doc);
        !parsed.ok()) {
      if (!BadEventReason(parsed).empty()) return parsed;
      return absl::InvalidArgumentError(
          fmt::format("headers are not valid JSON (\"{}\")", Printable(json)));
    }
    return HeadersFromJson(doc, out);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(fmt::format("headers cannot be read: {}", e.what()));
  }
}

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

// ---- table_mapping.h

absl::StatusOr<std::string> CanonicalUuid(std::string_view text) {
  std::string out;
  if (CanonicalUuidInto(text, &out)) return out;
  return absl::InvalidArgumentError(fmt::format(
      "\"{}\" is not a UUID; expected 32 hex digits as 8-4-4-4-12, e.g. "
      "\"0190f6a1-8a4b-7c3d-9e2f-0123456789ab\"",
      Printable(text)));
}

TableMapper::TableMapper(std::vector<TableConfig> tables) : tables_(std::move(tables)) {}

void TableMapper::OnRelation(const pgoutput::RelationMessage& relation) {
  // Whatever the OID named before, this message is now the truth about it.
  bindings_.erase(relation.oid);
  for (size_t i = 0; i < tables_.size(); ++i) {
    const TableConfig& config = tables_[i];
    if (config.schema != relation.schema || config.table != relation.name) continue;
    TableBinding binding;
    binding.config = &config;
    binding.config_index = i;
    binding.schema = relation.schema;
    binding.table = relation.name;
    binding.column_count = relation.columns.size();
    binding.type_oids.reserve(relation.columns.size());
    const ColumnNames& names = config.columns;
    // Not else-if: a config may use one column for two fields.
    for (size_t c = 0; c < relation.columns.size(); ++c) {
      const std::string& name = relation.columns[c].name;
      const int pos = static_cast<int>(c);
      binding.type_oids.push_back(relation.columns[c].type_oid);
      if (name == names.id) binding.id = pos;
      if (name == names.aggregate_type) binding.aggregate_type = pos;
      if (name == names.aggregate_id) binding.aggregate_id = pos;
      if (name == names.event_type) binding.event_type = pos;
      if (name == names.payload) binding.payload = pos;
      if (name == names.headers) binding.headers = pos;
      if (name == names.destination) binding.destination = pos;
      if (name == names.created_at) binding.created_at = pos;
    }
    binding.extra_names = ExtraColumns(config.record);
    const std::vector<std::string>& extra = binding.extra_names;
    binding.extra.assign(extra.size(), -1);
    binding.envelope_fields.assign(config.record.fields.size(), -1);
    for (size_t c = 0; c < relation.columns.size(); ++c) {
      const std::string& name = relation.columns[c].name;
      for (size_t k = 0; k < extra.size(); ++k) {
        if (!extra[k].empty() && extra[k] == name) binding.extra[k] = static_cast<int>(c);
      }
      for (size_t f = 0; f < config.record.fields.size(); ++f) {
        const AdditionalField& field = config.record.fields[f];
        if (field.placement == Placement::kEnvelope && field.column == name) {
          binding.envelope_fields[f] = static_cast<int>(c);
        }
      }
    }
    if (binding.payload >= 0) {
      binding.payload_type_oid = relation.columns[static_cast<size_t>(binding.payload)].type_oid;
    }
    bindings_.insert_or_assign(relation.oid, std::move(binding));
    return;
  }
}

const TableBinding* TableMapper::Find(uint32_t relation_oid) const {
  const auto it = bindings_.find(relation_oid);
  return it == bindings_.end() ? nullptr : &it->second;
}

absl::Status TableMapper::MapInsert(const TableBinding& binding, const pgoutput::TupleData& row,
                                    OutboxEvent* out) const {
  out->Clear();
  if (row.values.size() != binding.column_count) {
    return absl::FailedPreconditionError(fmt::format(
        "outbox table {}.{}: the inserted row has {} columns but its Relation message has {}; "
        "the relation cache is out of step with the stream",
        binding.schema, binding.table, row.values.size(), binding.column_count));
  }
  const ColumnNames& names = binding.config->columns;
  const RowReader reader(binding, row);

  RETURN_IF_ERROR(MapId(reader, binding.id, names.id, &out->id));
  RETURN_IF_ERROR(reader.RequiredText(binding.aggregate_type, names.aggregate_type,
                                      &out->aggregate_type));
  RETURN_IF_ERROR(
      reader.RequiredText(binding.aggregate_id, names.aggregate_id, &out->aggregate_id));
  RETURN_IF_ERROR(reader.RequiredText(binding.event_type, names.event_type, &out->event_type));
  const RecordConfig& record = binding.config->record;
  if (record.tombstone_on_empty_payload && binding.payload >= 0 &&
      row.values[static_cast<size_t>(binding.payload)].kind == TupleValue::Kind::kNull) {
    // A tombstone: BuildRecord turns the empty payload into a null value.
    out->payload.clear();
  } else {
    RETURN_IF_ERROR(MapPayload(reader, binding, names.payload, out));
  }
  RETURN_IF_ERROR(MapExtraColumns(reader, binding, out));

  ASSIGN_OR_RETURN(const TupleValue* headers,
                   reader.Get(binding.headers, names.headers, /*required=*/false));
  if (headers != nullptr) {
    ASSIGN_OR_RETURN(std::string_view text, reader.Text(*headers, binding.headers, names.headers));
    if (absl::Status parsed = ParseHeadersJson(text, &out->headers); !parsed.ok()) {
      const std::string reason = BadEventReason(parsed);
      return reader.Error(names.headers, MessageOf(parsed),
                          reason.empty() ? bad_event::kInvalidValue : std::string_view(reason));
    }
  }

  ASSIGN_OR_RETURN(const TupleValue* destination,
                   reader.Get(binding.destination, names.destination, /*required=*/false));
  if (destination != nullptr) {
    ASSIGN_OR_RETURN(std::string_view text,
                     reader.Text(*destination, binding.destination, names.destination));
    out->destination.emplace(text.data(), text.size());
  }

  return MapCreatedAt(reader, binding.created_at, names.created_at, out);
}

absl::Status MapLogicalMessage(std::string_view content, OutboxEvent* out) {
  out->Clear();
  try {
    return MapLogicalMessageJson(content, out);
  } catch (const std::exception& e) {
    return MessageError(fmt::format("content cannot be read ({})", e.what()));
  }
}

std::string Printable(std::string_view value, size_t limit) {
  std::string out;
  for (size_t i = 0; i < value.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
    }
  }
  if (value.size() > limit) out += "...";
  return out;
}

}  // namespace outboxd::outbox
