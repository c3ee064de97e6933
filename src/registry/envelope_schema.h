// EnvelopeSchemas: the schema id of outbox.v1.Envelope under a subject, as
// [schema_registry] says to find it: a fixed id, the subject's latest version,
// or registering proto/outbox/v1/envelope.proto (built into the binary) with
// its import google/protobuf/timestamp.proto as a reference, the way
// Confluent's serializers do. Caches per subject for the life of the process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "registry/schema_registry_client.h"

namespace outboxd::registry {

// The text of proto/outbox/v1/envelope.proto.
std::string_view EnvelopeProtoText();
// The import path and subject of the Timestamp dependency, and its text.
inline constexpr std::string_view kTimestampImport = "google/protobuf/timestamp.proto";
std::string_view TimestampProtoText();

struct LookupPolicy {
  bool auto_register = true;
  std::optional<int32_t> schema_id;  // fixed: no registry call at all
};

class EnvelopeSchemas {
 public:
  EnvelopeSchemas(SchemaRegistryClient* client, LookupPolicy policy) : client_(client), policy_(policy) {}

  // Errors as SchemaRegistryClient's; nothing is cached on error.
  absl::StatusOr<int32_t> IdFor(const std::string& subject);

 private:
  absl::StatusOr<SchemaReference> TimestampReference();

  SchemaRegistryClient* client_;
  LookupPolicy policy_;
  std::optional<SchemaReference> timestamp_;
  absl::flat_hash_map<std::string, int32_t> ids_;
};

}  // namespace outboxd::registry
