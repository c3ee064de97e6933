#include "registry/envelope_schema.h"

#include "common/format.h"
#include "fmt/format.h"
#include "telemetry/logging.h"
#include "registry/envelope_proto_text.h"  // generated: kEnvelopeProto

namespace outboxd::registry {

std::string_view EnvelopeProtoText() { return kEnvelopeProto; }

std::string_view TimestampProtoText() {
  // The fields of the well-known type, which is all a registry needs to
  // resolve the import; registries that know the well-known types accept it
  // as the same file.
  static constexpr std::string_view kText =
      "syntax = \"proto3\";\n"
      "\n"
      "package google.protobuf;\n"
      "\n"
      "message Timestamp {\n"
      "  int64 seconds = 1;\n"
      "  int32 nanos = 2;\n"
      "}\n";
  return kText;
}

absl::StatusOr<SchemaReference> EnvelopeSchemas::TimestampReference() {
  if (timestamp_.has_value()) return *timestamp_;
  const std::string subject(kTimestampImport);
  if (policy_.auto_register) {
    absl::StatusOr<int32_t> id = client_->Register(subject, TimestampProtoText(), {});
    if (!id.ok()) return id.status();
  }
  absl::StatusOr<int32_t> version = client_->LookUpVersion(subject, TimestampProtoText(), {});
  if (!version.ok()) return version.status();
  timestamp_ = SchemaReference{.name = subject, .subject = subject, .version = *version};
  return *timestamp_;
}

absl::StatusOr<int32_t> EnvelopeSchemas::IdFor(const std::string& subject) {
  if (policy_.schema_id.has_value()) return *policy_.schema_id;
  absl::MutexLock lock(&mu_);
  if (const int32_t* id = ids_.Get(subject); id != nullptr) return *id;
  absl::StatusOr<int32_t> id;
  if (policy_.auto_register) {
    absl::StatusOr<SchemaReference> timestamp = TimestampReference();
    if (!timestamp.ok()) return timestamp.status();
    id = client_->Register(subject, EnvelopeProtoText(), {*timestamp});
  } else {
    id = client_->LatestId(subject);
  }
  if (!id.ok()) return id.status();
  telemetry::LogInfo("schema registry: subject {} has schema id {} ({})", subject, *id,
                     policy_.auto_register ? "registered or found" : "its latest version");
  ids_.Insert(subject, *id);
  return *id;
}

}  // namespace outboxd::registry
