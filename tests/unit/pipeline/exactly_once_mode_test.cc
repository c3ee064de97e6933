// ExactlyOnceMode alone, driven by hand through a fake Session: the flush
// position it lets the slot have (the tracker's safe LSN, clamped like the
// AckTracker is tested), its deadlines, and its one abort.
#include <atomic>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "pipeline/exactly_once.h"
#include "txn_sink.h"

namespace outboxd::pipeline {
namespace {

using ::outboxd::testing::TxnSink;
using ::outboxd::testing::kCheckpoints;

// ---------------------------------------------------------------------------
// The mode alone: the flush position it lets the slot have, its deadlines
// ---------------------------------------------------------------------------

// The session as the mode sees it, driven by hand.
class FakeSession : public Session {
 public:
  FakeSession() { sink_.SetDeliveryHandler([](uint64_t, const absl::Status&) {}); }
  kafka::EventSink& sink() override { return sink_; }
  telemetry::Metrics& metrics() override { return metrics_; }
  const AckTracker& tracker() const override { return tracker_; }
  absl::Time Now() const override { return now_; }
  bool stopping() const override { return stop_.load(); }
  const std::atomic<bool>& stop_flag() const override { return stop_; }
  int stop_fd() const override { return -1; }
  absl::Duration stop_flush_timeout() const override { return absl::Seconds(30); }
  Lsn read_through() const override { return read_through_; }
  absl::Status ProduceUntracked(const kafka::ProduceRequest& request) override { return sink_.Produce(request); }
  absl::Status KeepStatusFlowing() override { return absl::OkStatus(); }

  TxnSink sink_;
  telemetry::Metrics metrics_;
  AckTracker tracker_;
  absl::Time now_ = absl::FromUnixSeconds(1800000000);
  std::atomic<bool> stop_{false};
  Lsn read_through_;
};

ExactlyOnceOptions Options(absl::Duration interval) {
  ExactlyOnceOptions options;
  options.interval = interval;
  options.split_after = absl::Seconds(30);
  return options;
}

class ExactlyOnceModeTest : public ::testing::Test {
 protected:
  ExactlyOnceModeTest() : mode_(Options(absl::Seconds(5))) {
    mode_.checkpoint().checkpoint_topic = kCheckpoints;
    mode_.BeginSession(&session_);
  }
  // Reads the PostgreSQL transaction committed at `commit` (ending at +0x10)
  // with `events` events, producing each.
  void ReadTransaction(uint64_t commit, int events) {
    session_.tracker_.Begin();
    mode_.OnBegin({.final_lsn = Lsn(commit), .commit_time = 0, .xid = 1});
    for (int i = 0; i < events; ++i) {
      const EventPosition position{Lsn(commit - 0x10 + i), 0};
      ASSERT_FALSE(mode_.AlreadyInKafka(Lsn(commit), position));
      ASSERT_TRUE(mode_.BeforeProduce().ok());
      const uint64_t token = session_.tracker_.AddEvent();
      ASSERT_TRUE(session_.sink_.Produce({.topic = "t", .key = "k", .value = "v", .token = token}).ok());
    }
  }
  void CommitTransaction(uint64_t commit) {
    session_.tracker_.Commit(Lsn(commit + 0x10));
    session_.read_through_ = Lsn(commit + 0x10);
    ASSERT_TRUE(mode_.OnCommit({.commit_lsn = Lsn(commit), .end_lsn = Lsn(commit + 0x10)}).ok());
  }
  // Acknowledges every record produced so far (as the tracker hears it).
  void AcknowledgeAll() {
    session_.sink_.SetDeliveryHandler(
        [this](uint64_t token, const absl::Status& status) { session_.tracker_.OnDelivery(token, status.ok()); });
    session_.sink_.DeliverAll(absl::OkStatus());
  }

  FakeSession session_;
  ExactlyOnceMode mode_;
};

TEST_F(ExactlyOnceModeTest, TheSafeLsnPassesAsItIsWithNoKafkaTransactionOpen) {
  EXPECT_EQ(mode_.ClampFlush(Lsn(0x500)), Lsn(0x500));
  EXPECT_EQ(mode_.NextDeadline(), absl::InfiniteFuture());
}

TEST_F(ExactlyOnceModeTest, AcknowledgedIsNotConfirmedBeforeTheKafkaCommit) {
  session_.read_through_ = Lsn(0x1000);
  ReadTransaction(0x1040, 2);
  CommitTransaction(0x1040);
  AcknowledgeAll();
  ASSERT_EQ(session_.tracker_.safe_lsn(), Lsn(0x1050));
  // Where the Kafka transaction began: everything read before it.
  EXPECT_EQ(mode_.ClampFlush(session_.tracker_.safe_lsn()), Lsn(0x1000));
  EXPECT_EQ(mode_.ClampFlush(Lsn(0x800)), Lsn(0x800)) << "never above the tracker's";
  ASSERT_TRUE(mode_.AfterBatch(/*caught_up=*/true).ok());
  EXPECT_EQ(session_.sink_.commits, 1);
  EXPECT_EQ(mode_.ClampFlush(session_.tracker_.safe_lsn()), Lsn(0x1050));
  EXPECT_EQ(mode_.checkpoint().committed.lsn, Lsn(0x1050));
}

TEST_F(ExactlyOnceModeTest, AFailedKafkaTransactionKeepsTheSlotBackUntilItIsAborted) {
  session_.read_through_ = Lsn(0x1000);
  ReadTransaction(0x1040, 1);
  CommitTransaction(0x1040);
  AcknowledgeAll();
  session_.sink_.commit_hook = [] { return absl::AbortedError("the transaction must be aborted"); };
  const absl::Status failed = mode_.AfterBatch(/*caught_up=*/true);
  EXPECT_EQ(failed.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(mode_.ClampFlush(Lsn(0x1050)), Lsn(0x1000)) << "confirmed what never became visible";
  EXPECT_EQ(session_.sink_.aborts, 0) << "the abort is the session's way out, not the failure's";
  EXPECT_EQ(mode_.EndSession(failed).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(session_.sink_.aborts, 1);
  EXPECT_EQ(mode_.EndSession(absl::OkStatus()).code(), absl::StatusCode::kOk);
  EXPECT_EQ(session_.sink_.aborts, 1) << "aborted twice";
  EXPECT_EQ(session_.metrics_.kafka_transactions.Get("aborted"), 1u);
}

TEST_F(ExactlyOnceModeTest, AFencedProducerIsNeverAskedToAbort) {
  session_.read_through_ = Lsn(0x1000);
  ReadTransaction(0x1040, 1);
  EXPECT_TRUE(kafka::IsFenced(mode_.EndSession(kafka::FencedError("fenced"))));
  EXPECT_EQ(session_.sink_.aborts, 0);
  EXPECT_EQ(session_.metrics_.kafka_transactions.Get("aborted"), 1u);
}

// After each batch the mode's next deadline lies ahead, whatever the options
// (an interval past the split point included) and wherever the stream is.
TEST_F(ExactlyOnceModeTest, TheNextDeadlineIsNeverInThePastAfterABatch) {
  for (const absl::Duration interval : {absl::Seconds(5), absl::Seconds(40)}) {
    FakeSession session;
    ExactlyOnceMode mode(Options(interval));
    mode.BeginSession(&session);
    session.tracker_.Begin();
    mode.OnBegin({.final_lsn = Lsn(0x1040)});
    ASSERT_FALSE(mode.AlreadyInKafka(Lsn(0x1040), {Lsn(0x1001), 0}));
    ASSERT_TRUE(mode.BeforeProduce().ok());
    session.tracker_.AddEvent();
    session.tracker_.Commit(Lsn(0x1050));
    ASSERT_TRUE(mode.OnCommit({.commit_lsn = Lsn(0x1040), .end_lsn = Lsn(0x1050)}).ok());
    session.tracker_.Begin();  // a long transaction without events yet
    mode.OnBegin({.final_lsn = Lsn(0x9040)});
    for (int second = 0; second < 90; ++second) {
      ASSERT_TRUE(mode.AfterBatch(/*caught_up=*/true).ok());
      EXPECT_GT(mode.NextDeadline(), session.now_) << "interval " << interval << ", at " << second << " s";
      session.now_ += absl::Seconds(1);
    }
    EXPECT_EQ(session.sink_.commits, 1) << "interval " << interval;
    EXPECT_TRUE(mode.EndSession(absl::OkStatus()).ok());
  }
}

}  // namespace
}  // namespace outboxd::pipeline
