#include "replication/pg_replication_stream.h"

#include <poll.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/cord.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "replication/slot_creation.h"
#include "replication/slot_query.h"
#include "replication/standby_source.h"
#include "replication/timeline.h"

namespace outboxd::replication {
namespace {

// How long SendStatus may wait for the socket to take a 38-byte message before
// calling the connection stalled. Well under wal_sender_timeout (60 s).
constexpr absl::Duration kSendTimeout = absl::Seconds(10);

constexpr std::string_view kLostSlotAdvice =
    "events in the lost WAL are gone; see docs/operations.md (\"Invalidated slot\") to recover, "
    "then drop the slot and start again";

// A copy of `status` with `context` in front of its message, keeping code and payloads.
absl::Status WithContext(const absl::Status& status, std::string_view context) {
  absl::Status out(status.code(), fmt::format("{}: {}", context, std::string(status.message())));
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

absl::Status WithCode(const absl::Status& status, absl::StatusCode code) {
  absl::Status out(code, status.message());
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

// A table name as the user would type it in SQL, quoting only when needed.
std::string SqlName(std::string_view name) {
  bool plain = !name.empty() && !(name[0] >= '0' && name[0] <= '9');
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) plain = false;
  }
  return plain ? std::string(name) : QuoteIdentifier(name);
}

struct TableName {
  std::string schema;
  std::string table;
  std::string Sql() const { return fmt::format("{}.{}", SqlName(schema), SqlName(table)); }
};

TableName SplitTableName(std::string_view qualified) {
  const size_t dot = qualified.find('.');
  if (dot == std::string_view::npos) return {"public", std::string(qualified)};
  return {std::string(qualified.substr(0, dot)), std::string(qualified.substr(dot + 1))};
}

absl::StatusOr<Lsn> ParseLsnField(const std::optional<std::string>& text, std::string_view what) {
  if (!text.has_value()) return Lsn::Invalid();
  auto lsn = Lsn::Parse(*text);
  if (!lsn.ok()) {
    return absl::InternalError(fmt::format("PostgreSQL returned an unreadable {}: {}", what,
                                           std::string(lsn.status().message())));
  }
  return *lsn;
}

int ToPollTimeout(absl::Duration left) {
  if (left == absl::InfiniteDuration()) return -1;
  if (left <= absl::ZeroDuration()) return 0;
  const int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)));
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

// poll() on one descriptor until `deadline`, restarting after signals.
// Returns the revents, 0 on timeout.
absl::StatusOr<short> PollUntil(int fd, short events, absl::Time deadline) {
  for (;;) {
    pollfd pfd{fd, events, 0};
    const int rc = poll(&pfd, 1, ToPollTimeout(deadline - absl::Now()));
    if (rc >= 0) return rc == 0 ? short{0} : pfd.revents;
    if (errno != EINTR) {
      return absl::UnavailableError(
          fmt::format("waiting on the replication connection's socket failed: {}", std::strerror(errno)));
    }
  }
}

absl::Status ConnectionError(PGconn* conn, std::string_view what) {
  // One line: libpq's messages may span several.
  std::string why;
  for (const char* p = PQerrorMessage(conn); *p != '\0'; ++p) {
    const bool space = *p == '\n' || *p == '\t' || *p == ' ';
    if (space && (why.empty() || why.back() == ' ')) continue;
    why.push_back(space ? ' ' : *p);
  }
  if (!why.empty() && why.back() == ' ') why.pop_back();
  return absl::UnavailableError(fmt::format("{}: {}; outboxd reconnects", what, why));
}

absl::Status CheckPublication(PgConnection& conn, const StreamOptions& options, std::string_view database) {
  ASSIGN_OR_RETURN(std::vector<Row> pubs,
                   conn.Query(fmt::format("SELECT pubinsert FROM pg_catalog.pg_publication WHERE pubname = {}",
                                          QuoteLiteral(options.publication))));
  if (pubs.empty()) {
    return absl::FailedPreconditionError(fmt::format(
        "publication \"{}\" does not exist in database \"{}\": run sql/outbox.sql (it creates publication "
        "outboxd for public.outbox), or CREATE PUBLICATION {} FOR TABLE <your outbox tables> WITH (publish = "
        "'insert'), or fix [source] publication",
        options.publication, database, SqlName(options.publication)));
  }
  if (pubs[0][0].value_or("f") != "t") {
    return absl::FailedPreconditionError(fmt::format(
        "publication \"{}\" does not publish inserts, so no outbox row would ever reach outboxd: run ALTER "
        "PUBLICATION {} SET (publish = 'insert')",
        options.publication, SqlName(options.publication)));
  }
  if (options.tables.empty()) return absl::OkStatus();

  ASSIGN_OR_RETURN(std::vector<Row> published,
                   conn.Query(fmt::format("SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables "
                                          "WHERE pubname = {}",
                                          QuoteLiteral(options.publication))));
  for (const std::string& qualified : options.tables) {
    const TableName name = SplitTableName(qualified);
    bool in_publication = false;
    for (const Row& row : published) {
      if (row[0].value_or("") == name.schema && row[1].value_or("") == name.table) in_publication = true;
    }
    if (in_publication) continue;
    ASSIGN_OR_RETURN(std::vector<Row> exists,
                     conn.Query(fmt::format("SELECT pg_catalog.to_regclass({}) IS NOT NULL",
                                            QuoteLiteral(fmt::format("{}.{}", QuoteIdentifier(name.schema),
                                                                     QuoteIdentifier(name.table))))));
    if (exists.empty() || exists[0][0].value_or("f") != "t") {
      return absl::FailedPreconditionError(fmt::format(
          "outbox table {} does not exist in database \"{}\": create it (sql/outbox.sql creates public.outbox), "
          "add it to the publication with ALTER PUBLICATION {} ADD TABLE {}, or fix the [[outbox]] table name",
          name.Sql(), database, SqlName(options.publication), name.Sql()));
    }
    return absl::FailedPreconditionError(fmt::format(
        "outbox table {} is not in publication \"{}\", so its rows would never reach outboxd: run ALTER "
        "PUBLICATION {} ADD TABLE {}",
        name.Sql(), options.publication, SqlName(options.publication), name.Sql()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckServerVersion(int server_version) {
  if (server_version >= kMinServerVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(fmt::format(
      "PostgreSQL {}.{} is not supported: outboxd supports PostgreSQL {} (it needs pgoutput's logical "
      "decoding messages and the slot columns of 14 and later); upgrade the server",
      server_version / 10000, server_version % 10000 / (server_version >= 100000 ? 1 : 100), kSupportedVersions));
}

absl::Status CheckFailoverSupported(bool failover, int server_version) {
  if (!failover || server_version >= 170000) return absl::OkStatus();
  return absl::FailedPreconditionError(fmt::format(
      "[source] failover = true needs PostgreSQL 17 or later (failover slots), but the server is PostgreSQL {}: "
      "set failover = false; on 16 and older a failover loses the slot, see docs/operations.md (\"Database failover\")",
      server_version / 10000));
}

std::string CreateSlotCommand(std::string_view slot, int server_version, bool failover, bool export_snapshot) {
  if (server_version < 150000) {
    return fmt::format("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {}", QuoteIdentifier(slot),
                       export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
  }
  return fmt::format("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT '{}'{})", QuoteIdentifier(slot),
                     export_snapshot ? "export" : "nothing", failover ? ", FAILOVER true" : "");
}

int ProtoVersionFor(int server_version) {
  if (server_version >= 160000) return 4;
  if (server_version >= 150000) return 3;
  if (server_version >= 140000) return 2;
  return 1;
}

absl::Status ValidateSlotName(std::string_view name) {
  bool valid = !name.empty() && name.size() <= 63;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) valid = false;
  }
  if (valid) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format(
      "invalid replication slot name \"{}\": PostgreSQL allows 1 to 63 lower case letters, digits and "
      "underscores; fix [source] slot",
      name));
}

absl::Status CheckSlot(std::string_view name, const SlotState& slot, std::string_view database) {
  if (slot.slot_type != "logical") {
    return absl::FailedPreconditionError(fmt::format(
        "replication slot \"{}\" is a {} slot; outboxd needs a logical slot with plugin pgoutput: choose "
        "another [source] slot name (outboxd creates it), or drop this one if nothing uses it",
        name, slot.slot_type));
  }
  if (slot.plugin != "pgoutput") {
    return absl::FailedPreconditionError(fmt::format(
        "replication slot \"{}\" uses output plugin \"{}\"; outboxd needs pgoutput: choose another [source] slot "
        "name, or drop this one (SELECT pg_drop_replication_slot('{}')) if nothing else uses it",
        name, slot.plugin, name));
  }
  if (slot.database != database) {
    return absl::FailedPreconditionError(fmt::format(
        "replication slot \"{}\" belongs to database \"{}\", not \"{}\": fix dbname in [source] dsn or choose "
        "another [source] slot name",
        name, slot.database, database));
  }
  if (slot.wal_status == "lost") {
    return absl::FailedPreconditionError(fmt::format(
        "replication slot \"{}\" was invalidated by PostgreSQL (wal_status lost, max_slot_wal_keep_size "
        "exceeded): {}",
        name, kLostSlotAdvice));
  }
  return absl::OkStatus();
}

absl::StatusOr<SystemIdentity> IdentifySystem(PgConnection& conn) {
  ASSIGN_OR_RETURN(std::vector<Row> rows, conn.Query("IDENTIFY_SYSTEM"));
  if (rows.size() != 1) return absl::DataLossError(fmt::format("{} rows, expected 1", rows.size()));
  return ParseIdentifySystem(rows[0]);
}

absl::StatusOr<std::vector<TimelineSwitch>> ReadTimelineHistory(PgConnection& conn, uint32_t timeline) {
  ASSIGN_OR_RETURN(std::vector<Row> rows, conn.Query(fmt::format("TIMELINE_HISTORY {}", timeline)));
  if (rows.size() != 1 || rows[0].size() < 2 || !rows[0][1].has_value()) {
    return absl::DataLossError(fmt::format("TIMELINE_HISTORY {} returned no history file", timeline));
  }
  return ParseTimelineHistory(*rows[0][1], timeline);
}

absl::StatusOr<std::unique_ptr<PgReplicationStream>> PgReplicationStream::Start(const StreamOptions& options) {
  RETURN_IF_ERROR(ValidateSlotName(options.slot));
  if (options.publication.empty()) {
    return absl::InvalidArgumentError("[source] publication is empty: name the publication of the outbox tables");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> conn, PgConnection::Connect(options.dsn, /*replication=*/true,
                                                                                    options.stop_fd));
  const std::string where = conn->Describe();

  SystemInfo info;
  info.server_version = conn->server_version();
  if (absl::Status s = CheckServerVersion(info.server_version); !s.ok()) return WithContext(s, where);
  RETURN_IF_ERROR(CheckFailoverSupported(options.failover, info.server_version));
  info.proto_version = ProtoVersionFor(info.server_version);

  absl::StatusOr<SystemIdentity> system = IdentifySystem(*conn);
  if (!system.ok()) return WithContext(system.status(), fmt::format("IDENTIFY_SYSTEM on {}", where));
  info.system_id = system->system_id;
  info.timeline = static_cast<int>(system->timeline);
  info.xlog_pos = system->xlog_pos;
  const std::string database = system->database;

  auto wal_level = conn->Query("SHOW wal_level");
  if (!wal_level.ok()) return WithContext(wal_level.status(), fmt::format("SHOW wal_level on {}", where));
  const std::string level = !wal_level->empty() ? (*wal_level)[0][0].value_or("") : "";
  if (level != "logical") {
    return absl::FailedPreconditionError(fmt::format(
        "wal_level is '{}'; logical decoding needs wal_level = logical: set it in postgresql.conf and restart "
        "PostgreSQL",
        level));
  }

  if (absl::Status s = CheckPublication(*conn, options, database); !s.ok()) {
    return s.code() == absl::StatusCode::kFailedPrecondition
               ? s
               : WithContext(s, fmt::format("checking publication \"{}\" on {}", options.publication, where));
  }

  bool found = false;
  auto slot = ReadSlot(*conn, options.slot, &found);
  if (!slot.ok()) {
    return WithContext(slot.status(), fmt::format("reading replication slot \"{}\" on {}", options.slot, where));
  }
  if (found) {
    // Whether an invalidated slot may be dropped is DecideSlotAction's call;
    // everything else about it must fit whatever that decides.
    SlotState shape = *slot;
    if (shape.wal_status == "lost") shape.wal_status.clear();
    RETURN_IF_ERROR(CheckSlot(options.slot, shape, database));
  }
  if (absl::Status standby = ReadStandby(*conn, options, *slot, found, &info); !standby.ok()) {
    return standby.code() == absl::StatusCode::kFailedPrecondition
               ? standby
               : WithContext(standby, fmt::format("asking {} whether it is a standby", where));
  }
  const Invalidation invalidation = found ? slot->invalidation : Invalidation{};
  const std::string deciding_setting = DecidingSetting(*conn, invalidation);
  const Lsn history_switch = found && !slot->synced ? HistorySwitch(*conn, options.saved, options.slot, info)
                                                    : Lsn::Invalid();
  const SlotFacts facts{
      .slot = options.slot,
      .system_id = info.system_id,
      .database = database,
      .found = found,
      .invalidation = invalidation,
      .invalidation_setting = deciding_setting,
      .timeline = info.timeline,
      .synced = found && slot->synced,
      .confirmed_flush = found ? slot->confirmed_flush : Lsn::Invalid(),
      .in_recovery = info.in_recovery,
      .history_switch = history_switch,
      .create_slot = options.create_slot,
      .accept_gap = options.accept_gap,
  };
  ASSIGN_OR_RETURN(const SlotAction action, DecideSlotAction(facts, options.saved));
  if (action == SlotAction::kRecreate) {
    auto dropped = conn->Query(fmt::format("DROP_REPLICATION_SLOT {}", QuoteIdentifier(options.slot)));
    if (!dropped.ok()) {
      return WithContext(dropped.status(),
                         fmt::format("dropping invalidated replication slot \"{}\" on {}", options.slot, where));
    }
    info.slot_recreated = true;
  }
  if (action == SlotAction::kUse) {
    info.slot_confirmed_flush = slot->confirmed_flush;
    info.slot_failover = slot->failover;
    info.slot_synced = slot->synced;
    if (options.failover && !slot->failover) {
      // A slot made before failover = true was set: turn it into a failover slot in place.
      auto altered = conn->Query(fmt::format("ALTER_REPLICATION_SLOT {} (FAILOVER true)", QuoteIdentifier(options.slot)));
      if (!altered.ok()) {
        return WithContext(altered.status(),
                           fmt::format("making replication slot \"{}\" a failover slot on {}", options.slot, where));
      }
      info.slot_failover = true;
    }
  } else {
    // No snapshot unless asked ([source] snapshot = "initial"): outboxd streams from now on.
    const bool export_snapshot = static_cast<bool>(options.snapshot);
    const std::string create =
        CreateSlotCommand(options.slot, info.server_version, options.failover, export_snapshot);
    if (options.before_create) RETURN_IF_ERROR(options.before_create());
    SlotCreationWatch watch({.slot = options.slot,
                             .where = where,
                             .on_standby = info.in_recovery,
                             .primary_dsn = info.in_recovery ? options.primary_dsn : std::string(),
                             .stop_fd = options.stop_fd});
    auto created = conn->QueryWhileWaiting(
        create, absl::Seconds(1), [&watch](absl::Duration waited) { return watch.Tick(waited); },
        info.in_recovery ? kStandbyCreationLimit : absl::InfiniteDuration());
    if (absl::IsDeadlineExceeded(created.status())) {
      return absl::UnavailableError(CreationTimeoutMessage(watch.wait(), kStandbyCreationLimit));
    }
    if (!created.ok()) {
      if (SqlStateOf(created.status()) == "42710") {
        // Another instance created it between our look-up and now.
        return WithCode(WithContext(created.status(),
                                    fmt::format("creating replication slot \"{}\": another client created it at "
                                                "the same moment; retrying",
                                                options.slot)),
                        absl::StatusCode::kUnavailable);
      }
      return WithContext(created.status(), fmt::format("creating replication slot \"{}\" on {}", options.slot, where));
    }
    // slot_name, consistent_point, snapshot_name, output_plugin.
    if (created->size() != 1 || (*created)[0].size() < 2) {
      return absl::InternalError(
          fmt::format("CREATE_REPLICATION_SLOT on {} returned an unexpected result", where));
    }
    ASSIGN_OR_RETURN(info.slot_confirmed_flush, ParseLsnField((*created)[0][1], "consistent_point"));
    info.slot_created = true;
    info.slot_failover = options.failover;
    if (export_snapshot) {
      // The snapshot lives until this connection's next command: publish it first.
      if ((*created)[0].size() < 3 || !(*created)[0][2].has_value()) {
        return absl::InternalError(fmt::format(
            "CREATE_REPLICATION_SLOT on {} exported no snapshot", where));
      }
      RETURN_IF_ERROR(options.snapshot(*(*created)[0][2]));
    }
  }

  // pgoutput parses publication_names as a list of identifiers, hence the
  // identifier quoting inside the literal.
  std::string start = fmt::format(
      "START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '{}', publication_names {}", QuoteIdentifier(options.slot),
      info.proto_version, QuoteLiteral(QuoteIdentifier(options.publication)));
  if (options.messages && info.server_version >= 140000) start += ", messages 'true'";
  start += ")";

  PGresult* res = PQexec(conn->raw(), start.c_str());
  if (res == nullptr || PQresultStatus(res) != PGRES_COPY_BOTH) {
    absl::Status status = StatusFromResult(res, conn->raw(), "");
    if (res != nullptr) PQclear(res);
    if (status.code() == absl::StatusCode::kUnavailable && SqlStateOf(status) == "55006") {
      return WithContext(status, fmt::format("replication slot \"{}\" is in use by another client (probably "
                                             "another outboxd instance); this instance waits as a standby",
                                             options.slot));
    }
    if (status.code() == absl::StatusCode::kFailedPrecondition && status.message().find("invalidated") !=
                                                                        absl::string_view::npos) {
      if (options.accept_gap) {
        // Invalidated between our look-up and now: the next attempt sees
        // wal_status lost and, as the operator asked, recreates it.
        return WithCode(WithContext(status, fmt::format("replication slot \"{}\" was invalidated just now; "
                                                        "retrying to recreate it (--accept-gap)",
                                                        options.slot)),
                        absl::StatusCode::kUnavailable);
      }
      // Invalidated between our look-up and now: the slot's row says why, and
      // DecideSlotAction words it as a start that found it so would.
      bool still_found = false;
      if (auto now = ReadSlot(*conn, options.slot, &still_found); now.ok() && still_found &&
                                                                   now->invalidation.invalidated()) {
        const std::string setting = DecidingSetting(*conn, now->invalidation);
        SlotFacts invalidated = facts;
        invalidated.found = true;
        invalidated.invalidation = now->invalidation;
        invalidated.invalidation_setting = setting;
        if (absl::StatusOr<SlotAction> decided = DecideSlotAction(invalidated, options.saved); !decided.ok()) {
          return decided.status();
        }
      }
      return MarkGap(WithContext(status, fmt::format("replication slot \"{}\" was invalidated by PostgreSQL: "
                                                     "the slot can no longer decode, so some events may never "
                                                     "reach Kafka (a gap upstream). outboxd never recreates it "
                                                     "by itself: republish the missing events from the outbox "
                                                     "table, then restart once with --accept-gap",
                                                     options.slot)),
                     /*invalidated=*/true);
    }
    return WithContext(status, fmt::format("START_REPLICATION on {}", where));
  }
  PQclear(res);
  // Non-blocking from here on so that a stalled server cannot hang SendStatus.
  if (PQsetnonblocking(conn->raw(), 1) != 0) {
    return ConnectionError(conn->raw(), "cannot make the replication connection non-blocking");
  }
  return std::unique_ptr<PgReplicationStream>(new PgReplicationStream(std::move(conn), std::move(info)));
}

PgReplicationStream::~PgReplicationStream() {
  if (buffer_ != nullptr) PQfreemem(buffer_);
}

absl::StatusOr<bool> PgReplicationStream::ReadFrame(absl::Duration timeout, std::string_view* frame) {
  if (buffer_ != nullptr) {
    PQfreemem(buffer_);
    buffer_ = nullptr;
  }
  *frame = {};
  PGconn* conn = conn_->raw();
  const absl::Time deadline = absl::Now() + timeout;
  bool consumed = false;
  for (;;) {
    const int n = PQgetCopyData(conn, &buffer_, /*async=*/1);
    if (n > 0) {
      *frame = std::string_view(buffer_, static_cast<size_t>(n));
      return true;
    }
    if (n == -1) return EndOfStream();
    if (n == -2) return ConnectionError(conn, "the replication connection failed");
    // Nothing complete in libpq's buffer. Read what the socket holds before
    // waiting: with TLS, bytes may already sit decrypted in the library.
    if (!consumed) {
      if (PQconsumeInput(conn) == 0) return ConnectionError(conn, "reading from the replication connection failed");
      consumed = true;
      continue;
    }
    ASSIGN_OR_RETURN(short revents, PollUntil(PQsocket(conn), POLLIN, deadline));
    if (revents == 0) return false;
    if (PQconsumeInput(conn) == 0) return ConnectionError(conn, "reading from the replication connection failed");
  }
}

absl::Status PgReplicationStream::EndOfStream() {
  PGconn* conn = conn_->raw();
  // The message that ended the stream is already buffered, so this does not block.
  PGresult* res = PQgetResult(conn);
  absl::Status status;
  if (res != nullptr && PQresultStatus(res) == PGRES_FATAL_ERROR) {
    status = WithCode(StatusFromResult(res, conn, "PostgreSQL ended the replication stream"),
                      absl::StatusCode::kUnavailable);
  } else {
    status = absl::UnavailableError(fmt::format(
        "PostgreSQL ended the replication stream ({}): the server is probably shutting down; outboxd reconnects",
        res != nullptr ? PQresStatus(PQresultStatus(res)) : "connection closed"));
  }
  if (res != nullptr) PQclear(res);
  return status;
}

absl::Status PgReplicationStream::WaitToFlush(absl::Time deadline) {
  PGconn* conn = conn_->raw();
  ASSIGN_OR_RETURN(short revents, PollUntil(PQsocket(conn), POLLIN | POLLOUT, deadline));
  if (revents == 0) {
    return absl::UnavailableError(fmt::format(
        "PostgreSQL did not take the standby status update within {}: the replication connection is stalled; "
        "outboxd reconnects",
        absl::FormatDuration(kSendTimeout)));
  }
  if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0 && PQconsumeInput(conn) == 0) {
    return ConnectionError(conn, "reading from the replication connection failed");
  }
  return absl::OkStatus();
}

absl::Status PgReplicationStream::SendStatus(const StandbyStatus& status) {
  PGconn* conn = conn_->raw();
  const std::array<char, kStandbyStatusSize> bytes = EncodeStandbyStatus(status);
  const absl::Time deadline = absl::Now() + kSendTimeout;
  for (;;) {
    const int rc = PQputCopyData(conn, bytes.data(), static_cast<int>(bytes.size()));
    if (rc == 1) break;
    if (rc == -1) return ConnectionError(conn, "cannot send a standby status update to PostgreSQL");
    RETURN_IF_ERROR(WaitToFlush(deadline));  // rc == 0: libpq's buffer is full
  }
  for (;;) {
    const int rc = PQflush(conn);
    if (rc == 0) return absl::OkStatus();
    if (rc == -1) return ConnectionError(conn, "cannot send a standby status update to PostgreSQL");
    RETURN_IF_ERROR(WaitToFlush(deadline));
  }
}

}  // namespace outboxd::replication
