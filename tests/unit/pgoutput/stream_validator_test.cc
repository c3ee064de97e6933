#include "pgoutput/stream_validator.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::pgoutput {
namespace {

using ::testing::HasSubstr;

std::string Text(const absl::Status& status) {
  return std::string(status.message().data(), status.message().size());
}

BeginMessage Begin(uint64_t final_lsn, uint32_t xid = 700) {
  return BeginMessage{.final_lsn = Lsn(final_lsn), .commit_time = 1, .xid = xid};
}
CommitMessage Commit(uint64_t commit_lsn, uint64_t end_lsn) {
  return CommitMessage{.flags = 0, .commit_lsn = Lsn(commit_lsn), .end_lsn = Lsn(end_lsn)};
}
RelationMessage Relation(uint32_t oid, size_t columns) {
  RelationMessage relation;
  relation.oid = oid;
  relation.schema = "public";
  relation.name = "outbox";
  relation.columns.resize(columns);
  return relation;
}
InsertMessage Insert(uint32_t oid, size_t columns) {
  InsertMessage insert;
  insert.relation_oid = oid;
  insert.new_tuple.values.resize(columns, TupleValue{TupleValue::Kind::kNull, {}});
  return insert;
}

// The DataLoss status of `message` at `lsn`, checked to name the LSN.
void ExpectViolation(StreamValidator& v, const Message& message, uint64_t lsn,
                     std::string_view what) {
  const absl::Status status = v.Check(message, Lsn(lsn));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(Text(status), HasSubstr("pgoutput protocol violation at LSN " + Lsn(lsn).ToString()));
  EXPECT_THAT(Text(status), HasSubstr(std::string(what)));
}

TEST(StreamValidatorTest, AWellFormedStreamPasses) {
  StreamValidator v;
  EXPECT_TRUE(v.Check(Relation(1, 8), Lsn(0x100)).ok());
  EXPECT_TRUE(v.Check(Begin(0x200), Lsn(0x100)).ok());
  EXPECT_TRUE(v.Check(Insert(1, 8), Lsn(0x150)).ok());
  EXPECT_TRUE(v.Check(Commit(0x200, 0x230), Lsn(0x200)).ok());
  // The next transaction's commit record starts at or after the previous end.
  EXPECT_TRUE(v.Check(Begin(0x230), Lsn(0x230)).ok());
  EXPECT_TRUE(v.Check(Commit(0x230, 0x260), Lsn(0x230)).ok());
  EXPECT_FALSE(v.in_transaction());
  // Non-transactional messages come outside transactions.
  LogicalMessage message;
  message.flags = 0;
  EXPECT_TRUE(v.Check(message, Lsn(0x270)).ok());
}

TEST(StreamValidatorTest, ColumnCountNotMatchingTheRelation) {
  StreamValidator v;
  ASSERT_TRUE(v.Check(Relation(16385, 8), Lsn(0x10)).ok());
  ASSERT_TRUE(v.Check(Begin(0x1000), Lsn(0x10)).ok());
  ExpectViolation(v, Insert(16385, 7), 0x0A2B3C4D5EULL, "has 7 columns but its Relation message has 8");
  UpdateMessage update;
  update.relation_oid = 16385;
  update.new_tuple.values.resize(9);
  ExpectViolation(v, update, 0x20, "has 9 columns");
  // A new Relation message (ALTER TABLE) changes the expected width.
  ASSERT_TRUE(v.Check(Relation(16385, 7), Lsn(0x30)).ok());
  EXPECT_TRUE(v.Check(Insert(16385, 7), Lsn(0x40)).ok());
}

TEST(StreamValidatorTest, CommitEndBeforeItsCommitLsn) {
  StreamValidator v;
  ASSERT_TRUE(v.Check(Begin(0x5000), Lsn(0x4000)).ok());
  ExpectViolation(v, Commit(0x5000, 0x4FFF), 0x5000, "end LSN 0/4FFF is before its commit LSN 0/5000");
}

TEST(StreamValidatorTest, CommitEndBeforeItsBegin) {
  StreamValidator v;
  ASSERT_TRUE(v.Check(Begin(0x5000), Lsn(0x4000)).ok());
  ExpectViolation(v, Commit(0x100, 0x200), 0x5000, "(Begin said 0/5000)");
}

TEST(StreamValidatorTest, LsnsGoingBackwardsAcrossTransactions) {
  StreamValidator v;
  ASSERT_TRUE(v.Check(Begin(0x9000), Lsn(0x8000)).ok());
  ASSERT_TRUE(v.Check(Commit(0x9000, 0x9040), Lsn(0x9000)).ok());
  ExpectViolation(v, Begin(0x8FFF, 701), 0x9100, "LSNs going backwards");
}

TEST(StreamValidatorTest, CommitWithoutBegin) {
  StreamValidator v;
  ExpectViolation(v, Commit(0x10, 0x20), 0x10, "Commit (end LSN 0/20) without a Begin");
}

TEST(StreamValidatorTest, BeginInsideATransaction) {
  StreamValidator v;
  ASSERT_TRUE(v.Check(Begin(0x10), Lsn(0x1)).ok());
  ExpectViolation(v, Begin(0x20), 0x5, "Begin inside an open transaction");
}

TEST(StreamValidatorTest, ChangesOutsideATransaction) {
  StreamValidator v;
  ASSERT_TRUE(v.Check(Relation(1, 2), Lsn(0x1)).ok());
  ExpectViolation(v, Insert(1, 2), 0x77, "Insert for relation 1 outside a transaction");
  UpdateMessage update;
  update.relation_oid = 1;
  update.new_tuple.values.resize(2);
  ExpectViolation(v, update, 0x78, "Update for relation 1 outside a transaction");
  ExpectViolation(v, DeleteMessage{}, 0x79, "Delete outside a transaction");
  ExpectViolation(v, TruncateMessage{}, 0x7A, "Truncate outside a transaction");
  LogicalMessage message;
  message.flags = 1;
  ExpectViolation(v, message, 0x7B, "transactional Message outside a transaction");
}

TEST(StreamValidatorTest, StateDoesNotAdvanceOnAViolation) {
  StreamValidator v;
  ASSERT_TRUE(v.Check(Begin(0x5000), Lsn(0x4000)).ok());
  ASSERT_FALSE(v.Check(Commit(0x5000, 0x10), Lsn(0x5000)).ok());
  EXPECT_TRUE(v.in_transaction());
}

}  // namespace
}  // namespace outboxd::pgoutput
