// outboxd-tail (examples/tail, the consumer of `make demo`) against the real
// broker: a topic that appears while it runs makes its consumer group
// rebalance, and no record read before the rebalance is printed again.
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace outboxd::it {
namespace {

// Produces `count` small records to `topic` (auto-created by the local broker)
// and waits for their acknowledgement.
void Produce(const std::string& topic, int count) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", KafkaBootstrap().c_str(), errstr, sizeof errstr);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  ASSERT_NE(rk, nullptr) << errstr;
  for (int i = 0; i < count; ++i) {
    const std::string value = fmt::format("record {}", i);
    ASSERT_EQ(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()),
                                RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  EXPECT_EQ(rd_kafka_flush(rk, 60000), RD_KAFKA_RESP_ERR_NO_ERROR) << "records to " << topic;
  rd_kafka_destroy(rk);
}

// "topic[partition]@offset" of every line outboxd-tail printed -> times printed.
std::map<std::string, int> Printed(const std::string& path) {
  std::map<std::string, int> seen;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) ++seen[line.substr(0, line.find(' '))];
  return seen;
}

TEST(TailTest, ANewTopicDoesNotMakeItPrintEarlierRecordsAgain) {
  const std::string prefix = UniqueName("tail");
  const std::string first = prefix + ".First", second = prefix + ".Second";
  ASSERT_NO_FATAL_FAILURE(Produce(first, 3));

  const std::string out = fmt::format("/tmp/{}.out", prefix);
  const std::string pattern = "^" + prefix + "\\..*";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen(out.c_str(), "w", stdout);
    execl(OUTBOXD_TAIL_BINARY, OUTBOXD_TAIL_BINARY, "--brokers", KafkaBootstrap().c_str(),
          "--from-beginning", pattern.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  auto has = [&](const std::string& topic, int offset) {
    return Printed(out).count(fmt::format("{}[0]@{}", topic, offset)) > 0;
  };
  EXPECT_TRUE(WaitFor([&] { return has(first, 2); }, absl::Seconds(60)));
  // The second topic matches the pattern: the group rebalances (the tail
  // refreshes metadata every second) and the first topic is assigned again.
  ASSERT_NO_FATAL_FAILURE(Produce(second, 1));
  EXPECT_TRUE(WaitFor([&] { return has(second, 0); }, absl::Seconds(60)));
  // A record produced after the rebalance: the first topic is read again, and
  // whatever the rebalance would replay comes before it.
  ASSERT_NO_FATAL_FAILURE(Produce(first, 1));
  EXPECT_TRUE(WaitFor([&] { return has(first, 3); }, absl::Seconds(60)));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  const std::map<std::string, int> printed = Printed(out);
  std::ostringstream all;
  for (const auto& [record, times] : printed) all << record << " x" << times << "\n";
  EXPECT_EQ(printed.size(), 5u) << all.str();
  for (const auto& [record, times] : printed) EXPECT_EQ(times, 1) << record << " printed " << times << " times";
  if (!::testing::Test::HasFailure()) std::remove(out.c_str());
}

}  // namespace
}  // namespace outboxd::it
