#include "telemetry/endpoints.h"

#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace outboxd::telemetry {

namespace {

Readiness Invalidated() {
  return {false, "not ready: the replication slot was invalidated (events lost upstream); outboxd "
                 "exits after Prometheus had time to scrape outboxd_slot_invalidated"};
}

Readiness Stopped(const ReadinessInput& in) {
  return {false, fmt::format("not ready: stopped for good after: {}; the process's other streams go on, this "
                             "one needs a restart once the cause is fixed",
                             in.last_error.empty() ? std::string("a fatal error") : in.last_error)};
}

constexpr std::string_view kJson = "application/json";

}  // namespace

Readiness EvaluateActive(const ReadinessInput& in) {
  if (in.stopping) return {false, "not ready: stopping (flushing Kafka and confirming the slot)"};
  if (in.slot_invalidated) return Invalidated();
  if (in.stopped) return Stopped(in);
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
  if (in.stopped) return Stopped(in);
  // The relay sets standby only after PostgreSQL answered that the slot is
  // held, and clears it on any other fault: a standby known to be healthy.
  if (in.standby) {
    return {true, "ready: standby, another instance holds the replication slot; this one takes "
                  "over when it is released"};
  }
  return EvaluateActive(in);
}

ReadinessInput ReadinessInputFrom(const Metrics& m, const ProcessMetrics& process, bool stopping) {
  return ReadinessInput{
      .streaming = m.streaming.load(std::memory_order_relaxed) != 0,
      .standby = m.standby.load(std::memory_order_relaxed) != 0,
      .kafka_brokers_up = process.kafka_brokers_up.load(std::memory_order_relaxed),
      .stopping = stopping,
      .slot_invalidated = m.slot_invalidated.load(std::memory_order_relaxed) != 0,
      .stopped = m.stopped.load(std::memory_order_relaxed) != 0,
      .last_error = m.LastError(),
  };
}

std::string_view StreamState(const ReadinessInput& in) {
  if (in.stopping) return "stopping";
  if (in.slot_invalidated || in.stopped) return "stopped";
  if (in.standby) return "standby";
  if (in.streaming) return "streaming";
  return in.last_error.empty() ? "connecting" : "backoff";
}

ProcessReadiness EvaluateProcess(const MetricsRegistry& registry, bool stopping) {
  ProcessReadiness out;
  int streaming = 0, standby = 0;
  const StreamReadiness* first_bad = nullptr;
  for (const auto& metrics : registry.Streams()) {
    const ReadinessInput in = ReadinessInputFrom(*metrics, registry.process(), stopping);
    const Readiness ready = EvaluateReadiness(in);
    out.streams.push_back(StreamReadiness{
        .labels = metrics->labels(),
        .state = std::string(StreamState(in)),
        .ready = ready.ready,
        .active = EvaluateActive(in).ready,
        .reason = ready.reason,
    });
    streaming += out.streams.back().state == "streaming";
    standby += out.streams.back().state == "standby";
  }
  for (const StreamReadiness& s : out.streams) {
    if (!s.ready) {
      first_bad = &s;
      break;
    }
  }
  if (stopping) {
    out.reason = "not ready: stopping (flushing Kafka and confirming the slots)";
  } else if (first_bad != nullptr) {
    size_t bad = 0;
    for (const StreamReadiness& s : out.streams) bad += !s.ready;
    // A single stream's reason stands alone, as it did before several streams.
    out.reason = out.streams.size() == 1
                     ? first_bad->reason
                     : fmt::format("not ready: {} of {} streams; database \"{}\" slot \"{}\": {}", bad,
                                   out.streams.size(), first_bad->labels.database, first_bad->labels.slot,
                                   first_bad->reason);
  } else if (out.streams.empty()) {
    out.ready = registry.process().streams_known.load(std::memory_order_relaxed) != 0;
    out.reason = out.ready ? "ready: no stream to serve (no database has the publication yet)"
                           : "not ready: looking for the databases to stream";
  } else {
    out.ready = true;
    out.reason = out.streams.size() == 1
                     ? out.streams[0].reason
                     : fmt::format("ready: {} stream(s) streaming, {} standing by", streaming, standby);
  }
  return out;
}

HttpResponse ServeHttp(std::string_view method, std::string_view path, const MetricsRegistry& registry,
                       bool stopping) {
  if (method != "GET" && method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "only GET and HEAD are served\n"};
  }
  if (path == "/metrics") {
    return {200, "text/plain; version=0.0.4; charset=utf-8", registry.RenderPrometheus()};
  }
  if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
  if (path == "/readyz" || path == "/active") {
    const ProcessReadiness process = EvaluateProcess(registry, stopping);
    nlohmann::json streams = nlohmann::json::array();
    bool any_active = false;
    for (const StreamReadiness& s : process.streams) {
      any_active = any_active || s.active;
      // /active lists what this process holds: a session on the slot.
      if (path == "/active" && s.state != "streaming") continue;
      streams.push_back({{"database", s.labels.database},
                         {"slot", s.labels.slot},
                         {"state", s.state},
                         {"ready", s.ready},
                         {"active", s.active},
                         {"reason", s.reason}});
    }
    nlohmann::json body;
    int status;
    if (path == "/readyz") {
      body = {{"ready", process.ready}, {"reason", process.reason}, {"streams", std::move(streams)}};
      status = process.ready ? 200 : 503;
    } else {
      body = {{"active", any_active}, {"streams", std::move(streams)}};
      status = any_active ? 200 : 503;
    }
    // Replace invalid UTF-8 (a database name is bytes) rather than throw.
    return {status, std::string(kJson),
            body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"};
  }
  return {404, "text/plain; charset=utf-8",
          "not found: outboxd serves /metrics, /healthz, /readyz and /active\n"};
}

}  // namespace outboxd::telemetry
