// PgReplicationStream: the libpq side of logical replication. Opens a
// replication=database connection, checks the server (IDENTIFY_SYSTEM,
// wal_level, publication and its tables, slot), creates the pgoutput slot when
// missing and allowed, runs START_REPLICATION, then reads CopyData frames and
// sends standby status updates.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lsn.h"
#include "replication/pg_connection.h"
#include "replication/replication_stream.h"
#include "replication/slot_invalidation.h"
#include "replication/state_file.h"
#include "replication/timeline.h"

namespace outboxd::replication {

struct StreamOptions {
  std::string dsn;
  std::string slot = "outboxd";
  std::string publication = "outboxd";
  bool create_slot = true;
  // PostgreSQL 17+: a failover slot (created with FAILOVER, or altered to it).
  bool failover = false;
  // When `dsn` reaches a hot standby (16+): the primary, asked for a standby
  // snapshot while the slot's creation waits (SlotCreationWatch). "" for none.
  std::string primary_dsn;
  bool messages = true;  // request logical decoding messages (PostgreSQL 14+)
  // "schema.table" names that must be in the publication.
  std::vector<std::string> tables;
  // What the state file remembers (std::nullopt: no file, or gap detection
  // off) and whether the operator accepted a gap (--accept-gap): see
  // DecideSlotAction.
  std::optional<SavedState> saved;
  bool accept_gap = false;
  // Readable once a stop was requested: connecting and the commands before
  // streaming (CREATE_REPLICATION_SLOT may wait for long transactions) end
  // with CancelledError at once. -1: none.
  int stop_fd = -1;
  // [source] snapshot = "initial": when set, a slot this Start creates exports
  // its snapshot: `before_create` runs just before CREATE_REPLICATION_SLOT (to
  // mark the snapshot pending), then `snapshot` with the exported snapshot's
  // name while this connection stays idle in the slot's transaction, which
  // keeps the snapshot importable. An error from either fails Start (the slot
  // stays; the pending mark says the snapshot must be redone).
  std::function<absl::Status()> before_create;
  std::function<absl::Status(std::string_view snapshot_name)> snapshot;
};

struct SystemInfo {
  std::string system_id;
  int timeline = 0;
  Lsn xlog_pos;
  int server_version = 0;
  int proto_version = 1;
  Lsn slot_confirmed_flush;  // where streaming resumes
  bool slot_created = false;
  bool slot_recreated = false;  // an invalidated slot dropped and created again (--accept-gap)
  bool slot_failover = false;   // pg_replication_slots.failover (PostgreSQL 17+)
  bool slot_synced = false;     // synchronized from a primary: we follow a failover (PostgreSQL 17+)
  // The server is a hot standby (pg_is_in_recovery()), and its settings that
  // decoding there needs ("" when not a standby).
  bool in_recovery = false;
  std::string hot_standby_feedback;
  std::string primary_slot_name;
};

class PgReplicationStream : public ReplicationStream {
 public:
  // Connects, checks and starts streaming from the slot's confirmed position.
  // FailedPreconditionError with what to do for: wal_level not logical, missing
  // publication or table not in it, missing slot with create_slot=false, a slot
  // of another plugin, and a gap upstream (DecideSlotAction: the slot vanished,
  // was invalidated, or the server is another system; marked with kGapPayload).
  // UnavailableError for transient faults, including "slot is active for PID"
  // (another instance holds it).
  static absl::StatusOr<std::unique_ptr<PgReplicationStream>> Start(const StreamOptions& options);

  absl::StatusOr<bool> ReadFrame(absl::Duration timeout, std::string_view* frame) override;
  absl::Status SendStatus(const StandbyStatus& status) override;
  int socket() const override { return PQsocket(conn_->raw()); }

  const SystemInfo& info() const { return info_; }
  // The walsender's process id, as in pg_stat_replication.pid.
  int backend_pid() const { return PQbackendPID(conn_->raw()); }
  ~PgReplicationStream() override;

 private:
  PgReplicationStream(std::unique_ptr<PgConnection> conn, SystemInfo info)
      : conn_(std::move(conn)), info_(std::move(info)) {}
  // Waits until the socket accepts more output (reading input meanwhile, so
  // that neither side blocks on a full buffer), at most until `deadline`.
  absl::Status WaitToFlush(absl::Time deadline);
  // The status for the end of the CopyBoth stream (PQgetCopyData returned -1).
  absl::Status EndOfStream();

  std::unique_ptr<PgConnection> conn_;
  SystemInfo info_;
  char* buffer_ = nullptr;  // the last frame from PQgetCopyData, freed on the next read
};

// What Start needs from a row of pg_replication_slots.
struct SlotState {
  std::string slot_type;  // "logical" or "physical"
  std::string plugin;     // empty for a physical slot
  std::string database;   // empty for a physical slot
  bool active = false;
  std::optional<int> active_pid;
  // "reserved", "extended", "unreserved" or "lost"; empty before PostgreSQL 13.
  std::string wal_status;
  Lsn confirmed_flush;
  bool failover = false;  // PostgreSQL 17+; false before
  bool synced = false;    // PostgreSQL 17+: copied from a primary by slot synchronization
  // Why it was invalidated, from wal_status, conflicting (16+) and
  // invalidation_reason (17+); kNone while valid.
  Invalidation invalidation;
};

// IDENTIFY_SYSTEM on a replication connection. The server's errors as Query
// reports them; DataLossError for a result that is not one row of four
// readable columns (ParseIdentifySystem).
absl::StatusOr<SystemIdentity> IdentifySystem(PgConnection& conn);

// TIMELINE_HISTORY `timeline` (2 or more: timeline 1 has no history) on a
// replication connection: the timeline's ancestors and where each ended,
// oldest first. The server's errors as Query reports them (a missing history
// file is the server's ERROR); DataLossError for content ParseTimelineHistory
// refuses.
absl::StatusOr<std::vector<TimelineSwitch>> ReadTimelineHistory(PgConnection& conn, uint32_t timeline);

// How long CREATE_REPLICATION_SLOT may wait on a hot standby before outboxd
// cancels it and retries (the relay's backoff), logging what it waits for
// meanwhile. A primary's creation waits without a limit, as it always did.
inline constexpr absl::Duration kStandbyCreationLimit = absl::Minutes(10);

// The oldest and newest PostgreSQL major versions outboxd is tested against.
inline constexpr int kMinServerVersion = 140000;
inline constexpr int kNewestTestedServerVersion = 180000;
inline constexpr std::string_view kSupportedVersions = "14, 15, 16, 17 and 18";

// OK when outboxd supports a server of `server_version` (server_version_num),
// else FailedPreconditionError naming it and the supported versions.
absl::Status CheckServerVersion(int server_version);

// OK unless failover slots are asked for on a server older than PostgreSQL 17
// (FailedPreconditionError saying what to do).
absl::Status CheckFailoverSupported(bool failover, int server_version);

// The CREATE_REPLICATION_SLOT command for `slot`: no snapshot unless export_snapshot
// ([source] snapshot = "initial"), FAILOVER when
// asked (PostgreSQL 17+ only, checked by CheckFailoverSupported).
std::string CreateSlotCommand(std::string_view slot, int server_version, bool failover,
                              bool export_snapshot = false);

// OK when the existing slot `name` can feed outboxd from `database`, else
// FailedPreconditionError saying what to do: a physical slot, another output
// plugin, another database. An invalidated slot (wal_status lost) is not
// checked here but by DecideSlotAction; an active slot is not an error here
// either: START_REPLICATION reports it, and the relay waits as a standby.
absl::Status CheckSlot(std::string_view name, const SlotState& slot, std::string_view database);

// InvalidArgumentError unless `name` is a valid replication slot name: 1 to 63
// characters from [a-z0-9_], as PostgreSQL requires.
absl::Status ValidateSlotName(std::string_view name);

// The pgoutput proto_version for a server_version_num: 4 from 16, 3 from 15,
// 2 from 14, else 1. Streaming stays off whatever the version.
int ProtoVersionFor(int server_version);

}  // namespace outboxd::replication
