// PgConnection: a thin RAII wrapper over a libpq connection, for the replication
// connection and the ordinary SQL connection used by `outboxd check`. Errors
// carry libpq's own words and never the password.
#pragma once

#include <libpq-fe.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace outboxd::replication {

// One result row of a simple query, NULL as std::nullopt.
using Row = std::vector<std::optional<std::string>>;

class PgConnection {
 public:
  // Connects with `dsn` (key=value or URI); `replication` adds
  // replication=database. Adds application_name=outboxd unless the DSN sets
  // one, connect_timeout=10 unless set, and session options that fix the text
  // formats we parse (DateStyle=ISO, TimeZone=UTC, extra_float_digits=3),
  // appended to the DSN's own `options`. InvalidArgumentError for a malformed
  // DSN, UnavailableError when the server cannot be reached or is not ready,
  // UnauthenticatedError when it rejects the credentials or the role,
  // PermissionDeniedError when pg_hba.conf or privileges refuse us,
  // NotFoundError for a missing database, FailedPreconditionError when the
  // server's TLS certificate fails verification (sslrootcert, host name).
  //
  // With `stop_fd` >= 0 (readable once a stop was requested) connecting and
  // every Query wait in poll() on it as well: CancelledError as soon as it is
  // readable (a running query is cancelled on the server first).
  static absl::StatusOr<std::unique_ptr<PgConnection>> Connect(std::string_view dsn, bool replication,
                                                               int stop_fd = -1);

  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs a simple-protocol query and returns its rows (all columns as text).
  // Several statements separated by ';' are allowed; the rows are the last
  // statement's. Errors: the code of StatusCodeForSqlState, the server's words
  // and SQLSTATE in the message, the SQLSTATE also as a payload (SqlStateOf).
  absl::StatusOr<std::vector<Row>> Query(std::string_view sql);
  // Query for a command that may wait long on the server (CREATE_REPLICATION_SLOT on a hot
  // standby): calls `tick` with the time waited so far every `every` while no answer came,
  // and gives up after `limit`. A tick's error, a stop (CancelledError) or the limit
  // (DeadlineExceededError naming it) cancel the command on the server first; the
  // connection is then to be closed (the cancelled command's results are not read).
  absl::StatusOr<std::vector<Row>> QueryWhileWaiting(std::string_view sql, absl::Duration every,
                                                     const std::function<absl::Status(absl::Duration)>& tick,
                                                     absl::Duration limit);
  // Runs a parameterized query (extended protocol; not for replication commands).
  absl::StatusOr<std::vector<Row>> QueryParams(std::string_view sql, const std::vector<std::string>& params);

  int server_version() const;  // e.g. 150004
  PGconn* raw() { return conn_; }
  PGconn* raw() const { return conn_; }
  // "host=... port=... dbname=... user=..." without secrets, for messages.
  std::string Describe() const;

 private:
  explicit PgConnection(PGconn* conn, int stop_fd = -1) : conn_(conn), stop_fd_(stop_fd) {}
  // Query with poll() on the socket and stop_fd_; with `tick`, as QueryWhileWaiting.
  absl::StatusOr<std::vector<Row>> QueryStoppable(const std::string& sql, absl::Duration every = absl::InfiniteDuration(),
                                                  const std::function<absl::Status(absl::Duration)>* tick = nullptr,
                                                  absl::Duration limit = absl::InfiniteDuration());
  // Asks the server to cancel the running command (best effort).
  void CancelRunning();
  PGconn* conn_;
  int stop_fd_ = -1;
};

// Quotes an SQL literal / identifier for the replication protocol, where there
// are no parameters. Assumes standard_conforming_strings = on (the default since
// PostgreSQL 9.1, and the only form the replication command grammar accepts):
// backslashes are ordinary characters, quotes are doubled.
std::string QuoteLiteral(std::string_view s);
std::string QuoteIdentifier(std::string_view s);

// The status code for a server error's SQLSTATE: connection loss, shutdown,
// too many clients and objects in use (a busy slot) are Unavailable, i.e.
// worth retrying; privilege errors PermissionDenied; missing objects NotFound;
// and so on. Unknown codes give kUnknown.
absl::StatusCode StatusCodeForSqlState(std::string_view sqlstate);

// The status for a failed libpq result (`res` may be null, e.g. out of memory
// or connection lost): the server's message, SQLSTATE, detail and hint, with
// `context` (what we were doing) in front when not empty.
absl::Status StatusFromResult(const PGresult* res, PGconn* conn, std::string_view context);

// The SQLSTATE attached to a status made by StatusFromResult or Query, if any.
std::optional<std::string> SqlStateOf(const absl::Status& status);

}  // namespace outboxd::replication
