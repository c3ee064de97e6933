#include "pipeline/exactly_once.h"

#include <algorithm>
#include <utility>

#include "common/format.h"
#include "common/status_macros.h"
#include "common/time.h"
#include "fmt/format.h"
#include "pipeline/sleep.h"
#include "telemetry/logging.h"

namespace outboxd::pipeline {

ExactlyOnceMode::ExactlyOnceMode(ExactlyOnceOptions options, std::string checkpoint_topic)
    : options_(std::move(options)) {
  checkpoint_.checkpoint_topic = std::move(checkpoint_topic);
}

void ExactlyOnceMode::BeginSession(Session* session) {
  session_ = session;
  txn_ = Txn::kNone;
  fenced_ = false;
  committed_at_ = absl::InfinitePast();
  stop_seen_ = absl::InfiniteFuture();
  txn_events_ = 0;
  commit_times_.clear();
  pg_txn_events_ = 0;
  newest_ = {};
  split_logged_ = false;
  skipped_events_ = 0;
  skipped_transactions_ = 0;
  skipped_in_txn_ = false;
  skip_logged_ = false;
}

void ExactlyOnceMode::OnBegin(const pgoutput::BeginMessage& begin) {
  begin_ = begin;
  pg_txn_events_ = 0;
  newest_ = {};
  skipped_in_txn_ = false;
  split_logged_ = false;
  if (!skip_logged_ && skipped_events_ > 0 && !checkpoint_.committed.CoversTransaction(begin.final_lsn)) {
    skip_logged_ = true;
    telemetry::LogInfo("exactly-once: skipped {} event(s) in {} transaction(s) already committed to Kafka "
                       "(checkpoint LSN {})",
                       skipped_events_, skipped_transactions_, checkpoint_.committed.lsn.ToString());
  }
}

bool ExactlyOnceMode::AlreadyInKafka(Lsn commit_lsn, EventPosition position) {
  newest_ = position;
  if (!checkpoint_.committed.CoversEvent(commit_lsn, position)) {
    ++pg_txn_events_;
    return false;
  }
  ++skipped_events_;
  skipped_in_txn_ = true;
  session_->metrics().events_skipped.fetch_add(1, std::memory_order_relaxed);
  return true;
}

absl::Status ExactlyOnceMode::BeforeProduce() {
  if (txn_ == Txn::kOpen) return absl::OkStatus();
  if (txn_ != Txn::kNone) {
    return absl::AbortedError("the Kafka transaction of this session failed; the session is ending");
  }
  // The gap after the previous commit (ExactlyOnceOptions::transaction_gap):
  // a few milliseconds at most, cut short by a stop.
  SleepUnlessStopped(committed_at_ + options_.transaction_gap - absl::Now(), session_->stop_flag(),
                     session_->stop_fd());
  if (absl::Status begun = session_->sink().BeginTransaction(); !begun.ok()) {
    if (kafka::IsFenced(begun)) {
      fenced_ = true;
      return begun;
    }
    return absl::AbortedError(fmt::format("cannot begin a Kafka transaction: {}", begun.message()));
  }
  txn_ = Txn::kOpen;
  opened_ = session_->Now();
  txn_events_ = 0;
  commit_times_.clear();
  last_whole_ = Lsn::Invalid();
  boundary_ = session_->read_through();
  return absl::OkStatus();
}

absl::Status ExactlyOnceMode::OnCommit(const pgoutput::CommitMessage& commit) {
  if (skipped_in_txn_) ++skipped_transactions_;
  if (txn_ != Txn::kOpen) return absl::OkStatus();
  if (pg_txn_events_ > 0) commit_times_.emplace_back(begin_.commit_time, pg_txn_events_);
  txn_events_ += pg_txn_events_;
  pg_txn_events_ = 0;
  last_whole_ = commit.end_lsn;
  return MaybeCommit(/*caught_up=*/false);
}

bool ExactlyOnceMode::InsideTransactionWithEvents() const {
  return session_->tracker().in_transaction() && pg_txn_events_ > 0;
}

absl::Status ExactlyOnceMode::MaybeCommit(bool caught_up) {
  if (txn_ != Txn::kOpen) return absl::OkStatus();
  const absl::Duration age = session_->Now() - opened_;
  if (InsideTransactionWithEvents()) {
    // Inside a PostgreSQL transaction that has events in this Kafka
    // transaction: only a transaction about to outlive the producer's
    // transaction.timeout.ms is committed before its end.
    if (age < options_.split_after) return absl::OkStatus();
    if (!split_logged_) {
      split_logged_ = true;
      session_->metrics().transactions_split.fetch_add(1, std::memory_order_relaxed);
      telemetry::LogWarn("exactly-once: the PostgreSQL transaction committed at LSN {} (xid {}) is still "
                         "streaming after {} in one Kafka transaction: committing it in pieces, so "
                         "read_committed consumers see it in more than one part (nothing is duplicated or "
                         "lost); raise transaction.timeout.ms in [sink.kafka] to keep such transactions whole",
                         begin_.final_lsn.ToString(), begin_.xid, absl::FormatDuration(age));
    }
    return Commit();
  }
  const bool due = age >= options_.interval || txn_events_ >= options_.max_events;
  if (due || (caught_up && !session_->tracker().in_transaction())) return Commit();
  return absl::OkStatus();
}

absl::Time ExactlyOnceMode::NextDeadline() const {
  if (txn_ != Txn::kOpen) return absl::InfiniteFuture();
  // MaybeCommit commits once either is reached, so after AfterBatch each lies
  // ahead; a deadline in the past would turn the loop's wait into a spin.
  return opened_ + (InsideTransactionWithEvents() ? options_.split_after : options_.interval);
}

Lsn ExactlyOnceMode::ClampFlush(Lsn safe) const {
  // A failed or aborted transaction too: nothing of it is confirmed.
  return txn_ == Txn::kNone ? safe : std::min(safe, boundary_);
}

absl::Status ExactlyOnceMode::Commit() {
  Session& session = *session_;
  Checkpoint checkpoint = checkpoint_.committed;
  if (last_whole_.valid()) checkpoint.lsn = last_whole_;
  checkpoint.partial_commit_lsn = Lsn::Invalid();
  checkpoint.partial_through = {};
  if (InsideTransactionWithEvents()) {
    checkpoint.partial_commit_lsn = begin_.final_lsn;
    checkpoint.partial_through = newest_;
    commit_times_.emplace_back(begin_.commit_time, pg_txn_events_);
  }
  checkpoint_value_ = EncodeCheckpoint(checkpoint);
  const kafka::ProduceRequest request{
      .topic = checkpoint_.checkpoint_topic,
      .key = checkpoint_.checkpoint_key,
      .value = checkpoint_value_,
      .token = 0,  // untracked: the commit reports on it
      .envelope = false,
      .partition = checkpoint_.checkpoint_partition,
  };
  if (absl::Status produced = session.ProduceUntracked(request); !produced.ok()) {
    txn_ = Txn::kFailed;  // a stop cut it short (Cancelled), or Kafka failed
    return absl::IsCancelled(produced) ? produced : Fail(produced);
  }
  const absl::Time commit_started = session.Now();
  absl::Time deadline = commit_started + options_.commit_timeout;
  while (true) {
    // Slices, so that status updates keep flowing while the broker is slow.
    absl::Status committed = session.sink().CommitTransaction(absl::Milliseconds(100));
    if (committed.ok()) break;
    if (!absl::IsDeadlineExceeded(committed)) return Fail(committed);
    if (session.stopping()) {
      stop_seen_ = std::min(stop_seen_, session.Now());
      deadline = std::min(deadline, stop_seen_ + session.stop_flush_timeout());
    }
    if (session.Now() >= deadline) {
      return Fail(absl::DeadlineExceededError(
          fmt::format("the Kafka transaction did not commit within {}: {}",
                      absl::FormatDuration(options_.commit_timeout), committed.message())));
    }
    RETURN_IF_ERROR(session.KeepStatusFlowing());
  }
  // Reports the commit's flush did not serve yet.
  session.sink().Poll(absl::ZeroDuration());
  txn_ = Txn::kNone;
  txn_events_ = 0;
  pg_txn_events_ = 0;
  // PostgreSQL commit to Kafka commit, per event: when read_committed consumers can see it.
  const absl::Time now = session.Now();
  for (const auto& [commit_time, events] : commit_times_) {
    const double seconds = absl::ToDoubleSeconds(now - PgTimestampToTime(commit_time));
    session.metrics().publish_latency.Observe(seconds, static_cast<uint64_t>(events));
  }
  commit_times_.clear();
  checkpoint_.committed = std::move(checkpoint);
  session.metrics().kafka_transactions.Add("committed");
  committed_at_ = absl::Now();
  if (telemetry::LogEnabled(telemetry::LogLevel::kDebug)) {
    telemetry::LogDebug("exactly-once: Kafka transaction committed through LSN {} in {} ({} open)",
                        checkpoint_.committed.lsn.ToString(), absl::FormatDuration(now - commit_started),
                        absl::FormatDuration(now - opened_));
  }
  if (options_.after_commit) options_.after_commit();
  return absl::OkStatus();
}

absl::Status ExactlyOnceMode::Fail(const absl::Status& error) {
  txn_ = Txn::kFailed;  // still clamps the flush: nothing of it is confirmed
  if (kafka::IsFenced(error)) {
    fenced_ = true;
    return error;  // the relay goes back to the slot as a standby
  }
  return absl::AbortedError(fmt::format(
      "Kafka transaction aborted ({}); nothing in it is visible to read_committed consumers and the "
      "slot was not confirmed past it: restarting from the slot, skipping what the checkpoint shows "
      "committed",
      error.message()));
}

void ExactlyOnceMode::Abort() {
  if (txn_ != Txn::kOpen && txn_ != Txn::kFailed) return;
  txn_ = Txn::kAborted;
  session_->metrics().kafka_transactions.Add("aborted");
  if (fenced_ || kafka::IsFenced(session_->sink().FatalError())) return;  // the producer is done
  if (absl::Status aborted = session_->sink().AbortTransaction(absl::Seconds(5)); !aborted.ok()) {
    telemetry::LogDebug("abort_transaction: {}", aborted.message());
  }
}

absl::Status ExactlyOnceMode::Stop() {
  stop_seen_ = std::min(stop_seen_, session_->Now());
  if (txn_ == Txn::kFailed) Abort();  // before the flush, which would wait on its records
  if (txn_ != Txn::kOpen) return absl::OkStatus();
  if (InsideTransactionWithEvents()) {
    Abort();
    return absl::CancelledError(
        "stopped inside a PostgreSQL transaction: its part in the open Kafka transaction was aborted, "
        "and the next start publishes that transaction again, whole");
  }
  absl::Status committed = Commit();
  Abort();  // when the commit failed or the stop cut it short
  return committed;
}

uint64_t ExactlyOnceMode::UnacknowledgedAtStop(uint64_t unacknowledged) const {
  if (txn_ == Txn::kNone) return unacknowledged;
  return static_cast<uint64_t>(txn_events_ + pg_txn_events_);
}

absl::Status ExactlyOnceMode::EndSession(absl::Status status) {
  if (kafka::IsFenced(status)) fenced_ = true;
  if (txn_ == Txn::kOpen && !status.ok()) {
    telemetry::LogInfo("exactly-once: the session ended with a Kafka transaction open ({}): aborting it, so "
                       "that read_committed consumers do not wait for transaction.timeout.ms",
                       status.message());
  }
  Abort();
  txn_ = Txn::kNone;
  session_ = nullptr;
  return status;
}

}  // namespace outboxd::pipeline
