// What `outboxd run` asks before it streams: the part of `outboxd check` whose
// mistakes a run would otherwise meet row by row, as dead letters, or as a
// stall with no reason given: the outbox tables' columns as pgoutput sends
// them, the publication's row filters, the topics the rows present route to,
// who may emit table-less events, and (in exactly-once mode, or when rows
// route to topics) whether the brokers can take them. Each finding is logged
// with what to do; a column that would dead-letter every row refuses the
// start. The server or Kafka being unreachable is not a finding here: the
// relay's retries report it.
#pragma once

#include <atomic>

#include "absl/status/status.h"
#include "config/config.h"

namespace outboxd::commands {

// `config` is a single-stream config. FailedPreconditionError (run exits 2)
// when a column check fails; OK otherwise, findings logged. A stop skips what
// is left (the PostgreSQL part is cancelled through `stop_fd`; the Kafka part,
// bounded by its own timeouts, is not started).
absl::Status Preflight(const config::Config& config, const std::atomic<bool>& stop, int stop_fd);

}  // namespace outboxd::commands
