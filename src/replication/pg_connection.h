// PgConnection: a thin RAII wrapper over a libpq connection, for the replication
// connection and the ordinary SQL connection used by `outboxd check`. Errors
// carry libpq's own words and never the password.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace outboxd::replication {

// One result row of a simple query, NULL as std::nullopt.
using Row = std::vector<std::optional<std::string>>;

class PgConnection {
 public:
  // Connects with `dsn`; `replication` adds replication=database. Adds
  // application_name=outboxd unless the DSN sets one, and session options that
  // fix the text formats we parse (DateStyle=ISO, TimeZone=UTC,
  // extra_float_digits=3). UnavailableError when the server cannot be reached,
  // UnauthenticatedError / PermissionDeniedError when it refuses us.
  static absl::StatusOr<std::unique_ptr<PgConnection>> Connect(std::string_view dsn, bool replication);

  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs a simple-protocol query and returns its rows (all columns as text).
  absl::StatusOr<std::vector<Row>> Query(std::string_view sql);
  // Runs a parameterized query (extended protocol; not for replication commands).
  absl::StatusOr<std::vector<Row>> QueryParams(std::string_view sql, const std::vector<std::string>& params);

  int server_version() const;  // e.g. 150004
  PGconn* raw() { return conn_; }
  // "host=... port=... dbname=... user=..." without secrets, for messages.
  std::string Describe() const;

 private:
  explicit PgConnection(PGconn* conn) : conn_(conn) {}
  PGconn* conn_;
};

// Quotes an SQL literal / identifier for the replication protocol, where there
// are no parameters.
std::string QuoteLiteral(std::string_view s);
std::string QuoteIdentifier(std::string_view s);

}  // namespace outboxd::replication
