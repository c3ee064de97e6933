#include "telemetry/endpoints.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
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
  ProcessMetrics p;
  EXPECT_FALSE(EvaluateReadiness(ReadinessInputFrom(m, p, false)).ready);
  m.streaming = 1;
  p.kafka_brokers_up = 2;
  EXPECT_TRUE(EvaluateReadiness(ReadinessInputFrom(m, p, false)).ready);
  EXPECT_FALSE(EvaluateReadiness(ReadinessInputFrom(m, p, true)).ready);
  m.standby = 1;
  EXPECT_TRUE(EvaluateReadiness(ReadinessInputFrom(m, p, false)).ready);
  EXPECT_FALSE(EvaluateActive(ReadinessInputFrom(m, p, false)).ready);
  m.slot_invalidated = 1;
  EXPECT_FALSE(EvaluateReadiness(ReadinessInputFrom(m, p, false)).ready);
  m.slot_invalidated = 0;
  m.standby = 0;
  m.streaming = 0;
  m.SetLastError("Kafka refused");
  EXPECT_THAT(EvaluateReadiness(ReadinessInputFrom(m, p, false)).reason, HasSubstr("Kafka refused"));
  m.stopped = 1;
  EXPECT_FALSE(EvaluateReadiness(ReadinessInputFrom(m, p, false)).ready);
  EXPECT_THAT(EvaluateReadiness(ReadinessInputFrom(m, p, false)).reason,
              HasSubstr("stopped for good after: Kafka refused"));
}

TEST(ReadinessTest, StateNames) {
  ReadinessInput in;
  EXPECT_EQ(StreamState(in), "connecting");
  in.last_error = "x";
  EXPECT_EQ(StreamState(in), "backoff");
  in.streaming = true;
  EXPECT_EQ(StreamState(in), "streaming");
  in.standby = true;
  EXPECT_EQ(StreamState(in), "standby");
  in.stopped = true;
  EXPECT_EQ(StreamState(in), "stopped");
  in.stopping = true;
  EXPECT_EQ(StreamState(in), "stopping");
}

std::shared_ptr<Metrics> Add(MetricsRegistry& registry, std::string database, std::string slot) {
  absl::StatusOr<std::shared_ptr<Metrics>> m = registry.AddStream({std::move(database), std::move(slot)});
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

nlohmann::json Json(const HttpResponse& response) {
  EXPECT_EQ(response.content_type, "application/json");
  return nlohmann::json::parse(response.body);
}

TEST(ServeHttpTest, Routes) {
  MetricsRegistry registry;
  std::shared_ptr<Metrics> m = Add(registry, "app", "outboxd");
  m->events_published.Add("outbox.event.Order", 3);
  HttpResponse metrics = ServeHttp("GET", "/metrics", registry, false);
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(metrics.body, HasSubstr("outboxd_events_published_total{database=\"app\",slot=\"outboxd\","
                                      "topic=\"outbox.event.Order\"} 3\n"));
  EXPECT_EQ(ServeHttp("GET", "/healthz", registry, false).status, 200);
  EXPECT_EQ(ServeHttp("HEAD", "/healthz", registry, false).status, 200);
  const HttpResponse ready = ServeHttp("GET", "/readyz", registry, false);
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(Json(ready)["ready"], false);
  EXPECT_THAT(Json(ready)["reason"].get<std::string>(), StartsWith("not ready: "));
  m->streaming = 1;
  registry.process().kafka_brokers_up = 1;
  EXPECT_EQ(ServeHttp("GET", "/readyz", registry, false).status, 200);
  EXPECT_EQ(ServeHttp("GET", "/readyz", registry, true).status, 503);
  const HttpResponse active = ServeHttp("GET", "/active", registry, false);
  EXPECT_EQ(active.status, 200);
  EXPECT_EQ(active.body,
            "{\"active\":true,\"streams\":[{\"active\":true,\"database\":\"app\",\"ready\":true,\"reason\":\"ready: "
            "streaming, 1 Kafka broker(s) connected\",\"slot\":\"outboxd\",\"state\":\"streaming\"}]}\n");
  m->streaming = 0;
  m->standby = 1;
  EXPECT_EQ(ServeHttp("GET", "/readyz", registry, false).status, 200);
  EXPECT_THAT(Json(ServeHttp("GET", "/readyz", registry, false))["reason"].get<std::string>(),
              StartsWith("ready: standby"));
  EXPECT_EQ(ServeHttp("GET", "/active", registry, false).status, 503);
  EXPECT_EQ(ServeHttp("GET", "/active", registry, false).body, "{\"active\":false,\"streams\":[]}\n");
  EXPECT_EQ(ServeHttp("HEAD", "/active", registry, false).status, 503);
  EXPECT_EQ(ServeHttp("GET", "/", registry, false).status, 404);
  EXPECT_EQ(ServeHttp("POST", "/metrics", registry, false).status, 405);
}

// Three streams in one process: /readyz answers per stream, and the process
// is ready only when each stream it holds or stands by for is.
TEST(ServeHttpTest, ReadyzAnswersPerStream) {
  MetricsRegistry registry;
  registry.process().kafka_brokers_up = 3;
  std::shared_ptr<Metrics> orders = Add(registry, "orders", "outboxd_orders");
  std::shared_ptr<Metrics> billing = Add(registry, "billing", "outboxd_billing");
  std::shared_ptr<Metrics> shipping = Add(registry, "shipping", "outboxd_shipping");
  orders->streaming = 1;
  billing->standby = 1;
  shipping->streaming = 1;
  HttpResponse r = ServeHttp("GET", "/readyz", registry, false);
  EXPECT_EQ(r.status, 200);
  nlohmann::json body = Json(r);
  EXPECT_EQ(body["ready"], true);
  EXPECT_EQ(body["reason"], "ready: 2 stream(s) streaming, 1 standing by");
  ASSERT_EQ(body["streams"].size(), 3u);
  EXPECT_EQ(body["streams"][0]["database"], "billing") << "by database";
  EXPECT_EQ(body["streams"][0]["state"], "standby");
  EXPECT_EQ(body["streams"][0]["ready"], true);
  EXPECT_EQ(body["streams"][0]["active"], false);
  EXPECT_EQ(body["streams"][1]["slot"], "outboxd_orders");
  EXPECT_EQ(body["streams"][1]["state"], "streaming");

  // One database unreachable: that stream backs off, the process is not ready,
  // and says which stream and why.
  shipping->streaming = 0;
  shipping->SetLastError("could not connect to server");
  r = ServeHttp("GET", "/readyz", registry, false);
  EXPECT_EQ(r.status, 503);
  body = Json(r);
  EXPECT_EQ(body["reason"], "not ready: 1 of 3 streams; database \"shipping\" slot \"outboxd_shipping\": not ready: "
                            "reconnecting after: could not connect to server");
  EXPECT_EQ(body["streams"][2]["state"], "backoff");
  EXPECT_EQ(body["streams"][0]["ready"], true) << "the others stay ready";

  // /active lists the held streams only.
  const nlohmann::json active = Json(ServeHttp("GET", "/active", registry, false));
  ASSERT_EQ(active["streams"].size(), 1u);
  EXPECT_EQ(active["streams"][0]["database"], "orders");

  // A stream that stopped for good keeps the process not ready.
  shipping->stopped = 1;
  body = Json(ServeHttp("GET", "/readyz", registry, false));
  EXPECT_EQ(body["ready"], false);
  EXPECT_EQ(body["streams"][2]["state"], "stopped");

  // A replica that stands by for every slot is ready.
  registry.RemoveStream({"shipping", "outboxd_shipping"});
  orders->streaming = 0;
  orders->standby = 1;
  r = ServeHttp("GET", "/readyz", registry, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Json(r)["reason"], "ready: 0 stream(s) streaming, 2 standing by");
  EXPECT_EQ(ServeHttp("GET", "/active", registry, false).status, 503);
}

TEST(ServeHttpTest, NoStreamIsReadyOnlyOnceTheStreamsAreKnown) {
  MetricsRegistry registry;
  HttpResponse r = ServeHttp("GET", "/readyz", registry, false);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(Json(r)["reason"], "not ready: looking for the databases to stream");
  registry.process().streams_known = 1;
  r = ServeHttp("GET", "/readyz", registry, false);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Json(r)["streams"].size(), 0u);
}

// A database name is any bytes: the JSON stays valid.
TEST(ServeHttpTest, OddDatabaseNamesStayValidJson) {
  MetricsRegistry registry;
  Add(registry, "we\"ird\\db\xff", "s");
  const HttpResponse r = ServeHttp("GET", "/readyz", registry, false);
  EXPECT_EQ(Json(r)["streams"][0]["database"], "we\"ird\\db\xef\xbf\xbd");
  EXPECT_THAT(registry.RenderPrometheus(), HasSubstr("database=\"we\\\"ird\\\\db\xff\",slot=\"s\""));
}

TEST(MetricsTest, RendersEveryDesignMetric) {
  MetricsRegistry registry("1.2.3");
  Metrics& m = *Add(registry, "app", "s");
  m.events_published.Add("t");
  m.events_dead_lettered.Add("too_large");
  m.reconnects.Add("kafka");
  m.publish_latency.Observe(0.003);
  const std::string out = registry.RenderPrometheus();
  for (const char* name :
       {"events_published_total", "events_dead_lettered_total", "transactions_total",
        "publish_latency_seconds", "replication_lag_bytes", "confirmed_flush_lsn", "received_lsn",
        "inflight_events", "producer_queue_bytes", "reconnects_total", "standby", "up",
        "kafka_brokers_up", "streaming", "stopped", "schema_registry_requests_total", "build_info"}) {
    EXPECT_THAT(out, HasSubstr(std::string("# TYPE outboxd_") + name + " ")) << name;
  }
  EXPECT_THAT(out, HasSubstr("outboxd_up 1\n"));
  EXPECT_THAT(out, HasSubstr("outboxd_build_info{version=\"1.2.3\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("outboxd_kafka_brokers_up -1\n"));
  EXPECT_THAT(out, HasSubstr("outboxd_publish_latency_seconds_bucket{database=\"app\",slot=\"s\",le=\"0.005\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("outboxd_publish_latency_seconds_bucket{database=\"app\",slot=\"s\",le=\"0.0025\"} 0\n"));
  EXPECT_THAT(out, HasSubstr("outboxd_publish_latency_seconds_count{database=\"app\",slot=\"s\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("outboxd_events_dead_lettered_total{database=\"app\",slot=\"s\",reason=\"too_large\"} 1\n"));
  // Slot gauges appear once the monitor has read the slot.
  EXPECT_THAT(out, ::testing::Not(HasSubstr("outboxd_slot_wal_status")));
  m.slot_known = 1;
  m.slot_wal_status = 1;
  m.slot_retained_wal_bytes = 4096;
  const std::string slot = registry.RenderPrometheus();
  EXPECT_THAT(slot, HasSubstr("outboxd_slot_wal_status{database=\"app\",slot=\"s\",status=\"reserved\"} 0\n"
                              "outboxd_slot_wal_status{database=\"app\",slot=\"s\",status=\"extended\"} 1\n"));
  EXPECT_THAT(slot, HasSubstr("outboxd_slot_retained_wal_bytes{database=\"app\",slot=\"s\"} 4096\n"));
  EXPECT_THAT(slot, ::testing::Not(HasSubstr("slot_safe_wal_size_bytes")));
  m.slot_safe_wal_size_bytes = -12;
  EXPECT_THAT(registry.RenderPrometheus(), HasSubstr("outboxd_slot_safe_wal_size_bytes{database=\"app\",slot=\"s\"} -12\n"));
}

}  // namespace
}  // namespace outboxd::telemetry
