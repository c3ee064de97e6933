// `outboxd check`: one line per check of the config against the real servers
// (connection, replication privilege, wal_level, publication coverage, slot,
// Kafka), each failure saying what to do. Exit code 0 only when all pass.
#pragma once

#include <ostream>

#include "ops/config.h"

namespace outboxd::ops {

// Prints the findings to `out` and returns the process exit code.
int RunCheck(const Config& config, std::ostream& out);

}  // namespace outboxd::ops
