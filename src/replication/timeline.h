// Where a server's WAL stands: the results of the replication commands
// IDENTIFY_SYSTEM and TIMELINE_HISTORY, parsed. Pure: rows and bytes in,
// structs out; the commands are sent by the shell (pg_replication_stream.h).
//
// IDENTIFY_SYSTEM answers one row (protocol-replication.html):
//   systemid text, timeline int4, xlogpos text ("X/X": the WAL flushed on a
//   primary, replayed on a standby), dbname text (NULL without a database)
//
// TIMELINE_HISTORY tli answers one row: filename text ("00000002.history"),
// content bytea, sent raw (the file as it is on disk, not hex-escaped). The
// file of timeline N lists N's ancestors, oldest first, one per line
// (PostgreSQL src/backend/access/transam/timeline.c):
//   <parent timeline ID> <tab> <switch point X/X> <tab> <reason, free text>
// Lines starting with '#' and blank lines are ignored. Each line says: the WAL
// of that timeline is part of N's history up to its switch point; from there
// on the next timeline took over. Timeline 1 has no file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lsn.h"

namespace outboxd::replication {

// IDENTIFY_SYSTEM's row.
struct SystemIdentity {
  std::string system_id;  // decimal, as the server prints it
  uint32_t timeline = 0;
  Lsn xlog_pos;
  std::string database;  // empty: NULL
};

// DataLossError naming the column when the row has fewer than 4 columns, a
// system id that is not decimal digits, a timeline that is not a number from
// 1 to 2^31 - 1, or an xlogpos that is not an LSN. The values come from the
// server: bounded, never trusted as they are.
absl::StatusOr<SystemIdentity> ParseIdentifySystem(const std::vector<std::optional<std::string>>& row);

// One line of a timeline history file: the WAL of `timeline` belongs to the
// current history up to (not including) `switch_point`.
struct TimelineSwitch {
  uint32_t timeline = 0;
  Lsn switch_point;
  friend bool operator==(const TimelineSwitch&, const TimelineSwitch&) = default;
};

// Larger than any real history (a line is about 40 bytes plus its reason):
// what the server sends is refused past these instead of held.
inline constexpr size_t kMaxTimelineHistoryBytes = 1 << 20;
inline constexpr size_t kMaxTimelineHistoryEntries = 10000;

// The ancestors of `current` (the timeline whose history file `content` is),
// oldest first. DataLossError naming the line for: content over
// kMaxTimelineHistoryBytes or holding a NUL byte, more than
// kMaxTimelineHistoryEntries entries, a line that is not "<timeline>
// <switch point> [reason]", a timeline ID of 0, not increasing, or not below
// `current`, and a switch point before the previous one.
absl::StatusOr<std::vector<TimelineSwitch>> ParseTimelineHistory(std::string_view content, uint32_t current);

}  // namespace outboxd::replication
