#include "replication/standby_source.h"

#include "fmt/format.h"

namespace outboxd::replication {

absl::Status CheckStandbySource(const StandbySource& source) {
  if (source.server_version < kMinStandbyDecodingVersion) {
    return absl::FailedPreconditionError(fmt::format(
        "[source] dsn reaches a hot standby of PostgreSQL {}: logical decoding on a standby needs PostgreSQL 16 or "
        "later. Point dsn at the primary, or upgrade",
        source.server_version / 10000));
  }
  if (source.failover) {
    return absl::FailedPreconditionError(
        "[source] dsn reaches a hot standby, and [source] failover = true: PostgreSQL makes no failover slot on a "
        "standby, and a slot there needs none: it is the standby's own and stays with it when it is promoted. "
        "Set failover = false (see docs/operations.md, \"Decoding on a standby\")");
  }
  if (source.slot_found && source.slot_synced) {
    return absl::FailedPreconditionError(fmt::format(
        "replication slot \"{}\" on this hot standby is a synchronized copy of the primary's failover slot "
        "(pg_replication_slots.synced): it cannot be streamed until this standby is promoted. To decode on the "
        "standby give it a slot of its own (another [source] slot name); to keep decoding on the primary, point "
        "[source] dsn at the primary",
        source.slot));
  }
  return absl::OkStatus();
}

std::string CreationWaitMessage(const CreationWait& wait) {
  const std::string head =
      fmt::format("creating replication slot \"{}\" on {}{} has waited {}", wait.slot,
                  wait.on_standby ? "hot standby " : "", wait.where,
                  absl::FormatDuration(absl::Trunc(wait.waited, absl::Seconds(1))));
  if (!wait.on_standby) {
    return fmt::format(
        "{}: PostgreSQL waits for the transactions that were open when the creation began to end (find them "
        "with SELECT pid, xact_start, state, query FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY "
        "xact_start)",
        head);
  }
  if (!wait.primary_dsn) {
    return fmt::format(
        "{} for the standby to replay a running-transactions record (a standby snapshot) from the primary: "
        "PostgreSQL starts decoding on a standby only from one, and a quiet primary writes one only after its "
        "next write. Set [source] primary_dsn so that outboxd asks the primary for one "
        "(pg_log_standby_snapshot()), or run SELECT pg_log_standby_snapshot() on the primary",
        head);
  }
  std::string requests =
      wait.snapshots_requested > 0
          ? fmt::format("outboxd asked the primary ([source] primary_dsn) for {} standby snapshot(s)",
                        wait.snapshots_requested)
          : std::string("outboxd could not ask the primary ([source] primary_dsn) for a standby snapshot yet");
  if (!wait.last_request_error.empty()) requests += fmt::format(" (last refusal: {})", wait.last_request_error);
  return fmt::format(
      "{} for the standby to replay a running-transactions record (a standby snapshot) from the primary; {}. "
      "A wait past the first snapshot means transactions open on the primary since the creation began must end "
      "first (on the primary: SELECT pid, xact_start, state FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
      "ORDER BY xact_start), or the standby does not replay (its pg_stat_wal_receiver and replay lag)",
      head, requests);
}

std::string CreationTimeoutMessage(const CreationWait& wait, absl::Duration limit) {
  return fmt::format("{}; gave up after {} and retries", CreationWaitMessage(wait), absl::FormatDuration(limit));
}

}  // namespace outboxd::replication
