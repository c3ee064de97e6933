// Checks the pipeline's hot-path promise through the delivery-mode layer:
// once warm, reading a transaction, producing its events, serving their
// delivery reports and confirming allocates nothing in at-least-once mode,
// and nothing per event in exactly-once mode (a Kafka commit allocates its
// checkpoint, once per Kafka transaction, not per event). Global operator new
// is replaced in this binary only, to count allocations.
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "fakes.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "pipeline/at_least_once.h"
#include "pipeline/exactly_once.h"
#include "pipeline/pipeline.h"

namespace {
thread_local size_t allocations = 0;
}  // namespace

void* operator new(size_t size) {
  ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace outboxd::pipeline {
namespace {

using ::outboxd::testing::Begin;
using ::outboxd::testing::Commit;
using ::outboxd::testing::Insert;
using ::outboxd::testing::Relation;

constexpr uint32_t kOid = 16400;
constexpr int kTransactions = 3000;
constexpr int kEventsPerTransaction = 3;

// Frames made up front, handed out without allocating; counts the
// allocations between two frame numbers.
class PrebuiltStream : public replication::ReplicationStream {
 public:
  PrebuiltStream(std::atomic<bool>* stop, size_t window_start, size_t window_end)
      : stop_(stop), window_start_(window_start), window_end_(window_end) {
    Push(0x100, Relation(kOid, "public", "outbox",
                         {{"id", 2950}, {"aggregate_type", 25}, {"aggregate_id", 25}, {"event_type", 25},
                          {"payload", 3802}}));
    for (int t = 0; t < kTransactions; ++t) {
      const uint64_t lsn = 0x10000 + static_cast<uint64_t>(t) * 0x100;
      Push(lsn, Begin(lsn + 0x40, 700 + t));
      for (int e = 0; e < kEventsPerTransaction; ++e) {
        Push(lsn + 1 + e, Insert(kOid, {fmt::format("00000000-0000-4000-8000-{:012d}", t * 10 + e), "Order",
                                        "o-1", "OrderCreated", "{\"total_cents\": 1999}"}));
      }
      Push(lsn + 0x40, Commit(lsn + 0x40, lsn + 0x50));
    }
    statuses_.reserve(1 << 16);
  }

  absl::StatusOr<bool> ReadFrame(absl::Duration, std::string_view* frame) override {
    if (next_ == window_start_) at_start_ = allocations;
    if (next_ == window_end_) at_end_ = allocations;
    if (next_ >= frames_.size()) {
      *stop_ = true;
      return false;
    }
    *frame = frames_[next_++];
    return true;
  }
  absl::Status SendStatus(const replication::StandbyStatus& status) override {
    statuses_.push_back(status.flushed);
    return absl::OkStatus();
  }

  size_t frames() const { return frames_.size(); }
  size_t allocations_in_window() const { return at_end_ - at_start_; }
  Lsn last_flushed() const { return statuses_.empty() ? Lsn() : statuses_.back(); }

 private:
  void Push(uint64_t lsn, const std::string& pgoutput) {
    frames_.push_back(replication::EncodeXLogData(
        {.data_start = Lsn(lsn), .wal_end = Lsn(lsn), .send_time = 0, .data = pgoutput}));
  }

  std::atomic<bool>* stop_;
  size_t window_start_, window_end_;
  std::vector<std::string> frames_;
  size_t next_ = 0;
  size_t at_start_ = 0, at_end_ = 0;
  std::vector<Lsn> statuses_;
};

// Acknowledges everything at each poll, without allocating; transactions
// always commit.
class NullSink : public kafka::EventSink {
 public:
  NullSink() { pending_.reserve(1 << 16); }
  void SetDeliveryHandler(kafka::DeliveryHandler handler) override { handler_ = std::move(handler); }
  absl::Status Produce(const kafka::ProduceRequest& request) override {
    pending_.push_back(request.token);
    return absl::OkStatus();
  }
  void Poll(absl::Duration) override {
    for (uint64_t token : pending_) handler_(token, absl::OkStatus());
    pending_.clear();
  }
  absl::Status Flush(absl::Duration) override {
    Poll(absl::ZeroDuration());
    return absl::OkStatus();
  }
  size_t InFlight() const override { return pending_.size(); }
  absl::Status CheckReachable(absl::Duration) override { return absl::OkStatus(); }
  absl::Status FatalError() const override { return absl::OkStatus(); }
  absl::Status BeginTransaction() override { return absl::OkStatus(); }
  absl::Status CommitTransaction(absl::Duration) override {
    Poll(absl::ZeroDuration());
    return absl::OkStatus();
  }
  absl::Status AbortTransaction(absl::Duration) override { return absl::OkStatus(); }

 private:
  kafka::DeliveryHandler handler_;
  std::vector<uint64_t> pending_;
};

// The frames of the last third of the transactions: warm by then.
constexpr size_t kFramesPerTransaction = kEventsPerTransaction + 2;
constexpr size_t kWindowStart = 1 + 2 * kTransactions / 3 * kFramesPerTransaction;
constexpr size_t kWindowEnd = 1 + kTransactions * kFramesPerTransaction - 1;
constexpr size_t kEventsInWindow = (kWindowEnd - kWindowStart) / kFramesPerTransaction * kEventsPerTransaction;

size_t RunWith(DeliveryMode* mode) {
  std::atomic<bool> stop{false};
  PrebuiltStream stream(&stop, kWindowStart, kWindowEnd);
  NullSink sink;
  telemetry::Metrics metrics;
  PipelineOptions options;
  options.tables.push_back(outbox::TableConfig{});
  options.delivery = mode;
  auto pipeline = Pipeline::Create(&stream, &sink, options, &metrics);
  EXPECT_TRUE(pipeline.ok());
  if (!pipeline.ok()) return 0;
  EXPECT_TRUE((*pipeline)->Run(stop).ok());
  EXPECT_EQ(stream.last_flushed(), Lsn(0x10000 + (kTransactions - 1) * 0x100 + 0x50));
  return stream.allocations_in_window();
}

TEST(PipelineAllocTest, AtLeastOnceAllocatesNothingOnceWarm) {
  AtLeastOnceMode mode;
  const size_t allocated = RunWith(&mode);
  std::printf("at-least-once: %zu allocations for %zu events once warm\n", allocated, kEventsInWindow);
  EXPECT_EQ(allocated, 0u);
}

TEST(PipelineAllocTest, ExactlyOnceAllocatesNothingPerEventOnceWarm) {
  // One Kafka transaction over the whole window: no commit inside it.
  ExactlyOnceOptions options;
  options.interval = absl::Hours(1);
  options.max_events = 1000000;
  options.split_after = absl::Hours(1);
  ExactlyOnceMode mode(options);
  const size_t allocated = RunWith(&mode);
  std::printf("exactly-once: %zu allocations for %zu events once warm, in one Kafka transaction\n", allocated,
              kEventsInWindow);
  // Only the amortized growth of the open Kafka transaction's list of
  // PostgreSQL commit times (for the latency histogram): a doubling or two.
  EXPECT_LE(allocated, 2u);
}

}  // namespace
}  // namespace outboxd::pipeline
