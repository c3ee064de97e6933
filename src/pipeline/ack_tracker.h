// AckTracker: decides the safe flush LSN from delivery reports.
//
// Each transaction is tracked from Begin to Commit with the count of its events
// not yet acknowledged. The safe LSN is the end_lsn of the newest committed
// transaction whose events, and every earlier transaction's events, were all
// acknowledged. Reports may arrive in any order (partitions are independent). A
// failed report freezes progress for good: the prefix before the failed
// transaction may still complete, but nothing at or after it is ever confirmed by this tracker (the pipeline restarts from the
// slot with a new one).
//
// Memory stays bounded behind a slow acknowledgement: a transaction that ends
// with nothing unacknowledged (no events, e.g. changes to a published but
// unmapped table) is folded into the committed entry before it, which only
// moves that entry's end LSN; so is a keepalive's position (Received).
#pragma once

#include <cstdint>
#include <vector>

#include "common/lsn.h"

namespace outboxd::pipeline {

class AckTracker {
 public:
  // Opens a transaction. At most one is open at a time (pgoutput sends whole
  // transactions in commit order). `commit_time` is kept for latency metrics.
  void Begin(int64_t commit_time = 0);
  // Registers one event of the open transaction; returns the token its delivery
  // report must carry.
  uint64_t AddEvent();
  // Closes the open transaction with its end LSN.
  void Commit(Lsn end_lsn);
  // A delivery report for a token returned by AddEvent; exactly one per event
  // (librdkafka reports every message once). Unknown tokens are ignored.
  void OnDelivery(uint64_t token, bool ok);
  // The server sent everything before `lsn` and nothing unacknowledged lies
  // after the last transaction (a keepalive's walEnd between transactions): a
  // pseudo-transaction with no events ending at `lsn`. Confirmed once
  // everything before it is acknowledged. Ignored inside a transaction (the
  // position may be mid-transaction) and after a failed report.
  void Received(Lsn lsn);

  // End LSN of the newest fully acknowledged prefix; Invalid() until one.
  Lsn safe_lsn() const { return safe_lsn_; }
  bool failed() const { return failed_; }
  // No open transaction and no unacknowledged event.
  bool idle() const { return !open_ && pending_.empty(); }
  bool in_transaction() const { return open_; }
  // The commit time given to Begin for the transaction of `token`, or 0.
  int64_t CommitTimeOf(uint64_t token) const;
  uint64_t inflight_events() const { return inflight_events_; }
  size_t pending_transactions() const { return pending_.size(); }

 private:
  struct Txn {
    Lsn end_lsn;
    int64_t commit_time = 0;
    uint64_t outstanding = 0;
    bool committed = false;
  };
  void Advance();

  // A FIFO of transactions over a buffer that only grows: once warm, opening
  // and confirming transactions allocates nothing (std::deque allocates a
  // block every few transactions as its front moves on).
  class Ring {
   public:
    bool empty() const { return size_ == 0; }
    size_t size() const { return size_; }
    Txn& operator[](size_t i) { return buffer_[(head_ + i) & (buffer_.size() - 1)]; }
    const Txn& operator[](size_t i) const { return buffer_[(head_ + i) & (buffer_.size() - 1)]; }
    Txn& front() { return (*this)[0]; }
    Txn& back() { return (*this)[size_ - 1]; }
    void push_back(const Txn& txn);
    void pop_front() {
      head_ = (head_ + 1) & (buffer_.size() - 1);
      --size_;
    }
    void pop_back() { --size_; }

   private:
    std::vector<Txn> buffer_;  // a power of two in size
    size_t head_ = 0;
    size_t size_ = 0;
  };

  Ring pending_;  // front has sequence number first_seq_
  uint64_t first_seq_ = 0;
  bool open_ = false;
  bool failed_ = false;
  uint64_t failed_seq_ = 0;  // the oldest transaction with a failed report
  uint64_t inflight_events_ = 0;
  Lsn safe_lsn_;
};

}  // namespace outboxd::pipeline
