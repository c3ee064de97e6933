#include "cluster/discovery.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "common/format.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "replication/pg_connection.h"

namespace outboxd::cluster {
namespace {

using replication::PgConnection;
using replication::Row;

absl::StatusOr<std::unique_ptr<PgConnection>> Open(const std::string& dsn, const DiscoveryOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> conn, PgConnection::Connect(dsn, false, options.stop_fd));
  RETURN_IF_ERROR(conn->Query(fmt::format("SET statement_timeout = {}",
                                          absl::ToInt64Milliseconds(options.statement_timeout)))
                      .status());
  return conn;
}

absl::StatusOr<std::vector<std::string>> Publications(PgConnection& conn, const config::Config& config) {
  ASSIGN_OR_RETURN(std::vector<Row> rows,
                   conn.QueryParams(kPublicationsQuery, {TextArrayLiteral(config.source.publications)}));
  std::vector<std::string> out;
  for (const Row& row : rows) {
    if (!row.empty() && row[0].has_value()) out.push_back(*row[0]);
  }
  return out;
}

}  // namespace

std::string TextArrayLiteral(const std::vector<std::string>& names) {
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : names[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

absl::StatusOr<Discovery> DiscoverDatabases(const config::Config& config, const DiscoveryOptions& options) {
  const absl::Time deadline = absl::Now() + options.deadline;
  Discovery out;
  ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> home, Open(config.source.dsn, options));

  if (config.source.selection == config::DatabaseSelection::kDsn) {
    ASSIGN_OR_RETURN(std::vector<Row> rows, home->Query("SELECT current_database()"));
    if (rows.empty() || rows[0].empty() || !rows[0][0].has_value()) {
      return absl::InternalError("SELECT current_database() returned no row");
    }
    ASSIGN_OR_RETURN(std::vector<std::string> publications, Publications(*home, config));
    out.databases.push_back({*rows[0][0], std::move(publications)});
    return out;
  }

  ASSIGN_OR_RETURN(std::vector<Row> rows, home->Query(kDatabasesQuery));
  std::string home_name;
  if (auto current = home->Query("SELECT current_database()"); current.ok() && !current->empty()) {
    home_name = (*current)[0][0].value_or("");
  }
  for (const Row& row : rows) {
    if (row.empty() || !row[0].has_value()) continue;
    const std::string& name = *row[0];
    if (config.source.selection == config::DatabaseSelection::kList &&
        std::find(config.source.databases.begin(), config.source.databases.end(), name) ==
            config.source.databases.end()) {
      continue;
    }
    if (absl::Now() >= deadline) {
      out.unreachable.push_back({name, absl::DeadlineExceededError(fmt::format(
          "not inspected: discovery took longer than {}", absl::FormatDuration(options.deadline)))});
      continue;
    }
    absl::StatusOr<std::vector<std::string>> publications;
    if (name == home_name) {
      publications = Publications(*home, config);
    } else {
      absl::StatusOr<std::string> dsn = config::DsnWithDatabase(config.source.dsn, name);
      if (!dsn.ok()) return dsn.status();
      absl::StatusOr<std::unique_ptr<PgConnection>> conn = Open(*dsn, options);
      publications = conn.ok() ? Publications(**conn, config) : conn.status();
    }
    if (absl::IsCancelled(publications.status())) return publications.status();
    if (!publications.ok()) {
      out.unreachable.push_back({name, publications.status()});
      continue;
    }
    out.databases.push_back({name, *std::move(publications)});
  }
  return out;
}

}  // namespace outboxd::cluster
