// The HTTP endpoints' answers, computed from the metrics alone: /metrics,
// /healthz, /readyz. Pure (no sockets), so readiness is unit-tested; the
// HttpServer shell only moves bytes.
#pragma once

#include <string>
#include <string_view>

#include "telemetry/metrics.h"

namespace outboxd::telemetry {

// What readiness is decided from; a snapshot of Metrics.
struct ReadinessInput {
  bool streaming = false;    // a replication session is running
  bool standby = false;      // another instance holds the slot
  int kafka_brokers_up = -1; // -1: no statistics report yet
  bool stopping = false;     // SIGTERM received
  bool slot_invalidated = false;  // fatal: outboxd only lingers to be scraped, then exits
  std::string last_error;    // why the last session ended, if it did
};

struct Readiness {
  bool ready = false;
  std::string reason;  // one line for the /readyz body, ready or not
};

// /active: this instance streams from the slot with at least one Kafka broker
// connected; not while stopping, standby, reconnecting, or Kafka unreachable.
// Which instance leads is a question for monitoring, not for an orchestrator.
Readiness EvaluateActive(const ReadinessInput& input);

// /readyz: this instance does its part of an active + standby pair: it is
// active as above, or a standby (it reached PostgreSQL and found the slot held
// by another instance, ready to take over). So both replicas of a Deployment
// become Ready and a rolling update can proceed; a new pod that cannot reach
// PostgreSQL, or whose config is wrong, never becomes Ready and stops it.
Readiness EvaluateReadiness(const ReadinessInput& input);
ReadinessInput ReadinessInputFrom(const Metrics& metrics, bool stopping);

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// GET /metrics, /healthz, /readyz, /active; 404 for other paths, 405 for other methods
// (HEAD is answered like GET; the server drops the body).
HttpResponse ServeHttp(std::string_view method, std::string_view path, const Metrics& metrics,
                       bool stopping);

}  // namespace outboxd::telemetry
