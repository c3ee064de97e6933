// Relay: runs Pipeline sessions of one stream back to back. Decides, from a session's
// error, whether to retry (transient faults: exponential backoff with jitter,
// capped), wait as a standby (the slot is held by another instance), or stop
// (fatal: bad configuration, bad event, undecodable stream, a gap upstream).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kafka/event_sink.h"
#include "telemetry/metrics.h"
#include "pipeline/pipeline.h"
#include "replication/replication_stream.h"

namespace outboxd::pipeline {

// Exponential backoff with jitter: the n-th delay is drawn uniformly from
// [base/2, base] with base = min(initial * 2^n, max), so that instances that
// failed together do not retry in step, and no delay exceeds `max`.
class Backoff {
 public:
  // `uniform01` returns a number in [0, 1); tests inject a fixed one.
  Backoff(absl::Duration initial, absl::Duration max, std::function<double()> uniform01);
  absl::Duration Next();
  void Reset() { base_ = initial_; }
  absl::Duration base() const { return base_; }

 private:
  absl::Duration initial_;
  absl::Duration max_;
  absl::Duration base_;
  std::function<double()> uniform01_;
};

struct RelayOptions {
  PipelineOptions pipeline;
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  // A standby polls the slot at most this far apart, so that it takes over
  // within this long after the active instance released the slot.
  absl::Duration max_standby_backoff = absl::Seconds(5);
  // How often a standby logs that it is still waiting.
  absl::Duration standby_log_interval = absl::Minutes(1);
  // A session that streamed this long earns a fresh backoff.
  absl::Duration healthy_session = absl::Seconds(30);
  // Exactly-once: each session opens the slot
  // first and only then makes its transactional producer, so that the slot
  // decides which instance may fence the others; the producer is never kept
  // for the next session (its transaction died with this one).
  bool stream_before_sink = false;
  // Injected for tests: the clock, the sleep (returns early once `stop` is
  // set; the real one is woken by pipeline.stop_fd), and the jitter source
  // (uniform in [0, 1)). Defaults: real ones.
  Clock clock;
  std::function<void(absl::Duration, const std::atomic<bool>& stop)> sleep;
  std::function<double()> uniform01;
};

using StreamFactory =
    std::function<absl::StatusOr<std::unique_ptr<replication::ReplicationStream>>()>;
using SinkFactory = std::function<absl::StatusOr<std::unique_ptr<kafka::EventSink>>()>;

// True for errors worth retrying: the same inputs may succeed later.
bool IsTransient(const absl::Status& status);
// True for "replication slot ... is active for PID": another instance holds it.
bool IsSlotBusy(const absl::Status& status);

class Relay {
 public:
  // options.pipeline.delivery: the stream's delivery mode, which must outlive
  // the Relay; none: an at-least-once mode of the Relay's own.
  Relay(StreamFactory streams, SinkFactory sinks, RelayOptions options, telemetry::Metrics* metrics);

  // Returns OK after a graceful stop, or the fatal error that ended it. A gap
  // upstream (replication::IsGapUpstream) is fatal; an invalidated slot also
  // sets metrics slot_invalidated = 1.
  absl::Status Run(const std::atomic<bool>& stop);

  // After a graceful stop: the events of the last session that stayed
  // unacknowledged (Pipeline::unacknowledged_at_stop); 0 when none was running.
  uint64_t unacknowledged_at_stop() const { return unacknowledged_at_stop_; }

 private:
  StreamFactory streams_;
  SinkFactory sinks_;
  RelayOptions options_;
  telemetry::Metrics* metrics_;
  std::unique_ptr<DeliveryMode> own_mode_;  // when none was given
  uint64_t unacknowledged_at_stop_ = 0;
};

}  // namespace outboxd::pipeline
