#include "pipeline/ack_tracker.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::pipeline {
namespace {

TEST(AckTrackerTest, EmptyTransactionAdvancesAtCommit) {
  AckTracker t;
  EXPECT_TRUE(t.idle());
  t.Begin();
  EXPECT_FALSE(t.idle());
  t.Commit(Lsn(100));
  EXPECT_EQ(t.safe_lsn(), Lsn(100));
  EXPECT_TRUE(t.idle());
}

TEST(AckTrackerTest, WaitsForEveryEventOfTheTransaction) {
  AckTracker t;
  t.Begin();
  uint64_t a = t.AddEvent();
  uint64_t b = t.AddEvent();
  t.Commit(Lsn(100));
  EXPECT_EQ(t.safe_lsn(), Lsn());
  EXPECT_EQ(t.inflight_events(), 2u);
  t.OnDelivery(b, true);
  EXPECT_EQ(t.safe_lsn(), Lsn());
  t.OnDelivery(a, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(100));
  EXPECT_EQ(t.inflight_events(), 0u);
}

TEST(AckTrackerTest, OpenTransactionIsNotConfirmedEvenWhenItsEventsAreAcked) {
  AckTracker t;
  t.Begin();
  t.OnDelivery(t.AddEvent(), true);
  EXPECT_EQ(t.safe_lsn(), Lsn());
  EXPECT_FALSE(t.idle());
  t.Commit(Lsn(7));
  EXPECT_EQ(t.safe_lsn(), Lsn(7));
}

TEST(AckTrackerTest, OutOfOrderReportsAcrossPartitionsNeverSkipAnOlderTransaction) {
  AckTracker t;
  t.Begin();
  uint64_t t1 = t.AddEvent();  // partition 0, slow
  t.Commit(Lsn(100));
  t.Begin();
  uint64_t t2 = t.AddEvent();  // partition 1, fast
  t.Commit(Lsn(200));
  t.Begin();
  uint64_t t3a = t.AddEvent();
  uint64_t t3b = t.AddEvent();
  t.Commit(Lsn(300));

  t.OnDelivery(t3b, true);
  t.OnDelivery(t2, true);
  t.OnDelivery(t3a, true);
  EXPECT_EQ(t.safe_lsn(), Lsn()) << "transaction 1 is still unacknowledged";
  t.OnDelivery(t1, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(300));
  EXPECT_TRUE(t.idle());
}

TEST(AckTrackerTest, FailedReportStopsProgressAtTheFailedTransactionForGood) {
  AckTracker t;
  t.Begin();
  uint64_t t1 = t.AddEvent();
  t.Commit(Lsn(100));
  t.Begin();
  uint64_t t2a = t.AddEvent();
  uint64_t t2b = t.AddEvent();
  t.Commit(Lsn(200));
  t.Begin();
  uint64_t t3 = t.AddEvent();
  t.Commit(Lsn(300));

  t.OnDelivery(t2a, false);
  EXPECT_TRUE(t.failed());
  t.OnDelivery(t3, true);
  t.OnDelivery(t2b, true);
  EXPECT_EQ(t.safe_lsn(), Lsn());
  t.OnDelivery(t1, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(100)) << "the prefix before the failure is still safe";
  t.Begin();
  t.Commit(Lsn(400));
  EXPECT_EQ(t.safe_lsn(), Lsn(100)) << "nothing at or after a failure is ever confirmed";
}

TEST(AckTrackerTest, EarlierFailureWins) {
  AckTracker t;
  t.Begin();
  uint64_t t1 = t.AddEvent();
  t.Commit(Lsn(100));
  t.Begin();
  uint64_t t2 = t.AddEvent();
  t.Commit(Lsn(200));
  t.OnDelivery(t2, false);
  t.OnDelivery(t1, false);
  EXPECT_EQ(t.safe_lsn(), Lsn());
}

TEST(AckTrackerTest, UnknownTokensAreIgnored) {
  AckTracker t;
  t.Begin();
  uint64_t a = t.AddEvent();
  uint64_t b = t.AddEvent();
  t.Commit(Lsn(10));
  t.OnDelivery(a, true);
  EXPECT_EQ(t.safe_lsn(), Lsn());
  t.OnDelivery(12345, true);
  EXPECT_EQ(t.safe_lsn(), Lsn());
  t.OnDelivery(b, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(10));
}

TEST(AckTrackerTest, EmptyTransactionsBehindAnUnacknowledgedOneAreFoldedIntoIt) {
  AckTracker t;
  t.Begin();
  const uint64_t a = t.AddEvent();
  t.Commit(Lsn(100));
  for (uint64_t i = 1; i <= 200000; ++i) {
    t.Begin();
    t.Commit(Lsn(100 + i * 10));
  }
  // One entry, whatever the number of event-less transactions behind it.
  EXPECT_EQ(t.pending_transactions(), 1u);
  EXPECT_EQ(t.safe_lsn(), Lsn());
  t.OnDelivery(a, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(100 + 200000 * 10));
  EXPECT_TRUE(t.idle());
}

TEST(AckTrackerTest, FoldedTransactionsWaitForTheOneTheyFoldedInto) {
  AckTracker t;
  t.Begin();
  const uint64_t a = t.AddEvent();
  t.Commit(Lsn(100));
  t.Begin();
  const uint64_t b = t.AddEvent();
  t.Commit(Lsn(200));
  t.Begin();
  t.Commit(Lsn(300));  // folded into b's entry
  EXPECT_EQ(t.pending_transactions(), 2u);
  t.OnDelivery(b, true);
  EXPECT_EQ(t.safe_lsn(), Lsn());
  t.OnDelivery(a, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(300));
}

TEST(AckTrackerTest, TransactionWhoseEventsWereAckedBeforeCommitIsFolded) {
  AckTracker t;
  t.Begin();
  const uint64_t a = t.AddEvent();
  t.Commit(Lsn(100));
  t.Begin();
  t.OnDelivery(t.AddEvent(), true);
  t.Commit(Lsn(200));
  EXPECT_EQ(t.pending_transactions(), 1u);
  // The next transaction's token is new to the tracker's report handling.
  t.Begin();
  const uint64_t c = t.AddEvent();
  t.Commit(Lsn(300));
  t.OnDelivery(a, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(200));
  t.OnDelivery(c, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(300));
}

TEST(AckTrackerTest, NoFoldAfterAFailureSoAFailedTransactionIsNeverCovered) {
  AckTracker t;
  t.Begin();
  const uint64_t a = t.AddEvent();
  t.Commit(Lsn(100));
  t.Begin();
  const uint64_t b = t.AddEvent();
  t.Commit(Lsn(200));
  t.OnDelivery(b, false);
  t.Begin();
  t.Commit(Lsn(300));
  t.Received(Lsn(400));
  t.OnDelivery(a, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(100));
  EXPECT_TRUE(t.failed());
}

TEST(AckTrackerTest, ReceivedPositionWhenIdleIsSafeAtOnce) {
  AckTracker t;
  t.Received(Lsn(50));
  EXPECT_EQ(t.safe_lsn(), Lsn(50));
  t.Received(Lsn(40));  // never backwards
  EXPECT_EQ(t.safe_lsn(), Lsn(50));
  EXPECT_TRUE(t.idle());
}

TEST(AckTrackerTest, ReceivedPositionWhileInFlightIsConfirmedOnceEverythingBeforeItIs) {
  AckTracker t;
  t.Begin();
  const uint64_t a = t.AddEvent();
  t.Commit(Lsn(100));
  t.Received(Lsn(180));  // a keepalive while `a` is in flight
  EXPECT_EQ(t.safe_lsn(), Lsn());
  t.OnDelivery(a, true);
  EXPECT_EQ(t.safe_lsn(), Lsn(180));
}

}  // namespace
}  // namespace outboxd::pipeline
