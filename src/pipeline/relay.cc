#include "pipeline/relay.h"

#include <algorithm>
#include <random>
#include <string>

#include "absl/strings/match.h"
#include "common/format.h"
#include "fmt/format.h"
#include "ops/logging.h"

namespace outboxd::pipeline {
namespace {

bool IsSlotBusy(const absl::Status& status) {
  return absl::IsUnavailable(status) &&
         std::string(status.message()).find("is active for PID") != std::string::npos;
}

}  // namespace

bool IsTransient(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

Relay::Relay(StreamFactory streams, SinkFactory sinks, RelayOptions options, ops::Metrics* metrics)
    : streams_(std::move(streams)), sinks_(std::move(sinks)), options_(std::move(options)),
      metrics_(metrics) {}

void Relay::SleepUnlessStopped(absl::Duration d, const std::atomic<bool>& stop) {
  const absl::Time until = absl::Now() + d;
  while (!stop.load() && absl::Now() < until) {
    absl::SleepFor(std::min(absl::Milliseconds(50), until - absl::Now()));
  }
}

absl::Status Relay::Run(const std::atomic<bool>& stop) {
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = options_.initial_backoff;
  absl::Time last_standby_log = absl::InfinitePast();
  bool was_standby = false;
  while (!stop.load()) {
    absl::Status status;
    // Which side failed, for outboxd_reconnects_total{target}.
    const char* target = "kafka";
    absl::StatusOr<std::unique_ptr<kafka::EventSink>> sink = sinks_();
    if (!sink.ok()) {
      status = sink.status();
    } else {
      absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> stream = streams_();
      if (!stream.ok()) {
        status = stream.status();
        target = "postgres";
      } else {
        if (was_standby) ops::LogInfo("the slot was released: this instance takes over streaming");
        was_standby = false;
        metrics_->standby.store(0);
        absl::StatusOr<std::unique_ptr<Pipeline>> pipeline =
            Pipeline::Create(stream->get(), sink->get(), options_.pipeline, metrics_);
        if (!pipeline.ok()) return pipeline.status();
        metrics_->streaming.store(1);
        const absl::Time started = absl::Now();
        status = (*pipeline)->Run(stop);
        metrics_->streaming.store(0);
        if (status.ok()) return status;  // graceful stop
        // The pipeline reports Kafka faults as Aborted, a broken stream as Unavailable.
        target = absl::IsAborted(status) ? "kafka" : "postgres";
        // A session that streamed for a while earns a fresh backoff.
        if (absl::Now() - started > absl::Seconds(30)) backoff = options_.initial_backoff;
      }
    }
    // The sink is destroyed here, before the next session: whatever it still
    // held is purged and, being unconfirmed, is re-read from the slot.
    if (!IsTransient(status)) return status;

    if (IsSlotBusy(status)) {
      metrics_->standby.store(1);
      if (!was_standby || absl::Now() - last_standby_log >= options_.standby_log_interval) {
        ops::LogInfo("standby: {}; waiting for the slot to be released", status.message());
        last_standby_log = absl::Now();
      }
      was_standby = true;
    } else {
      metrics_->reconnects.Add(target);
      metrics_->SetLastError(std::string(status.message()));
      ops::LogWarn("{}; retrying in {}", status.message(), absl::FormatDuration(backoff));
    }
    // Full jitter over the upper half keeps instances from retrying in step.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    SleepUnlessStopped(backoff * jitter(rng), stop);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  return absl::OkStatus();
}

}  // namespace outboxd::pipeline
