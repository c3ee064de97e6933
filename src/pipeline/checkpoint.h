// Checkpoint: what one Kafka transaction of [sink] delivery = "exactly_once"
// says about the WAL. Each transaction ends with one on the checkpoint topic,
// keyed by system identifier and slot; on start outboxd reads the newest
// committed one and does not publish again what it covers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lsn.h"
#include "replication/timeline.h"

namespace outboxd::pipeline {

// Where an event sits inside its PostgreSQL transaction: the LSN of its
// change, and its rank among the events at that same LSN (a multi-row insert
// such as COPY writes several rows in one WAL record).
struct EventPosition {
  Lsn lsn;
  uint32_t index = 0;
  friend auto operator<=>(const EventPosition&, const EventPosition&) = default;
};

struct Checkpoint {
  std::string system_id;  // the cluster's system identifier, in decimal
  // The server's timeline when it was written: its LSNs are positions in that
  // timeline's history (TrustCheckpoint).
  uint32_t timeline = 0;
  std::string slot;
  std::string transactional_id;
  // The commit end LSN of the newest PostgreSQL transaction entirely in Kafka;
  // Invalid: none yet.
  Lsn lsn;
  // A PostgreSQL transaction too long for one Kafka transaction, committed in
  // pieces: its commit LSN (pgoutput Begin's final_lsn; Invalid: none) and
  // the position of its last event already in Kafka.
  Lsn partial_commit_lsn;
  EventPosition partial_through;

  bool empty() const { return !lsn.valid() && !partial_commit_lsn.valid(); }
  // Whether the PostgreSQL transaction with commit LSN `commit_lsn` is in
  // Kafka entirely (committed before the checkpoint's `lsn`).
  bool CoversTransaction(Lsn commit_lsn) const { return commit_lsn < lsn; }
  // Whether the event at `position` of the transaction `commit_lsn` is in Kafka.
  bool CoversEvent(Lsn commit_lsn, EventPosition position) const {
    return CoversTransaction(commit_lsn) ||
           (partial_commit_lsn.valid() && commit_lsn == partial_commit_lsn && position <= partial_through);
  }
  // Whether it covers anything at or past `position`: a transaction whose
  // commit record ends past it, or a piece of one committed at or past it.
  bool ReachesPast(Lsn position) const {
    return lsn > position || (partial_commit_lsn.valid() && partial_commit_lsn >= position);
  }
  // Keeps only what lies before `bound`, so that CoversTransaction and
  // CoversEvent, and every checkpoint written after it, say no more than that:
  // `lsn` lowered to `bound`, the partial transaction dropped when committed
  // at or past it. Invalid: nothing is covered.
  void BoundTo(Lsn bound) {
    if (lsn > bound) lsn = bound;
    if (partial_commit_lsn.valid() && partial_commit_lsn >= bound) {
      partial_commit_lsn = Lsn::Invalid();
      partial_through = {};
    }
  }
};

// What the server a session streams from says about its WAL: the history a
// checkpoint must lie in to be believed.
struct ServerWal {
  uint32_t timeline = 0;  // IDENTIFY_SYSTEM timeline
  Lsn position;           // IDENTIFY_SYSTEM xlogpos: flushed (replayed, on a standby)
  // The ancestors of `timeline` and where each left its history
  // (TIMELINE_HISTORY), when NeedsTimelineHistory asked for them; an error
  // when they could not be read.
  absl::StatusOr<std::vector<replication::TimelineSwitch>> history = std::vector<replication::TimelineSwitch>();
};

// Why a checkpoint was trusted less than it says: the label of
// outboxd_checkpoint_bounded_total{reason}.
inline constexpr std::string_view kBoundTimeline = "timeline";
inline constexpr std::string_view kBoundAheadOfServer = "ahead_of_server";

struct CheckpointBound {
  std::string_view reason;  // kBoundTimeline or kBoundAheadOfServer
  Lsn bound;                // what is still trusted lies before it; Invalid: nothing
  std::string why;          // what was found, one sentence for the log
};

// Whether TrustCheckpoint needs the history of `server_timeline` to judge
// `checkpoint`: one written on an earlier timeline.
bool NeedsTimelineHistory(const Checkpoint& checkpoint, uint32_t server_timeline);

// Bounds `checkpoint` in place (Checkpoint::BoundTo) to what the server's WAL
// history holds, and returns each bound that cut something off, in the order
// applied (empty: trusted as it is):
//  1. written on another timeline: trusted only before the switch point where
//     that timeline left the server's history (a promotion of a standby that
//     had not replayed everything the old primary wrote, a point-in-time
//     restore); not at all when its timeline is not an ancestor of the
//     server's (a later or a sibling timeline, none recorded) or the history
//     could not be read. kBoundTimeline.
//  2. reaching past the server's WAL position: not trusted at all. On one
//     timeline that means the server went back (a restore of an earlier copy
//     with the same system identifier), and where its history parts from the
//     checkpoint's cannot be known. kBoundAheadOfServer.
// A transaction the checkpoint no longer covers is published again: at worst
// a duplicate, never a loss.
std::vector<CheckpointBound> TrustCheckpoint(Checkpoint* checkpoint, const ServerWal& server);

// "<system_id>/<slot>".
std::string CheckpointKey(std::string_view system_id, std::string_view slot);

// JSON, readable with any console consumer:
// {"system_id":"7312...","timeline":1,"slot":"outboxd","transactional_id":"...","lsn":"0/1A2B3C8",
//  "partial":{"commit_lsn":"0/1A2B3F0","through_lsn":"0/1A2B3D0","index":0}}
std::string EncodeCheckpoint(const Checkpoint& checkpoint);

// Anyone who may write the topic can write a record there: bounded, and
// InvalidArgumentError saying what is wrong rather than a guess.
absl::StatusOr<Checkpoint> DecodeCheckpoint(std::string_view json);

}  // namespace outboxd::pipeline
