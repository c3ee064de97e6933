// The pipeline in exactly-once mode over test doubles: which records a Kafka
// transaction holds, what its checkpoint says, when the slot is confirmed, and
// what a restart skips. The real producer and broker: tests/integration.
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "fakes.h"
#include "txn_sink.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pipeline/checkpoint.h"
#include "pipeline/exactly_once.h"
#include "pipeline/pipeline.h"

namespace outboxd::pipeline {
namespace {

using ::outboxd::testing::Begin;
using ::outboxd::testing::Commit;
using ::outboxd::testing::FakeSink;
using ::outboxd::testing::FakeStream;
using ::outboxd::testing::Insert;
using ::outboxd::testing::Relation;
using ::outboxd::testing::TxnSink;
using ::outboxd::testing::kCheckpoints;
using ::testing::HasSubstr;

constexpr uint32_t kOutboxOid = 16400;
constexpr uint32_t kUuid = 2950, kText = 25, kJsonb = 3802;

std::string Id(int n) { return fmt::format("00000000-0000-4000-8000-{:012d}", n); }

class ExactlyOnceTest : public ::testing::Test {
 protected:
  ExactlyOnceTest() : stream_(&now_) {
    options_.tables.push_back(outbox::TableConfig{});
    options_.status_interval = absl::Seconds(10);
    options_.feedback_delay = absl::ZeroDuration();
    checkpoint_.checkpoint_topic = kCheckpoints;
    checkpoint_.checkpoint_key = "7000/outboxd";
    checkpoint_.committed.system_id = "7000";
    checkpoint_.committed.slot = "outboxd";
    checkpoint_.committed.timeline = 1;
    eos_.interval = absl::Seconds(5);
    eos_.split_after = absl::Seconds(30);
    stream_.PushData(0x100, Relation(kOutboxOid, "public", "outbox",
                                     {{"id", kUuid}, {"aggregate_type", kText}, {"aggregate_id", kText},
                                      {"event_type", kText}, {"payload", kJsonb}}));
  }

  void PushInsert(uint64_t lsn, int n) {
    stream_.PushData(lsn, Insert(kOutboxOid, {Id(n), "Order", fmt::format("order-{}", n), "OrderCreated", "{}"}));
  }
  // Begin (final LSN lsn+0x40), `events` inserts at lsn+1.., Commit ending at lsn+0x50.
  void PushTxn(uint64_t lsn, uint32_t xid, int first, int events) {
    stream_.PushData(lsn, Begin(lsn + 0x40, xid));
    for (int i = 0; i < events; ++i) PushInsert(lsn + 1 + i, first + i);
    stream_.PushData(lsn + 0x40, Commit(lsn + 0x40, lsn + 0x50));
  }

  // Runs until the script ran dry a few times: the catch-up commit (nothing
  // left to read) happens before the stop.
  absl::Status Run() {
    stream_.on_empty = [this] {
      if (++empty_reads_ >= 3) stop_ = true;
    };
    auto pipeline = MakePipeline(&stream_, &sink_);
    if (!pipeline.ok()) return pipeline.status();
    return (*pipeline)->Run(stop_);
  }

  // The stream's mode, made at first use from eos_ and checkpoint_ as the
  // test set them: it outlives each session.
  ExactlyOnceMode& mode() {
    if (mode_ == nullptr) {
      mode_ = std::make_unique<ExactlyOnceMode>(eos_, kCheckpoints);
      mode_->checkpoint() = checkpoint_;
      options_.delivery = mode_.get();
    }
    return *mode_;
  }
  const Checkpoint& committed() { return mode().checkpoint().committed; }
  // A new session of the same stream: PostgreSQL sends transaction 700 again
  // (Begin 0x1000, the events `ids` at 0x1001.., Commit ending at 0x1050);
  // `sink` is the broker. Sets last_replay_flushed_.
  absl::Status RunReplay(TxnSink& sink, const std::vector<int>& ids) {
    FakeStream replay(&now_);
    replay.PushData(0x100, Relation(kOutboxOid, "public", "outbox",
                                    {{"id", kUuid}, {"aggregate_type", kText}, {"aggregate_id", kText},
                                     {"event_type", kText}, {"payload", kJsonb}}));
    replay.PushData(0x1000, Begin(0x1040, 700));
    for (size_t i = 0; i < ids.size(); ++i) {
      replay.PushData(0x1001 + i, Insert(kOutboxOid, {Id(ids[i]), "Order", fmt::format("order-{}", ids[i]),
                                                      "OrderCreated", "{}"}));
    }
    replay.PushData(0x1040, Commit(0x1040, 0x1050));
    int empty = 0;
    replay.on_empty = [this, &empty] {
      if (++empty >= 3) stop_ = true;
    };
    stop_ = false;
    auto pipeline = MakePipeline(&replay, &sink);
    if (!pipeline.ok()) return pipeline.status();
    absl::Status status = (*pipeline)->Run(stop_);
    last_replay_flushed_ = replay.max_flushed();
    return status;
  }
  static std::vector<std::string> Topics(const std::vector<testing::Produced>& records) {
    std::vector<std::string> topics;
    for (const auto& p : records) topics.push_back(p.topic);
    return topics;
  }
  // The broker acknowledges each record at the next poll (before the commit),
  // and refuses those whose key is in `refuse` as too large.
  static void RefuseKeys(TxnSink& sink, std::set<std::string> refuse) {
    sink.on_poll = [&sink, refuse = std::move(refuse)] {
      while (sink.pending() > 0) {
        const testing::Produced& next = sink.produced[sink.produced.size() - sink.pending()];
        sink.DeliverAt(0, refuse.contains(next.key) && next.topic == "outbox.event.Order"
                              ? BadEventError(bad_event::kMessageTooLarge, "Broker: Message size too large")
                              : absl::OkStatus());
      }
    };
  }
  Lsn last_replay_flushed_;
  absl::StatusOr<std::unique_ptr<Pipeline>> MakePipeline(replication::ReplicationStream* stream,
                                                         kafka::EventSink* sink) {
    mode();
    return Pipeline::Create(stream, sink, options_, &metrics_, [this] { return now_; });
  }

  absl::Time now_ = absl::FromUnixSeconds(1800000000);
  FakeStream stream_;
  TxnSink sink_;
  telemetry::Metrics metrics_;
  ExactlyOnceOptions eos_;
  CheckpointState checkpoint_;
  std::unique_ptr<ExactlyOnceMode> mode_;
  PipelineOptions options_;
  std::atomic<bool> stop_{false};
  int empty_reads_ = 0;
};

TEST_F(ExactlyOnceTest, EachKafkaTransactionEndsWithACheckpointOfItsLastWholeTransaction) {
  PushTxn(0x1000, 700, 1, 2);
  PushTxn(0x2000, 701, 3, 1);
  ASSERT_TRUE(Run().ok());
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(1), Id(2), Id(3)}));
  const std::vector<Checkpoint> checkpoints = sink_.Checkpoints();
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_EQ(checkpoints.back().lsn, Lsn(0x2050));
  EXPECT_EQ(checkpoints.back().system_id, "7000");
  EXPECT_FALSE(checkpoints.back().partial_commit_lsn.valid());
  // Each checkpoint is its transaction's last record, on the key's partition.
  EXPECT_EQ(sink_.visible.back().topic, kCheckpoints);
  EXPECT_EQ(sink_.visible.back().key, "7000/outboxd");
  EXPECT_EQ(committed().lsn, Lsn(0x2050));
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x2050));
  EXPECT_EQ(metrics_.kafka_transactions.Get("committed"), static_cast<uint64_t>(sink_.commits));
  // Latency is observed at the Kafka commit, once per event (not at the acknowledgement too).
  EXPECT_THAT(metrics_.RenderPrometheus(), HasSubstr("outboxd_publish_latency_seconds_count 3\n"));
}

TEST_F(ExactlyOnceTest, TheSlotIsNotConfirmedBeforeTheKafkaCommitReturns) {
  PushTxn(0x1000, 700, 1, 2);
  int attempts = 0;
  // The broker takes three slices to commit; meanwhile every record is acknowledged.
  sink_.commit_hook = [&]() -> absl::Status {
    sink_.DeliverAll(absl::OkStatus());
    stream_.PushKeepalive(0x1050, /*reply=*/true);
    if (++attempts < 4) return absl::DeadlineExceededError("Local: Timed out");
    EXPECT_LT(stream_.max_flushed(), Lsn(0x1050)) << "confirmed before the commit";
    return absl::OkStatus();
  };
  ASSERT_TRUE(Run().ok());
  EXPECT_EQ(attempts, 4);
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x1050));
}

TEST_F(ExactlyOnceTest, ARestartSkipsTransactionsTheCheckpointCovers) {
  checkpoint_.committed.lsn = Lsn(0x2050);  // transactions up to the one ending at 0x2050 are in Kafka
  PushTxn(0x1000, 700, 1, 2);
  PushTxn(0x2000, 701, 3, 1);
  PushTxn(0x3000, 702, 4, 2);
  ASSERT_TRUE(Run().ok());
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(4), Id(5)}));
  EXPECT_EQ(metrics_.events_skipped.load(), 3u);
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x3050));
}

TEST_F(ExactlyOnceTest, APartialCheckpointSkipsExactlyTheEventsAlreadyCommitted) {
  checkpoint_.committed.lsn = Lsn(0x1050);
  checkpoint_.committed.partial_commit_lsn = Lsn(0x2040);
  checkpoint_.committed.partial_through = {Lsn(0x2002), 0};  // the second event of the transaction at 0x2000
  PushTxn(0x2000, 701, 1, 4);
  ASSERT_TRUE(Run().ok());
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(3), Id(4)}));
  EXPECT_EQ(metrics_.events_skipped.load(), 2u);
}

TEST_F(ExactlyOnceTest, EventsAtOneLsnAreTellApartByTheirRank) {
  // A multi-row insert (COPY) puts rows in one WAL record: one LSN, several events.
  checkpoint_.committed.lsn = Lsn(0x1050);
  checkpoint_.committed.partial_commit_lsn = Lsn(0x2040);
  checkpoint_.committed.partial_through = {Lsn(0x2001), 1};
  stream_.PushData(0x2000, Begin(0x2040, 701));
  for (int n = 1; n <= 3; ++n) PushInsert(0x2001, n);
  stream_.PushData(0x2040, Commit(0x2040, 0x2050));
  ASSERT_TRUE(Run().ok());
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(3)}));
}

TEST_F(ExactlyOnceTest, ATransactionThatOutlivesHalfTheTimeoutIsCommittedInPieces) {
  eos_.split_after = absl::Seconds(1);
  stream_.PushData(0x2000, Begin(0x2040, 701));
  PushInsert(0x2001, 1);
  stream_.PushAction([this] { now_ += absl::Seconds(2); });
  PushInsert(0x2002, 2);
  stream_.PushAction([] {});  // ends the batch: the split is decided after event 2
  PushInsert(0x2003, 3);
  stream_.PushAction([this] {
    ASSERT_GE(sink_.commits, 1) << "the first piece was not committed";
    const Checkpoint piece = sink_.Checkpoints().front();
    EXPECT_EQ(piece.partial_commit_lsn, Lsn(0x2040));
    EXPECT_EQ(piece.partial_through.lsn, Lsn(0x2002));
    EXPECT_LT(stream_.max_flushed(), Lsn(0x2050)) << "the slot passed a transaction not entirely in Kafka";
  });
  stream_.PushData(0x2040, Commit(0x2040, 0x2050));
  ASSERT_TRUE(Run().ok());
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(1), Id(2), Id(3)}));
  EXPECT_EQ(metrics_.transactions_split.load(), 1u);
  EXPECT_FALSE(sink_.Checkpoints().back().partial_commit_lsn.valid());
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x2050));
}

TEST_F(ExactlyOnceTest, ACommitThatFailsAbortsAndEndsTheSessionWithoutConfirming) {
  PushTxn(0x1000, 700, 1, 2);
  sink_.commit_hook = [] { return absl::AbortedError("Kafka commit_transaction failed: the transaction must be aborted"); };
  absl::Status status = Run();
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(status.message(), HasSubstr("aborted"));
  EXPECT_EQ(sink_.aborts, 1);
  EXPECT_TRUE(sink_.visible.empty());
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
  EXPECT_EQ(metrics_.kafka_transactions.Get("aborted"), 1u);
  EXPECT_EQ(committed().lsn, Lsn()) << "an aborted transaction moved the checkpoint";
  EXPECT_THAT(metrics_.RenderPrometheus(), HasSubstr("outboxd_publish_latency_seconds_count 0\n"))
      << "latency observed for events no consumer can see";
}

TEST_F(ExactlyOnceTest, AFencedProducerEndsTheSessionWithTheFencedStatusAndNoAbort) {
  PushTxn(0x1000, 700, 1, 1);
  sink_.commit_hook = [] { return kafka::FencedError("Kafka commit_transaction failed: fenced"); };
  absl::Status status = Run();
  EXPECT_TRUE(kafka::IsFenced(status)) << status;
  EXPECT_EQ(sink_.aborts, 0);
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(ExactlyOnceTest, AStopBetweenTransactionsCommitsWhatIsOpen) {
  eos_.interval = absl::Hours(1);
  PushTxn(0x1000, 700, 1, 1);
  // More frames are always waiting (no catch-up commit) until the stop.
  stream_.PushData(0x1100, Begin(0x1140, 701));
  stream_.PushAction([this] { stop_ = true; });
  ASSERT_TRUE(Run().ok());
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(1)}));
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x1050));
}

// The broker is still writing the previous commit's markers when the commit
// returns: the next Kafka transaction begins transaction_gap later, not at
// once (its first AddPartitionsToTxn would be refused and retried 20 ms on).
TEST_F(ExactlyOnceTest, TheNextKafkaTransactionBeginsTheGapAfterTheCommit) {
  eos_.transaction_gap = absl::Milliseconds(80);
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushAction([] {});  // caught up: the first transaction commits on its own
  PushTxn(0x2000, 701, 2, 1);
  ASSERT_TRUE(Run().ok());
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(1), Id(2)}));
  ASSERT_EQ(sink_.commits, 2);
  ASSERT_EQ(sink_.begin_times.size(), 2u);
  EXPECT_GE(sink_.begin_times[1] - sink_.commit_times[0], absl::Milliseconds(80));
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x2050));
}

// A stop during the gap ends it at once.
TEST_F(ExactlyOnceTest, AStopCutsTheGapShort) {
  eos_.transaction_gap = absl::Seconds(30);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  options_.stop_fd = fds[0];
  std::thread stopper;
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushAction([&] {  // caught up: the first transaction commits; then the gap begins
    stopper = std::thread([&] {
      absl::SleepFor(absl::Milliseconds(50));
      stop_ = true;
      EXPECT_EQ(write(fds[1], "x", 1), 1);
    });
  });
  PushTxn(0x2000, 701, 2, 1);
  auto pipeline = MakePipeline(&stream_, &sink_);
  ASSERT_TRUE(pipeline.ok());
  const absl::Time start = absl::Now();
  EXPECT_TRUE((*pipeline)->Run(stop_).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << "the gap was waited out despite the stop";
  stopper.join();
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(1)}));
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x1050));
  close(fds[0]);
  close(fds[1]);
}

TEST_F(ExactlyOnceTest, AStopInsideATransactionAbortsItsPartAndConfirmsNothingOfIt) {
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushAction([] {});  // caught up: the first transaction commits on its own
  stream_.PushData(0x2000, Begin(0x2040, 701));
  PushInsert(0x2001, 2);
  stream_.PushAction([this] { stop_ = true; });
  auto pipeline = MakePipeline(&stream_, &sink_);
  ASSERT_TRUE(pipeline.ok());
  ASSERT_TRUE((*pipeline)->Run(stop_).ok());
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(1)}));
  EXPECT_EQ(sink_.aborts, 1);
  EXPECT_EQ((*pipeline)->unacknowledged_at_stop(), 1u);
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x1050));
}

TEST_F(ExactlyOnceTest, AStopWhileTheBrokerCannotCommitGivesUpAfterTheStopFlushTimeout) {
  options_.stop_flush_timeout = absl::Seconds(30);
  PushTxn(0x1000, 700, 1, 2);
  int attempts = 0;
  sink_.commit_hook = [&]() -> absl::Status {
    now_ += absl::Seconds(1);
    if (++attempts == 3) stop_ = true;  // SIGTERM while the broker is down
    return absl::DeadlineExceededError("Local: Timed out");
  };
  stream_.on_empty = [] {};
  auto pipeline = MakePipeline(&stream_, &sink_);
  ASSERT_TRUE(pipeline.ok());
  ASSERT_TRUE((*pipeline)->Run(stop_).ok()) << "a stop is a stop, also when it cut a commit short";
  EXPECT_LE(attempts, 3 + 31) << "the commit went on past the stop flush timeout";
  EXPECT_EQ(sink_.aborts, 1);
  EXPECT_EQ((*pipeline)->unacknowledged_at_stop(), 2u);
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(ExactlyOnceTest, ARecordTheBrokerRefusesIsDeadLetteredInTheNextSessionsTransaction) {
  PushTxn(0x1000, 700, 1, 1);
  sink_.commit_hook = [this]() -> absl::Status {
    // The broker refuses the record (too large for the topic), alone in flight.
    sink_.DeliverAt(0, BadEventError(bad_event::kMessageTooLarge, "Broker: Message size too large"));
    return absl::AbortedError("Kafka commit_transaction failed: the transaction must be aborted");
  };
  EXPECT_EQ(Run().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(sink_.aborts, 1);
  ASSERT_EQ(mode().refused().size(), 1u);

  // The next session replays the transaction: the record's dead letter takes its place.
  TxnSink next;
  ASSERT_TRUE(RunReplay(next, {1}).ok());
  EXPECT_EQ(Topics(next.visible), (std::vector<std::string>{"outboxd.dlq", kCheckpoints}));
  EXPECT_EQ(next.aborts, 0);
  EXPECT_EQ(last_replay_flushed_, Lsn(0x1050));
  EXPECT_TRUE(mode().refused().empty()) << "kept after its transaction was committed";
}

// Refused with its batch: read again, each record of it goes out alone; the
// one refused again aborts that Kafka transaction, and the session after
// dead-letters it while the other one is published.
TEST_F(ExactlyOnceTest, RecordsRefusedWithTheirBatchAreProducedAloneInTheNextTransactions) {
  PushTxn(0x1000, 700, 1, 2);
  sink_.commit_hook = [this]() -> absl::Status {
    sink_.DeliverAll(BadEventError(bad_event::kMessageTooLarge, "Broker: Message size too large"));
    return absl::AbortedError("Kafka commit_transaction failed: the transaction must be aborted");
  };
  EXPECT_EQ(Run().code(), absl::StatusCode::kAborted);
  ASSERT_EQ(mode().refused().size(), 2u);

  TxnSink second;
  RefuseKeys(second, {Id(2)});
  const absl::Status again = RunReplay(second, {1, 2});
  EXPECT_TRUE(IsRefusedRecordRestart(again)) << again;
  EXPECT_EQ(second.aborts, 1);
  EXPECT_TRUE(second.visible.empty());

  TxnSink third;
  RefuseKeys(third, {Id(2)});
  ASSERT_TRUE(RunReplay(third, {1, 2}).ok());
  EXPECT_EQ(Topics(third.visible), (std::vector<std::string>{"outbox.event.Order", "outboxd.dlq", kCheckpoints}));
  EXPECT_EQ(third.VisibleIds(), (std::vector<std::string>{Id(1), Id(2)}));
  EXPECT_EQ(metrics_.events_dead_lettered.Get("message_too_large"), 1u);
  EXPECT_EQ(last_replay_flushed_, Lsn(0x1050));
}

// ---------------------------------------------------------------------------
// Every way out of a session aborts an open Kafka transaction, once
// ---------------------------------------------------------------------------

// A Kafka transaction holding transaction 700 (Id(1)) stays open: the
// interval is long, and the stream is never caught up outside a PostgreSQL
// transaction.
class ExactlyOnceExitTest : public ExactlyOnceTest {
 protected:
  ExactlyOnceExitTest() { eos_.interval = absl::Hours(1); }
  void ExpectAbortedOnce(const absl::Status& status, absl::StatusCode code) {
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_EQ(sink_.aborts, 1) << "the open Kafka transaction was left to transaction.timeout.ms";
    EXPECT_FALSE(sink_.open);
    EXPECT_TRUE(sink_.visible.empty());
    EXPECT_EQ(metrics_.kafka_transactions.Get("aborted"), 1u);
    EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
  }
  void PushBadRow(uint64_t lsn, uint32_t xid, int n) {
    stream_.PushData(lsn, Begin(lsn + 0x40, xid));
    stream_.PushData(lsn + 1, Insert(kOutboxOid, {Id(n), "Order", std::nullopt, "OrderCreated", "{}"}));
    stream_.PushData(lsn + 0x40, Commit(lsn + 0x40, lsn + 0x50));
  }
};

TEST_F(ExactlyOnceExitTest, ABadEventUnderOnBadEventStop) {
  options_.on_bad_event = outbox::BadEventPolicy::kStop;
  PushTxn(0x1000, 700, 1, 1);
  PushBadRow(0x2000, 701, 2);
  ExpectAbortedOnce(Run(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ExactlyOnceExitTest, AStreamThatBreaksTheProtocol) {
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushData(0x3040, Commit(0x3040, 0x3050));  // no Begin
  ExpectAbortedOnce(Run(), absl::StatusCode::kDataLoss);
}

TEST_F(ExactlyOnceExitTest, ARecordTheSinkRefusesForGood) {
  // What a schema registry that refuses the subject answers.
  sink_.produce_hook = [](const kafka::ProduceRequest& r) {
    return r.key == Id(2) ? absl::FailedPreconditionError("the schema registry refused subject x-value")
                          : absl::OkStatus();
  };
  PushTxn(0x1000, 700, 1, 1);
  PushTxn(0x2000, 701, 2, 1);
  ExpectAbortedOnce(Run(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ExactlyOnceExitTest, ARefusedDeadLetter) {
  PushTxn(0x1000, 700, 1, 1);
  PushBadRow(0x2000, 701, 2);
  stream_.PushData(0x3000, Begin(0x3040, 702));  // inside a transaction: nothing commits on its own
  stream_.PushAction([this] {
    ASSERT_EQ(sink_.produced.size(), 2u);
    ASSERT_EQ(sink_.produced[1].topic, "outboxd.dlq");
    sink_.DeliverAt(1, BadEventError(bad_event::kMessageTooLarge, "dead letter too large"));
  });
  stream_.PushKeepalive(0x3000, /*reply=*/true);
  ExpectAbortedOnce(Run(), absl::StatusCode::kFailedPrecondition);
}

// A delivery fails while the checkpoint waits for room in the producer queue:
// the Kafka transaction is aborted once, and counted once.
TEST_F(ExactlyOnceExitTest, ADeliveryFailureWhileTheCheckpointWaitsForRoom) {
  eos_.interval = absl::Seconds(5);
  sink_.queue_limit = 2;
  bool failed = false;
  sink_.on_poll = [&] {
    if (sink_.queue_full_answers > 0 && !failed) {
      failed = true;
      sink_.DeliverAt(0, absl::UnavailableError("Local: Message timed out"));
    }
  };
  PushTxn(0x1000, 700, 1, 2);  // caught up: the commit's checkpoint finds the queue full
  ExpectAbortedOnce(Run(), absl::StatusCode::kAborted);
  EXPECT_TRUE(failed);
}

// A dead letter the broker refused is fatal; a refusal of a record the
// session does not track (another producer's token, the checkpoint record)
// that comes after it must not turn the stop into a retry loop.
TEST_F(ExactlyOnceExitTest, ARefusedDeadLetterStaysFatalWhateverIsRefusedAfterIt) {
  PushTxn(0x1000, 700, 1, 1);
  PushBadRow(0x2000, 701, 2);
  stream_.PushData(0x3000, Begin(0x3040, 702));
  stream_.PushAction([this] {
    ASSERT_EQ(sink_.produced.size(), 2u);
    sink_.DeliverAt(1, BadEventError(bad_event::kMessageTooLarge, "dead letter too large"));
    ASSERT_TRUE(sink_.Produce({.topic = "elsewhere", .key = "k", .value = "v", .token = uint64_t{1} << 40}).ok());
    sink_.DeliverAt(sink_.pending() - 1, BadEventError(bad_event::kUnknownTopic, "Broker: Unknown topic"));
  });
  stream_.PushKeepalive(0x3000, /*reply=*/true);
  ExpectAbortedOnce(Run(), absl::StatusCode::kFailedPrecondition);
}

// transaction_interval past half of transaction.timeout.ms (which config
// validation refuses, but the loop must survive): a Kafka transaction open
// while a PostgreSQL transaction without events is read, and nothing else
// arrives for a minute. The loop waits for its deadlines (simulated time
// passes) and commits at the interval, never spinning on a deadline that
// has passed.
TEST_F(ExactlyOnceTest, TheLoopNeverSpinsOnADeadlineInThePast) {
  eos_.interval = absl::Seconds(40);
  eos_.split_after = absl::Seconds(30);
  sink_.auto_ack = true;  // else the loop polls the test double every millisecond
  const absl::Time start = now_;
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushData(0x2000, Begin(0x2040, 701));
  int reads_at_gate = 0;
  stream_.PushAction([&] { reads_at_gate = stream_.reads_; });
  stream_.PushGate([&] { return now_ >= start + absl::Seconds(60); }, absl::Seconds(3));
  int reads_in_gate = 0;
  stream_.PushAction([&] {
    reads_in_gate = stream_.reads_ - reads_at_gate;
    EXPECT_EQ(sink_.commits, 1) << "the interval's commit did not happen while waiting";
  });
  PushInsert(0x2001, 2);
  stream_.PushData(0x2040, Commit(0x2040, 0x2050));
  ASSERT_TRUE(Run().ok());
  EXPECT_LT(reads_in_gate, 100) << "the loop spun instead of waiting";
  EXPECT_GE(now_ - start, absl::Seconds(60));
  EXPECT_EQ(sink_.VisibleIds(), (std::vector<std::string>{Id(1), Id(2)}));
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x2050));
}

TEST(CheckpointTest, RoundTripsThroughItsJson) {
  Checkpoint c{.system_id = "7312345678901234567", .timeline = 3, .slot = "orders",
               .transactional_id = "outboxd-7312345678901234567-orders", .lsn = Lsn(0x1A2B3C8),
               .partial_commit_lsn = Lsn(0x1A2B3F0), .partial_through = {Lsn(0x1A2B3D0), 2}};
  const std::string json = EncodeCheckpoint(c);
  EXPECT_THAT(json, HasSubstr("\"lsn\":\"0/1A2B3C8\""));
  absl::StatusOr<Checkpoint> back = DecodeCheckpoint(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->system_id, c.system_id);
  EXPECT_EQ(back->timeline, 3u);
  EXPECT_EQ(back->lsn, c.lsn);
  EXPECT_EQ(back->partial_commit_lsn, c.partial_commit_lsn);
  EXPECT_EQ(back->partial_through, c.partial_through);
  EXPECT_EQ(CheckpointKey("7312345678901234567", "orders"), "7312345678901234567/orders");
}

TEST(CheckpointTest, RefusesWhatIsNotACheckpoint) {
  for (const std::string& bad : {std::string(""), std::string("[1]"), std::string("{\"lsn\":\"0/1\"}"),
                                std::string("{\"system_id\":\"1\",\"slot\":\"s\",\"lsn\":\"zz\"}"),
                                std::string("{\"system_id\":\"1\",\"slot\":\"s\",\"lsn\":\"0/1\",\"partial\":3}"),
                                std::string(5000, '{'), std::string("{\"system_id\":\"1\",\"slot\":\"s\",\"lsn\":\"0/1\","
                                                                    "\"partial\":{\"commit_lsn\":\"0/2\"}}")}) {
    absl::StatusOr<Checkpoint> decoded = DecodeCheckpoint(bad);
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << bad.substr(0, 80);
  }
}

TEST(CheckpointTest, CoversWholeTransactionsBeforeItsLsnAndPartialEventsThroughTheirPosition) {
  Checkpoint c;
  c.lsn = Lsn(0x2050);
  c.partial_commit_lsn = Lsn(0x3040);
  c.partial_through = {Lsn(0x3005), 1};
  EXPECT_TRUE(c.CoversTransaction(Lsn(0x2040)));   // the checkpoint's own last transaction
  EXPECT_FALSE(c.CoversTransaction(Lsn(0x2050)));  // the next one commits at or after its end
  EXPECT_TRUE(c.CoversEvent(Lsn(0x3040), {Lsn(0x3005), 1}));
  EXPECT_FALSE(c.CoversEvent(Lsn(0x3040), {Lsn(0x3005), 2}));
  EXPECT_FALSE(c.CoversEvent(Lsn(0x3040), {Lsn(0x3006), 0}));
  EXPECT_FALSE(c.CoversEvent(Lsn(0x4040), {Lsn(0x3001), 0}));
}

}  // namespace
}  // namespace outboxd::pipeline
