#include "registry/registry_sink.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
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
  RecordingSink() { EXPECT_EQ(pipe2(wake_, O_NONBLOCK | O_CLOEXEC), 0); }
  ~RecordingSink() override {
    close(wake_[0]);
    close(wake_[1]);
  }
  void SetDeliveryHandler(kafka::DeliveryHandler handler) override {}
  absl::Status Produce(const kafka::ProduceRequest& r) override {
    produced.push_back({std::string(r.topic), std::string(r.value)});
    return absl::OkStatus();
  }
  void Poll(absl::Duration) override {}
  absl::Status Flush(absl::Duration) override { return absl::OkStatus(); }
  size_t InFlight() const override { return 0; }
  absl::Status CheckReachable(absl::Duration) override { return absl::OkStatus(); }
  absl::Status FatalError() const override { return absl::OkStatus(); }
  int WakeFd() const override { return wake_[0]; }
  void PrepareTopic(std::string_view topic) override { prepared.emplace_back(topic); }
  void Purge() override { ++purges; }
  // What librdkafka does when a report is queued.
  void Signal() { EXPECT_EQ(write(wake_[1], "x", 1), 1); }

  std::vector<Produced> produced;
  std::vector<std::string> prepared;
  int purges = 0;

 private:
  int wake_[2] = {-1, -1};
};

bool Readable(int fd, absl::Duration timeout) {
  pollfd pfd{fd, POLLIN, 0};
  return poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) == 1;
}

// Produces as the pipeline does: while the sink answers backpressure (a
// lookup runs), waits on its wake descriptor, polls it, and tries again.
absl::Status ProduceWaiting(kafka::EventSink& sink, const kafka::ProduceRequest& request) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (true) {
    absl::Status status = sink.Produce(request);
    if (!absl::IsResourceExhausted(status) || absl::Now() > deadline) return status;
    Readable(sink.WakeFd(), absl::Milliseconds(100));
    sink.Poll(absl::ZeroDuration());
  }
}

class RegistrySinkTest : public ::testing::Test {
 protected:
  std::unique_ptr<RegistrySink> Make(SubjectStrategy strategy) {
    auto inner = std::make_unique<RecordingSink>();
    inner_ = inner.get();
    return std::make_unique<RegistrySink>(std::move(inner), strategy,
                                          [this](const std::string& subject) -> absl::StatusOr<int32_t> {
                                            absl::MutexLock lock(&mu_);
                                            lookups_.push_back(subject);
                                            if (auto it = answers_.find(subject); it != answers_.end()) {
                                              return it->second;
                                            }
                                            return 7;
                                          },
                                          "outboxd.dlq");
  }
  static kafka::ProduceRequest Record(std::string_view topic, std::string_view value) {
    return kafka::ProduceRequest{.topic = topic, .key = "k", .value = value};
  }

  RecordingSink* inner_ = nullptr;
  absl::Mutex mu_;  // the resolver runs on the sink's worker thread
  std::vector<std::string> lookups_;
  std::map<std::string, absl::StatusOr<int32_t>> answers_;
};

TEST_F(RegistrySinkTest, FramesEnvelopesAndLooksUpEachSubjectOnce) {
  auto sink = Make(SubjectStrategy::kTopicName);
  ASSERT_TRUE(ProduceWaiting(*sink, Record("orders", "\x0a\x01x")).ok());
  ASSERT_TRUE(sink->Produce(Record("orders", "\x0a\x01y")).ok());
  ASSERT_TRUE(ProduceWaiting(*sink, Record("users", "\x0a\x01z")).ok());
  EXPECT_THAT(lookups_, ElementsAre("orders-value", "users-value"));
  ASSERT_EQ(inner_->produced.size(), 3u);
  EXPECT_EQ(inner_->produced[0].value, std::string("\x00\x00\x00\x00\x07\x00\x0a\x01x", 9));
  EXPECT_EQ(inner_->produced[1].value, std::string("\x00\x00\x00\x00\x07\x00\x0a\x01y", 9));
}

// The event loop polls the producer's wake descriptor (through the sink's),
// and relies on cached topic handles and on Purge: the wrapper must hand all
// three through.
TEST_F(RegistrySinkTest, WakeFdTopicHandlesAndPurgeReachTheProducer) {
  auto sink = Make(SubjectStrategy::kTopicName);
  ASSERT_GE(sink->WakeFd(), 0);
  EXPECT_FALSE(Readable(sink->WakeFd(), absl::ZeroDuration()));
  inner_->Signal();
  EXPECT_TRUE(Readable(sink->WakeFd(), absl::Seconds(5))) << "a delivery report did not wake the loop";
  sink->PrepareTopic("orders");
  EXPECT_THAT(inner_->prepared, ElementsAre("orders"));
  sink->Purge();
  EXPECT_EQ(inner_->purges, 1);
}

TEST_F(RegistrySinkTest, RecordNameSubjectIsSharedAcrossTopics) {
  auto sink = Make(SubjectStrategy::kRecordName);
  ASSERT_TRUE(sink->Prepare({"orders", "users"}).ok());
  // The sink caches per topic; the resolver (EnvelopeSchemas) caches per subject.
  EXPECT_THAT(lookups_, ElementsAre("outbox.v1.Envelope", "outbox.v1.Envelope"));
  ASSERT_TRUE(sink->Produce(Record("orders", "m")).ok());
  EXPECT_EQ(lookups_.size(), 2u);
}

TEST_F(RegistrySinkTest, DeadLettersAndPayloadValuesPassUnframed) {
  auto sink = Make(SubjectStrategy::kTopicName);
  ASSERT_TRUE(sink->Prepare({"outboxd.dlq"}).ok());
  ASSERT_TRUE(sink->Produce(Record("outboxd.dlq", "row")).ok());
  kafka::ProduceRequest payload = Record("orders", "{\"a\":1}");
  payload.envelope = false;
  ASSERT_TRUE(sink->Produce(payload).ok());
  EXPECT_TRUE(lookups_.empty());
  EXPECT_EQ(inner_->produced[0].value, "row");
  EXPECT_EQ(inner_->produced[1].value, "{\"a\":1}");
}

TEST_F(RegistrySinkTest, UnreachableRegistryProducesNothingAndIsTransient) {
  answers_["orders-value"] = absl::UnavailableError("schema registry POST ...: no answer: Connection");
  auto sink = Make(SubjectStrategy::kTopicName);
  absl::Status prepared = sink->Prepare({"orders"});
  EXPECT_EQ(prepared.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(prepared.message(), HasSubstr("orders-value"));
  absl::Status produced = ProduceWaiting(*sink, Record("orders", "m"));
  EXPECT_EQ(produced.code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(inner_->produced.empty());
  // Not cached: the registry is asked again once it is back.
  {
    absl::MutexLock lock(&mu_);
    answers_["orders-value"] = 9;
  }
  ASSERT_TRUE(ProduceWaiting(*sink, Record("orders", "m")).ok());
  EXPECT_EQ(inner_->produced.at(0).value, std::string("\x00\x00\x00\x00\x09\x00m", 7));
}

TEST_F(RegistrySinkTest, IncompatibleSchemaIsFatalAndNamesSubjectAndAnswer) {
  answers_["orders-value"] =
      absl::FailedPreconditionError("HTTP 409, error_code 409: Schema being registered is incompatible");
  auto sink = Make(SubjectStrategy::kTopicName);
  absl::Status produced = ProduceWaiting(*sink, Record("orders", "m"));
  EXPECT_EQ(produced.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(produced.message(), HasSubstr("orders-value"));
  EXPECT_THAT(produced.message(), HasSubstr("incompatible"));
  EXPECT_TRUE(inner_->produced.empty());
}

// A topic first seen while streaming: Produce never waits on the registry. It
// answers backpressure while the lookup runs on the sink's thread, the wake
// descriptor says when the answer is in, and the record goes out framed.
TEST_F(RegistrySinkTest, ANewTopicIsLookedUpOffTheCallersThread) {
  absl::Mutex mu;
  bool release = false;
  auto inner = std::make_unique<RecordingSink>();
  RecordingSink* producer = inner.get();
  RegistrySink sink(std::move(inner), SubjectStrategy::kTopicName,
                    [&](const std::string&) -> absl::StatusOr<int32_t> {
                      absl::MutexLock lock(&mu);
                      mu.Await(absl::Condition(&release));
                      return 5;
                    },
                    "outboxd.dlq");
  const absl::Time start = absl::Now();
  absl::Status first = sink.Produce(Record("orders", "m"));
  EXPECT_EQ(first.code(), absl::StatusCode::kResourceExhausted) << first;
  EXPECT_THAT(first.message(), HasSubstr("orders-value"));
  EXPECT_EQ(sink.Produce(Record("orders", "m")).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_FALSE(Readable(sink.WakeFd(), absl::Milliseconds(50)));
  {
    absl::MutexLock lock(&mu);
    release = true;
  }
  ASSERT_TRUE(Readable(sink.WakeFd(), absl::Seconds(10))) << "the answer did not wake the loop";
  sink.Poll(absl::ZeroDuration());
  EXPECT_FALSE(Readable(sink.WakeFd(), absl::ZeroDuration())) << "Poll left the descriptor readable";
  ASSERT_TRUE(sink.Produce(Record("orders", "m")).ok());
  EXPECT_EQ(producer->produced.at(0).value, std::string("\x00\x00\x00\x00\x05\x00m", 7));
}

// Dropping the sink while its lookup waits on a registry that does not
// answer cancels the call instead of waiting for it.
TEST_F(RegistrySinkTest, DroppingTheSinkDuringALookupCancelsIt) {
  absl::Mutex mu;
  bool cancelled = false;
  std::atomic<bool> asked{false};
  auto sink = std::make_unique<RegistrySink>(
      std::make_unique<RecordingSink>(), SubjectStrategy::kTopicName,
      [&](const std::string&) -> absl::StatusOr<int32_t> {
        asked = true;
        absl::MutexLock lock(&mu);
        mu.AwaitWithTimeout(absl::Condition(&cancelled), absl::Seconds(30));
        return absl::UnavailableError("cancelled");
      },
      "outboxd.dlq", [&] {
        absl::MutexLock lock(&mu);
        cancelled = true;
      });
  EXPECT_EQ(sink->Produce(Record("orders", "m")).code(), absl::StatusCode::kResourceExhausted);
  while (!asked) absl::SleepFor(absl::Milliseconds(1));
  const absl::Time start = absl::Now();
  sink.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(cancelled);
}

// Topics rendered from event data ({event_type}, {destination}) must not grow
// the id cache for the life of the process: the least recently used goes.
TEST_F(RegistrySinkTest, TopicIdsAreBoundedLeastRecentlyUsedFirst) {
  auto sink = Make(SubjectStrategy::kTopicName);
  ASSERT_TRUE(sink->Prepare({"keep"}).ok());
  for (size_t i = 0; i < RegistrySink::kMaxTopics + 100; ++i) {
    ASSERT_TRUE(ProduceWaiting(*sink, Record("t" + std::to_string(i), "m")).ok());
    if (i % 100 == 0) {
      ASSERT_TRUE(sink->Produce(Record("keep", "m")).ok()) << "looked up again at " << i;
    }
  }
  EXPECT_EQ(sink->cached_topics(), RegistrySink::kMaxTopics);
  ASSERT_TRUE(sink->Produce(Record("keep", "m")).ok()) << "a recently used topic was dropped";
  EXPECT_EQ(sink->Produce(Record("t0", "m")).code(), absl::StatusCode::kResourceExhausted)
      << "the least recently used topic was kept";
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
  ASSERT_TRUE(sink.Prepare({"outbox.event.order"}).ok());
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
