// RdKafkaSink against the real local Kafka broker (deploy/local/stack.sh up,
// 127.0.0.1:${OUTBOXD_KAFKA_PORT:-59092}): idempotent produce with headers,
// read back with a librdkafka consumer, and reachability checks.
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
#include "kafka/rdkafka_sink.h"

namespace outboxd::kafka {
namespace {

using ::testing::HasSubstr;

std::string Bootstrap() {
  const char* port = std::getenv("OUTBOXD_KAFKA_PORT");
  return fmt::format("127.0.0.1:{}", port != nullptr && *port != '\0' ? port : "59092");
}

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

struct Record {
  std::string key;
  std::string value;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct ConsumerDeleter {
  void operator()(rd_kafka_t* rk) const {
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
  }
};

// Reads `want` records of every partition of `topic` from the beginning,
// without a consumer group, grouped by partition in offset order.
std::map<int32_t, std::vector<Record>> ConsumeAll(const std::string& topic, size_t want,
                                                  absl::Duration limit) {
  std::map<int32_t, std::vector<Record>> out;
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", Bootstrap().c_str(), errstr, sizeof errstr);
  rd_kafka_conf_set(conf, "group.id", fmt::format("{}.reader", topic).c_str(), errstr,
                    sizeof errstr);
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
  rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof errstr);
  std::unique_ptr<rd_kafka_t, ConsumerDeleter> rk(
      rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr));
  if (rk == nullptr) {
    ADD_FAILURE() << "consumer: " << errstr;
    return out;
  }

  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  const rd_kafka_resp_err_t merr = rd_kafka_metadata(rk.get(), 0, rkt, &metadata, 10000);
  rd_kafka_topic_destroy(rkt);
  if (merr != RD_KAFKA_RESP_ERR_NO_ERROR || metadata->topic_cnt != 1) {
    ADD_FAILURE() << "metadata: " << rd_kafka_err2str(merr);
    return out;
  }
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(1);
  for (int i = 0; i < metadata->topics[0].partition_cnt; ++i) {
    rd_kafka_topic_partition_list_add(parts, topic.c_str(), metadata->topics[0].partitions[i].id)
        ->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_metadata_destroy(metadata);
  const rd_kafka_resp_err_t aerr = rd_kafka_assign(rk.get(), parts);
  rd_kafka_topic_partition_list_destroy(parts);
  if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
    ADD_FAILURE() << "assign: " << rd_kafka_err2str(aerr);
    return out;
  }

  size_t got = 0;
  const absl::Time deadline = absl::Now() + limit;
  while (got < want && absl::Now() < deadline) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk.get(), 100);
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      Record r;
      r.key.assign(static_cast<const char*>(msg->key), msg->key_len);
      r.value.assign(static_cast<const char*>(msg->payload), msg->len);
      rd_kafka_headers_t* headers = nullptr;
      if (rd_kafka_message_headers(msg, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name;
        const void* value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i) {
          r.headers.emplace_back(name, std::string(static_cast<const char*>(value), size));
        }
      }
      out[msg->partition].push_back(std::move(r));
      ++got;
    } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ADD_FAILURE() << "consume: " << rd_kafka_message_errstr(msg);
    }
    rd_kafka_message_destroy(msg);
  }
  return out;
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

  const auto partitions = ConsumeAll(topic, kCount, absl::Seconds(60));
  size_t total = 0;
  std::vector<bool> seen(kCount, false);
  for (const auto& [partition, records] : partitions) {
    std::map<std::string, int> last_by_key;
    int last = -1;
    for (const Record& r : records) {
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
