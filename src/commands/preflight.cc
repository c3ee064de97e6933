#include "commands/preflight.h"

#include <memory>
#include <string>

#include "commands/check_doctor.h"
#include "commands/check_report.h"
#include "fmt/format.h"
#include "telemetry/logging.h"

namespace outboxd::commands {
namespace {

// Logs the WARN and FAIL findings of `report`; true when one of them is a
// FAIL named `fatal`.
bool LogFindings(const CheckReport& report, std::string_view fatal) {
  bool refused = false;
  for (const Finding& f : report.findings()) {
    if (f.status == CheckStatus::kOk) continue;
    const std::string line =
        fmt::format("{}{}", f.message, f.hint.empty() ? "" : fmt::format("; what to do: {}", f.hint));
    if (f.status == CheckStatus::kFail) {
      telemetry::LogError("{}: {}", f.name, line);
      refused = refused || f.name == fatal;
    } else {
      telemetry::LogWarn("{}: {}", f.name, line);
    }
  }
  return refused;
}

}  // namespace

absl::Status Preflight(const config::Config& config, const std::atomic<bool>& stop, int stop_fd) {
  auto conn = replication::PgConnection::Connect(config.source.dsn, /*replication=*/false, stop_fd);
  if (!conn.ok()) return absl::OkStatus();
  CheckReport postgres(nullptr);
  check::Observed observed;
  observed.slots = {config.source.slot};
  {
    check::PostgresDoctor doctor(config, **conn, postgres, &observed);
    doctor.CheckColumns();
    doctor.CheckRowFilters();
    doctor.CheckTopicNames();
    doctor.CheckMessagesPrivilege();
  }
  conn->reset();
  if (LogFindings(postgres, "columns")) {
    return absl::FailedPreconditionError(
        "outboxd refuses to start: every row of an outbox table would be dead-lettered (the lines above say which "
        "column and what to do); fix the table or its [[outbox]] entry, then `outboxd check --config FILE` "
        "shows it fixed");
  }
  // Kafka only when something depends on it that the brokers' settings decide:
  // topics the rows route to, or transactions. Its failures are logged, not
  // fatal: the sink's own retries and errors follow.
  if (!stop.load()) {
    CheckReport kafka(nullptr);
    check::CheckKafkaForRun(config, kafka, observed);
    // "kafka" findings (unreachable, a bad property) are the sink's to report.
    CheckReport relevant(nullptr);
    for (const Finding& f : kafka.findings()) {
      if (f.name != "kafka") relevant.Add(f.status, f.name, f.message, f.hint);
    }
    LogFindings(relevant, "");
  }
  return absl::OkStatus();
}

}  // namespace outboxd::commands
