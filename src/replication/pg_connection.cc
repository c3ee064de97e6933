#include "replication/pg_connection.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cctype>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "fmt/format.h"

namespace outboxd::replication {
namespace {

// Session settings that fix the text forms of the values we read back.
constexpr std::string_view kSessionOptions = "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3";
constexpr char kSqlStatePayloadUrl[] = "type.outboxd/sqlstate";

std::string TrimTrailing(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

// libpq's messages span lines ("...failed: Connection refused\n\tIs the server
// running..."); a status message is one line.
std::string OneLine(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const bool space = std::isspace(static_cast<unsigned char>(c));
    if (space && (out.empty() || out.back() == ' ')) continue;
    out.push_back(space ? ' ' : c);
  }
  return TrimTrailing(std::move(out));
}

bool ContainsNoCase(std::string_view haystack, std::string_view needle) {
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
  });
  return it != haystack.end();
}

// Everything in the DSN text that could be a secret, so that error messages
// (libpq quotes bad tokens back, e.g. an invalid percent-encoded password) can
// be scrubbed. Works on the raw text because it must also work when the DSN
// does not parse.
std::vector<std::string> SecretsInDsn(std::string_view dsn) {
  std::vector<std::string> secrets;
  // key=value form and URI query parameters: password=..., sslpassword=...
  for (size_t pos = 0; (pos = dsn.find("password", pos)) != std::string_view::npos;) {
    size_t i = pos + 8;
    pos = i;
    while (i < dsn.size() && dsn[i] == ' ') ++i;
    if (i >= dsn.size() || dsn[i] != '=') continue;
    ++i;
    while (i < dsn.size() && dsn[i] == ' ') ++i;
    size_t end = i;
    while (end < dsn.size() && !std::isspace(static_cast<unsigned char>(dsn[end])) && dsn[end] != '&') ++end;
    std::string_view value = dsn.substr(i, end - i);
    if (!value.empty()) secrets.emplace_back(value);
    if (value.size() > 2 && value.front() == '\'') secrets.emplace_back(value.substr(1, value.size() - 2));
  }
  // URI user info: postgresql://user:password@host
  if (size_t scheme = dsn.find("://"); scheme != std::string_view::npos) {
    const size_t start = scheme + 3;
    size_t end = dsn.find_first_of("/?", start);
    if (end == std::string_view::npos) end = dsn.size();
    std::string_view authority = dsn.substr(start, end - start);
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
      std::string_view userinfo = authority.substr(0, at);
      if (size_t colon = userinfo.find(':'); colon != std::string_view::npos && colon + 1 < userinfo.size()) {
        secrets.emplace_back(userinfo.substr(colon + 1));
      }
    }
  }
  return secrets;
}

std::string Redact(std::string message, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    if (secret.empty()) continue;
    for (size_t pos = 0; (pos = message.find(secret, pos)) != std::string::npos;) {
      message.replace(pos, secret.size(), "***");
      pos += 3;
    }
  }
  return message;
}

// The server's certificate could not be verified (sslmode=verify-ca or
// verify-full): a configuration problem that retrying will not fix.
bool IsTlsVerifyFailure(std::string_view message) {
  return ContainsNoCase(message, "certificate verify failed") ||
         (ContainsNoCase(message, "server certificate for") && ContainsNoCase(message, "does not match")) ||
         ContainsNoCase(message, "root certificate file") ||
         ContainsNoCase(message, "could not read root certificate");
}

// libpq reports connection failures as text only (no SQLSTATE reaches the
// client API), so the classification reads the words. Everything not
// recognised is treated as transient: retrying a refused or timed-out
// connection is the right default for a relay.
absl::StatusCode ClassifyConnectFailure(std::string_view message) {
  if (IsTlsVerifyFailure(message)) return absl::StatusCode::kFailedPrecondition;
  if (ContainsNoCase(message, "password authentication failed") ||
      ContainsNoCase(message, "authentication failed for user") || ContainsNoCase(message, "no password supplied") ||
      ContainsNoCase(message, "password is required") ||
      (ContainsNoCase(message, "role \"") && ContainsNoCase(message, "does not exist"))) {
    return absl::StatusCode::kUnauthenticated;
  }
  if (ContainsNoCase(message, "pg_hba.conf") || ContainsNoCase(message, "permission denied") ||
      ContainsNoCase(message, "must be superuser or replication role") ||
      ContainsNoCase(message, "replication privilege") || ContainsNoCase(message, "not permitted to log in")) {
    return absl::StatusCode::kPermissionDenied;
  }
  if (ContainsNoCase(message, "database \"") && ContainsNoCase(message, "does not exist")) {
    return absl::StatusCode::kNotFound;
  }
  if (ContainsNoCase(message, "invalid ") && !ContainsNoCase(message, "connection to server")) {
    return absl::StatusCode::kInvalidArgument;
  }
  return absl::StatusCode::kUnavailable;
}

std::string_view HintFor(absl::StatusCode code, bool replication) {
  switch (code) {
    case absl::StatusCode::kUnauthenticated:
      return "check the user and password of [source] dsn (keep the password out of the config file: "
             "${ENV} expansion, PGPASSWORD or ~/.pgpass)";
    case absl::StatusCode::kPermissionDenied:
      return replication ? "allow this user to connect to this database in pg_hba.conf, and give it the "
                           "REPLICATION attribute (ALTER ROLE ... WITH REPLICATION)"
                         : "allow this user to connect to this database in pg_hba.conf and grant CONNECT on it";
    case absl::StatusCode::kNotFound:
      return "check dbname in [source] dsn";
    case absl::StatusCode::kInvalidArgument:
      return "fix [source] dsn";
    case absl::StatusCode::kFailedPrecondition:
      return "the server's TLS certificate could not be verified: set sslrootcert in [source] dsn to "
             "the CA certificate that signed it, and with sslmode=verify-full connect to a host name "
             "or address that the certificate names (see docs/configuration.md, TLS)";
    default:
      return "is PostgreSQL running and reachable from here? outboxd keeps retrying";
  }
}

std::string OptionValue(const PQconninfoOption* options, std::string_view keyword) {
  for (const PQconninfoOption* o = options; o != nullptr && o->keyword != nullptr; ++o) {
    if (keyword == o->keyword) return o->val != nullptr ? std::string(o->val) : std::string();
  }
  return {};
}

void IgnoreNotice(void*, const char*) {
  // NOTICEs ("relation already exists, skipping") would otherwise go to
  // stderr behind the logger's back; nothing in them needs acting upon.
}

absl::StatusOr<std::vector<Row>> RowsOf(PGresult* res, PGconn* conn) {
  const ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    absl::Status status = StatusFromResult(res, conn, "");
    PQclear(res);
    return status;
  }
  std::vector<Row> rows;
  const int n = PQntuples(res);
  const int fields = PQnfields(res);
  rows.reserve(n);
  for (int r = 0; r < n; ++r) {
    Row row;
    row.reserve(fields);
    for (int f = 0; f < fields; ++f) {
      if (PQgetisnull(res, r, f)) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(PQgetvalue(res, r, f), PQgetlength(res, r, f)));
      }
    }
    rows.push_back(std::move(row));
  }
  PQclear(res);
  return rows;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnection::Connect(std::string_view dsn, bool replication,
                                                                    int stop_fd) {
  const std::string dsn_text(dsn);
  const std::vector<std::string> secrets = SecretsInDsn(dsn);

  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(dsn_text.c_str(), &parse_error);
  if (parsed == nullptr) {
    std::string why = parse_error != nullptr ? OneLine(parse_error) : "out of memory";
    if (parse_error != nullptr) PQfreemem(parse_error);
    return absl::InvalidArgumentError(
        fmt::format("the PostgreSQL connection string ([source] dsn) is not valid: {}; fix it (key=value pairs "
                    "or a postgresql:// URI)",
                    Redact(why, secrets)));
  }
  std::string app_name = OptionValue(parsed, "application_name");
  std::string user_options = OptionValue(parsed, "options");
  std::string connect_timeout = OptionValue(parsed, "connect_timeout");
  PQconninfoFree(parsed);
  if (user_options.empty()) {
    // Setting `options` hides PGOPTIONS, so carry it over.
    if (const char* env = std::getenv("PGOPTIONS"); env != nullptr) user_options = env;
  }
  const std::string options =
      user_options.empty() ? std::string(kSessionOptions) : fmt::format("{} {}", user_options, kSessionOptions);

  // The DSN goes in as an expanded dbname; entries after it override it, so
  // ours come after and are only present when they must win.
  std::vector<const char*> keys = {"dbname"};
  std::vector<const char*> values = {dsn_text.c_str()};
  if (app_name.empty()) {
    keys.push_back("application_name");
    values.push_back("outboxd");
  }
  if (connect_timeout.empty()) {
    keys.push_back("connect_timeout");
    values.push_back("10");
  }
  keys.push_back("options");
  values.push_back(options.c_str());
  if (replication) {
    keys.push_back("replication");
    values.push_back("database");
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);

  PGconn* conn = stop_fd < 0 ? PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1)
                             : PQconnectStartParams(keys.data(), values.data(), /*expand_dbname=*/1);
  if (conn == nullptr) {
    return absl::ResourceExhaustedError("cannot connect to PostgreSQL: libpq is out of memory");
  }
  if (stop_fd >= 0 && PQstatus(conn) != CONNECTION_BAD) {
    // PQconnectdb's loop, with the stop signal in the same poll(). libpq
    // applies connect_timeout only in its own blocking loop, so this one
    // does, per host tried (a new socket starts a new attempt).
    const std::string timeout_text = connect_timeout.empty() ? "10" : connect_timeout;
    const absl::Duration per_host = absl::Seconds(std::max(2, std::atoi(timeout_text.c_str())));
    int socket = -1;
    absl::Time deadline;
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    while (state != PGRES_POLLING_OK && state != PGRES_POLLING_FAILED) {
      if (PQsocket(conn) != socket) {
        socket = PQsocket(conn);
        deadline = absl::Now() + per_host;
      }
      pollfd fds[2] = {{socket, static_cast<short>(state == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0},
                       {stop_fd, POLLIN, 0}};
      const absl::Duration left = deadline - absl::Now();
      const int rc = left <= absl::ZeroDuration()
                         ? 0
                         : poll(fds, 2, static_cast<int>(absl::ToInt64Milliseconds(
                                            absl::Ceil(left, absl::Milliseconds(1)))));
      if (rc < 0 && errno == EINTR) continue;
      if ((fds[1].revents & POLLIN) != 0) {
        PQfinish(conn);
        return absl::CancelledError("stop requested while connecting to PostgreSQL");
      }
      if (rc == 0) {
        PgConnection failed(conn);
        return absl::UnavailableError(fmt::format(
            "cannot connect to PostgreSQL ({}{}): no answer within connect_timeout ({}s); {}", failed.Describe(),
            replication ? ", replication=database" : "", timeout_text,
            HintFor(absl::StatusCode::kUnavailable, replication)));
      }
      state = PQconnectPoll(conn);
    }
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    PgConnection failed(conn);  // closes conn on return
    const std::string why = Redact(OneLine(PQerrorMessage(conn)), secrets);
    const absl::StatusCode code = ClassifyConnectFailure(why);
    return absl::Status(code, fmt::format("cannot connect to PostgreSQL ({}{}): {}; {}", failed.Describe(),
                                          replication ? ", replication=database" : "", why,
                                          HintFor(code, replication)));
  }
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  return std::unique_ptr<PgConnection>(new PgConnection(conn, stop_fd));
}

PgConnection::~PgConnection() {
  if (conn_ != nullptr) PQfinish(conn_);
}

void PgConnection::CancelRunning() {
  if (PGcancel* cancel = PQgetCancel(conn_); cancel != nullptr) {
    char errbuf[256];
    PQcancel(cancel, errbuf, sizeof errbuf);
    PQfreeCancel(cancel);
  }
}

absl::StatusOr<std::vector<Row>> PgConnection::QueryStoppable(
    const std::string& sql, absl::Duration every, const std::function<absl::Status(absl::Duration)>* tick,
    absl::Duration limit) {
  if (PQsendQuery(conn_, sql.c_str()) == 0) return StatusFromResult(nullptr, conn_, "");
  const absl::Time started = absl::Now();
  absl::Time next_tick = tick != nullptr ? started + every : absl::InfiniteFuture();
  const absl::Time deadline = started + limit;
  // Like PQexec: the last result, or the first error.
  PGresult* kept = nullptr;
  auto give_up = [&](absl::Status status) {
    // E.g. CREATE_REPLICATION_SLOT waiting for a long transaction: cancel it
    // on the server rather than leave it waiting behind a closed session.
    CancelRunning();
    if (kept != nullptr) PQclear(kept);
    return status;
  };
  for (;;) {
    while (PQisBusy(conn_) == 0) {
      PGresult* res = PQgetResult(conn_);
      if (res == nullptr) {
        if (kept == nullptr) return StatusFromResult(nullptr, conn_, "");
        return RowsOf(kept, conn_);
      }
      const ExecStatusType st = PQresultStatus(res);
      if (kept != nullptr && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
        PQclear(res);
      } else {
        if (kept != nullptr) PQclear(kept);
        kept = res;
      }
      // A COPY result is handed back at once, as PQexec does (START_REPLICATION).
      if (st == PGRES_COPY_BOTH || st == PGRES_COPY_IN || st == PGRES_COPY_OUT) return RowsOf(kept, conn_);
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return give_up(absl::DeadlineExceededError(
          fmt::format("no answer within {}", absl::FormatDuration(limit))));
    }
    if (now >= next_tick) {
      if (absl::Status ticked = (*tick)(now - started); !ticked.ok()) return give_up(ticked);
      next_tick = absl::Now() + every;
      continue;  // the tick may have taken a while: look at the clock again
    }
    const absl::Duration wait = std::min(next_tick, deadline) - now;
    const int timeout_ms =
        wait == absl::InfiniteDuration()
            ? -1
            : static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(wait, absl::Milliseconds(1))),
                                                 INT32_MAX));
    pollfd fds[2] = {{PQsocket(conn_), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, timeout_ms) < 0 && errno != EINTR) {
      if (kept != nullptr) PQclear(kept);
      return absl::UnavailableError(fmt::format("waiting for PostgreSQL failed: {}", std::strerror(errno)));
    }
    if ((fds[1].revents & POLLIN) != 0) {
      return give_up(absl::CancelledError("stop requested while waiting for PostgreSQL"));
    }
    if (fds[0].revents != 0 && PQconsumeInput(conn_) == 0) {
      if (kept != nullptr) PQclear(kept);
      return StatusFromResult(nullptr, conn_, "");
    }
  }
}

absl::StatusOr<std::vector<Row>> PgConnection::QueryWhileWaiting(
    std::string_view sql, absl::Duration every, const std::function<absl::Status(absl::Duration)>& tick,
    absl::Duration limit) {
  return QueryStoppable(std::string(sql), every, &tick, limit);
}

absl::StatusOr<std::vector<Row>> PgConnection::Query(std::string_view sql) {
  if (stop_fd_ >= 0) return QueryStoppable(std::string(sql));
  PGresult* res = PQexec(conn_, std::string(sql).c_str());
  if (res == nullptr) return StatusFromResult(nullptr, conn_, "");
  return RowsOf(res, conn_);
}

absl::StatusOr<std::vector<Row>> PgConnection::QueryParams(std::string_view sql,
                                                           const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const std::string& p : params) values.push_back(p.c_str());
  PGresult* res = PQexecParams(conn_, std::string(sql).c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, /*resultFormat=*/0);
  if (res == nullptr) return StatusFromResult(nullptr, conn_, "");
  return RowsOf(res, conn_);
}

int PgConnection::server_version() const { return PQserverVersion(conn_); }

std::string PgConnection::Describe() const {
  auto or_empty = [](const char* s) { return s != nullptr ? s : ""; };
  return fmt::format("host={} port={} dbname={} user={}", or_empty(PQhost(conn_)), or_empty(PQport(conn_)),
                     or_empty(PQdb(conn_)), or_empty(PQuser(conn_)));
}

std::string QuoteLiteral(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('\'');
  for (char c : s) {
    if (c == '\'') out.push_back('\'');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

std::string QuoteIdentifier(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (char c : s) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

absl::StatusCode StatusCodeForSqlState(std::string_view s) {
  if (s.size() != 5) return absl::StatusCode::kUnknown;
  const std::string_view cls = s.substr(0, 2);
  // Exact codes first, then classes (appendix A of the PostgreSQL manual).
  if (s == "55006" || s == "55P03" || s == "57P01" || s == "57P02" || s == "57P03") {
    return absl::StatusCode::kUnavailable;  // object in use, lock, shutdown, not ready
  }
  if (s == "57014") return absl::StatusCode::kCancelled;
  if (s == "57P04" || s == "3D000" || s == "42P01" || s == "42704" || s == "42883" || s == "3F000") {
    return absl::StatusCode::kNotFound;
  }
  if (s == "42501") return absl::StatusCode::kPermissionDenied;
  if (s == "42710" || s == "42P07" || s == "23505" || s == "42P06") return absl::StatusCode::kAlreadyExists;
  if (s == "0A000") return absl::StatusCode::kUnimplemented;
  if (cls == "08" || cls == "53") return absl::StatusCode::kUnavailable;
  if (cls == "28") return absl::StatusCode::kUnauthenticated;
  if (cls == "40") return absl::StatusCode::kAborted;
  if (cls == "55" || cls == "25") return absl::StatusCode::kFailedPrecondition;
  if (cls == "22" || cls == "42" || cls == "23") return absl::StatusCode::kInvalidArgument;
  if (cls == "XX" || cls == "58") return absl::StatusCode::kInternal;
  return absl::StatusCode::kUnknown;
}

absl::Status StatusFromResult(const PGresult* res, PGconn* conn, std::string_view context) {
  const std::string prefix = context.empty() ? std::string() : fmt::format("{}: ", context);
  const char* sqlstate = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  if (sqlstate == nullptr) {
    // No server error: libpq itself failed (connection lost, out of memory)
    // or the server answered with an unexpected result kind.
    std::string why = OneLine(res != nullptr ? PQresultErrorMessage(res) : "");
    if (why.empty()) why = OneLine(PQerrorMessage(conn));
    if (why.empty() && res != nullptr) {
      return absl::InternalError(
          fmt::format("{}unexpected result from PostgreSQL: {}", prefix, PQresStatus(PQresultStatus(res))));
    }
    return absl::UnavailableError(fmt::format("{}connection to PostgreSQL failed: {}", prefix, why));
  }
  auto field = [res](int code) -> std::string {
    const char* v = PQresultErrorField(res, code);
    return v != nullptr ? TrimTrailing(v) : std::string();
  };
  std::string severity = field(PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity.empty()) severity = field(PG_DIAG_SEVERITY);
  std::string message =
      fmt::format("{}{}: {} (SQLSTATE {})", prefix, severity, field(PG_DIAG_MESSAGE_PRIMARY), sqlstate);
  if (std::string detail = field(PG_DIAG_MESSAGE_DETAIL); !detail.empty()) {
    message += fmt::format("; detail: {}", detail);
  }
  if (std::string hint = field(PG_DIAG_MESSAGE_HINT); !hint.empty()) message += fmt::format("; hint: {}", hint);
  absl::StatusCode code = StatusCodeForSqlState(sqlstate);
  if (conn != nullptr && PQstatus(conn) == CONNECTION_BAD) code = absl::StatusCode::kUnavailable;
  absl::Status status(code, message);
  status.SetPayload(kSqlStatePayloadUrl, absl::Cord(absl::string_view(sqlstate)));
  return status;
}

std::optional<std::string> SqlStateOf(const absl::Status& status) {
  auto payload = status.GetPayload(kSqlStatePayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

}  // namespace outboxd::replication
