// The checkpoint topic's reader against librdkafka's mock cluster: the error
// paths a real broker cannot produce on demand. An error that repeats (a
// missing ACL) is retried with a backoff, never in a tight request loop, and a
// stop ends the wait at once. Records of the key in several partitions are
// tested against the real broker (tests/integration/exactly_once_test.cc).
#include "kafka/checkpoint_topic.h"

#include <librdkafka/rdkafka_mock.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::kafka {
namespace {

using ::testing::HasSubstr;

constexpr int16_t kListOffsetsApiKey = 2;  // Kafka protocol ApiKey of ListOffsetsRequest
constexpr int32_t kBrokerId = 1;           // the mock's brokers are numbered from 1
constexpr char kTopic[] = "outboxd.checkpoints";
constexpr char kKey[] = "7312345678901234567/outboxd";

struct Deleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};

// A producer whose mock cluster (one broker) serves the test, with the
// checkpoint topic made in it. The producer counts the metadata requests it
// sends (from librdkafka's protocol debug log: the mock counts none).
class MockCluster {
 public:
  MockCluster() {
    char errstr[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    EXPECT_EQ(rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", errstr, sizeof errstr), RD_KAFKA_CONF_OK);
    EXPECT_EQ(rd_kafka_conf_set(conf, "debug", "protocol", errstr, sizeof errstr), RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_opaque(conf, &metadata_requests_);
    rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t* rk, int, const char*, const char* line) {
      if (std::strstr(line, "Sent MetadataRequest") != nullptr) {
        static_cast<std::atomic<int>*>(rd_kafka_opaque(rk))->fetch_add(1);
      }
    });
    rk_.reset(rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr));
    EXPECT_NE(rk_, nullptr) << errstr;
    mock_ = rd_kafka_handle_mock_cluster(rk_.get());
    EXPECT_NE(mock_, nullptr);
    EXPECT_EQ(rd_kafka_mock_topic_create(mock_, kTopic, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  rd_kafka_t* producer() { return rk_.get(); }
  int metadata_requests() const { return metadata_requests_.load(); }
  rd_kafka_mock_cluster_t* mock() { return mock_; }
  // What the checkpoint reader's consumers connect with.
  KafkaProperties Properties() const { return {{"bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock_)}}; }

  // The next `n` ListOffsets requests fail with `err`.
  void FailListOffsets(size_t n, rd_kafka_resp_err_t err) {
    for (size_t i = 0; i < n; ++i) {
      rd_kafka_mock_broker_push_request_error_rtts(mock_, kBrokerId, kListOffsetsApiKey, 1, err, 0);
    }
  }
  size_t ListOffsetsErrorsLeft() {
    size_t n = 0;
    EXPECT_EQ(rd_kafka_mock_broker_error_stack_cnt(mock_, kBrokerId, kListOffsetsApiKey, &n),
              RD_KAFKA_RESP_ERR_NO_ERROR);
    return n;
  }

 private:
  std::atomic<int> metadata_requests_{0};  // before rk_: its log callback writes here until destroyed
  std::unique_ptr<rd_kafka_t, Deleter> rk_;
  rd_kafka_mock_cluster_t* mock_ = nullptr;
};

// A stop signal's self-pipe: readable once Stop() ran.
class StopPipe {
 public:
  StopPipe() { EXPECT_EQ(pipe(fds_), 0); }
  ~StopPipe() {
    close(fds_[0]);
    close(fds_[1]);
  }
  int fd() const { return fds_[0]; }
  void Stop() { EXPECT_EQ(write(fds_[1], "x", 1), 1); }

 private:
  int fds_[2] = {-1, -1};
};

TEST(CheckpointTopicMockTest, AnEmptyTopicHasNoCheckpoint) {
  MockCluster cluster;
  // (The mock does not answer CreateTopics: PrepareCheckpointTopic would wait its whole timeout.)
  absl::StatusOr<int32_t> partitions =
      CheckpointTopicPartitions(cluster.producer(), kTopic, absl::Seconds(20), /*stop_fd=*/-1);
  ASSERT_TRUE(partitions.ok()) << partitions.status();
  EXPECT_EQ(*partitions, 1);
  absl::StatusOr<LatestCheckpoint> latest =
      ReadLatestCheckpoint(cluster.Properties(), kTopic, *partitions, kKey, absl::Seconds(20), -1);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_FALSE(latest->value.has_value());
  EXPECT_EQ(latest->partition, 0);
  EXPECT_TRUE(latest->older_in.empty());
}

// An ACL that refuses the watermark request: the old reader asked again at
// once, thousands of times a second, until its deadline (70 s by default).
TEST(CheckpointTopicMockTest, RepeatedListOffsetsErrorsBackOff) {
  MockCluster cluster;
  constexpr size_t kInjected = 1000;
  cluster.FailListOffsets(kInjected, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  const absl::Time started = absl::Now();
  absl::StatusOr<LatestCheckpoint> latest =
      ReadLatestCheckpoint(cluster.Properties(), kTopic, 1, kKey, absl::Seconds(3), -1);
  const absl::Duration took = absl::Now() - started;
  const size_t requests = kInjected - cluster.ListOffsetsErrorsLeft();
  std::cout << "[ figures ] ListOffsets requests refused in " << absl::FormatDuration(took) << ": " << requests
            << "\n";
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(latest.status().message(), HasSubstr("TOPIC_AUTHORIZATION_FAILED"));
  EXPECT_THAT(latest.status().message(), HasSubstr("grant outboxd's principal Describe and Read"));
  // 100 ms doubling to 2 s: 6 attempts in 3 s, each one or two requests.
  EXPECT_LE(requests, 16u) << "a tight request loop";
  EXPECT_GE(requests, 2u) << "retried at all";
}

// The errors stop: the reader gets through within its deadline.
TEST(CheckpointTopicMockTest, TransientListOffsetsErrorsAreRetried) {
  MockCluster cluster;
  cluster.FailListOffsets(3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
  absl::StatusOr<LatestCheckpoint> latest =
      ReadLatestCheckpoint(cluster.Properties(), kTopic, 1, kKey, absl::Seconds(30), -1);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_FALSE(latest->value.has_value());
  EXPECT_EQ(cluster.ListOffsetsErrorsLeft(), 0u);
}

// A stop in the middle of a backoff ends the read at once with CancelledError,
// not at the deadline.
TEST(CheckpointTopicMockTest, StopEndsTheBackoff) {
  MockCluster cluster;
  cluster.FailListOffsets(1000, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  StopPipe stop;
  std::thread stopper([&stop] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    stop.Stop();
  });
  const absl::Time started = absl::Now();
  absl::StatusOr<LatestCheckpoint> latest =
      ReadLatestCheckpoint(cluster.Properties(), kTopic, 1, kKey, absl::Seconds(120), stop.fd());
  const absl::Duration took = absl::Now() - started;
  stopper.join();
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kCancelled) << latest.status();
  EXPECT_LT(took, absl::Seconds(60)) << "the stop waited for the deadline";
}

// The metadata of the checkpoint topic keeps failing (a missing Describe
// ACL): backs off, says what to do at the deadline, and a stop ends it.
TEST(CheckpointTopicMockTest, RepeatedMetadataErrorsBackOffAndHonourTheStop) {
  MockCluster cluster;
  rd_kafka_mock_topic_set_error(cluster.mock(), kTopic, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  const int before = cluster.metadata_requests();
  absl::StatusOr<int32_t> partitions = CheckpointTopicPartitions(cluster.producer(), kTopic, absl::Seconds(3), -1);
  const int requests = cluster.metadata_requests() - before;
  std::cout << "[ figures ] metadata requests in 3 s of a refused topic: " << requests << "\n";
  // 6 attempts (100 ms doubling), and librdkafka's own refreshes of a topic in
  // error (about one a second); the old loop asked every 100 ms.
  EXPECT_LE(requests, 12);
  EXPECT_GE(requests, 2);
  EXPECT_EQ(partitions.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(partitions.status().message(), HasSubstr("TOPIC_AUTHORIZATION_FAILED"));
  EXPECT_THAT(partitions.status().message(), HasSubstr("grant outboxd's principal"));

  StopPipe stop;
  std::thread stopper([&stop] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    stop.Stop();
  });
  const absl::Time started = absl::Now();
  partitions = CheckpointTopicPartitions(cluster.producer(), kTopic, absl::Seconds(120), stop.fd());
  const absl::Duration took = absl::Now() - started;
  stopper.join();
  EXPECT_EQ(partitions.status().code(), absl::StatusCode::kCancelled) << partitions.status();
  EXPECT_LT(took, absl::Seconds(60)) << "the stop waited for the deadline";
}

TEST(CheckpointTopicMockTest, DefaultPartitionIsStable) {
  EXPECT_EQ(DefaultCheckpointPartition(kKey, 1), 0);
  EXPECT_EQ(DefaultCheckpointPartition(kKey, 0), 0);
  for (int32_t n = 2; n < 50; ++n) {
    const int32_t p = DefaultCheckpointPartition(kKey, n);
    EXPECT_GE(p, 0);
    EXPECT_LT(p, n);
    EXPECT_EQ(p, DefaultCheckpointPartition(kKey, n));
  }
}

}  // namespace
}  // namespace outboxd::kafka
