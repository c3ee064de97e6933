// Discovery: which databases of the cluster outboxd can stream, and which of
// the configured publications each has. It lists pg_database on the DSN's own
// database, then connects to each candidate (a publication lives in its
// database: only a connection there can see it). Bounded: every connection
// has libpq's connect_timeout and a statement_timeout, the whole pass a
// deadline, and a stop ends it at once. For `check`, `replay` and the stream
// supervisor; config::PlanStreams turns its answer into streams.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "config/streams.h"

namespace outboxd::cluster {

struct DiscoveryOptions {
  int stop_fd = -1;                            // readable once a stop was requested
  absl::Duration deadline = absl::Seconds(60); // the whole pass
  absl::Duration statement_timeout = absl::Seconds(10);
};

// A database that exists and allows connections but could not be inspected
// (refused, unreachable, the deadline passed): not "without the publication".
// The supervisor keeps such a database's streams as they are (they back off
// on their own) instead of stopping them.
struct UnreachableDatabase {
  std::string name;
  absl::Status status;
};

struct Discovery {
  // By name. Without [source] databases: the DSN's database only (its
  // current_database()), whatever its publications.
  std::vector<config::DiscoveredDatabase> databases;
  std::vector<UnreachableDatabase> unreachable;
};

// The query listing the candidates: databases that allow connections and are
// not templates, by name.
inline constexpr char kDatabasesQuery[] =
    "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname";
// The configured publications ($1, a text[] literal) that the connected database has.
inline constexpr char kPublicationsQuery[] =
    "SELECT pubname FROM pg_catalog.pg_publication WHERE pubname = ANY($1::text[]) ORDER BY pubname";

// Errors (the discovery database itself cannot be reached or queried, or a
// stop: CancelledError) are the whole pass's; one other database's failure
// goes to `unreachable`. With databases = [...], only the listed databases
// are inspected (a listed one missing from pg_database is simply absent).
absl::StatusOr<Discovery> DiscoverDatabases(const config::Config& config, const DiscoveryOptions& options);

// `names` as a PostgreSQL text[] literal: {"a","b"} with " and \ escaped.
std::string TextArrayLiteral(const std::vector<std::string>& names);

}  // namespace outboxd::cluster
