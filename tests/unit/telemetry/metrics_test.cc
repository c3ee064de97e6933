#include "telemetry/metrics.h"

#include <string>
#include <vector>

#include "common/bad_event.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::telemetry {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// rate() and increase() need a sample before the first increment: a counter
// that appears only at 1 looks to an alert like it always was 1.
TEST(MetricsTest, LabelledCountersStartAtZeroForEveryKnownValue) {
  const Metrics metrics;
  const std::string text = metrics.RenderPrometheus();
  for (std::string_view reason : bad_event::kAllReasons) {
    EXPECT_THAT(text, HasSubstr("outboxd_events_dead_lettered_total{reason=\"" +
                                std::string(reason) + "\"} 0\n"));
  }
  EXPECT_THAT(text, HasSubstr("outboxd_events_dead_lettered_total{reason=\"json_limit\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_events_dead_lettered_total{reason=\"invalid_value\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_reconnects_total{target=\"postgres\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_reconnects_total{target=\"kafka\"} 0\n"));
  // Topics are not known in advance: none until the first event.
  EXPECT_THAT(text, Not(HasSubstr("outboxd_events_published_total{")));
}

// A batch observed at once counts like the same observations one by one.
TEST(MetricsTest, HistogramObservesABatchAsManyObservations) {
  Metrics batch, single;
  batch.publish_latency.Observe(0.02, 3);
  batch.publish_latency.Observe(0.2, 0);
  for (int i = 0; i < 3; ++i) single.publish_latency.Observe(0.02);
  EXPECT_EQ(batch.RenderPrometheus(), single.RenderPrometheus());
  const std::string text = batch.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("outboxd_publish_latency_seconds_bucket{le=\"0.01\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_publish_latency_seconds_bucket{le=\"0.025\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_publish_latency_seconds_count 3\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_publish_latency_seconds_sum 0.06"));
}

TEST(MetricsTest, DeclaredLabelsCountFromZero) {
  Metrics metrics;
  metrics.reconnects.Add("kafka");
  metrics.events_dead_lettered.Add("json_limit", 2);
  const std::string text = metrics.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("outboxd_reconnects_total{target=\"kafka\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_reconnects_total{target=\"postgres\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("outboxd_events_dead_lettered_total{reason=\"json_limit\"} 2\n"));
  EXPECT_EQ(metrics.reconnects.Get("kafka"), 1u);
}

// Each family's samples follow its own # TYPE line (promtool check metrics
// also runs on a live scrape in tests/integration/observability_test.cc).
TEST(MetricsTest, DeclaredSamplesSitUnderTheirFamily) {
  const std::string text = Metrics().RenderPrometheus();
  const size_t type = text.find("# TYPE outboxd_reconnects_total counter\n");
  const size_t sample = text.find("outboxd_reconnects_total{target=\"kafka\"} 0");
  const size_t next = text.find("# HELP outboxd_transactions_total");
  ASSERT_NE(type, std::string::npos);
  EXPECT_LT(type, sample);
  EXPECT_LT(sample, next);
}

TEST(MetricsTest, ManyDistinctTopicsWarnOnce) {
  Metrics metrics;
  ::testing::internal::CaptureStderr();
  for (size_t i = 0; i < kManyTopics; ++i) metrics.events_published.Add("orders." + std::to_string(i));
  metrics.events_published.Add("orders.0");  // not a new topic
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  ::testing::internal::CaptureStderr();
  metrics.events_published.Add("orders.new");
  metrics.events_published.Add("orders.newer");
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(log, HasSubstr("events went to 1001 distinct topics"));
  EXPECT_THAT(log, HasSubstr("{event_type}, {destination}, {aggregate_type}"));
  EXPECT_EQ(log.find("distinct topics"), log.rfind("distinct topics"));  // once
}

TEST(LabeledCounterTest, WarnAboveBoundary) {
  LabeledCounter counter;
  std::vector<size_t> calls;
  counter.WarnAbove(2, [&calls](size_t n) { calls.push_back(n); });
  counter.Add("a");
  counter.Add("b");
  counter.Add("b");
  EXPECT_TRUE(calls.empty());
  counter.Add("c");
  counter.Add("d");
  EXPECT_THAT(calls, ::testing::ElementsAre(3u));
}

}  // namespace
}  // namespace outboxd::telemetry
