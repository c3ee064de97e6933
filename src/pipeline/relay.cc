#include "pipeline/relay.h"

#include <algorithm>
#include <random>
#include <string>

#include "common/format.h"
#include "fmt/format.h"
#include "pipeline/at_least_once.h"
#include "pipeline/sleep.h"
#include "telemetry/logging.h"
#include "replication/state_file.h"

namespace outboxd::pipeline {
namespace {

// Hands the producer of a session that failed on PostgreSQL's side to the
// next one: drops what it still holds (never confirmed: re-read from the
// slot) and waits briefly for those reports. False: rebuild it instead.
bool ReadyForReuse(kafka::EventSink& sink) {
  if (!sink.FatalError().ok()) return false;
  sink.Purge();
  const absl::Time until = absl::Now() + absl::Seconds(2);
  while (sink.InFlight() > 0 && absl::Now() < until) sink.Poll(absl::Milliseconds(50));
  return sink.InFlight() == 0;
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
  if (options_.pipeline.delivery == nullptr) {
    own_mode_ = std::make_unique<AtLeastOnceMode>();
    options_.pipeline.delivery = own_mode_.get();
  }
  if (!options_.clock) options_.clock = absl::Now;
  if (!options_.sleep) {
    options_.sleep = [stop_fd = options_.pipeline.stop_fd](absl::Duration d,
                                                           const std::atomic<bool>& stop) {
      SleepUnlessStopped(d, stop, stop_fd);
    };
  }
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
  // Kept across sessions that failed on PostgreSQL's side: a new producer
  // would have to learn brokers and topics again (seconds of stall).
  std::unique_ptr<kafka::EventSink> sink;
  while (!stop.load()) {
    absl::Status status;
    // Which side failed, for outboxd_reconnects_total{target}.
    const char* target = "kafka";
    bool refused = false;
    std::unique_ptr<replication::ReplicationStream> stream;
    auto open_stream = [&]() {
      absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> opened = streams_();
      if (opened.ok()) {
        stream = std::move(*opened);
      } else {
        status = opened.status();
        target = "postgres";
      }
    };
    if (options_.stream_before_sink) open_stream();
    if (sink == nullptr && (stream != nullptr || !options_.stream_before_sink)) {
      absl::StatusOr<std::unique_ptr<kafka::EventSink>> made = sinks_();
      if (made.ok()) {
        sink = std::move(*made);
      } else {
        status = made.status();
        target = "kafka";
        stream.reset();  // exactly-once: the slot is released while the producer is retried
      }
    }
    if (sink != nullptr && !options_.stream_before_sink) open_stream();
    if (sink != nullptr && stream != nullptr) {
      if (was_standby) telemetry::LogInfo("the slot was released: this instance takes over streaming");
      was_standby = false;
      standby_backoff.Reset();
      metrics_->standby.store(0);
      absl::StatusOr<std::unique_ptr<Pipeline>> pipeline =
          Pipeline::Create(stream.get(), sink.get(), options_.pipeline, metrics_, now);
      if (!pipeline.ok()) return pipeline.status();
      metrics_->streaming.store(1);
      const absl::Time started = now();
      status = (*pipeline)->Run(stop);
      metrics_->streaming.store(0);
      unacknowledged_at_stop_ = (*pipeline)->unacknowledged_at_stop();
      if (status.ok()) return status;  // graceful stop
      // The pipeline reports Kafka faults as Aborted, a broken stream as Unavailable.
      target = absl::IsAborted(status) ? "kafka" : "postgres";
      // Not a fault: the broker refused a record, which the next session
      // dead-letters when it reads its event again. The producer is fine.
      refused = IsRefusedRecordRestart(status);
      if (refused || now() - started >= options_.healthy_session) backoff.Reset();
    }
    // Rebuild only what failed. A Kafka fault destroys the producer (its
    // destructor purges); after a PostgreSQL fault it is purged and kept.
    // Either way nothing it held is confirmed: it is re-read from the slot.
    // Exactly-once makes a new producer (and reads the checkpoint) each session.
    stream.reset();
    if (sink != nullptr && (options_.stream_before_sink || (std::string_view(target) == "kafka" && !refused) ||
                            !ReadyForReuse(*sink))) {
      sink.reset();
    }
    if (kafka::IsFenced(status)) {
      metrics_->producer_fenced.fetch_add(1, std::memory_order_relaxed);
      telemetry::LogError("fenced: {}; this instance stopped producing and goes back to the slot, where it "
                          "waits as a standby while the other instance holds it (two instances with the same "
                          "[sink] transactional_id on different slots fence each other in turn: give each "
                          "its own)",
                          status.message());
    }
    // A stop that interrupted connecting (Cancelled) or arrived meanwhile.
    if (stop.load()) break;
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
