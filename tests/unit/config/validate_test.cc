// The checks between tables (config/validate.cc): [sink]'s exactly-once
// settings against [sink.kafka]'s transaction.timeout.ms.
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "config/config.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::config {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<Config> Parse(std::string_view sink, std::string_view kafka = "") {
  const std::string text = fmt::format(R"(
[source]
dsn = "host=db dbname=app user=outboxd"
[messages]
enabled = true
[sink]
delivery = "exactly_once"
{}
[sink.kafka]
"bootstrap.servers" = "kafka:9092"
{}
)",
                                       sink, kafka);
  return ParseConfig(text, [](std::string_view) -> std::optional<std::string> { return std::nullopt; });
}

// A Kafka transaction must commit before outboxd would split a PostgreSQL
// transaction (half of transaction.timeout.ms); past it the loop's wait had a
// deadline in the past and spun.
TEST(ValidateTest, TransactionIntervalPastHalfTheTransactionTimeoutIsRefused) {
  absl::StatusOr<Config> config = Parse("transaction_interval = \"40s\"");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  EXPECT_THAT(config.status().message(), HasSubstr("sink.transaction_interval = 40s"));
  EXPECT_THAT(config.status().message(), HasSubstr("transaction.timeout.ms\" (1m)"));
  EXPECT_THAT(config.status().message(), HasSubstr("lower transaction_interval to 30s or less"));
  EXPECT_THAT(config.status().message(), HasSubstr("line 8:"));

  config = Parse("transaction_interval = \"6s\"", "\"transaction.timeout.ms\" = 10000");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  EXPECT_THAT(config.status().message(), HasSubstr("(10s)"));
}

TEST(ValidateTest, TransactionIntervalUpToHalfTheTransactionTimeoutIsAccepted) {
  EXPECT_TRUE(Parse("transaction_interval = \"30s\"").ok());
  EXPECT_TRUE(Parse("transaction_interval = \"5s\"", "\"transaction.timeout.ms\" = 10000").ok());
  // The defaults: 100ms against 60 s.
  EXPECT_TRUE(Parse("").ok());
}

// The default interval against a short transaction timeout set alone: the
// error points at the property, the only line that was written.
TEST(ValidateTest, AShortTransactionTimeoutIsCheckedAgainstTheDefaultInterval) {
  absl::StatusOr<Config> config = Parse("", "\"transaction.timeout.ms\" = 150");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  EXPECT_THAT(config.status().message(), HasSubstr("sink.transaction_interval = 100ms"));
  EXPECT_THAT(config.status().message(), HasSubstr("line 11:"));
}

TEST(ValidateTest, ATransactionGapAsLongAsTheIntervalIsRefused) {
  absl::StatusOr<Config> config = Parse("transaction_interval = \"20ms\"\ntransaction_gap = \"20ms\"");
  ASSERT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  EXPECT_THAT(config.status().message(), HasSubstr("sink.transaction_gap = 20ms is not shorter than"));
  EXPECT_THAT(config.status().message(), HasSubstr("line 9:"));
  EXPECT_TRUE(Parse("transaction_interval = \"20ms\"\ntransaction_gap = \"19ms\"").ok());
  EXPECT_TRUE(Parse("transaction_interval = \"10ms\"\ntransaction_gap = \"0ms\"").ok());
}

TEST(ValidateTest, AtLeastOnceHasNoTransactionsToCheck) {
  const std::string text = R"(
[source]
dsn = "host=db dbname=app user=outboxd"
[messages]
enabled = true
[sink.kafka]
"bootstrap.servers" = "kafka:9092"
"transaction.timeout.ms" = 100
)";
  EXPECT_TRUE(ParseConfig(text, [](std::string_view) -> std::optional<std::string> { return std::nullopt; }).ok());
}

}  // namespace
}  // namespace outboxd::config
