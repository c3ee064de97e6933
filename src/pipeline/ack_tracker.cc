#include "pipeline/ack_tracker.h"

#include <algorithm>
#include <utility>

namespace outboxd::pipeline {

void AckTracker::Ring::push_back(const Txn& txn) {
  if (size_ == buffer_.size()) {
    std::vector<Txn> grown(buffer_.empty() ? 16 : buffer_.size() * 2);
    for (size_t i = 0; i < size_; ++i) grown[i] = (*this)[i];
    buffer_ = std::move(grown);
    head_ = 0;
  }
  (*this)[size_++] = txn;
}

void AckTracker::Begin(int64_t commit_time) {
  Txn txn;
  txn.commit_time = commit_time;
  pending_.push_back(txn);
  open_ = true;
}

int64_t AckTracker::CommitTimeOf(uint64_t token) const {
  if (token < first_seq_ || token - first_seq_ >= pending_.size()) return 0;
  return pending_[token - first_seq_].commit_time;
}

uint64_t AckTracker::AddEvent() {
  // Called only inside Begin/Commit; the open transaction is the back.
  ++pending_.back().outstanding;
  ++inflight_events_;
  return first_seq_ + pending_.size() - 1;
}

void AckTracker::Commit(Lsn end_lsn) {
  pending_.back().end_lsn = end_lsn;
  pending_.back().committed = true;
  open_ = false;
  // Nothing left to wait for in this one: fold it into the committed entry
  // before it, which then ends here (its token is never handed out again,
  // since all its reports are in). Not after a failure: a folded entry
  // could carry the end LSN of a failed transaction.
  if (pending_.size() >= 2 && pending_.back().outstanding == 0 && !failed_) {
    pending_.pop_back();
    pending_.back().end_lsn = std::max(pending_.back().end_lsn, end_lsn);
  }
  Advance();
}

void AckTracker::Received(Lsn lsn) {
  if (open_ || failed_) return;
  if (pending_.empty()) {
    safe_lsn_ = std::max(safe_lsn_, lsn);
  } else {
    pending_.back().end_lsn = std::max(pending_.back().end_lsn, lsn);
  }
}

void AckTracker::OnDelivery(uint64_t token, bool ok) {
  if (token < first_seq_ || token - first_seq_ >= pending_.size()) return;  // not ours
  Txn& txn = pending_[token - first_seq_];
  if (txn.outstanding == 0) return;
  --txn.outstanding;
  --inflight_events_;
  if (!ok && (!failed_ || token < failed_seq_)) {
    failed_ = true;
    failed_seq_ = token;
  }
  Advance();
}

void AckTracker::Advance() {
  // A failed transaction never completes: the prefix before it may still be
  // confirmed, nothing at or after it ever is, even if fully acknowledged later.
  while (!pending_.empty() && pending_.front().committed && pending_.front().outstanding == 0 &&
         !(failed_ && first_seq_ >= failed_seq_)) {
    safe_lsn_ = pending_.front().end_lsn;
    pending_.pop_front();
    ++first_seq_;
  }
}

}  // namespace outboxd::pipeline
