#include "common/lsn.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd {
namespace {

TEST(LsnTest, ParsesAndFormatsPostgresForm) {
  absl::StatusOr<Lsn> lsn = Lsn::Parse("16/B374D848");
  ASSERT_TRUE(lsn.ok()) << lsn.status();
  EXPECT_EQ(lsn->value(), (uint64_t{0x16} << 32) | 0xB374D848);
  EXPECT_EQ(lsn->ToString(), "16/B374D848");
  EXPECT_EQ(Lsn(0).ToString(), "0/0");
  EXPECT_EQ(Lsn::Parse("0/1a")->value(), 0x1au);
}

TEST(LsnTest, RejectsMalformedText) {
  for (const char* bad : {"", "16", "/1", "1/", "G/1", "1/2/3", "123456789/0", " 1/2"}) {
    EXPECT_EQ(Lsn::Parse(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(LsnTest, OrdersByValue) {
  EXPECT_LT(Lsn(1), Lsn(2));
  EXPECT_FALSE(Lsn().valid());
  EXPECT_TRUE(Lsn(5).valid());
}

}  // namespace
}  // namespace outboxd
