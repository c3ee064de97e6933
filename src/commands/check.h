// `outboxd check`: a doctor for a deployment. It checks the config against the
// real servers (connection, replication connection, privileges, wal_level,
// max_slot_wal_keep_size, publication coverage, the slot's wal_status and
// retained WAL, Kafka reachability, broker auto-create and the fixed topics) and
// prints one finding per line: ok, WARN or FAIL, what it means, and on the
// next line what to do. Exit code 1 when any finding FAILs, else 0. Never
// prints a password or a secret Kafka property.
#pragma once

#include <ostream>

#include "config/config.h"

namespace outboxd::commands {

// Prints the findings to `out` and returns the process exit code.
int RunCheck(const config::Config& config, std::ostream& out);

}  // namespace outboxd::commands
