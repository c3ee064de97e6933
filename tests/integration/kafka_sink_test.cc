// RdKafkaSink against the real local Kafka broker (deploy/local/stack.sh up,
// 127.0.0.1:${OUTBOXD_KAFKA_PORT:-59092}): idempotent produce with headers,
// read back with the harness's consumer, and reachability checks.
#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "kafka/rdkafka_sink.h"

namespace outboxd::kafka {
namespace {

using ::testing::HasSubstr;

std::string Bootstrap() { return it::KafkaBootstrap(); }

std::string FreshTopic(std::string_view what) {
  return fmt::format("outboxd.it.{}.{}.{}", what, getpid(), absl::ToUnixMicros(absl::Now()));
}

// A loopback port with nothing listening: bound, then closed.
int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class KafkaSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sink = RdKafkaSink::Create({{"bootstrap.servers", Bootstrap()}});
    ASSERT_TRUE(sink.ok()) << sink.status();
    sink_ = *std::move(sink);
    const absl::Status reachable = sink_->CheckReachable(absl::Seconds(15));
    ASSERT_TRUE(reachable.ok()) << reachable << "\nstart the broker: deploy/local/stack.sh up";
  }

  std::unique_ptr<RdKafkaSink> sink_;
};

TEST_F(KafkaSinkTest, ProducesIdempotentlyAndReadsBackInOrder) {
  const std::string topic = FreshTopic("sink");
  constexpr uint64_t kCount = 1000;
  std::map<uint64_t, std::vector<absl::Status>> reports;
  sink_->SetDeliveryHandler(
      [&](uint64_t token, const absl::Status& status) { reports[token].push_back(status); });

  for (uint64_t i = 0; i < kCount; ++i) {
    const std::string key = fmt::format("aggregate-{}", i % 7);
    const std::string value = fmt::format("event-{:04}", i);
    const std::string id = fmt::format("id-{}", i);
    const std::string binary("\0\x01\xff", 3);
    const std::vector<std::pair<std::string_view, std::string_view>> headers = {
        {"outbox-id", id}, {"event-type", "created"}, {"empty", ""}, {"binary", binary}};
    absl::Status s;
    // Backpressure as the pipeline does it: serve reports, then retry.
    while ((s = sink_->Produce({.topic = topic, .key = key, .value = value, .headers = &headers,
                                .token = i}))
               .code() == absl::StatusCode::kResourceExhausted) {
      sink_->Poll(absl::Milliseconds(10));
    }
    ASSERT_TRUE(s.ok()) << s;
  }
  const absl::Status flushed = sink_->Flush(absl::Seconds(60));
  ASSERT_TRUE(flushed.ok()) << flushed;
  EXPECT_EQ(sink_->InFlight(), 0u);
  const absl::Status fatal = sink_->FatalError();
  EXPECT_TRUE(fatal.ok()) << fatal;
  ASSERT_EQ(reports.size(), kCount);
  for (uint64_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(reports[i].size(), 1u) << i;
    ASSERT_TRUE(reports[i][0].ok()) << i << ": " << reports[i][0];
  }

  std::map<int32_t, std::vector<it::Record>> partitions;
  for (it::Record& r : it::ReadTopics({topic}, kCount, absl::Seconds(60))) {
    partitions[r.partition].push_back(std::move(r));
  }
  size_t total = 0;
  std::vector<bool> seen(kCount, false);
  for (const auto& [partition, records] : partitions) {
    std::map<std::string, int> last_by_key;
    int last = -1;
    for (const it::Record& r : records) {
      ++total;
      ASSERT_EQ(r.value.rfind("event-", 0), 0u) << r.value;
      const int n = std::stoi(r.value.substr(6));
      ASSERT_GE(n, 0);
      ASSERT_LT(n, static_cast<int>(kCount));
      EXPECT_FALSE(seen[n]) << "duplicate " << r.value;
      seen[n] = true;
      // Produce order is kept within a partition (idempotence, retries).
      EXPECT_GT(n, last) << "partition " << partition;
      last = n;
      EXPECT_EQ(r.key, fmt::format("aggregate-{}", n % 7));
      const std::vector<std::pair<std::string, std::string>> want_headers = {
          {"outbox-id", fmt::format("id-{}", n)},
          {"event-type", "created"},
          {"empty", ""},
          {"binary", std::string("\0\x01\xff", 3)}};
      EXPECT_EQ(r.headers, want_headers) << r.value;
    }
  }
  EXPECT_EQ(total, kCount);
}

TEST_F(KafkaSinkTest, CheckReachableAnswers) {
  EXPECT_TRUE(sink_->CheckReachable(absl::Seconds(5)).ok());
}

TEST(KafkaSinkUnreachableTest, ClosedPortIsUnavailableWithinTimeout) {
  const std::string bootstrap = fmt::format("127.0.0.1:{}", ClosedPort());
  auto sink = RdKafkaSink::Create({{"bootstrap.servers", bootstrap}});
  ASSERT_TRUE(sink.ok()) << sink.status();
  const absl::Time start = absl::Now();
  const absl::Status s = (*sink)->CheckReachable(absl::Seconds(2));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(bootstrap));
  EXPECT_LT(took, absl::Seconds(4)) << took;
}

}  // namespace
}  // namespace outboxd::kafka
