// Confluent's wire format for Protobuf record values, and the names and JSON
// bodies of the schema registry's REST API. Pure: no I/O; the HTTP client is
// registry/schema_registry_client.h.
//
// A framed value, as Confluent's ProtobufDeserializer reads it:
//   byte 0      magic byte 0x00
//   bytes 1-4   schema id, 32-bit big-endian
//   bytes 5..   message-index array: the path of the record's message type in
//               the .proto file, as a zigzag varint count then zigzag varint
//               indexes; [0] (the file's first message, outbox.v1.Envelope) is
//               written as the single byte 0x00
//   rest        the Protobuf-encoded message
// https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html#wire-format
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace outboxd::registry {

inline constexpr char kMagicByte = 0x00;
// Magic byte, schema id and the one-byte message-index array [0].
inline constexpr size_t kEnvelopeFrameHeaderSize = 6;
// The fully qualified name of the record's message type (record_name strategies).
inline constexpr std::string_view kEnvelopeRecordName = "outbox.v1.Envelope";

// Writes the header of an outbox.v1.Envelope value (message index [0]) with
// `schema_id` into out[0..5].
void WriteEnvelopeFrameHeader(int32_t schema_id, char out[kEnvelopeFrameHeaderSize]);

// Replaces `out` with the header followed by `message`.
void FrameEnvelope(int32_t schema_id, std::string_view message, std::string* out);

struct Frame {
  int32_t schema_id = 0;
  std::vector<int32_t> message_indexes;  // [0] for the shortcut byte
  std::string_view message;              // a view into the parsed value
};

// Parses any Confluent-framed Protobuf value. DataLossError naming the byte
// offset when it is truncated, the magic byte is wrong, or a varint is bad.
absl::StatusOr<Frame> ParseFrame(std::string_view value);

// subject_strategy: which registry subject a topic's values are registered under.
enum class SubjectStrategy {
  kTopicName,        // "<topic>-value" (Confluent's default)
  kRecordName,       // "outbox.v1.Envelope": one subject for every topic
  kTopicRecordName,  // "<topic>-outbox.v1.Envelope"
};

// "topic_name", "record_name", "topic_record_name"; InvalidArgumentError otherwise.
absl::StatusOr<SubjectStrategy> ParseSubjectStrategy(std::string_view name);
std::string_view SubjectStrategyName(SubjectStrategy strategy);
std::string SubjectName(SubjectStrategy strategy, std::string_view topic);
// True when the subject does not depend on the topic.
inline bool SubjectIsPerTopic(SubjectStrategy s) { return s != SubjectStrategy::kRecordName; }

struct SchemaReference {
  std::string name;     // the import path, e.g. "google/protobuf/timestamp.proto"
  std::string subject;  // the subject it is registered under
  int32_t version = 0;
};

// Body of POST /subjects/{subject}/versions (and of POST /subjects/{subject}
// lookups) for a Protobuf schema given as .proto text.
std::string RegisterSchemaBody(std::string_view proto_text, const std::vector<SchemaReference>& references);

// {"id": N} -> N (register; GET .../versions/latest also carries it).
absl::StatusOr<int32_t> ParseSchemaId(std::string_view body);
// {"version": N, ...} -> N.
absl::StatusOr<int32_t> ParseSchemaVersion(std::string_view body);
// {"compatibilityLevel": "BACKWARD"} (GET /config/{subject}), or
// {"compatibility": ...} -> the level.
absl::StatusOr<std::string> ParseCompatibilityLevel(std::string_view body);
// POST /compatibility/subjects/{subject}/versions/latest?verbose=true:
// {"is_compatible": false, "messages": ["..."]} (messages only with verbose).
struct Compatibility {
  bool compatible = false;
  std::vector<std::string> messages;  // the registry's reasons, at most 5 kept
};
absl::StatusOr<Compatibility> ParseCompatibility(std::string_view body);

// The registry's error answer ({"error_code": 409, "message": "..."}) in one
// line, for messages; the body itself (shortened) when it is not JSON.
std::string RegistryErrorText(int http_status, std::string_view body);

// Percent-encodes a subject for a URL path (every byte but unreserved ones),
// so that "google/protobuf/timestamp.proto" stays one path segment.
std::string EncodePathSegment(std::string_view segment);

}  // namespace outboxd::registry
