// What PgReplicationStream::Start reads about the slot and the server before it
// decides what to do (DecideSlotAction): the slot's row of pg_replication_slots
// with the columns each server version has, the setting that decided an
// invalidation, where the state file's timeline left the server's history, and
// whether the server is a hot standby that may host the slot. Each runs on the
// replication connection (replication=database accepts SQL and SHOW).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/lsn.h"
#include "replication/pg_connection.h"
#include "replication/pg_replication_stream.h"
#include "replication/slot_invalidation.h"
#include "replication/state_file.h"

namespace outboxd::replication {

// The slot's row; `*found` false (and a default SlotState) when there is none.
// The server's errors as Query reports them; InternalError for a row it cannot
// read.
absl::StatusOr<SlotState> ReadSlot(PgConnection& conn, std::string_view slot, bool* found);

// The value of the setting that decided an invalidation (max_slot_wal_keep_size
// for wal_removed, idle_replication_slot_timeout for idle_timeout), for its
// message; "" when none applies or it cannot be read.
std::string DecidingSetting(PgConnection& conn, const Invalidation& invalidation);

// Where the timeline of `saved` left the history of the server's timeline
// (TIMELINE_HISTORY), when `saved` is of this slot and system on another
// timeline and that one is an ancestor; invalid otherwise, or when the history
// cannot be read (DecideSlotAction then leans to "possible gap").
Lsn HistorySwitch(PgConnection& conn, const std::optional<SavedState>& saved, std::string_view slot,
                  const SystemInfo& info);

// Fills info->in_recovery and, on a hot standby, its hot_standby_feedback and
// primary_slot_name; then whether the standby may host the slot
// (CheckStandbySource: FailedPreconditionError with what to do).
absl::Status ReadStandby(PgConnection& conn, const StreamOptions& options, const SlotState& slot, bool found,
                         SystemInfo* info);

}  // namespace outboxd::replication
