// ExactlyOnceMode: [sink] delivery = "exactly_once". Whole PostgreSQL
// transactions go into Kafka transactions, each ending with a checkpoint
// record (the commit end LSN of its last whole PostgreSQL transaction) on the
// checkpoint topic; the slot is confirmed only after the Kafka commit, and a
// restart does not publish again what the newest committed checkpoint covers.
// Everything about Kafka transactions lives here; the pipeline calls it at the
// fixed points of DeliveryMode.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "pipeline/checkpoint.h"
#include "pipeline/delivery_mode.h"

namespace outboxd::pipeline {

struct ExactlyOnceOptions {
  // A Kafka transaction commits at a PostgreSQL commit once outboxd has read
  // everything the server sent, or once it is open `interval`, or holds
  // `max_events` events.
  absl::Duration interval = absl::Milliseconds(100);
  int64_t max_events = 10000;
  // A new Kafka transaction begins no earlier than this after the previous
  // commit returned. The coordinator answers a commit before it has written
  // the commit markers, and until it has, it refuses to add partitions to the
  // producer's next transaction (CONCURRENT_TRANSACTIONS), which librdkafka
  // retries only after 20 ms: without the gap, a steady stream pays those
  // 20 ms on a good share of its Kafka transactions (147 refusals in 846
  // at 1,000 events/s, docs/operations.md "Latency"). Real time, not the
  // session's clock; a stop ends it.
  absl::Duration transaction_gap = absl::ZeroDuration();
  // A PostgreSQL transaction still open after this long in one Kafka
  // transaction is committed in pieces (half of transaction.timeout.ms; config
  // validation keeps `interval` at or below it).
  absl::Duration split_after = absl::Seconds(30);
  // Longest wait for one commit (a stop shortens it to stop_flush_timeout).
  absl::Duration commit_timeout = absl::Seconds(60);
  // After each Kafka commit, before the slot is told: the test failpoint.
  std::function<void()> after_commit;
};

// Where the stream's checkpoints go, and the newest one committed. Set before
// each session by whoever prepares its transactional producer
// (commands/run.cc: init_transactions, then the checkpoint topic read back
// with read_committed); each Kafka commit moves `committed`.
struct CheckpointState {
  std::string checkpoint_topic;
  int32_t checkpoint_partition = 0;
  std::string checkpoint_key;
  // What a session does not publish again. Its identity fields (system,
  // timeline, slot, id) go into the next checkpoints.
  Checkpoint committed;
};

class ExactlyOnceMode final : public DeliveryMode {
 public:
  explicit ExactlyOnceMode(ExactlyOnceOptions options, std::string checkpoint_topic = "outboxd.checkpoints");

  CheckpointState& checkpoint() { return checkpoint_; }
  const CheckpointState& checkpoint() const { return checkpoint_; }

  std::string_view name() const override { return "exactly_once"; }
  void BeginSession(Session* session) override;
  void OnBegin(const pgoutput::BeginMessage& begin) override;
  // Covered by the committed checkpoint: skipped and counted
  // (outboxd_events_skipped_total).
  bool AlreadyInKafka(Lsn commit_lsn, EventPosition position) override;
  // Opens a Kafka transaction for the record about to be produced, if none
  // is, transaction_gap after the previous commit at the earliest.
  absl::Status BeforeProduce() override;
  // Nothing: latency is observed at the Kafka commit, when read_committed
  // consumers see the events.
  void OnAcknowledged(int64_t) override {}
  absl::Status OnCommit(const pgoutput::CommitMessage& commit) override;
  absl::Status AfterBatch(bool caught_up) override { return MaybeCommit(caught_up); }
  // Acknowledged is not enough inside a Kafka transaction: only its commit
  // makes its records visible (read_committed), so the slot waits for it.
  Lsn ClampFlush(Lsn safe) const override;
  // The split of a long PostgreSQL transaction, or the interval's commit.
  absl::Time NextDeadline() const override;
  // Commits whole PostgreSQL transactions; aborts part of one (the next start
  // publishes that transaction again, whole).
  absl::Status Stop() override;
  uint64_t UnacknowledgedAtStop(uint64_t unacknowledged) const override;
  absl::Status EndSession(absl::Status status) override;

 private:
  enum class Txn {
    kNone,     // no Kafka transaction
    kOpen,
    kFailed,   // cannot commit: aborted at the session's end (or at a stop)
    kAborted,  // ended without a commit (or the producer was fenced)
  };

  // Commits when one of the triggers holds; `caught_up`: nothing left to read.
  absl::Status MaybeCommit(bool caught_up);
  // Writes the checkpoint and commits: whole PostgreSQL transactions and,
  // inside one (a split), its events so far.
  absl::Status Commit();
  // The transaction cannot commit: marks it for the abort and returns the
  // error that ends the session.
  absl::Status Fail(const absl::Status& error);
  // The one abort: of an open or failed transaction, once, unless the
  // producer was fenced (then there is nothing to abort); counted.
  void Abort();
  // Inside a PostgreSQL transaction that has events in the open Kafka one.
  bool InsideTransactionWithEvents() const;

  ExactlyOnceOptions options_;
  CheckpointState checkpoint_;
  Session* session_ = nullptr;

  Txn txn_ = Txn::kNone;
  bool fenced_ = false;
  absl::Time opened_;                                     // session clock
  absl::Time committed_at_ = absl::InfinitePast();        // real time the last commit returned
  absl::Time stop_seen_ = absl::InfiniteFuture();         // session clock
  int64_t txn_events_ = 0;  // events of whole PostgreSQL transactions in it
  // Its PostgreSQL transactions' commit times and event counts, for publish_latency.
  std::vector<std::pair<int64_t, int64_t>> commit_times_;
  Lsn boundary_;    // nothing at or after it is confirmed while it is open
  Lsn last_whole_;  // commit end LSN of its newest whole PostgreSQL transaction

  // The open PostgreSQL transaction: its events not already in Kafka, and the
  // position of its newest event.
  pgoutput::BeginMessage begin_;
  int64_t pg_txn_events_ = 0;
  EventPosition newest_;
  bool split_logged_ = false;

  uint64_t skipped_events_ = 0;
  uint64_t skipped_transactions_ = 0;
  bool skipped_in_txn_ = false;
  bool skip_logged_ = false;
  std::string checkpoint_value_;  // reused
};

}  // namespace outboxd::pipeline
