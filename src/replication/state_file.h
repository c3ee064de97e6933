// State file: what outboxd remembers about its slot between runs (system
// identifier, timeline, slot name, last confirmed LSN), so that a start can
// tell "first start, create the slot" from "the slot vanished or was
// invalidated after we confirmed positions on it" (a gap upstream). Pure apart
// from the two file functions, which use POSIX calls only.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/lsn.h"
#include "replication/slot_invalidation.h"

namespace outboxd::replication {

struct SavedState {
  std::string system_id;  // IDENTIFY_SYSTEM systemid
  int timeline = 0;
  std::string slot;
  Lsn confirmed_lsn;  // the newest flush LSN sent to PostgreSQL (throttled)
  // The slot is on a hot standby (PostgreSQL 16+): it is that server's own, not a copy of a
  // primary's, so it stays with the server when it is promoted or follows a new primary.
  bool on_standby = false;

  friend bool operator==(const SavedState&, const SavedState&) = default;
};

// Text form, one key=value a line:
//   # outboxd state file ...
//   version=1
//   system_identifier=7312345678901234567
//   timeline=1
//   slot=outboxd
//   confirmed_lsn=0/16B3748
//   on_standby=1        (only when true: a primary's file reads as before)
std::string EncodeState(const SavedState& state);
// DataLossError naming the line for anything unreadable (a corrupt file must
// not be mistaken for "no file": that would hide a gap).
absl::StatusOr<SavedState> DecodeState(std::string_view text);

// <dir>/<slot>.state: one file per slot, so instances for several slots can
// share a directory.
std::string StateFilePath(std::string_view dir, std::string_view slot);

// std::nullopt when the file does not exist; an error when it exists but
// cannot be read or decoded.
absl::StatusOr<std::optional<SavedState>> ReadStateFile(const std::string& path);
// Atomically: write `path`.tmp, fsync it, rename over `path`, fsync the directory.
absl::Status WriteStateFile(const std::string& path, const SavedState& state);

// Keeps the state file up to date while streaming: written at once when a
// session starts, then on confirmed positions at most once per
// `min_interval`, and by Flush (at stop). Not thread-safe: the pipeline's
// thread calls it.
class StateRecorder {
 public:
  StateRecorder(std::string path, absl::Duration min_interval, std::function<absl::Time()> clock);
  // A session started streaming `state.slot` of `state.system_id`.
  absl::Status Begin(SavedState state);
  // The pipeline confirmed `lsn`; writes if the last write is old enough.
  absl::Status OnConfirmed(Lsn lsn);
  // Writes what is not written yet.
  absl::Status Flush();
  const std::string& path() const { return path_; }
  int writes() const { return writes_; }

 private:
  absl::Status Write();

  std::string path_;
  absl::Duration min_interval_;
  std::function<absl::Time()> clock_;
  std::optional<SavedState> state_;
  bool dirty_ = false;
  absl::Time last_write_ = absl::InfinitePast();
  int writes_ = 0;
};

// What a start does with the slot, given what the server shows and what the
// state file remembers.
enum class SlotAction {
  kUse,       // the slot exists and is usable
  kCreate,    // first start: create it
  kRecreate,  // --accept-gap on an invalidated slot: drop it, create it again
};

struct SlotFacts {
  std::string_view slot;
  std::string_view system_id;  // of the server we are connected to
  std::string_view database;
  bool found = false;
  // Why PostgreSQL invalidated the slot (ClassifyInvalidation), and the value of the setting
  // that decided it when known (e.g. idle_replication_slot_timeout), for the message.
  Invalidation invalidation;
  std::string_view invalidation_setting;
  int timeline = 0;          // IDENTIFY_SYSTEM timeline of the server we are connected to
  // pg_replication_slots.synced: the slot was kept in step by a standby's slot
  // synchronization (PostgreSQL 17+ failover slot), so a new timeline of the
  // same system is a failover that kept it.
  bool synced = false;
  Lsn confirmed_flush;       // the slot's confirmed_flush_lsn, when found
  // The server is in recovery (a hot standby) now.
  bool in_recovery = false;
  // Where the state file's timeline left the history of the server's current
  // timeline (TIMELINE_HISTORY), when it is an ancestor; invalid when unknown.
  Lsn history_switch;
  bool create_slot = true;   // [source] create_slot
  bool accept_gap = false;   // --accept-gap
};

// FailedPreconditionError saying what happened and what to do when:
//  - the slot is missing but `saved` shows we streamed from it (slot vanished);
//  - `saved` is of another system identifier (restored or failed-over cluster);
//  - `saved` is of another timeline of the same system (a promoted standby or a
//    point-in-time restore) and the slot there was neither synchronized from
//    the old primary (pg_replication_slots.synced) nor at or behind the position
//    we confirmed (a slot kept by other means, e.g. Patroni's permanent slots),
//    nor at or behind `history_switch` (all it confirmed is in the history
//    the server kept, e.g. a standby that follows a new primary), nor the
//    promoted standby's own slot that outboxd streamed (`saved` on_standby and
//    the server no longer in recovery): resuming from a position past ours
//    on a branch the server left would skip events;
//  - the slot was invalidated, whatever the reason (the message names it);
// unless accept_gap. The error carries the payload kGapPayload (and
// kSlotInvalidatedPayload for an invalidated slot) so that the relay can tell
// these from other fatal errors without reading the message.
absl::StatusOr<SlotAction> DecideSlotAction(const SlotFacts& facts,
                                            const std::optional<SavedState>& saved);

inline constexpr char kGapPayload[] = "type.outboxd/gap-upstream";
inline constexpr char kSlotInvalidatedPayload[] = "type.outboxd/slot-invalidated";

// True when `status` reports a gap upstream / an invalidated slot.
bool IsGapUpstream(const absl::Status& status);
bool IsSlotInvalidated(const absl::Status& status);
// Marks `status` as a gap upstream, and as an invalidated slot if `invalidated`.
absl::Status MarkGap(absl::Status status, bool invalidated);

}  // namespace outboxd::replication
