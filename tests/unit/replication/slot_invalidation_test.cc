#include "replication/slot_invalidation.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::replication {
namespace {

using ::testing::HasSubstr;

// Each server version's columns, as pg_replication_slots shows them.
TEST(ClassifyInvalidationTest, ReadsWhatEachVersionSays) {
  // 13-15: wal_status only.
  EXPECT_EQ(ClassifyInvalidation("reserved", std::nullopt, std::nullopt).kind, InvalidationKind::kNone);
  EXPECT_EQ(ClassifyInvalidation("lost", std::nullopt, std::nullopt).kind, InvalidationKind::kLost);
  EXPECT_EQ(ClassifyInvalidation("lost", std::nullopt, std::nullopt).reason, "lost");
  // 16: conflicting.
  EXPECT_EQ(ClassifyInvalidation("reserved", false, std::nullopt).kind, InvalidationKind::kNone);
  EXPECT_EQ(ClassifyInvalidation("lost", false, std::nullopt).kind, InvalidationKind::kWalRemoved);
  EXPECT_EQ(ClassifyInvalidation("lost", true, std::nullopt).kind, InvalidationKind::kConflict);
  EXPECT_EQ(ClassifyInvalidation("lost", true, std::nullopt).reason, "conflict");
  // 17: invalidation_reason.
  EXPECT_EQ(ClassifyInvalidation("lost", false, "wal_removed").kind, InvalidationKind::kWalRemoved);
  EXPECT_EQ(ClassifyInvalidation("lost", true, "rows_removed").kind, InvalidationKind::kRowsRemoved);
  EXPECT_EQ(ClassifyInvalidation("lost", true, "wal_level_insufficient").kind,
            InvalidationKind::kWalLevelInsufficient);
  EXPECT_EQ(ClassifyInvalidation("reserved", false, std::nullopt).kind, InvalidationKind::kNone);
  // 18: idle_timeout, never shown as wal_status lost.
  const Invalidation idle = ClassifyInvalidation("lost", false, "idle_timeout");
  EXPECT_EQ(idle.kind, InvalidationKind::kIdleTimeout);
  EXPECT_EQ(idle.reason, "idle_timeout");
  EXPECT_EQ(DescribeInvalidation(idle, "2s"),
            "idle_timeout: no client streamed it for longer than idle_replication_slot_timeout = 2s (PostgreSQL 18), "
            "and a checkpoint invalidated it");
}

// A reason of a newer server is named as it is (bounded: it goes into log lines), never taken
// for a valid slot.
TEST(ClassifyInvalidationTest, UnknownReasonIsKeptAndBounded) {
  const Invalidation other = ClassifyInvalidation("lost", false, "future_reason");
  EXPECT_EQ(other.kind, InvalidationKind::kOther);
  EXPECT_TRUE(other.invalidated());
  EXPECT_EQ(other.reason, "future_reason");
  EXPECT_THAT(DescribeInvalidation(other), HasSubstr("future_reason: a reason this version of outboxd does not know"));
  EXPECT_EQ(ClassifyInvalidation("lost", false, std::string(1000, 'x')).reason.size(), 64u);
  // An empty reason is no reason: the other columns decide.
  EXPECT_EQ(ClassifyInvalidation("reserved", false, "").kind, InvalidationKind::kNone);
}

TEST(ClassifyInvalidationTest, OldServersReadAsBefore) {
  EXPECT_EQ(DescribeInvalidation(ClassifyInvalidation("lost", std::nullopt, std::nullopt)),
            "wal_status lost: it fell more than max_slot_wal_keep_size behind, and PostgreSQL removed WAL it still "
            "needed");
  EXPECT_EQ(InvalidationPrevention(Invalidation{}), "");
}

}  // namespace
}  // namespace outboxd::replication
