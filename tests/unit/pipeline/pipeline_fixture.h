// The pipeline's test fixture in at-least-once mode over the test doubles
// of fakes.h: pipeline_test.cc (the loop) and pipeline_records_test.cc
// (records, delivery reports, dead letters) share it.
#pragma once

#include <atomic>
#include <string>
#include <string_view>

#include "fakes.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pipeline/at_least_once.h"
#include "pipeline/pipeline.h"

namespace outboxd::pipeline {

using ::outboxd::testing::Begin;
using ::outboxd::testing::Commit;
using ::outboxd::testing::Delete;
using ::outboxd::testing::FakeSink;
using ::outboxd::testing::FakeStream;
using ::outboxd::testing::Insert;
using ::outboxd::testing::Message;
using ::outboxd::testing::Relation;

inline constexpr uint32_t kOutboxOid = 16400;
inline constexpr uint32_t kOtherOid = 16500;
inline constexpr uint32_t kUuid = 2950, kText = 25, kJsonb = 3802, kTimestamptz = 1184;

inline std::string Header(const testing::Produced& p, std::string_view name) {
  for (const auto& [k, v] : p.headers) {
    if (k == name) return v;
  }
  return "<absent>";
}

inline std::string Id(int n) { return fmt::format("00000000-0000-4000-8000-{:012d}", n); }

class PipelineTest : public ::testing::Test {
 protected:
  PipelineTest() : stream_(&now_) {
    options_.tables.push_back(outbox::TableConfig{});
    options_.status_interval = absl::Seconds(10);
    options_.feedback_delay = absl::ZeroDuration();
    options_.delivery = &mode_;
  }

  void PushRelation() {
    stream_.PushData(0x100, Relation(kOutboxOid, "public", "outbox",
                                     {{"id", kUuid},
                                      {"aggregate_type", kText},
                                      {"aggregate_id", kText},
                                      {"event_type", kText},
                                      {"payload", kJsonb},
                                      {"created_at", kTimestamptz}}));
  }
  void PushInsert(uint64_t lsn, int n, const std::string& type = "Order") {
    stream_.PushData(lsn, Insert(kOutboxOid, {Id(n), type, fmt::format("order-{}", n), "OrderCreated",
                                              fmt::format("{{\"n\": {}}}", n),
                                              "2026-11-27 03:09:58.5+00"}));
  }
  // One transaction: Begin at `lsn`, `events` inserts, Commit ending at lsn+0x50.
  void PushTxn(uint64_t lsn, uint32_t xid, int first, int events) {
    stream_.PushData(lsn, Begin(lsn + 0x40, xid));
    for (int i = 0; i < events; ++i) PushInsert(lsn + 1 + i, first + i);
    stream_.PushData(lsn + 0x40, Commit(lsn + 0x40, lsn + 0x50));
  }

  absl::Status RunUntilScriptEnds() {
    stream_.on_empty = [this] { stop_ = true; };
    auto pipeline = Pipeline::Create(&stream_, &sink_, options_, &metrics_, [this] { return now_; });
    if (!pipeline.ok()) return pipeline.status();
    return (*pipeline)->Run(stop_);
  }

  absl::Time now_ = absl::FromUnixSeconds(1800000000);
  FakeStream stream_;
  FakeSink sink_;
  telemetry::Metrics metrics_;
  AtLeastOnceMode mode_;  // the stream's: it outlives each session
  PipelineOptions options_;
  std::atomic<bool> stop_{false};
};

}  // namespace outboxd::pipeline
