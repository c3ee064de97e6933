// `outboxd check`, [schema_registry]: the registry answers, and each subject
// known before the first event has a compatibility level (check_doctor.h).
#include <set>
#include <string>
#include <vector>

#include "commands/check_doctor.h"
#include "commands/run.h"
#include "common/format.h"
#include "fmt/format.h"
#include "registry/schema_registry_client.h"
#include "telemetry/metrics.h"

namespace outboxd::commands::check {

// first event has a compatibility level (and, without auto_register, a schema).
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
  std::set<std::string> subjects;
  for (const std::string& topic : topics) subjects.insert(registry::SubjectName(reg.subject_strategy, topic));
  if (!registry::SubjectIsPerTopic(reg.subject_strategy)) subjects.insert(registry::SubjectName(reg.subject_strategy, ""));
  for (const std::string& subject : subjects) {
    absl::StatusOr<std::string> level = (*client)->CompatibilityLevel(subject);
    if (!level.ok()) {
      report.Fail("registry", fmt::format("subject {}: {}", subject, level.status().message()));
      continue;
    }
    if (reg.auto_register || reg.schema_id.has_value()) {
      report.Ok("registry", fmt::format("subject {}: compatibility {}", subject, *level));
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
