#include "pipeline/refused_records.h"

#include "gtest/gtest.h"

namespace outboxd::pipeline {
namespace {

RecordPosition At(uint64_t commit, uint64_t lsn, uint32_t index = 0) {
  return {Lsn(commit), EventPosition{Lsn(lsn), index}};
}

TEST(RefusedRecordsTest, FindsARefusalByTransactionLsnAndRank) {
  RefusedRecords refused;
  EXPECT_TRUE(refused.Add(At(0x1040, 0x1001, 1), "message_too_large", "Broker: Message size too large", true));
  const RefusedRecords::Refusal* found = refused.Find(At(0x1040, 0x1001, 1));
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->reason, "message_too_large");
  EXPECT_EQ(found->detail, "Broker: Message size too large");
  // Another row of the same multi-row insert, or the same LSN in another transaction.
  EXPECT_EQ(refused.Find(At(0x1040, 0x1001, 0)), nullptr);
  EXPECT_EQ(refused.Find(At(0x2040, 0x1001, 1)), nullptr);
}

TEST(RefusedRecordsTest, TheFirstRefusalOfARecordStaysUntilACertainOne) {
  RefusedRecords refused;
  refused.Add(At(0x1040, 0x1001), "message_too_large", "in a batch", false);
  refused.Add(At(0x1040, 0x1001), "unknown_topic", "in a batch again", false);
  EXPECT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused.Find(At(0x1040, 0x1001))->detail, "in a batch");
  EXPECT_FALSE(refused.Find(At(0x1040, 0x1001))->certain);
  refused.Add(At(0x1040, 0x1001), "message_too_large", "alone", true);
  EXPECT_EQ(refused.Find(At(0x1040, 0x1001))->detail, "alone");
  EXPECT_TRUE(refused.Find(At(0x1040, 0x1001))->certain);
  refused.Add(At(0x1040, 0x1001), "message_too_large", "in a batch once more", false);
  EXPECT_TRUE(refused.Find(At(0x1040, 0x1001))->certain) << "a certain refusal became uncertain";
}

TEST(RefusedRecordsTest, ForgetsTransactionsTheSlotIsConfirmedPast) {
  RefusedRecords refused;
  refused.Add(At(0x1040, 0x1001), "message_too_large", "", true);
  refused.Add(At(0x2040, 0x2001), "message_too_large", "", true);
  refused.Add(At(0x3040, 0x3001), "message_too_large", "", true);
  refused.ForgetConfirmed(Lsn(0x2040));  // not past the transaction committed at 0x2040
  EXPECT_EQ(refused.Find(At(0x1040, 0x1001)), nullptr);
  EXPECT_NE(refused.Find(At(0x2040, 0x2001)), nullptr);
  refused.ForgetConfirmed(Lsn(0x2050));  // its end
  EXPECT_EQ(refused.Find(At(0x2040, 0x2001)), nullptr);
  EXPECT_NE(refused.Find(At(0x3040, 0x3001)), nullptr);
  EXPECT_EQ(refused.size(), 1u);
}

TEST(RefusedRecordsTest, IsBounded) {
  RefusedRecords refused;
  for (size_t i = 0; i < RefusedRecords::kMaxEntries; ++i) {
    ASSERT_TRUE(refused.Add(At(0x1040, 0x1001 + i), "message_too_large", "", true));
  }
  EXPECT_FALSE(refused.Add(At(0x2040, 0x2001), "message_too_large", "", true));
  EXPECT_TRUE(refused.Add(At(0x1040, 0x1001), "message_too_large", "", true)) << "already there";
  EXPECT_EQ(refused.size(), RefusedRecords::kMaxEntries);
}

}  // namespace
}  // namespace outboxd::pipeline
