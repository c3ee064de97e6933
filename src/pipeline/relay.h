// Relay: runs Pipeline sessions back to back. Decides, from a session's
// error, whether to retry (transient faults: exponential backoff with jitter,
// capped), wait as a standby (the slot is held by another instance), or stop
// (fatal: bad configuration, bad event, undecodable stream).
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kafka/event_sink.h"
#include "ops/metrics.h"
#include "pipeline/pipeline.h"
#include "replication/replication_stream.h"

namespace outboxd::pipeline {

struct RelayOptions {
  PipelineOptions pipeline;
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  // How often a standby logs that it is still waiting.
  absl::Duration standby_log_interval = absl::Minutes(1);
};

using StreamFactory =
    std::function<absl::StatusOr<std::unique_ptr<replication::ReplicationStream>>()>;
using SinkFactory = std::function<absl::StatusOr<std::unique_ptr<kafka::EventSink>>()>;

// True for errors worth retrying: the same inputs may succeed later.
bool IsTransient(const absl::Status& status);

class Relay {
 public:
  Relay(StreamFactory streams, SinkFactory sinks, RelayOptions options, ops::Metrics* metrics);

  // Returns OK after a graceful stop, or the fatal error that ended it.
  absl::Status Run(const std::atomic<bool>& stop);

 private:
  // Sleeps up to `d`, waking early when `stop` is set.
  static void SleepUnlessStopped(absl::Duration d, const std::atomic<bool>& stop);

  StreamFactory streams_;
  SinkFactory sinks_;
  RelayOptions options_;
  ops::Metrics* metrics_;
};

}  // namespace outboxd::pipeline
