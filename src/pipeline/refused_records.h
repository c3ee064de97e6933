// RefusedRecords: the records the broker refused as bad in a delivery report
// (too large for the topic, an unknown topic, ...), by where their events sit
// in the WAL, so that a later session dead-letters each event when it reads
// it again from the slot. The same in both delivery modes: the dead letter is
// built from the source row read again, never from the bytes that were
// produced (a `value = "payload"` record is not an envelope).
//
// The broker refuses a whole batch that is too large, so a record may have
// been refused for a neighbour's size. A refusal is certain only when the
// record was alone in flight; an uncertain one is produced again alone
// first, and dead-lettered only when that is refused too.
//
// One per stream (it lives in the DeliveryMode, across sessions). An entry
// goes once the slot is confirmed past its transaction.
#pragma once

#include <compare>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "common/lsn.h"
#include "pipeline/checkpoint.h"

namespace outboxd::pipeline {

// Where an event sits: its transaction's commit LSN (pgoutput Begin's
// final_lsn) and its position inside it. The same event has the same
// position every time PostgreSQL sends its transaction.
struct RecordPosition {
  Lsn commit_lsn;
  EventPosition event;
  friend auto operator<=>(const RecordPosition&, const RecordPosition&) = default;
};

class RefusedRecords {
 public:
  struct Refusal {
    std::string reason;  // a bad_event code
    std::string detail;  // the broker's words
    // The record was alone in flight: the refusal is its own, not its batch's.
    bool certain = false;
  };

  // Remembers the refusal of the record at `at`; a refusal already known
  // stays, and becomes certain when this one is. False when the map is full
  // (kMaxEntries: a session fails on its first refusal, so only what was in
  // flight can add to it): that record is produced again next time, refused
  // again, and remembered once there is room.
  bool Add(const RecordPosition& at, std::string_view reason, std::string_view detail, bool certain);
  // The refusal of the record at `at`, or nullptr.
  const Refusal* Find(const RecordPosition& at) const;
  // Drops the entries of transactions the slot is confirmed past: those that
  // committed before `confirmed` (a commit end LSN, or an idle keepalive's
  // position: every transaction before it is acknowledged).
  void ForgetConfirmed(Lsn confirmed);

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }

  static constexpr size_t kMaxEntries = 100000;

 private:
  std::map<RecordPosition, Refusal> entries_;
};

}  // namespace outboxd::pipeline
