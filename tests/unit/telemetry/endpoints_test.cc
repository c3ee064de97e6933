#include "telemetry/endpoints.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::telemetry {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

ReadinessInput Streaming() {
  ReadinessInput in;
  in.streaming = true;
  in.kafka_brokers_up = 1;
  return in;
}

TEST(ReadinessTest, ReadyWhileStreamingWithABroker) {
  const Readiness r = EvaluateReadiness(Streaming());
  EXPECT_TRUE(r.ready);
  EXPECT_EQ(r.reason, "ready: streaming, 1 Kafka broker(s) connected");
}

TEST(ReadinessTest, NotReadyWhenKafkaUnreachableOrUnknown) {
  ReadinessInput in = Streaming();
  in.kafka_brokers_up = 0;
  Readiness r = EvaluateReadiness(in);
  EXPECT_FALSE(r.ready);
  EXPECT_THAT(r.reason, HasSubstr("Kafka unreachable"));
  in.kafka_brokers_up = -1;
  r = EvaluateReadiness(in);
  EXPECT_FALSE(r.ready);
  EXPECT_THAT(r.reason, HasSubstr("waiting for the first Kafka broker status"));
}

TEST(ReadinessTest, NotActiveAsStandbyEvenIfAStaleSessionFlagSaysStreaming) {
  ReadinessInput in = Streaming();
  in.standby = true;
  const Readiness r = EvaluateActive(in);
  EXPECT_FALSE(r.ready);
  EXPECT_THAT(r.reason, StartsWith("not ready: standby"));
}

// Both replicas of an active + standby Deployment must become Ready, or the
// Deployment is never Available and a rollout never finishes.
TEST(ReadinessTest, ReadyAsStandbyWhateverKafkaSays) {
  for (int brokers : {-1, 0, 2}) {
    ReadinessInput in;
    in.standby = true;
    in.kafka_brokers_up = brokers;
    const Readiness r = EvaluateReadiness(in);
    EXPECT_TRUE(r.ready) << brokers;
    EXPECT_THAT(r.reason, StartsWith("ready: standby")) << brokers;
    EXPECT_FALSE(EvaluateActive(in).ready) << brokers;
  }
}

TEST(ReadinessTest, ActiveAndReadyAgreeOutsideStandby) {
  ReadinessInput in = Streaming();
  EXPECT_TRUE(EvaluateActive(in).ready);
  EXPECT_EQ(EvaluateActive(in).reason, EvaluateReadiness(in).reason);
  in.kafka_brokers_up = 0;
  EXPECT_FALSE(EvaluateActive(in).ready);
  EXPECT_FALSE(EvaluateReadiness(in).ready);
  in = ReadinessInput{};
  in.last_error = "connection refused";
  EXPECT_FALSE(EvaluateActive(in).ready);
  EXPECT_FALSE(EvaluateReadiness(in).ready);
}

TEST(ReadinessTest, NeitherReadyNorActiveOnceTheSlotIsInvalidated) {
  ReadinessInput in = Streaming();
  in.slot_invalidated = true;
  EXPECT_FALSE(EvaluateActive(in).ready);
  EXPECT_FALSE(EvaluateReadiness(in).ready);
  EXPECT_THAT(EvaluateReadiness(in).reason, HasSubstr("invalidated"));
  in.standby = true;
  EXPECT_FALSE(EvaluateReadiness(in).ready);
}

TEST(ReadinessTest, StandbyStoppingIsNotReady) {
  ReadinessInput in;
  in.standby = true;
  in.stopping = true;
  EXPECT_FALSE(EvaluateReadiness(in).ready);
  EXPECT_THAT(EvaluateReadiness(in).reason, HasSubstr("stopping"));
}

TEST(ReadinessTest, NotReadyWhileReconnectingSaysWhy) {
  ReadinessInput in;
  in.kafka_brokers_up = 3;
  in.last_error = "PostgreSQL ended the replication stream";
  Readiness r = EvaluateReadiness(in);
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(r.reason, "not ready: reconnecting after: PostgreSQL ended the replication stream");
  in.last_error.clear();
  r = EvaluateReadiness(in);
  EXPECT_FALSE(r.ready);
  EXPECT_THAT(r.reason, HasSubstr("connecting"));
}

TEST(ReadinessTest, StoppingWins) {
  ReadinessInput in = Streaming();
  in.stopping = true;
  EXPECT_FALSE(EvaluateReadiness(in).ready);
  EXPECT_THAT(EvaluateReadiness(in).reason, HasSubstr("stopping"));
}

TEST(ReadinessTest, InputComesFromMetrics) {
  Metrics m;
  EXPECT_FALSE(EvaluateReadiness(ReadinessInputFrom(m, false)).ready);
  m.streaming = 1;
  m.kafka_brokers_up = 2;
  EXPECT_TRUE(EvaluateReadiness(ReadinessInputFrom(m, false)).ready);
  EXPECT_FALSE(EvaluateReadiness(ReadinessInputFrom(m, true)).ready);
  m.standby = 1;
  EXPECT_TRUE(EvaluateReadiness(ReadinessInputFrom(m, false)).ready);
  EXPECT_FALSE(EvaluateActive(ReadinessInputFrom(m, false)).ready);
  m.slot_invalidated = 1;
  EXPECT_FALSE(EvaluateReadiness(ReadinessInputFrom(m, false)).ready);
  m.slot_invalidated = 0;
  m.standby = 0;
  m.streaming = 0;
  m.SetLastError("Kafka refused");
  EXPECT_THAT(EvaluateReadiness(ReadinessInputFrom(m, false)).reason, HasSubstr("Kafka refused"));
}

TEST(ServeHttpTest, Routes) {
  Metrics m;
  m.events_published.Add("outbox.event.Order", 3);
  HttpResponse metrics = ServeHttp("GET", "/metrics", m, false);
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(metrics.body, HasSubstr("outboxd_events_published_total{topic=\"outbox.event.Order\"} 3\n"));
  EXPECT_EQ(ServeHttp("GET", "/healthz", m, false).status, 200);
  EXPECT_EQ(ServeHttp("HEAD", "/healthz", m, false).status, 200);
  const HttpResponse ready = ServeHttp("GET", "/readyz", m, false);
  EXPECT_EQ(ready.status, 503);
  EXPECT_THAT(ready.body, StartsWith("not ready: "));
  m.streaming = 1;
  m.kafka_brokers_up = 1;
  EXPECT_EQ(ServeHttp("GET", "/readyz", m, false).status, 200);
  EXPECT_EQ(ServeHttp("GET", "/readyz", m, true).status, 503);
  EXPECT_EQ(ServeHttp("GET", "/active", m, false).status, 200);
  EXPECT_EQ(ServeHttp("GET", "/active", m, false).body, "ready: streaming, 1 Kafka broker(s) connected\n");
  m.streaming = 0;
  m.standby = 1;
  EXPECT_EQ(ServeHttp("GET", "/readyz", m, false).status, 200);
  EXPECT_THAT(ServeHttp("GET", "/readyz", m, false).body, StartsWith("ready: standby"));
  EXPECT_EQ(ServeHttp("GET", "/active", m, false).status, 503);
  EXPECT_THAT(ServeHttp("GET", "/active", m, false).body, StartsWith("not ready: standby"));
  EXPECT_EQ(ServeHttp("HEAD", "/active", m, false).status, 503);
  EXPECT_EQ(ServeHttp("GET", "/", m, false).status, 404);
  EXPECT_EQ(ServeHttp("POST", "/metrics", m, false).status, 405);
}

TEST(MetricsTest, RendersEveryDesignMetric) {
  Metrics m;
  m.events_published.Add("t");
  m.events_dead_lettered.Add("too_large");
  m.reconnects.Add("kafka");
  m.publish_latency.Observe(0.003);
  const std::string out = m.RenderPrometheus();
  for (const char* name :
       {"events_published_total", "events_dead_lettered_total", "transactions_total",
        "publish_latency_seconds", "replication_lag_bytes", "confirmed_flush_lsn", "received_lsn",
        "inflight_events", "producer_queue_bytes", "reconnects_total", "standby", "up",
        "kafka_brokers_up", "streaming", "schema_registry_requests_total"}) {
    EXPECT_THAT(out, HasSubstr(std::string("# TYPE outboxd_") + name + " ")) << name;
  }
  EXPECT_THAT(out, HasSubstr("outboxd_publish_latency_seconds_bucket{le=\"0.005\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("outboxd_publish_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
  EXPECT_THAT(out, HasSubstr("outboxd_events_dead_lettered_total{reason=\"too_large\"} 1\n"));
  // Slot gauges appear once the monitor has read the slot.
  EXPECT_THAT(out, ::testing::Not(HasSubstr("outboxd_slot_wal_status")));
  m.slot_known = 1;
  m.slot_wal_status = 1;
  m.slot_retained_wal_bytes = 4096;
  const std::string slot = m.RenderPrometheus();
  EXPECT_THAT(slot, HasSubstr("outboxd_slot_wal_status{status=\"reserved\"} 0\n"
                              "outboxd_slot_wal_status{status=\"extended\"} 1\n"));
  EXPECT_THAT(slot, HasSubstr("outboxd_slot_retained_wal_bytes 4096\n"));
  EXPECT_THAT(slot, ::testing::Not(HasSubstr("slot_safe_wal_size_bytes")));
  m.slot_safe_wal_size_bytes = -12;
  EXPECT_THAT(m.RenderPrometheus(), HasSubstr("outboxd_slot_safe_wal_size_bytes -12\n"));
}

}  // namespace
}  // namespace outboxd::telemetry
