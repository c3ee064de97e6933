#include "telemetry/metrics.h"

#include <memory>
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

// The single-stream process renders the same series as before plus the two
// labels, process-wide ones unlabelled.
TEST(MetricsRegistryTest, StreamSeriesCarryDatabaseAndSlot) {
  MetricsRegistry registry;
  std::shared_ptr<Metrics> m = *registry.AddStream({"app", "outboxd"});
  m->transactions = 5;
  m->reconnects.Add("postgres");
  m->confirmed_flush_lsn = 42;
  registry.process().kafka_brokers_up = 2;
  const std::string text = registry.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("\noutboxd_transactions_total{database=\"app\",slot=\"outboxd\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_reconnects_total{database=\"app\",slot=\"outboxd\",target=\"postgres\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_confirmed_flush_lsn{database=\"app\",slot=\"outboxd\"} 42\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_up 1\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_kafka_brokers_up 2\n"));
  EXPECT_THAT(text, Not(HasSubstr("outboxd_up{")));
}

// Prometheus wants each family's samples together under one HELP/TYPE.
TEST(MetricsRegistryTest, EachFamilyOnceWithEveryStreamUnderIt) {
  MetricsRegistry registry;
  for (const char* db : {"orders", "billing", "shipping"}) {
    std::shared_ptr<Metrics> m = *registry.AddStream({db, std::string("outboxd_") + db});
    m->transactions = 1;
  }
  const std::string text = registry.RenderPrometheus();
  const size_t type = text.find("# TYPE outboxd_transactions_total counter\n");
  ASSERT_NE(type, std::string::npos);
  EXPECT_EQ(text.find("# TYPE outboxd_transactions_total", type + 1), std::string::npos);
  const size_t billing = text.find("outboxd_transactions_total{database=\"billing\"");
  const size_t orders = text.find("outboxd_transactions_total{database=\"orders\"");
  const size_t shipping = text.find("outboxd_transactions_total{database=\"shipping\"");
  const size_t next = text.find("# HELP", type);
  EXPECT_LT(type, billing);
  EXPECT_LT(billing, orders);
  EXPECT_LT(orders, shipping);
  EXPECT_LT(shipping, next);
}

TEST(MetricsRegistryTest, StreamsComeAndGo) {
  MetricsRegistry registry;
  std::shared_ptr<Metrics> a = *registry.AddStream({"a", "s_a"});
  EXPECT_EQ(registry.AddStream({"a", "s_a"}).status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(registry.AddStream({"b", "s_b"}).ok());
  EXPECT_EQ(registry.Streams().size(), 2u);
  registry.RemoveStream({"a", "s_a"});
  ASSERT_EQ(registry.Streams().size(), 1u);
  EXPECT_EQ(registry.Streams()[0]->labels().database, "b");
  EXPECT_THAT(registry.RenderPrometheus(), Not(HasSubstr("database=\"a\"")));
  a->transactions = 3;  // a pipeline still holding its set writes to it safely
  registry.RemoveStream({"nope", "x"});
  EXPECT_EQ(registry.Streams().size(), 1u);
  // Slot families appear once a stream's monitor has read its slot.
  EXPECT_THAT(registry.RenderPrometheus(), Not(HasSubstr("outboxd_slot_active")));
}

// What PostgreSQL 16 to 18 say about a slot: each fact is rendered only where the server says
// it (the monitor leaves the others at their "unknown" values), the reason as a family.
TEST(MetricsRegistryTest, SlotFactsAppearWhereTheServerSaysThem) {
  MetricsRegistry registry;
  std::shared_ptr<Metrics> m = *registry.AddStream({"app", "s"});
  m->slot_known = 1;
  m->slot_on_standby = 1;
  std::string text = registry.RenderPrometheus();  // PostgreSQL 15: none of the newer facts
  EXPECT_THAT(text, HasSubstr("\noutboxd_slot_on_standby{database=\"app\",slot=\"s\"} 1\n"));
  for (const char* fact : {"slot_conflicting", "slot_invalidation_reason", "slot_synced",
                           "slot_inactive_since_timestamp_seconds", "slot_idle_timeout_seconds"}) {
    EXPECT_THAT(text, Not(HasSubstr(std::string("outboxd_") + fact))) << fact;
  }
  // PostgreSQL 18, invalidated for idleness.
  m->slot_conflicting = 0;
  m->slot_invalidation_known = 1;
  m->slot_invalidation_reason = 3;
  m->slot_synced = 0;
  m->slot_inactive_since_unixtime = 1796000000;
  m->slot_idle_timeout_seconds = 60;
  text = registry.RenderPrometheus();
  EXPECT_THAT(text, HasSubstr("\noutboxd_slot_conflicting{database=\"app\",slot=\"s\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_slot_invalidation_reason{database=\"app\",slot=\"s\",reason=\"idle_timeout\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_slot_invalidation_reason{database=\"app\",slot=\"s\",reason=\"wal_removed\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_slot_invalidation_reason{database=\"app\",slot=\"s\",reason=\"other\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_slot_synced{database=\"app\",slot=\"s\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_slot_inactive_since_timestamp_seconds{database=\"app\",slot=\"s\"} 1796000000\n"));
  EXPECT_THAT(text, HasSubstr("\noutboxd_slot_idle_timeout_seconds{database=\"app\",slot=\"s\"} 60\n"));
  // A valid slot: every reason 0.
  m->slot_invalidation_reason = -1;
  text = registry.RenderPrometheus();
  EXPECT_THAT(text, Not(HasSubstr("reason=\"idle_timeout\"} 1")));
  EXPECT_THAT(text, HasSubstr("reason=\"idle_timeout\"} 0\n"));
}

TEST(MetricsRegistryTest, LabelValuesAreEscaped) {
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
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
