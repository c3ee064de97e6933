// The HTTP endpoints' answers, computed from the metrics alone: /metrics,
// /healthz, /readyz, /active. Pure (no sockets), so readiness is unit-tested;
// the HttpServer shell only moves bytes.
//
// Readiness, per stream and for the process (docs/metrics.md, "/readyz"):
//   streaming   the process holds the slot and streams: ready with a Kafka
//               broker connected.
//   standby     another process holds the slot (or this one holds
//               max_active_slots already) and this one takes over when it is
//               released: ready, not active.
//   connecting  first attempt, or backoff after a transient fault (reason
//               given): not ready.
//   stopped     a fatal error ended the stream (slot invalidated or dropped,
//               on_bad_event = "stop", ...): not ready until a human acts.
//   stopping    SIGTERM: not ready.
// The process is ready when every stream it holds or stands by for is. So a
// replica that stands by for all its slots is Ready, and a rolling update of
// several replicas sharing the slots proceeds; one that cannot reach a
// database, or whose config is wrong, never becomes Ready and stops it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "telemetry/metrics.h"

namespace outboxd::telemetry {

// What one stream's readiness is decided from; a snapshot of its Metrics
// and the process's.
struct ReadinessInput {
  bool streaming = false;    // a replication session is running
  bool standby = false;      // another instance holds the slot
  int kafka_brokers_up = -1; // -1: no statistics report yet
  bool stopping = false;     // SIGTERM received
  bool slot_invalidated = false;  // fatal: outboxd only lingers to be scraped, then exits
  bool stopped = false;      // fatal: the stream ended for good (last_error says why)
  std::string last_error;    // why the last session ended, if it did
};

struct Readiness {
  bool ready = false;
  std::string reason;  // one line for the /readyz body, ready or not
};

// One stream is active: it streams from its slot with at least one Kafka
// broker connected; not while stopping, standby, reconnecting, or Kafka
// unreachable. Which instance leads is a question for monitoring, not for an
// orchestrator.
Readiness EvaluateActive(const ReadinessInput& input);

// One stream does its part: active as above, or a standby (it reached
// PostgreSQL and found the slot held by another instance, ready to take over).
Readiness EvaluateReadiness(const ReadinessInput& input);
ReadinessInput ReadinessInputFrom(const Metrics& metrics, const ProcessMetrics& process, bool stopping);

// The state name of the table above, for one stream.
std::string_view StreamState(const ReadinessInput& input);

struct StreamReadiness {
  StreamLabels labels;
  std::string state;  // streaming, standby, connecting, backoff, stopped, stopping
  bool ready = false;
  bool active = false;
  std::string reason;
};

struct ProcessReadiness {
  bool ready = false;
  std::string reason;
  std::vector<StreamReadiness> streams;  // by database, then slot
};

// Every stream of `registry`, and the process: ready when each stream is. No
// stream at all is ready once the process knows its streams (a discovery
// found no database with the publication: nothing to do is no fault), not
// ready before.
ProcessReadiness EvaluateProcess(const MetricsRegistry& registry, bool stopping);

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// GET /metrics (every stream and the process), /healthz, /readyz (JSON: the
// process's verdict and one object per stream), /active (JSON: the streams
// this process holds; 200 when at least one of them is active); 404 for other
// paths, 405 for other methods (HEAD is answered like GET; the server drops
// the body).
HttpResponse ServeHttp(std::string_view method, std::string_view path, const MetricsRegistry& registry,
                       bool stopping);

}  // namespace outboxd::telemetry
