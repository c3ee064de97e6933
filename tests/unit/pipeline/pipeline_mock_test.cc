// The real Pipeline (and Relay) over a scripted replication stream and the
// real RdKafkaSink against librdkafka's mock cluster: producer faults a real
// broker cannot produce on demand. NOT_ENOUGH_REPLICAS and a broker that drops
// its connections mid-batch (retried, nothing lost), message timeouts that
// leave gaps (the flush LSN stops before the first failure), and a fatal
// idempotence error (purge, new producer, restart from the slot, re-produce).
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fakes.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kafka/rdkafka_sink.h"
#include "pipeline/at_least_once.h"
#include "pipeline/pipeline.h"
#include "pipeline/relay.h"

namespace outboxd::pipeline {
namespace {

using ::outboxd::testing::Begin;
using ::outboxd::testing::Commit;
using ::outboxd::testing::FakeStream;
using ::outboxd::testing::Insert;
using ::outboxd::testing::Relation;

constexpr uint32_t kOid = 16400;
constexpr uint32_t kUuid = 2950, kText = 25, kJsonb = 3802;
constexpr int16_t kProduceApiKey = 0;

std::string Id(int n) { return fmt::format("00000000-0000-4000-8000-{:012d}", n); }

std::string RelationBytes() {
  return Relation(kOid, "public", "outbox",
                  {{"id", kUuid}, {"aggregate_type", kText}, {"aggregate_id", kText},
                   {"event_type", kText}, {"payload", kJsonb}});
}

// Transaction `t` (1-based): Begin at t*0x1000, one event per aggregate type
// in `types`, Commit ending at End(t).
uint64_t End(int t) { return static_cast<uint64_t>(t) * 0x1000 + 0x50; }
void PushTxn(FakeStream& stream, int t, const std::vector<std::string>& types, int* next_id) {
  const uint64_t lsn = static_cast<uint64_t>(t) * 0x1000;
  stream.PushData(lsn, Begin(lsn + 0x40, 700 + t));
  for (size_t i = 0; i < types.size(); ++i) {
    const int n = (*next_id)++;
    stream.PushData(lsn + 1 + i, Insert(kOid, {Id(n), types[i], fmt::format("a-{}", n), "Created",
                                               fmt::format("{{\"n\": {}}}", n)}));
  }
  stream.PushData(lsn + 0x40, Commit(lsn + 0x40, End(t)));
}

PipelineOptions Options() {
  PipelineOptions options;
  options.tables.push_back(outbox::TableConfig{});
  options.tables.back().topic = "t.{aggregate_type}";
  options.feedback_delay = absl::ZeroDuration();
  options.status_interval = absl::Milliseconds(100);
  return options;
}

std::unique_ptr<kafka::RdKafkaSink> MockSink(kafka::KafkaProperties extra = {}) {
  kafka::KafkaProperties p = {{"test.mock.num.brokers", "2"}, {"linger.ms", "1"}};
  p.insert(p.end(), extra.begin(), extra.end());
  auto sink = kafka::RdKafkaSink::Create(p);
  EXPECT_TRUE(sink.ok()) << sink.status();
  return sink.ok() ? *std::move(sink) : nullptr;
}

// Creates `topic` with one partition led by `broker`.
void CreateTopic(rd_kafka_mock_cluster_t* mock, const std::string& topic, int32_t broker) {
  ASSERT_EQ(rd_kafka_mock_topic_create(mock, topic.c_str(), 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(rd_kafka_mock_partition_set_leader(mock, topic.c_str(), 0, broker),
            RD_KAFKA_RESP_ERR_NO_ERROR);
}

// Runs the pipeline until the flush LSN reaches `until`, the session ends, or
// 30 seconds pass.
absl::Status RunUntilFlushed(FakeStream& stream, kafka::EventSink& sink, Lsn until,
                             std::function<void()> on_idle = nullptr) {
  std::atomic<bool> stop{false};
  telemetry::Metrics metrics;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  stream.on_empty = [&] {
    if (on_idle) on_idle();
    if (stream.max_flushed() >= until || absl::Now() > deadline) stop = true;
  };
  AtLeastOnceMode mode;
  PipelineOptions options = Options();
  options.delivery = &mode;
  auto pipeline = Pipeline::Create(&stream, &sink, options, &metrics);
  if (!pipeline.ok()) return pipeline.status();
  return (*pipeline)->Run(stop);
}

TEST(PipelineMockTest, NotEnoughReplicasAndDroppedConnectionsMidBatchAreRetriedNothingLost) {
  absl::Time now = absl::Now();
  FakeStream stream(&now);
  auto sink = MockSink({{"message.timeout.ms", "20000"}, {"reconnect.backoff.max.ms", "100"}});
  ASSERT_NE(sink, nullptr);
  rd_kafka_mock_cluster_t* mock = rd_kafka_handle_mock_cluster(sink->handle());
  CreateTopic(mock, "t.A", 1);
  int next_id = 1;
  stream.PushData(0x100, RelationBytes());
  PushTxn(stream, 1, {"A", "A", "A"}, &next_id);
  stream.PushAction([&] {
    // The next produce requests fail with NOT_ENOUGH_REPLICAS (retriable).
    ASSERT_EQ(rd_kafka_mock_broker_push_request_error_rtts(
                  mock, 1, kProduceApiKey, 3, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0,
                  RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  });
  PushTxn(stream, 2, {"A", "A", "A"}, &next_id);
  // The broker drops its connections while transaction 3 is in flight.
  stream.PushAction([&] { rd_kafka_mock_broker_set_down(mock, 1); });
  PushTxn(stream, 3, {"A", "A", "A"}, &next_id);
  bool restored = false;
  const absl::Time down_until = absl::Now() + absl::Milliseconds(500);
  absl::Status status = RunUntilFlushed(stream, *sink, Lsn(End(3)), [&] {
    if (!restored && absl::Now() > down_until) {
      rd_kafka_mock_broker_set_up(mock, 1);
      restored = true;
    }
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(restored);
  EXPECT_EQ(stream.max_flushed(), Lsn(End(3))) << "every event acknowledged, none failed";
  size_t left = 99;
  ASSERT_EQ(rd_kafka_mock_broker_error_stack_cnt(mock, 1, kProduceApiKey, &left),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  EXPECT_EQ(left, 0u) << "the injected errors were served";
}

TEST(PipelineMockTest, MessageTimeoutsThatLeaveGapsStopTheFlushBeforeTheFirstFailure) {
  absl::Time now = absl::Now();
  FakeStream stream(&now);
  auto sink = MockSink({{"message.timeout.ms", "1000"}});
  ASSERT_NE(sink, nullptr);
  rd_kafka_mock_cluster_t* mock = rd_kafka_handle_mock_cluster(sink->handle());
  CreateTopic(mock, "t.Up", 1);
  CreateTopic(mock, "t.Down", 2);
  // Messages 1, 4, 5 go to broker 1 and are delivered; 2 and 3 go to broker
  // 2, which is down, and time out. One transaction each. Broker 2 goes down
  // only once transaction 1 is confirmed: a loaded machine can take longer
  // than message.timeout.ms to fetch the first metadata with a broker down,
  // and then message 1 would time out too.
  int next_id = 1;
  stream.PushData(0x100, RelationBytes());
  PushTxn(stream, 1, {"Up"}, &next_id);
  stream.PushGate([&] { return stream.max_flushed() >= Lsn(End(1)); });
  stream.PushAction([&] {
    ASSERT_EQ(rd_kafka_mock_broker_set_down(mock, 2), RD_KAFKA_RESP_ERR_NO_ERROR);
  });
  PushTxn(stream, 2, {"Down"}, &next_id);
  PushTxn(stream, 3, {"Down"}, &next_id);
  PushTxn(stream, 4, {"Up"}, &next_id);
  PushTxn(stream, 5, {"Up"}, &next_id);
  absl::Status status = RunUntilFlushed(stream, *sink, Lsn(End(5)));
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("MSG_TIMED_OUT"));
  EXPECT_EQ(stream.max_flushed(), Lsn(End(1)))
      << "confirmed transaction 1, never 2 or later (4 and 5 were delivered but come after 2)";
}

// A slot for the Relay test: transactions with their end LSNs; every new
// stream replays those after the confirmed position, as PostgreSQL does.
struct FakeSlot {
  Lsn confirmed;
  int transactions = 4;
  int events_per_txn = 3;
};

// Forwards to an RdKafkaSink and records which outbox ids were acknowledged.
class RecordingSink : public kafka::EventSink {
 public:
  RecordingSink(std::unique_ptr<kafka::RdKafkaSink> inner, std::map<std::string, int>* acked)
      : inner_(std::move(inner)), acked_(acked) {}
  void SetDeliveryHandler(kafka::DeliveryHandler handler) override {
    inner_->SetDeliveryHandler([this, handler](uint64_t token, const absl::Status& status) {
      auto it = keys_.find(token);
      if (status.ok() && it != keys_.end()) {
        for (const std::string& key : it->second) ++(*acked_)[key];
      }
      keys_.erase(token);
      handler(token, status);
    });
  }
  absl::Status Produce(const kafka::ProduceRequest& r) override {
    absl::Status s = inner_->Produce(r);
    if (s.ok()) keys_[r.token].push_back(std::string(r.key));
    return s;
  }
  void Poll(absl::Duration timeout) override { inner_->Poll(timeout); }
  absl::Status Flush(absl::Duration timeout) override { return inner_->Flush(timeout); }
  size_t InFlight() const override { return inner_->InFlight(); }
  absl::Status CheckReachable(absl::Duration timeout) override {
    return inner_->CheckReachable(timeout);
  }
  absl::Status FatalError() const override { return inner_->FatalError(); }
  rd_kafka_t* handle() const { return inner_->handle(); }

 private:
  std::unique_ptr<kafka::RdKafkaSink> inner_;
  std::map<std::string, int>* acked_;
  std::map<uint64_t, std::vector<std::string>> keys_;  // token -> keys (one txn per token)
};

TEST(PipelineMockTest, FatalIdempotenceErrorRebuildsTheProducerAndReproducesFromTheSlot) {
  absl::Time now = absl::Now();
  FakeSlot slot;
  std::map<std::string, int> acked;
  std::atomic<bool> stop{false};
  int sinks = 0, streams = 0;
  RecordingSink* current = nullptr;
  std::vector<std::unique_ptr<FakeStream>> kept;  // statuses of every session
  const absl::Time deadline = absl::Now() + absl::Seconds(60);

  SinkFactory sink_factory = [&]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
    ++sinks;
    auto sink = std::make_unique<RecordingSink>(MockSink(), &acked);
    current = sink.get();
    return sink;
  };
  StreamFactory stream_factory =
      [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    ++streams;
    auto stream = std::make_unique<FakeStream>(&now);
    FakeStream* s = stream.get();
    stream->PushData(0x100, RelationBytes());
    int next_id = 1;
    for (int t = 1; t <= slot.transactions; ++t) {
      if (Lsn(End(t)) <= slot.confirmed) {
        next_id += slot.events_per_txn;
        continue;
      }
      PushTxn(*s, t, std::vector<std::string>(slot.events_per_txn, "A"), &next_id);
      if (streams == 1 && t == 2) {
        // First session: a fatal idempotence error while transactions 1 and
        // 2 may be in flight; the rest is read but never confirmed.
        s->PushAction([&] {
          rd_kafka_test_fatal_error(current->handle(),
                                    RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                    "injected by the test");
        });
      }
    }
    s->on_empty = [&, s] {
      slot.confirmed = std::max(slot.confirmed, s->max_flushed());
      if (slot.confirmed >= Lsn(End(slot.transactions)) || absl::Now() > deadline) stop = true;
    };
    kept.push_back(std::move(stream));
    // The Relay owns what it gets: hand over a forwarding stream.
    struct Forward : replication::ReplicationStream {
      FakeStream* s;
      FakeSlot* slot;
      absl::StatusOr<bool> ReadFrame(absl::Duration t, std::string_view* f) override {
        return s->ReadFrame(t, f);
      }
      absl::Status SendStatus(const replication::StandbyStatus& st) override {
        slot->confirmed = std::max(slot->confirmed, st.flushed);
        return s->SendStatus(st);
      }
    };
    auto forward = std::make_unique<Forward>();
    forward->s = s;
    forward->slot = &slot;
    return forward;
  };

  telemetry::Metrics metrics;
  RelayOptions options;
  options.pipeline = Options();
  options.initial_backoff = absl::Milliseconds(1);
  options.max_backoff = absl::Milliseconds(10);
  Relay relay(stream_factory, sink_factory, options, &metrics);
  absl::Status status = relay.Run(stop);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_GE(sinks, 2) << "the producer was rebuilt";
  EXPECT_GE(streams, 2) << "replication restarted from the slot";
  EXPECT_EQ(slot.confirmed, Lsn(End(slot.transactions)));
  EXPECT_GE(metrics.reconnects.Get("kafka"), 1u);
  // Nothing lost; duplicates only among what was in flight at the fault
  // (transactions 1 and 2: 6 events).
  int duplicates = 0;
  for (int n = 1; n <= slot.transactions * slot.events_per_txn; ++n) {
    EXPECT_GE(acked[Id(n)], 1) << "event " << n << " was never acknowledged";
    duplicates += std::max(0, acked[Id(n)] - 1);
    if (n > 2 * slot.events_per_txn) {
      EXPECT_LE(acked[Id(n)], 1) << "event " << n;
    }
  }
  EXPECT_LE(duplicates, 2 * slot.events_per_txn);
}

}  // namespace
}  // namespace outboxd::pipeline
