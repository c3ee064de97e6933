#include "telemetry/endpoints.h"

#include "fmt/format.h"

namespace outboxd::telemetry {

namespace {

Readiness Invalidated() {
  return {false, "not ready: the replication slot was invalidated (events lost upstream); outboxd "
                 "exits after Prometheus had time to scrape outboxd_slot_invalidated"};
}

}  // namespace

Readiness EvaluateActive(const ReadinessInput& in) {
  if (in.stopping) return {false, "not ready: stopping (flushing Kafka and confirming the slot)"};
  if (in.slot_invalidated) return Invalidated();
  if (in.standby) {
    return {false, "not ready: standby, another instance holds the replication slot; this one "
                   "takes over when it is released"};
  }
  if (!in.streaming) {
    if (!in.last_error.empty()) {
      return {false, fmt::format("not ready: reconnecting after: {}", in.last_error)};
    }
    return {false, "not ready: connecting to PostgreSQL and Kafka"};
  }
  if (in.kafka_brokers_up < 0) {
    return {false, "not ready: streaming, waiting for the first Kafka broker status (a few seconds)"};
  }
  if (in.kafka_brokers_up == 0) {
    return {false, "not ready: Kafka unreachable, no broker connected; events wait in the "
                   "replication slot until it comes back"};
  }
  return {true, fmt::format("ready: streaming, {} Kafka broker(s) connected", in.kafka_brokers_up)};
}

Readiness EvaluateReadiness(const ReadinessInput& in) {
  if (in.stopping) return EvaluateActive(in);
  if (in.slot_invalidated) return Invalidated();
  // The relay sets standby only after PostgreSQL answered that the slot is
  // held, and clears it on any other fault: a standby known to be healthy.
  if (in.standby) {
    return {true, "ready: standby, another instance holds the replication slot; this one takes "
                  "over when it is released"};
  }
  return EvaluateActive(in);
}

ReadinessInput ReadinessInputFrom(const Metrics& m, bool stopping) {
  return ReadinessInput{
      .streaming = m.streaming.load(std::memory_order_relaxed) != 0,
      .standby = m.standby.load(std::memory_order_relaxed) != 0,
      .kafka_brokers_up = m.kafka_brokers_up.load(std::memory_order_relaxed),
      .stopping = stopping,
      .slot_invalidated = m.slot_invalidated.load(std::memory_order_relaxed) != 0,
      .last_error = m.LastError(),
  };
}

HttpResponse ServeHttp(std::string_view method, std::string_view path, const Metrics& metrics,
                       bool stopping) {
  if (method != "GET" && method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "only GET and HEAD are served\n"};
  }
  if (path == "/metrics") {
    return {200, "text/plain; version=0.0.4; charset=utf-8", metrics.RenderPrometheus()};
  }
  if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
  if (path == "/readyz") {
    const Readiness r = EvaluateReadiness(ReadinessInputFrom(metrics, stopping));
    return {r.ready ? 200 : 503, "text/plain; charset=utf-8", r.reason + "\n"};
  }
  if (path == "/active") {
    const Readiness r = EvaluateActive(ReadinessInputFrom(metrics, stopping));
    return {r.ready ? 200 : 503, "text/plain; charset=utf-8", r.reason + "\n"};
  }
  return {404, "text/plain; charset=utf-8",
          "not found: outboxd serves /metrics, /healthz, /readyz and /active\n"};
}

}  // namespace outboxd::telemetry
