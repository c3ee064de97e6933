// `outboxd check`: a doctor for a deployment. It checks the config against the
// real servers (connection, replication connection, privileges, wal_level,
// max_slot_wal_keep_size, publication coverage, the slot's wal_status and
// retained WAL, failover settings, Kafka reachability, broker auto-create and
// the fixed topics, the schema registry) and reports one finding per check:
// ok, WARN or FAIL, what it means, and what to do. With [source] databases,
// the server is checked once, then every database in a block of its own.
// Exit code 1 when any finding FAILs, else 0. Never prints a password or a
// secret Kafka property.
#pragma once

#include <ostream>

#include "config/config.h"

namespace outboxd::commands {

struct CheckOptions {
  bool json = false;  // one JSON document (check_report.h) instead of text lines
};

// Prints the findings to `out` and returns the process exit code.
int RunCheck(const config::Config& config, std::ostream& out, const CheckOptions& options = {});

}  // namespace outboxd::commands
