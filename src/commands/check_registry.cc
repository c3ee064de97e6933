// `outboxd check`, [schema_registry]: the registry answers, and each subject
// known before the first event has a compatibility level (check_doctor.h).
#include <set>
#include <string>
#include <vector>

#include "commands/check_doctor.h"
#include "commands/run.h"
#include "common/format.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "registry/envelope_schema.h"
#include "registry/schema_registry_client.h"
#include "telemetry/metrics.h"

namespace outboxd::commands::check {

// first event has a compatibility level (and, without auto_register, a schema).
namespace {

// Whether the registry would take outbox.v1.Envelope under `subject` (the
// envelope's registration at run time), asked without registering anything.
void CheckCompatible(registry::SchemaRegistryClient& client, const std::string& subject, const std::string& level,
                     CheckReport& report) {
  // The envelope imports google/protobuf/timestamp.proto, registered by
  // outboxd under that subject; before its first run there is none, and
  // registries resolve the well-known type themselves.
  std::vector<registry::SchemaReference> references;
  const std::string timestamp(registry::kTimestampImport);
  absl::StatusOr<int32_t> version = client.LookUpVersion(timestamp, registry::TimestampProtoText(), {});
  if (version.ok()) references.push_back({.name = timestamp, .subject = timestamp, .version = *version});
  absl::StatusOr<registry::Compatibility> compatible =
      client.TestCompatibility(subject, registry::EnvelopeProtoText(), references);
  if (absl::IsNotFound(compatible.status())) {
    report.Ok("registry", fmt::format("subject {}: compatibility {}, no version yet: outboxd registers the envelope "
                                      "as its first",
                                      subject, level));
  } else if (!compatible.ok()) {
    report.Warn("registry",
                fmt::format("subject {}: compatibility {}; could not test the envelope against it: {}", subject, level,
                            compatible.status().message()),
                "see the registry's message; outboxd registers the envelope under this subject on its first event");
  } else if (compatible->compatible) {
    report.Ok("registry", fmt::format("subject {}: compatibility {}, the envelope is compatible with its latest "
                                      "version",
                                      subject, level));
  } else {
    report.Fail("registry",
                fmt::format("subject {}: the registry would refuse outbox.v1.Envelope under compatibility {}: it is "
                            "incompatible with the subject's latest version{}; outboxd would stop at the first event "
                            "for it",
                            subject, level,
                            compatible->messages.empty()
                                ? std::string()
                                : fmt::format(" ({})", fmt::join(compatible->messages, "; "))),
                "the subject holds another schema (Debezium's converter wrote one, say): give outboxd new topics "
                "(new subjects), or set [schema_registry] subject_strategy = \"topic_record_name\", or set the "
                "subject's compatibility to NONE for the cut-over (docs/migrating-from-debezium.md)");
  }
}

}  // namespace

void CheckSchemaRegistry(const config::Config& config, CheckReport& report, const Observed& observed) {
  const config::SchemaRegistryConfig& reg = config.schema_registry;
  if (!reg.enabled) return;
  telemetry::ProcessMetrics metrics;
  auto client = registry::SchemaRegistryClient::Create(RegistryClientOptions(reg), &metrics);
  if (!client.ok()) {
    report.Fail("registry", std::string(client.status().message()), "fix [schema_registry] url");
    return;
  }
  absl::StatusOr<std::string> global = (*client)->GlobalCompatibilityLevel();
  if (!global.ok()) {
    report.Fail("registry", std::string(global.status().message()),
                absl::IsPermissionDenied(global.status())
                    ? "check [schema_registry] username and password"
                    : "check [schema_registry] url (for Apicurio: .../apis/ccompat/v7), ca_file, and that the "
                      "registry runs");
    return;
  }
  report.Ok("registry", fmt::format("{} answers: default compatibility {}, subject strategy {}", reg.url, *global,
                                    registry::SubjectStrategyName(reg.subject_strategy)));
  if (reg.schema_id.has_value()) {
    report.Ok("registry", fmt::format("every envelope is framed with the fixed schema id {}", *reg.schema_id));
  }
  std::vector<std::string> topics = FixedTopics(config);
  // And the topics the rows present route to (check_outbox.cc).
  for (const auto& [topic, from] : observed.topics) topics.push_back(topic);
  std::set<std::string> subjects;
  for (const std::string& topic : topics) subjects.insert(registry::SubjectName(reg.subject_strategy, topic));
  if (!registry::SubjectIsPerTopic(reg.subject_strategy)) subjects.insert(registry::SubjectName(reg.subject_strategy, ""));
  for (const std::string& subject : subjects) {
    absl::StatusOr<std::string> level = (*client)->CompatibilityLevel(subject);
    if (!level.ok()) {
      report.Fail("registry", fmt::format("subject {}: {}", subject, level.status().message()));
      continue;
    }
    if (reg.schema_id.has_value()) {
      report.Ok("registry", fmt::format("subject {}: compatibility {}", subject, *level));
      continue;
    }
    if (reg.auto_register) {
      CheckCompatible(**client, subject, *level, report);
      continue;
    }
    absl::StatusOr<int32_t> id = (*client)->LatestId(subject);
    if (id.ok()) {
      report.Ok("registry", fmt::format("subject {}: compatibility {}, latest schema id {}", subject, *level, *id));
    } else {
      report.Fail("registry", fmt::format("subject {}: compatibility {}; no latest version: {}", subject, *level,
                                          id.status().message()),
                  "register proto/outbox/v1/envelope.proto under it, or set [schema_registry] auto_register = true");
    }
  }
}


}  // namespace outboxd::commands::check
