#include "registry/registry_sink.h"

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::registry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Produced {
  std::string topic;
  std::string value;
};

class RecordingSink : public kafka::EventSink {
 public:
  void SetDeliveryHandler(kafka::DeliveryHandler handler) override {}
  void SetFailedRecordHandler(kafka::FailedRecordHandler handler) override { failed_ = std::move(handler); }
  absl::Status Produce(const kafka::ProduceRequest& r) override {
    produced.push_back({std::string(r.topic), std::string(r.value)});
    return absl::OkStatus();
  }
  void Poll(absl::Duration) override {}
  absl::Status Flush(absl::Duration) override { return absl::OkStatus(); }
  size_t InFlight() const override { return 0; }
  absl::Status CheckReachable(absl::Duration) override { return absl::OkStatus(); }
  absl::Status FatalError() const override { return absl::OkStatus(); }
  int WakeFd() const override { return 42; }
  void PrepareTopic(std::string_view topic) override { prepared.emplace_back(topic); }
  void Purge() override { ++purges; }

  std::vector<Produced> produced;
  std::vector<std::string> prepared;
  int purges = 0;
  kafka::FailedRecordHandler failed_;
};

class RegistrySinkTest : public ::testing::Test {
 protected:
  RegistrySink Make(SubjectStrategy strategy) {
    auto inner = std::make_unique<RecordingSink>();
    inner_ = inner.get();
    return RegistrySink(std::move(inner), strategy,
                        [this](const std::string& subject) -> absl::StatusOr<int32_t> {
                          lookups_.push_back(subject);
                          if (auto it = answers_.find(subject); it != answers_.end()) return it->second;
                          return 7;
                        },
                        "outboxd.dlq");
  }
  static kafka::ProduceRequest Record(std::string_view topic, std::string_view value) {
    return kafka::ProduceRequest{.topic = topic, .key = "k", .value = value};
  }

  RecordingSink* inner_ = nullptr;
  std::vector<std::string> lookups_;
  std::map<std::string, absl::StatusOr<int32_t>> answers_;
};

TEST_F(RegistrySinkTest, FramesEnvelopesAndLooksUpEachSubjectOnce) {
  RegistrySink sink = Make(SubjectStrategy::kTopicName);
  ASSERT_TRUE(sink.Produce(Record("orders", "\x0a\x01x")).ok());
  ASSERT_TRUE(sink.Produce(Record("orders", "\x0a\x01y")).ok());
  ASSERT_TRUE(sink.Produce(Record("users", "\x0a\x01z")).ok());
  EXPECT_THAT(lookups_, ElementsAre("orders-value", "users-value"));
  ASSERT_EQ(inner_->produced.size(), 3u);
  EXPECT_EQ(inner_->produced[0].value, std::string("\x00\x00\x00\x00\x07\x00\x0a\x01x", 9));
  EXPECT_EQ(inner_->produced[1].value, std::string("\x00\x00\x00\x00\x07\x00\x0a\x01y", 9));
}

// The event loop polls the producer's wake fd, and relies on cached topic handles
// and on Purge: the wrapper must hand all three through.
TEST_F(RegistrySinkTest, WakeFdTopicHandlesAndPurgeReachTheProducer) {
  RegistrySink sink = Make(SubjectStrategy::kTopicName);
  EXPECT_EQ(sink.WakeFd(), 42);
  sink.PrepareTopic("orders");
  EXPECT_THAT(inner_->prepared, ElementsAre("orders"));
  sink.Purge();
  EXPECT_EQ(inner_->purges, 1);
}

TEST_F(RegistrySinkTest, RecordNameSubjectIsSharedAcrossTopics) {
  RegistrySink sink = Make(SubjectStrategy::kRecordName);
  ASSERT_TRUE(sink.Prepare({"orders", "users"}).ok());
  // The sink caches per topic; the resolver (EnvelopeSchemas) caches per subject.
  EXPECT_THAT(lookups_, ElementsAre("outbox.v1.Envelope", "outbox.v1.Envelope"));
  ASSERT_TRUE(sink.Produce(Record("orders", "m")).ok());
  EXPECT_EQ(lookups_.size(), 2u);
}

TEST_F(RegistrySinkTest, DeadLettersAndPayloadValuesPassUnframed) {
  RegistrySink sink = Make(SubjectStrategy::kTopicName);
  ASSERT_TRUE(sink.Prepare({"outboxd.dlq"}).ok());
  ASSERT_TRUE(sink.Produce(Record("outboxd.dlq", "row")).ok());
  kafka::ProduceRequest payload = Record("orders", "{\"a\":1}");
  payload.envelope = false;
  ASSERT_TRUE(sink.Produce(payload).ok());
  EXPECT_TRUE(lookups_.empty());
  EXPECT_EQ(inner_->produced[0].value, "row");
  EXPECT_EQ(inner_->produced[1].value, "{\"a\":1}");
}

TEST_F(RegistrySinkTest, UnreachableRegistryProducesNothingAndIsTransient) {
  answers_["orders-value"] = absl::UnavailableError("schema registry POST ...: no answer: Connection");
  RegistrySink sink = Make(SubjectStrategy::kTopicName);
  absl::Status prepared = sink.Prepare({"orders"});
  EXPECT_EQ(prepared.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(prepared.message(), HasSubstr("orders-value"));
  absl::Status produced = sink.Produce(Record("orders", "m"));
  EXPECT_EQ(produced.code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(inner_->produced.empty());
  // Not cached: the registry is asked again once it is back.
  answers_["orders-value"] = 9;
  ASSERT_TRUE(sink.Produce(Record("orders", "m")).ok());
  EXPECT_EQ(inner_->produced.at(0).value, std::string("\x00\x00\x00\x00\x09\x00m", 7));
}

TEST_F(RegistrySinkTest, IncompatibleSchemaIsFatalAndNamesSubjectAndAnswer) {
  answers_["orders-value"] =
      absl::FailedPreconditionError("HTTP 409, error_code 409: Schema being registered is incompatible");
  RegistrySink sink = Make(SubjectStrategy::kTopicName);
  absl::Status produced = sink.Produce(Record("orders", "m"));
  EXPECT_EQ(produced.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(produced.message(), HasSubstr("orders-value"));
  EXPECT_THAT(produced.message(), HasSubstr("incompatible"));
  EXPECT_TRUE(inner_->produced.empty());
}

TEST_F(RegistrySinkTest, RefusedRecordsAreHandedBackUnframed) {
  RegistrySink sink = Make(SubjectStrategy::kTopicName);
  std::string seen;
  sink.SetFailedRecordHandler(
      [&seen](const kafka::ProduceRequest& r, const absl::Status&) { seen = std::string(r.value); });
  ASSERT_TRUE(sink.Produce(Record("orders", "\x0a\x01x")).ok());
  const std::string framed = inner_->produced.at(0).value;
  inner_->failed_(Record("orders", framed), absl::InvalidArgumentError("too large"));
  EXPECT_EQ(seen, "\x0a\x01x");
  inner_->failed_(Record("outboxd.dlq", "row"), absl::InvalidArgumentError("too large"));
  EXPECT_EQ(seen, "row");
}

class NullSink : public RecordingSink {
 public:
  absl::Status Produce(const kafka::ProduceRequest& r) override {
    bytes += r.value.size() + static_cast<uint8_t>(r.value[4]);
    return absl::OkStatus();
  }
  size_t bytes = 0;
};

// What [schema_registry] adds per event once the subject's id is cached: the
// topic lookup, the 6-byte header and a copy of the value into a reused
// buffer. Prints ns/event; asserts only a generous bound (CI machines vary).
TEST(RegistrySinkBenchmark, PerEventCostWithCachedId) {
  auto inner = std::make_unique<NullSink>();
  NullSink* null = inner.get();
  int lookups = 0;
  RegistrySink sink(std::move(inner), SubjectStrategy::kTopicName,
                    [&lookups](const std::string&) -> absl::StatusOr<int32_t> {
                      ++lookups;
                      return 1234567;
                    },
                    "outboxd.dlq");
  const std::string value(200, 'v');  // about the size of a small event's envelope
  const kafka::ProduceRequest request{.topic = "outbox.event.order", .key = "k", .value = value};
  constexpr int kIterations = 2'000'000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kIterations; ++i) ASSERT_TRUE(sink.Produce(request).ok());
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() / kIterations;
  std::printf("RegistrySink::Produce overhead: %.1f ns/event for a %zu-byte value (%zu bytes out)\n", ns,
              value.size(), null->bytes);
  EXPECT_EQ(lookups, 1);
  EXPECT_LT(ns, 5000.0);
}

}  // namespace
}  // namespace outboxd::registry
