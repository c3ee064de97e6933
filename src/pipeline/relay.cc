#include "pipeline/relay.h"

#include <algorithm>
#include <random>
#include <string>

#include "common/format.h"
#include "fmt/format.h"
#include "telemetry/logging.h"
#include "replication/state_file.h"

namespace outboxd::pipeline {
namespace {

void RealSleep(absl::Duration d, const std::atomic<bool>& stop) {
  const absl::Time until = absl::Now() + d;
  while (!stop.load() && absl::Now() < until) {
    absl::SleepFor(std::min(absl::Milliseconds(50), until - absl::Now()));
  }
}

}  // namespace

Backoff::Backoff(absl::Duration initial, absl::Duration max, std::function<double()> uniform01)
    : initial_(initial), max_(std::max(initial, max)), base_(initial), uniform01_(std::move(uniform01)) {}

absl::Duration Backoff::Next() {
  const double u = std::clamp(uniform01_(), 0.0, 1.0);
  const absl::Duration delay = base_ * (0.5 + 0.5 * u);
  base_ = std::min(base_ * 2, max_);
  return delay;
}

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

bool IsSlotBusy(const absl::Status& status) {
  return absl::IsUnavailable(status) &&
         std::string(status.message()).find("is active for PID") != std::string::npos;
}

Relay::Relay(StreamFactory streams, SinkFactory sinks, RelayOptions options, telemetry::Metrics* metrics)
    : streams_(std::move(streams)), sinks_(std::move(sinks)), options_(std::move(options)),
      metrics_(metrics) {
  if (!options_.clock) options_.clock = absl::Now;
  if (!options_.sleep) options_.sleep = RealSleep;
  if (!options_.uniform01) {
    options_.uniform01 = [rng = std::mt19937_64(std::random_device{}())]() mutable {
      return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    };
  }
}

absl::Status Relay::Run(const std::atomic<bool>& stop) {
  const Clock& now = options_.clock;
  Backoff backoff(options_.initial_backoff, options_.max_backoff, options_.uniform01);
  Backoff standby_backoff(options_.initial_backoff, options_.max_standby_backoff, options_.uniform01);
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
        if (was_standby) telemetry::LogInfo("the slot was released: this instance takes over streaming");
        was_standby = false;
        standby_backoff.Reset();
        metrics_->standby.store(0);
        absl::StatusOr<std::unique_ptr<Pipeline>> pipeline =
            Pipeline::Create(stream->get(), sink->get(), options_.pipeline, metrics_, now);
        if (!pipeline.ok()) return pipeline.status();
        metrics_->streaming.store(1);
        const absl::Time started = now();
        status = (*pipeline)->Run(stop);
        metrics_->streaming.store(0);
        if (status.ok()) return status;  // graceful stop
        // The pipeline reports Kafka faults as Aborted, a broken stream as Unavailable.
        target = absl::IsAborted(status) ? "kafka" : "postgres";
        if (now() - started >= options_.healthy_session) backoff.Reset();
      }
    }
    // The sink is destroyed here, before the next session: whatever it still
    // held is purged and, being unconfirmed, is re-read from the slot.
    if (replication::IsSlotInvalidated(status)) metrics_->slot_invalidated.store(1);
    if (!IsTransient(status)) return status;

    if (IsSlotBusy(status)) {
      metrics_->standby.store(1);
      // Once a minute, not once a retry: a standby may wait for days.
      if (!was_standby || now() - last_standby_log >= options_.standby_log_interval) {
        telemetry::LogInfo("standby: {}; waiting for the slot to be released (checking every {} at most)",
                     status.message(), absl::FormatDuration(options_.max_standby_backoff));
        last_standby_log = now();
      }
      was_standby = true;
      options_.sleep(standby_backoff.Next(), stop);
      continue;
    }
    if (was_standby) {
      // A standby that hits another fault is no longer known to be waiting.
      was_standby = false;
      metrics_->standby.store(0);
    }
    metrics_->reconnects.Add(target);
    metrics_->SetLastError(std::string(status.message()));
    const absl::Duration delay = backoff.Next();
    telemetry::LogWarn("{}; reconnecting to {} in {} (reconnect {} to {})", status.message(), target,
                 absl::FormatDuration(delay), metrics_->reconnects.Get(target), target);
    options_.sleep(delay, stop);
  }
  return absl::OkStatus();
}

}  // namespace outboxd::pipeline
