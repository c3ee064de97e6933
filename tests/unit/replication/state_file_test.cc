#include "replication/state_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::replication {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

SavedState Sample() {
  return SavedState{.system_id = "7312345678901234567", .timeline = 2, .slot = "outboxd",
                    .confirmed_lsn = Lsn(0x16B3748)};
}

TEST(StateFileTest, EncodeDecodeRoundTrip) {
  const std::string text = EncodeState(Sample());
  EXPECT_THAT(text, HasSubstr("system_identifier=7312345678901234567\n"));
  EXPECT_THAT(text, HasSubstr("confirmed_lsn=0/16B3748\n"));
  absl::StatusOr<SavedState> decoded = DecodeState(text);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, Sample());
  EXPECT_THAT(text, Not(HasSubstr("on_standby"))) << "a primary's file reads as before";
}

TEST(StateFileTest, StandbySlotRoundTripsAndIsAbsentFromAPrimarysFile) {
  SavedState standby = Sample();
  standby.on_standby = true;
  const std::string text = EncodeState(standby);
  EXPECT_THAT(text, HasSubstr("\non_standby=1\n"));
  absl::StatusOr<SavedState> decoded = DecodeState(text);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, standby);
  absl::StatusOr<SavedState> zero = DecodeState(EncodeState(Sample()) + "on_standby=0\n");
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_FALSE(zero->on_standby);
  absl::Status bad = DecodeState(EncodeState(Sample()) + "on_standby=yes\n").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.message(), HasSubstr("on_standby \"yes\" is not 0 or 1"));
}

TEST(StateFileTest, DecodeRejectsWhatItCannotTrust) {
  EXPECT_EQ(DecodeState("").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeState("version=1\nslot=x\n").status().code(), absl::StatusCode::kDataLoss);
  std::string text = EncodeState(Sample());
  EXPECT_EQ(DecodeState(text + "extra=1\n").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeState(text + "garbage\n").status().code(), absl::StatusCode::kDataLoss);
  std::string bad_lsn = text;
  bad_lsn.replace(bad_lsn.find("0/16B3748"), 9, "nope");
  absl::Status status = DecodeState(bad_lsn).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("confirmed_lsn"));
  std::string bad_version = text;
  bad_version.replace(bad_version.find("version=1"), 9, "version=9");
  EXPECT_EQ(DecodeState(bad_version).status().code(), absl::StatusCode::kDataLoss);
}

class StateFileIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/outboxd_state_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::remove(StateFilePath(dir_, "outboxd").c_str());
    std::remove((StateFilePath(dir_, "outboxd") + ".tmp").c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_;
};

TEST_F(StateFileIoTest, MissingFileIsNoState) {
  absl::StatusOr<std::optional<SavedState>> read = ReadStateFile(StateFilePath(dir_, "outboxd"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_FALSE(read->has_value());
}

TEST_F(StateFileIoTest, WriteThenReadAndOverwrite) {
  const std::string path = StateFilePath(dir_ + "/", "outboxd");
  EXPECT_EQ(path, dir_ + "/outboxd.state");
  ASSERT_TRUE(WriteStateFile(path, Sample()).ok());
  SavedState next = Sample();
  next.confirmed_lsn = Lsn(0x20000000);
  ASSERT_TRUE(WriteStateFile(path, next).ok());
  absl::StatusOr<std::optional<SavedState>> read = ReadStateFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->has_value());
  EXPECT_EQ(**read, next);
  EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0) << "the temporary file is renamed away";
}

TEST_F(StateFileIoTest, CorruptFileIsAnErrorNotAFirstStart) {
  const std::string path = StateFilePath(dir_, "outboxd");
  std::ofstream(path) << "version=1\nsystem_identifier=12\n";  // truncated
  absl::Status status = ReadStateFile(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr(path));
}

TEST_F(StateFileIoTest, UnwritableDirectoryIsAnError) {
  EXPECT_FALSE(WriteStateFile(dir_ + "/no/such/dir/outboxd.state", Sample()).ok());
}

SlotFacts Facts() {
  SlotFacts facts;
  facts.slot = "outboxd";
  facts.system_id = "7312345678901234567";
  facts.database = "app";
  return facts;
}

TEST(DecideSlotActionTest, FirstStartCreatesTheSlot) {
  SlotFacts facts = Facts();
  EXPECT_EQ(*DecideSlotAction(facts, std::nullopt), SlotAction::kCreate);
  facts.create_slot = false;
  absl::Status status = DecideSlotAction(facts, std::nullopt).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(IsGapUpstream(status));
  EXPECT_THAT(status.message(), HasSubstr("create_slot = false"));
}

TEST(DecideSlotActionTest, ExistingSlotIsUsed) {
  SlotFacts facts = Facts();
  facts.found = true;
  EXPECT_EQ(*DecideSlotAction(facts, std::nullopt), SlotAction::kUse);
  EXPECT_EQ(*DecideSlotAction(facts, Sample()), SlotAction::kUse);
}

TEST(DecideSlotActionTest, VanishedSlotIsAGapUnlessAccepted) {
  SlotFacts facts = Facts();
  absl::Status status = DecideSlotAction(facts, Sample()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsGapUpstream(status));
  EXPECT_FALSE(IsSlotInvalidated(status));
  EXPECT_THAT(status.message(), HasSubstr("does not exist"));
  EXPECT_THAT(status.message(), HasSubstr("0/16B3748"));
  EXPECT_THAT(status.message(), HasSubstr("--accept-gap"));
  // Even when create_slot is on: that flag is for first starts.
  facts.accept_gap = true;
  EXPECT_EQ(*DecideSlotAction(facts, Sample()), SlotAction::kCreate);
  facts.create_slot = false;
  EXPECT_EQ(*DecideSlotAction(facts, Sample()), SlotAction::kCreate) << "the operator asked for it";
}

TEST(DecideSlotActionTest, StateOfAnotherSlotSaysNothing) {
  SavedState other = Sample();
  other.slot = "another";
  EXPECT_EQ(*DecideSlotAction(Facts(), other), SlotAction::kCreate);
}

TEST(DecideSlotActionTest, InvalidatedSlotStopsWithAMarkUnlessAccepted) {
  SlotFacts facts = Facts();
  facts.found = true;
  facts.invalidation = ClassifyInvalidation("lost", std::nullopt, std::nullopt);
  for (const std::optional<SavedState>& saved : {std::optional<SavedState>(), std::optional(Sample())}) {
    absl::Status status = DecideSlotAction(facts, saved).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(IsGapUpstream(status));
    EXPECT_TRUE(IsSlotInvalidated(status));
    EXPECT_THAT(status.message(), HasSubstr("was invalidated by PostgreSQL (wal_status lost: it fell more than "
                                            "max_slot_wal_keep_size behind"));
    EXPECT_THAT(status.message(), HasSubstr("--accept-gap"));
  }
  facts.accept_gap = true;
  EXPECT_EQ(*DecideSlotAction(facts, Sample()), SlotAction::kRecreate);
}

// PostgreSQL 16 to 18 say why: the message names the reason and what prevents it, never just
// "wal_status lost" (which every invalidation shows from 16 on).
TEST(DecideSlotActionTest, InvalidationMessageNamesTheReasonAndWhatPreventsIt) {
  SlotFacts facts = Facts();
  facts.found = true;
  struct Case {
    Invalidation invalidation;
    std::string setting;
    std::string named;
    std::string prevented;
  };
  const Case cases[] = {
      {ClassifyInvalidation("lost", false, "idle_timeout"), "1min",
       "was invalidated by PostgreSQL (idle_timeout: no client streamed it for longer than "
       "idle_replication_slot_timeout = 1min (PostgreSQL 18)",
       "raise idle_replication_slot_timeout"},
      {ClassifyInvalidation("lost", true, "rows_removed"), "",
       "was invalidated by PostgreSQL (rows_removed: a conflict with recovery on this hot standby: the primary "
       "removed catalog rows",
       "hot_standby_feedback = on and primary_slot_name"},
      {ClassifyInvalidation("lost", true, "wal_level_insufficient"), "",
       "(wal_level_insufficient: a conflict with recovery on this hot standby: the primary's wal_level went below "
       "logical",
       "keep wal_level = logical on the primary"},
      {ClassifyInvalidation("lost", false, "wal_removed"), "64MB",
       "(wal_removed: it fell more than max_slot_wal_keep_size = 64MB behind", "max_slot_wal_keep_size room"},
      {ClassifyInvalidation("lost", true, std::nullopt), "", "(conflict: a conflict with recovery on this hot "
       "standby (PostgreSQL 16 does not say which", "hot_standby_feedback = on"},
  };
  for (const Case& c : cases) {
    facts.invalidation = c.invalidation;
    facts.invalidation_setting = c.setting;
    absl::Status status = DecideSlotAction(facts, Sample()).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(IsSlotInvalidated(status));
    EXPECT_THAT(status.message(), HasSubstr(c.named));
    EXPECT_THAT(status.message(), HasSubstr("To keep it from happening again: "));
    EXPECT_THAT(status.message(), HasSubstr(c.prevented));
    EXPECT_THAT(status.message(), Not(HasSubstr("wal_status lost"))) << c.invalidation.reason;
  }
}

// Decoding on a standby: the slot is the standby's own, so a promotion (a new timeline of the
// same system) keeps it whatever it confirmed since the state file was last written.
TEST(DecideSlotActionTest, AStandbysOwnSlotIsKeptAcrossAPromotion) {
  SavedState saved = Sample();
  saved.timeline = 1;
  saved.on_standby = true;
  SlotFacts facts = Facts();
  facts.found = true;
  facts.timeline = 2;
  facts.confirmed_flush = Lsn(saved.confirmed_lsn.value() + 4096);  // confirmed after the last write
  EXPECT_EQ(*DecideSlotAction(facts, saved), SlotAction::kUse);
  // The same slot streamed from a primary says nothing about another server's slot.
  saved.on_standby = false;
  EXPECT_TRUE(IsGapUpstream(DecideSlotAction(facts, saved).status()));
  // Still a gap when the slot is gone from the promoted server.
  saved.on_standby = true;
  facts.found = false;
  EXPECT_TRUE(IsGapUpstream(DecideSlotAction(facts, saved).status()));
}

// A standby that follows a new primary (still in recovery, on its timeline) keeps its slot, but
// what the slot confirmed may lie on the branch the standby left (it was rewound): resumed only
// when all of it lies before the point where the old timeline left the server's history.
TEST(DecideSlotActionTest, AStandbyThatFollowsANewPrimaryResumesOnlyWithinTheSharedHistory) {
  SavedState saved = Sample();
  saved.timeline = 1;
  saved.on_standby = true;
  SlotFacts facts = Facts();
  facts.found = true;
  facts.timeline = 2;
  facts.in_recovery = true;
  facts.confirmed_flush = Lsn(saved.confirmed_lsn.value() + 4096);
  absl::Status status = DecideSlotAction(facts, saved).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsGapUpstream(status));
  EXPECT_THAT(status.message(), HasSubstr("of a hot standby, and the server is still a standby"));

  facts.history_switch = Lsn(saved.confirmed_lsn.value() + 8192);  // left timeline 1 after all of it
  EXPECT_EQ(*DecideSlotAction(facts, saved), SlotAction::kUse);

  facts.history_switch = Lsn(saved.confirmed_lsn.value() + 1024);  // the slot went on past the branch
  status = DecideSlotAction(facts, saved).status();
  EXPECT_TRUE(IsGapUpstream(status));
  EXPECT_THAT(status.message(), HasSubstr("and the point 0/16B3B48 where timeline 1 left this server's history"));
  // The same holds for any slot kept on a new timeline, not only a standby's.
  saved.on_standby = false;
  facts.in_recovery = false;
  facts.history_switch = Lsn(saved.confirmed_lsn.value() + 8192);
  EXPECT_EQ(*DecideSlotAction(facts, saved), SlotAction::kUse);
}

TEST(DecideSlotActionTest, AnotherSystemIsAPossibleGap) {
  SlotFacts facts = Facts();
  facts.system_id = "999";
  for (bool found : {false, true}) {
    facts.found = found;
    facts.accept_gap = false;
    absl::Status status = DecideSlotAction(facts, Sample()).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(IsGapUpstream(status));
    EXPECT_THAT(status.message(), HasSubstr("system 999"));
    EXPECT_THAT(status.message(), HasSubstr("7312345678901234567"));
    facts.accept_gap = true;
    EXPECT_EQ(*DecideSlotAction(facts, Sample()), found ? SlotAction::kUse : SlotAction::kCreate);
  }
}

TEST(DecideSlotActionTest, NewTimelineIsAcceptedOnlyForASynchronizedSlot) {
  SavedState saved = Sample();
  saved.timeline = 1;
  SlotFacts facts = Facts();
  facts.found = true;
  facts.timeline = 1;
  EXPECT_EQ(*DecideSlotAction(facts, saved), SlotAction::kUse) << "same timeline";

  // A promoted standby: same system, next timeline, the failover slot kept in step.
  facts.timeline = 2;
  facts.synced = true;
  EXPECT_EQ(*DecideSlotAction(facts, saved), SlotAction::kUse);

  // Not synchronized, but at or behind what we confirmed (kept by other means,
  // e.g. Patroni's permanent slots): resuming there only repeats events.
  facts.synced = false;
  facts.confirmed_flush = saved.confirmed_lsn;
  EXPECT_EQ(*DecideSlotAction(facts, saved), SlotAction::kUse);

  // Made by hand on the promoted server (or restored with a backup): past what
  // we confirmed, so resuming there would skip events.
  facts.confirmed_flush = Lsn(saved.confirmed_lsn.value() + 1);
  absl::Status status = DecideSlotAction(facts, saved).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsGapUpstream(status));
  EXPECT_FALSE(IsSlotInvalidated(status));
  EXPECT_THAT(status.message(), HasSubstr("timeline 2"));
  EXPECT_THAT(status.message(), HasSubstr("on timeline 1"));
  EXPECT_THAT(status.message(), HasSubstr("0/16B3749"));
  EXPECT_THAT(status.message(), HasSubstr("--accept-gap"));
  facts.accept_gap = true;
  EXPECT_EQ(*DecideSlotAction(facts, saved), SlotAction::kUse) << "the operator asked for it";

  // No slot on the promoted server: one created anew there would skip the old
  // timeline's tail, whatever the timeline.
  facts = Facts();
  facts.timeline = 2;
  status = DecideSlotAction(facts, saved).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsGapUpstream(status));
  EXPECT_THAT(status.message(), HasSubstr("does not exist"));

  // A state file of another slot, or none, says nothing.
  facts.found = true;
  EXPECT_EQ(*DecideSlotAction(facts, std::nullopt), SlotAction::kUse);
}

}  // namespace
}  // namespace outboxd::replication

namespace outboxd::replication {
namespace {

TEST_F(StateFileIoTest, RecorderWritesAtOnceThenAtMostOnceASecondAndAtStop) {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  const std::string path = StateFilePath(dir_, "outboxd");
  StateRecorder recorder(path, absl::Seconds(1), [&] { return now; });
  auto on_disk = [&] { return (*ReadStateFile(path))->confirmed_lsn; };
  ASSERT_TRUE(recorder.OnConfirmed(Lsn(5)).ok()) << "nothing to record before a session";
  EXPECT_FALSE(ReadStateFile(path)->has_value());

  SavedState state = Sample();
  state.confirmed_lsn = Lsn(100);
  ASSERT_TRUE(recorder.Begin(state).ok());
  EXPECT_EQ(on_disk(), Lsn(100)) << "a session start is recorded at once";
  for (int i = 1; i <= 100; ++i) {
    now += absl::Milliseconds(10);
    ASSERT_TRUE(recorder.OnConfirmed(Lsn(100 + i)).ok());
  }
  // 100 confirms over one second: the first within the second is held back,
  // one write when the second has passed.
  EXPECT_EQ(recorder.writes(), 2);
  EXPECT_EQ(on_disk(), Lsn(200));
  now += absl::Milliseconds(10);
  ASSERT_TRUE(recorder.OnConfirmed(Lsn(250)).ok());
  EXPECT_EQ(on_disk(), Lsn(200)) << "throttled";
  ASSERT_TRUE(recorder.OnConfirmed(Lsn(240)).ok()) << "never backwards";
  ASSERT_TRUE(recorder.Flush().ok());
  EXPECT_EQ(on_disk(), Lsn(250)) << "written at stop";
  EXPECT_EQ(recorder.writes(), 3);
  ASSERT_TRUE(recorder.Flush().ok());
  EXPECT_EQ(recorder.writes(), 3) << "nothing new, nothing written";
}

TEST_F(StateFileIoTest, RecorderWritesAThrottledPositionWhenItIsRepeatedLater) {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  const std::string path = StateFilePath(dir_, "outboxd");
  StateRecorder recorder(path, absl::Seconds(1), [&] { return now; });
  SavedState state = Sample();
  state.confirmed_lsn = Lsn(100);
  ASSERT_TRUE(recorder.Begin(state).ok());
  now += absl::Milliseconds(10);
  ASSERT_TRUE(recorder.OnConfirmed(Lsn(150)).ok());  // held back: within the second
  EXPECT_EQ((*ReadStateFile(path))->confirmed_lsn, Lsn(100));
  // An idle slot: the next status update repeats the same position.
  now += absl::Seconds(10);
  ASSERT_TRUE(recorder.OnConfirmed(Lsn(150)).ok());
  EXPECT_EQ((*ReadStateFile(path))->confirmed_lsn, Lsn(150));
  const int writes = recorder.writes();
  now += absl::Seconds(10);
  ASSERT_TRUE(recorder.OnConfirmed(Lsn(150)).ok());
  EXPECT_EQ(recorder.writes(), writes) << "nothing new, nothing written";
}

}  // namespace
}  // namespace outboxd::replication
