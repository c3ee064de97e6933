#include "telemetry/metrics.h"

#include <string>

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
// also runs on a live scrape in tests/deploy/check_deploy.py).
TEST(MetricsTest, DeclaredSamplesSitUnderTheirFamily) {
  const std::string text = Metrics().RenderPrometheus();
  const size_t type = text.find("# TYPE outboxd_reconnects_total counter\n");
  const size_t sample = text.find("outboxd_reconnects_total{target=\"kafka\"} 0");
  const size_t next = text.find("# HELP outboxd_transactions_total");
  ASSERT_NE(type, std::string::npos);
  EXPECT_LT(type, sample);
  EXPECT_LT(sample, next);
}

}  // namespace
}  // namespace outboxd::telemetry
