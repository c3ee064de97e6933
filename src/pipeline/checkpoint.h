// Checkpoint: what one Kafka transaction of [sink] delivery = "exactly_once"
// says about the WAL. Each transaction ends with one on the checkpoint topic,
// keyed by system identifier and slot; on start outboxd reads the newest
// committed one and does not publish again what it covers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/lsn.h"

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
  uint32_t timeline = 0;  // informative: LSNs go on across a promotion
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
};

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
