// The checkpoint's trust decision (TrustCheckpoint): a checkpoint is believed
// only on the server's own history, so that a promotion or a restore to an
// earlier position never skips a transaction the new history holds.
#include "pipeline/checkpoint.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "telemetry/metrics.h"

namespace outboxd::pipeline {
namespace {

using replication::TimelineSwitch;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// A checkpoint written on `timeline`: transactions before 0/5000 whole, and
// the one committed at 0/6000 through its event at 0/5800.
Checkpoint Written(uint32_t timeline, bool partial = true) {
  Checkpoint c;
  c.system_id = "7312345678901234567";
  c.slot = "outboxd";
  c.timeline = timeline;
  c.lsn = Lsn(0x5000);
  if (partial) {
    c.partial_commit_lsn = Lsn(0x6000);
    c.partial_through = {Lsn(0x5800), 0};
  }
  return c;
}

ServerWal Server(uint32_t timeline, Lsn position, std::vector<TimelineSwitch> history = {}) {
  return ServerWal{.timeline = timeline, .position = position, .history = std::move(history)};
}

TEST(CheckpointTrustTest, OnTheServersTimelineAndBehindItsWalTrustedAsIs) {
  Checkpoint c = Written(1);
  EXPECT_THAT(TrustCheckpoint(&c, Server(1, Lsn(0x9000))), IsEmpty());
  EXPECT_EQ(c.lsn, Lsn(0x5000));
  EXPECT_EQ(c.partial_commit_lsn, Lsn(0x6000));
  EXPECT_TRUE(c.CoversTransaction(Lsn(0x4000)));
  EXPECT_TRUE(c.CoversEvent(Lsn(0x6000), {Lsn(0x5800), 0}));
  // The server's WAL ends exactly where the checkpoint's last transaction does.
  c = Written(1, /*partial=*/false);
  EXPECT_THAT(TrustCheckpoint(&c, Server(1, Lsn(0x5000))), IsEmpty());
  EXPECT_EQ(c.lsn, Lsn(0x5000));
  // Nothing to judge.
  Checkpoint empty;
  EXPECT_THAT(TrustCheckpoint(&empty, Server(3, Lsn(0x10))), IsEmpty());
  EXPECT_FALSE(NeedsTimelineHistory(empty, 3));
}

// The standby had replayed to 0/5400 when it was promoted to timeline 2: what
// the checkpoint says past that happened on the old primary only.
TEST(CheckpointTrustTest, FromAnEarlierTimelineTrustedOnlyBeforeTheSwitchPoint) {
  Checkpoint c = Written(1);
  EXPECT_TRUE(NeedsTimelineHistory(c, 2));
  const std::vector<CheckpointBound> bounds =
      TrustCheckpoint(&c, Server(2, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x5400)}}));
  ASSERT_THAT(bounds, SizeIs(1));
  EXPECT_EQ(bounds[0].reason, kBoundTimeline);
  EXPECT_EQ(bounds[0].bound, Lsn(0x5400));
  EXPECT_THAT(bounds[0].why, HasSubstr("timeline 1"));
  EXPECT_THAT(bounds[0].why, HasSubstr("0/5400"));
  // Whole transactions before 0/5000 are common to both histories; the partial
  // transaction (committed at 0/6000 on timeline 1) is not.
  EXPECT_EQ(c.lsn, Lsn(0x5000));
  EXPECT_FALSE(c.partial_commit_lsn.valid());
  EXPECT_TRUE(c.CoversTransaction(Lsn(0x4FF0)));
  EXPECT_FALSE(c.CoversEvent(Lsn(0x6000), {Lsn(0x5800), 0})) << "a new transaction at the same LSN";

  // The switch point inside what the checkpoint calls whole: lowered to it.
  c = Written(1);
  TrustCheckpoint(&c, Server(2, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x3000)}}));
  EXPECT_EQ(c.lsn, Lsn(0x3000));
  EXPECT_TRUE(c.CoversTransaction(Lsn(0x2FF8)));
  EXPECT_FALSE(c.CoversTransaction(Lsn(0x3000)));
  EXPECT_FALSE(c.CoversTransaction(Lsn(0x4000)));
  EXPECT_FALSE(c.CoversEvent(Lsn(0x4000), {Lsn(0x3800), 0}));

  // An ancestor further back: timeline 3's history names where 1 ended.
  c = Written(1, /*partial=*/false);
  TrustCheckpoint(&c, Server(3, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x2000)}, TimelineSwitch{2, Lsn(0x7000)}}));
  EXPECT_EQ(c.lsn, Lsn(0x2000));
}

TEST(CheckpointTrustTest, FromAnEarlierTimelineBeforeItsSwitchPointTrustedAsIs) {
  Checkpoint c = Written(1);
  EXPECT_THAT(TrustCheckpoint(&c, Server(2, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x6001)}})), IsEmpty());
  EXPECT_EQ(c.lsn, Lsn(0x5000));
  EXPECT_EQ(c.partial_commit_lsn, Lsn(0x6000));
  // A commit record that ends exactly at the switch point is common to both.
  c = Written(1, /*partial=*/false);
  EXPECT_THAT(TrustCheckpoint(&c, Server(2, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x5000)}})), IsEmpty());
  EXPECT_EQ(c.lsn, Lsn(0x5000));
  // But a partial transaction whose commit record starts at the switch point is not.
  c = Written(1);
  ASSERT_THAT(TrustCheckpoint(&c, Server(2, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x6000)}})), SizeIs(1));
  EXPECT_EQ(c.lsn, Lsn(0x5000));
  EXPECT_FALSE(c.partial_commit_lsn.valid());
}

TEST(CheckpointTrustTest, FromATimelineOutsideTheServersHistoryNotTrusted) {
  struct Case {
    uint32_t checkpoint_timeline;
    ServerWal server;
    std::string says;
  };
  std::vector<Case> cases;
  // A sibling: timeline 4 forked from 2, the checkpoint is of 3.
  cases.push_back({3, Server(4, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x1000)}, TimelineSwitch{2, Lsn(0x2000)}}),
                   "not in the history"});
  // A later timeline than the server's: a restore of an older copy.
  cases.push_back({3, Server(2, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x1000)}}), "not in the history"});
  // None recorded (written by hand).
  cases.push_back({0, Server(2, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x1000)}}), "no timeline"});
  // The history could not be read.
  cases.push_back({1, ServerWal{.timeline = 2, .position = Lsn(0x9000),
                                .history = absl::DataLossError("the history file of timeline 2, line 1: ...")},
                   "cannot be read"});
  for (const Case& k : cases) {
    Checkpoint c = Written(k.checkpoint_timeline);
    const std::vector<CheckpointBound> bounds = TrustCheckpoint(&c, k.server);
    ASSERT_THAT(bounds, SizeIs(1)) << k.says;
    EXPECT_EQ(bounds[0].reason, kBoundTimeline);
    EXPECT_EQ(bounds[0].bound, Lsn::Invalid());
    EXPECT_THAT(bounds[0].why, HasSubstr(k.says));
    EXPECT_TRUE(c.empty()) << k.says;
    EXPECT_FALSE(c.CoversTransaction(Lsn(0x10)));
    EXPECT_FALSE(c.CoversEvent(Lsn(0x6000), {Lsn(0x5800), 0}));
  }
}

// Restored to an earlier copy on the same timeline: the server's WAL ends at
// 0/4000, before the checkpoint's 0/5000; what it writes next is new.
TEST(CheckpointTrustTest, PastTheServersWalPositionNotTrusted) {
  Checkpoint c = Written(1, /*partial=*/false);
  EXPECT_FALSE(NeedsTimelineHistory(c, 1));
  std::vector<CheckpointBound> bounds = TrustCheckpoint(&c, Server(1, Lsn(0x4000)));
  ASSERT_THAT(bounds, SizeIs(1));
  EXPECT_EQ(bounds[0].reason, kBoundAheadOfServer);
  EXPECT_EQ(bounds[0].bound, Lsn::Invalid());
  EXPECT_THAT(bounds[0].why, HasSubstr("past the server's WAL position 0/4000"));
  EXPECT_TRUE(c.empty());
  EXPECT_FALSE(c.CoversTransaction(Lsn(0x1000)));
  // Only the partial transaction ahead: its commit record starts at 0/6000, so
  // a server whose WAL ends there never decoded it.
  c = Written(1);
  bounds = TrustCheckpoint(&c, Server(1, Lsn(0x6000)));
  ASSERT_THAT(bounds, SizeIs(1));
  EXPECT_EQ(bounds[0].reason, kBoundAheadOfServer);
  EXPECT_TRUE(c.empty());
}

// Both: bounded at the switch point first; a history that claims a switch
// point past the server's own WAL is not believed either.
TEST(CheckpointTrustTest, BothBoundsApplyInTurn) {
  Checkpoint c = Written(1);
  const std::vector<CheckpointBound> bounds =
      TrustCheckpoint(&c, Server(2, Lsn(0x2000), {TimelineSwitch{1, Lsn(0x3000)}}));
  ASSERT_THAT(bounds, SizeIs(2));
  EXPECT_EQ(bounds[0].reason, kBoundTimeline);
  EXPECT_EQ(bounds[0].bound, Lsn(0x3000));
  EXPECT_EQ(bounds[1].reason, kBoundAheadOfServer);
  EXPECT_THAT(bounds[1].why, HasSubstr("reaches 0/3000"));
  EXPECT_TRUE(c.empty());
  // After a promotion the server's WAL is past the switch point: one bound only.
  c = Written(1);
  EXPECT_THAT(TrustCheckpoint(&c, Server(2, Lsn(0x3100), {TimelineSwitch{1, Lsn(0x3000)}})), SizeIs(1));
  EXPECT_EQ(c.lsn, Lsn(0x3000));
}

// The bound is in the checkpoint's own fields: each checkpoint written after
// it (which starts from it) says no more than the bound either.
TEST(CheckpointTrustTest, BoundCheckpointEncodesBounded) {
  Checkpoint c = Written(1);
  TrustCheckpoint(&c, Server(2, Lsn(0x9000), {TimelineSwitch{1, Lsn(0x5400)}}));
  c.timeline = 2;
  absl::StatusOr<Checkpoint> decoded = DecodeCheckpoint(EncodeCheckpoint(c));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->lsn, Lsn(0x5000));
  EXPECT_FALSE(decoded->partial_commit_lsn.valid());
  EXPECT_EQ(decoded->timeline, 2u);
}

// Each reason is a label of outboxd_checkpoint_bounded_total, exported at 0
// from the start so that increase() sees the first one.
TEST(CheckpointTrustTest, ReasonsAreTheMetricsLabels) {
  EXPECT_THAT(telemetry::kCheckpointBoundReasons, ::testing::ElementsAre(kBoundTimeline, kBoundAheadOfServer));
  telemetry::Metrics metrics;
  metrics.checkpoint_bounded.Add(kBoundTimeline);
  const std::string text = metrics.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("# TYPE outboxd_checkpoint_bounded_total counter\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_checkpoint_bounded_total{reason=\"timeline\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_checkpoint_bounded_total{reason=\"ahead_of_server\"} 0\n"));
}

}  // namespace
}  // namespace outboxd::pipeline
