// The outboxd command line: --version, check against the real servers, config
// errors, and no password in any output.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using Result = CommandResult;

std::string WriteConfig(const std::string& toml) {
  const std::string path = fmt::format("/tmp/{}.toml", UniqueName("cli"));
  std::ofstream(path) << toml;
  return path;
}

TEST(CliTest, VersionAndUsage) {
  Result version = RunOutboxd("--version");
  EXPECT_EQ(version.code, 0);
  EXPECT_THAT(version.output, HasSubstr("outboxd 0."));
  Result usage = RunOutboxd("frobnicate");
  EXPECT_EQ(usage.code, 2);
  EXPECT_THAT(usage.output, HasSubstr("usage: outboxd run --config FILE"));
}

TEST(CliTest, ConfigErrorsNameTheKeyAndExit2) {
  Result r = RunOutboxd("run --config " + WriteConfig("[source]\ndns = \"x\"\n"));
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.output, HasSubstr("source.dns"));
  Result missing = RunOutboxd("check --config /nonexistent/outboxd.toml");
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.output, HasSubstr("/nonexistent/outboxd.toml"));
}

class CheckTest : public ::testing::Test {
 protected:
  void TearDown() override { DropSource(sql_, source_); }
  Sql sql_;
  TestSource source_ = CreateDefaultSource(sql_, "check");
};

TEST_F(CheckTest, AllChecksPassAgainstTheLocalStack) {
  Result r = RunOutboxd("check --config " + WriteConfig(ConfigFor(source_)));
  EXPECT_EQ(r.code, 0) << r.output;
  for (const char* check : {"connect", "privileges", "wal_level", "publication", "slot", "kafka"}) {
    EXPECT_THAT(r.output, HasSubstr(fmt::format("ok    {}", check))) << r.output;
  }
  EXPECT_THAT(r.output, HasSubstr("will be created")) << "the slot does not exist yet";
}

TEST_F(CheckTest, EachFailureSaysWhatToDo) {
  TestSource wrong = source_;
  wrong.publication = "no_such_publication";
  std::string config = ConfigFor(wrong);
  // And a Kafka port where nothing listens.
  const std::string bootstrap = KafkaBootstrap();
  config.replace(config.find(bootstrap), bootstrap.size(), "127.0.0.1:1");
  Result r = RunOutboxd("check --config " + WriteConfig(config));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("FAIL  publication"));
  EXPECT_THAT(r.output, HasSubstr("sql/outbox.sql"));
  EXPECT_THAT(r.output, HasSubstr("FAIL  kafka"));
  EXPECT_THAT(r.output, HasSubstr("ok    wal_level"));
}

// The password in a DSN never reaches a log line, even when the connection
// fails and is retried.
TEST_F(CheckTest, NoPasswordInAnyOutput) {
  const std::string secret = "Sup3rSecretPassw0rd";
  std::string config = ConfigFor(source_);
  const std::string dsn = PgDsn();
  config.replace(config.find(dsn), dsn.size(),
                 fmt::format("host=127.0.0.1 port=1 dbname=app user=postgres password={}", secret));
  const std::string path = WriteConfig(config);

  Result check = RunOutboxd("check --config " + path);
  EXPECT_EQ(check.code, 1);
  EXPECT_THAT(check.output, Not(HasSubstr(secret)));

  OutboxdProcess outboxd(config);
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("retrying", absl::Seconds(20))) << outboxd.Log();
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0);
  EXPECT_THAT(outboxd.Log(), Not(HasSubstr(secret)));
}

}  // namespace
}  // namespace outboxd::it
