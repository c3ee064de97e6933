// EnvelopeSchemas: the schema id of outbox.v1.Envelope under a subject, as
// [schema_registry] says to find it: a fixed id, the subject's latest version,
// or registering proto/outbox/v1/envelope.proto (built into the binary) with
// its import google/protobuf/timestamp.proto as a reference, the way
// Confluent's serializers do. Caches per subject for the life of the process,
// at most kMaxSubjects of them (a subject per topic grows with topic templates
// over {event_type} or {destination}): the least recently used goes first.
// Thread-safe: the sinks look ids up on their worker threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/lru_map.h"
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

  static constexpr size_t kMaxSubjects = 1024;

 private:
  absl::StatusOr<SchemaReference> TimestampReference() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SchemaRegistryClient* client_;
  LookupPolicy policy_;
  // Held across the registry calls: one lookup at a time, each bounded by the
  // client's timeout.
  absl::Mutex mu_;
  std::optional<SchemaReference> timestamp_ ABSL_GUARDED_BY(mu_);
  LruMap<int32_t> ids_ ABSL_GUARDED_BY(mu_) = LruMap<int32_t>(kMaxSubjects);
};

}  // namespace outboxd::registry
