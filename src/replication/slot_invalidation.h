// Why PostgreSQL invalidated a replication slot, read from pg_replication_slots as each server
// version says it, and what that means for an operator. Pure: column values in, names and
// sentences out.
//
//   13-15  wal_status = 'lost'                        only WAL removal can invalidate a slot
//   16     + conflicting (true: a conflict with recovery on a standby, rows_removed or
//            wal_level_insufficient; false: wal_removed; NULL: physical or not invalidated)
//   17     + invalidation_reason: wal_removed, rows_removed, wal_level_insufficient
//   18     + invalidation_reason idle_timeout (idle_replication_slot_timeout)
//
// Every invalidation shows as wal_status 'lost' from 16 on, whatever the reason: the reason is
// what tells the operator what to fix.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace outboxd::replication {

enum class InvalidationKind {
  kNone,                  // valid
  kWalRemoved,            // fell more than max_slot_wal_keep_size behind
  kRowsRemoved,           // standby: the primary removed catalog rows the slot needed
  kWalLevelInsufficient,  // standby: the primary's wal_level went below logical
  kIdleTimeout,           // 18: unused for longer than idle_replication_slot_timeout
  kConflict,              // 16: a conflict with recovery; the server does not say which
  kLost,                  // 13-15: wal_status lost, no reason column
  kOther,                 // a reason this outboxd does not know (a newer server)
};

struct Invalidation {
  InvalidationKind kind = InvalidationKind::kNone;
  // The server's word: the invalidation_reason value (17+), "conflict" (16), "wal_removed"
  // (16 without a conflict), "lost" (13-15); empty when valid.
  std::string reason;

  bool invalidated() const { return kind != InvalidationKind::kNone; }
};

// What a slot's row says. `wal_status` is "" before 13; `conflicting` is nullopt before 16 or
// when NULL; `invalidation_reason` is nullopt before 17 or when NULL.
Invalidation ClassifyInvalidation(std::string_view wal_status, std::optional<bool> conflicting,
                                  const std::optional<std::string>& invalidation_reason);

// One clause on what happened, for messages that start "invalidated by PostgreSQL (<reason>: "
// e.g. "it was not streamed for longer than idle_replication_slot_timeout". `setting` is the
// value of the setting that decided it when known (max_slot_wal_keep_size for wal_removed,
// idle_replication_slot_timeout for idle_timeout), "" otherwise.
std::string InvalidationCause(const Invalidation& invalidation, std::string_view setting = "");

// What to change so that it does not happen again (one sentence, no trailing period).
std::string InvalidationPrevention(const Invalidation& invalidation);

// "<reason>: <cause>", as the invalidation messages name it; "wal_status lost: ..." before 16,
// so the oldest servers read as they always did.
std::string DescribeInvalidation(const Invalidation& invalidation, std::string_view setting = "");

}  // namespace outboxd::replication
