#include "registry/wire_format.h"

#include "absl/strings/ascii.h"
#include "common/format.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace outboxd::registry {

void WriteEnvelopeFrameHeader(int32_t schema_id, char out[kEnvelopeFrameHeaderSize]) {
  const uint32_t id = static_cast<uint32_t>(schema_id);
  out[0] = kMagicByte;
  out[1] = static_cast<char>(id >> 24);
  out[2] = static_cast<char>(id >> 16);
  out[3] = static_cast<char>(id >> 8);
  out[4] = static_cast<char>(id);
  // Message indexes [0]: Confluent's shortcut, one zero byte instead of count 1, index 0.
  out[5] = 0x00;
}

void FrameEnvelope(int32_t schema_id, std::string_view message, std::string* out) {
  out->resize(kEnvelopeFrameHeaderSize + message.size());
  WriteEnvelopeFrameHeader(schema_id, out->data());
  if (!message.empty()) message.copy(out->data() + kEnvelopeFrameHeaderSize, message.size());
}

namespace {

// A zigzag varint of at most 5 bytes (a 32-bit value) at *pos.
absl::StatusOr<int32_t> ReadZigZag(std::string_view in, size_t* pos) {
  uint64_t raw = 0;
  for (int shift = 0; shift < 35; shift += 7) {
    if (*pos >= in.size()) {
      return absl::DataLossError(fmt::format("framed value: truncated message-index varint at byte {}", *pos));
    }
    const uint8_t b = static_cast<uint8_t>(in[(*pos)++]);
    raw |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      if (raw > 0xffffffffu) break;
      const uint32_t u = static_cast<uint32_t>(raw);
      return static_cast<int32_t>((u >> 1) ^ (~(u & 1) + 1));
    }
  }
  return absl::DataLossError(fmt::format("framed value: message-index varint too long at byte {}", *pos));
}

}  // namespace

absl::StatusOr<Frame> ParseFrame(std::string_view value) {
  if (value.size() < 6) {
    return absl::DataLossError(fmt::format("framed value: {} bytes, shorter than the 6-byte header", value.size()));
  }
  if (value[0] != kMagicByte) {
    return absl::DataLossError(fmt::format("framed value: magic byte at byte 0 is 0x{:02x}, expected 0x00",
                                           static_cast<uint8_t>(value[0])));
  }
  Frame frame;
  uint32_t id = 0;
  for (int i = 1; i <= 4; ++i) id = (id << 8) | static_cast<uint8_t>(value[i]);
  frame.schema_id = static_cast<int32_t>(id);
  size_t pos = 5;
  absl::StatusOr<int32_t> count = ReadZigZag(value, &pos);
  if (!count.ok()) return count.status();
  if (*count == 0) {
    frame.message_indexes = {0};
  } else {
    // Each index takes at least one byte: a count beyond the rest is hostile.
    if (*count < 0 || static_cast<size_t>(*count) > value.size() - pos) {
      return absl::DataLossError(fmt::format("framed value: message-index count {} at byte 5 exceeds the value",
                                             *count));
    }
    for (int32_t i = 0; i < *count; ++i) {
      absl::StatusOr<int32_t> index = ReadZigZag(value, &pos);
      if (!index.ok()) return index.status();
      frame.message_indexes.push_back(*index);
    }
  }
  frame.message = value.substr(pos);
  return frame;
}

absl::StatusOr<SubjectStrategy> ParseSubjectStrategy(std::string_view name) {
  if (name == "topic_name") return SubjectStrategy::kTopicName;
  if (name == "record_name") return SubjectStrategy::kRecordName;
  if (name == "topic_record_name") return SubjectStrategy::kTopicRecordName;
  return absl::InvalidArgumentError(fmt::format(
      "unknown subject strategy \"{}\": expected \"topic_name\", \"record_name\" or \"topic_record_name\"", name));
}

std::string_view SubjectStrategyName(SubjectStrategy strategy) {
  switch (strategy) {
    case SubjectStrategy::kTopicName: return "topic_name";
    case SubjectStrategy::kRecordName: return "record_name";
    case SubjectStrategy::kTopicRecordName: return "topic_record_name";
  }
  return "topic_name";
}

std::string SubjectName(SubjectStrategy strategy, std::string_view topic) {
  switch (strategy) {
    case SubjectStrategy::kTopicName: return fmt::format("{}-value", topic);
    case SubjectStrategy::kRecordName: return std::string(kEnvelopeRecordName);
    case SubjectStrategy::kTopicRecordName: return fmt::format("{}-{}", topic, kEnvelopeRecordName);
  }
  return fmt::format("{}-value", topic);
}

std::string RegisterSchemaBody(std::string_view proto_text, const std::vector<SchemaReference>& references) {
  nlohmann::json body = {{"schemaType", "PROTOBUF"}, {"schema", std::string(proto_text)}};
  if (!references.empty()) {
    nlohmann::json refs = nlohmann::json::array();
    for (const SchemaReference& r : references) {
      refs.push_back({{"name", r.name}, {"subject", r.subject}, {"version", r.version}});
    }
    body["references"] = std::move(refs);
  }
  return body.dump();
}

namespace {

// The registry is trusted more than the database, but a proxy in between
// might answer anything: parse without exceptions, with a depth limit.
absl::StatusOr<nlohmann::json> ParseObject(std::string_view body) {
  int depth = 0;
  bool too_deep = false;
  nlohmann::json parsed = nlohmann::json::parse(
      body,
      [&](int d, nlohmann::json::parse_event_t, nlohmann::json&) {
        depth = d;
        if (d > 16) too_deep = true;
        return !too_deep;
      },
      /*allow_exceptions=*/false);
  if (too_deep || parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError(fmt::format("the registry's answer is not a JSON object: {}",
                                                  RegistryErrorText(200, body)));
  }
  return parsed;
}

absl::StatusOr<int32_t> IntField(std::string_view body, const char* key) {
  absl::StatusOr<nlohmann::json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  auto it = parsed->find(key);
  if (it == parsed->end() || !it->is_number_integer()) {
    return absl::InvalidArgumentError(
        fmt::format("the registry's answer has no integer \"{}\": {}", key, RegistryErrorText(200, body)));
  }
  const int64_t v = it->get<int64_t>();
  if (v < 0 || v > INT32_MAX) {
    return absl::InvalidArgumentError(fmt::format("the registry's answer has \"{}\" out of range: {}", key, v));
  }
  return static_cast<int32_t>(v);
}

}  // namespace

absl::StatusOr<int32_t> ParseSchemaId(std::string_view body) { return IntField(body, "id"); }
absl::StatusOr<int32_t> ParseSchemaVersion(std::string_view body) { return IntField(body, "version"); }

absl::StatusOr<std::string> ParseCompatibilityLevel(std::string_view body) {
  absl::StatusOr<nlohmann::json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  for (const char* key : {"compatibilityLevel", "compatibility"}) {
    auto it = parsed->find(key);
    if (it != parsed->end() && it->is_string()) return it->get<std::string>();
  }
  return absl::InvalidArgumentError(
      fmt::format("the registry's answer has no compatibility level: {}", RegistryErrorText(200, body)));
}

absl::StatusOr<Compatibility> ParseCompatibility(std::string_view body) {
  absl::StatusOr<nlohmann::json> parsed = ParseObject(body);
  if (!parsed.ok()) return parsed.status();
  auto it = parsed->find("is_compatible");
  if (it == parsed->end() || !it->is_boolean()) {
    return absl::InvalidArgumentError(
        fmt::format("the registry's answer has no boolean \"is_compatible\": {}", RegistryErrorText(200, body)));
  }
  Compatibility out{.compatible = it->get<bool>(), .messages = {}};
  if (auto messages = parsed->find("messages"); messages != parsed->end() && messages->is_array()) {
    for (const nlohmann::json& m : *messages) {
      if (out.messages.size() == 5) break;
      if (m.is_string()) out.messages.push_back(m.get<std::string>().substr(0, 300));
    }
  }
  return out;
}

std::string RegistryErrorText(int http_status, std::string_view body) {
  nlohmann::json parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded() && parsed.is_object()) {
    auto code = parsed.find("error_code");
    auto message = parsed.find("message");
    if (message != parsed.end() && message->is_string()) {
      return fmt::format("HTTP {}{}: {}", http_status,
                         code != parsed.end() && code->is_number_integer()
                             ? fmt::format(", error_code {}", code->get<int64_t>())
                             : std::string(),
                         message->get<std::string>());
    }
  }
  std::string text(body.substr(0, 300));
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return fmt::format("HTTP {}: {}{}", http_status, text, body.size() > 300 ? "..." : "");
}

std::string EncodePathSegment(std::string_view segment) {
  std::string out;
  out.reserve(segment.size());
  for (unsigned char c : segment) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

}  // namespace outboxd::registry
