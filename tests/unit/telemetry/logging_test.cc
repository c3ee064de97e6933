#include "telemetry/logging.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::telemetry {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

TEST(LoggingTest, TextIsOneLine) {
  const std::string line = FormatLogLine(LogLevel::kWarn, "server said:\nDETAIL: x", LogFormat::kText);
  EXPECT_THAT(line, MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z warn server said: DETAIL: x"));
}

TEST(LoggingTest, JsonEscapesAndKeepsUtf8) {
  const std::string line =
      FormatLogLine(LogLevel::kError, "a \"q\" \\ \n\t\x01 caf\xc3\xa9 bad\xff end", LogFormat::kJson);
  EXPECT_THAT(line, MatchesRegex(R"(\{"ts":"[0-9T:.Z-]{24}","level":"error","msg":".*"\})"));
  EXPECT_THAT(line, HasSubstr(R"("msg":"a \"q\" \\ \n\t\u0001 caf)" "\xc3\xa9" R"( bad\ufffd end"})"));
}

TEST(LoggingTest, RegisteredSecretsAreMaskedEverywhere) {
  AddLogSecret("s3cr3t-pw");
  AddLogSecret("s3cr3t-pw-longer");  // contains the first: masked whole
  AddLogSecret("ab");                // too short to mask safely: ignored
  for (LogFormat format : {LogFormat::kText, LogFormat::kJson}) {
    const std::string line = FormatLogLine(
        LogLevel::kInfo, "dsn password=s3cr3t-pw and s3cr3t-pw-longer, ab", format);
    EXPECT_THAT(line, Not(HasSubstr("s3cr3t")));
    EXPECT_THAT(line, HasSubstr("password=******** and ********, ab"));
  }
}

TEST(LoggingTest, ParseLogLevel) {
  LogLevel level = LogLevel::kInfo;
  EXPECT_TRUE(ParseLogLevel("debug", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_TRUE(ParseLogLevel("error", &level));
  EXPECT_EQ(level, LogLevel::kError);
  EXPECT_FALSE(ParseLogLevel("INFO", &level));
  EXPECT_EQ(level, LogLevel::kError);
}

TEST(LoggingTest, LevelFilter) {
  SetLogLevel(LogLevel::kWarn);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kWarn));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  SetLogLevel(LogLevel::kInfo);
}

}  // namespace
}  // namespace outboxd::telemetry
