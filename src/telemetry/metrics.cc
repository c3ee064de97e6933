#include "telemetry/metrics.h"

#include <algorithm>
#include <iterator>
#include <vector>

#include "common/bad_event.h"
#include "fmt/format.h"
#include "telemetry/logging.h"

namespace outboxd::telemetry {

void LabeledCounter::Add(std::string_view label, uint64_t n) {
  absl::MutexLock lock(&mu_);
  // Heterogeneous lookup: no std::string (and no allocation) once the label exists.
  auto it = values_.find(absl::string_view(label.data(), label.size()));
  if (it == values_.end()) {
    it = values_.emplace(std::string(label), 0).first;
    if (warn_ && values_.size() == warn_limit_ + 1) warn_(values_.size());
  }
  it->second += n;
}

uint64_t LabeledCounter::Get(std::string_view label) const {
  absl::MutexLock lock(&mu_);
  auto it = values_.find(absl::string_view(label.data(), label.size()));
  return it == values_.end() ? 0 : it->second;
}

void LabeledCounter::Render(std::string_view name, std::string_view label_name,
                            std::string* out) const {
  std::vector<std::pair<std::string, uint64_t>> rows;
  {
    absl::MutexLock lock(&mu_);
    rows.assign(values_.begin(), values_.end());
  }
  std::sort(rows.begin(), rows.end());
  for (const auto& [label, value] : rows) {
    fmt::format_to(std::back_inserter(*out), "{}{{{}=\"{}\"}} {}\n", name, label_name, label, value);
  }
}

void Histogram::Observe(double seconds, uint64_t count) {
  if (count == 0) return;
  size_t i = 0;
  while (i < kBuckets && seconds > kBounds[i]) ++i;
  counts_[i].fetch_add(count, std::memory_order_relaxed);
  count_.fetch_add(count, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(std::max(0.0, seconds) * 1e6) * count,
                        std::memory_order_relaxed);
}

void Histogram::Render(std::string_view name, std::string* out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    fmt::format_to(std::back_inserter(*out), "{}_bucket{{le=\"{}\"}} {}\n", name, kBounds[i], cumulative);
  }
  cumulative += counts_[kBuckets].load(std::memory_order_relaxed);
  fmt::format_to(std::back_inserter(*out), "{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
  fmt::format_to(std::back_inserter(*out), "{}_sum {}\n", name, sum_micros_.load(std::memory_order_relaxed) / 1e6);
  fmt::format_to(std::back_inserter(*out), "{}_count {}\n", name, count_.load(std::memory_order_relaxed));
}

namespace {

void Family(std::string* out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(*out), "# HELP outboxd_{} {}\n# TYPE outboxd_{} {}\n", name, help, name, type);
}

template <typename T>
void Gauge(std::string* out, std::string_view name, std::string_view type, std::string_view help,
           const std::atomic<T>& value) {
  Family(out, name, type, help);
  fmt::format_to(std::back_inserter(*out), "outboxd_{} {}\n", name, value.load(std::memory_order_relaxed));
}

}  // namespace

Metrics::Metrics() {
  for (std::string_view reason : bad_event::kAllReasons) events_dead_lettered.Declare(reason);
  for (std::string_view target : kReconnectTargets) reconnects.Declare(target);
  for (std::string_view result : {"committed", "aborted"}) kafka_transactions.Declare(result);
  for (std::string_view reason : kCheckpointBoundReasons) checkpoint_bounded.Declare(reason);
  events_published.WarnAbove(kManyTopics, [](size_t topics) {
    LogWarn("events went to {} distinct topics: a topic template over an unbounded field "
            "({{event_type}}, {{destination}}, {{aggregate_type}}) makes a Kafka topic and an "
            "outboxd_events_published_total series per value; if that is not intended, use a fixed "
            "topic or a template over a field with few values (docs/configuration.md, [[outbox]] "
            "topic). Logged once.",
            topics);
  });
}

std::string Metrics::RenderPrometheus() const {
  std::string out;
  Family(&out, "events_published_total", "counter", "Events acknowledged by Kafka, by topic.");
  events_published.Render("outboxd_events_published_total", "topic", &out);
  Family(&out, "events_dead_lettered_total", "counter", "Bad events sent to the dead-letter topic, by reason.");
  events_dead_lettered.Render("outboxd_events_dead_lettered_total", "reason", &out);
  Family(&out, "changes_ignored_total", "counter", "Changes that are not events (updates, deletes, truncates, non-transactional or foreign messages), by kind.");
  changes_ignored.Render("outboxd_changes_ignored_total", "kind", &out);
  Family(&out, "reconnects_total", "counter", "Reconnections after a transient fault, by target.");
  reconnects.Render("outboxd_reconnects_total", "target", &out);
  Family(&out, "schema_registry_requests_total", "counter",
         "Schema registry requests, by result: ok, unreachable, refused.");
  schema_registry_requests.Render("outboxd_schema_registry_requests_total", "result", &out);
  Gauge(&out, "transactions_total", "counter", "Committed transactions received.", transactions);
  Family(&out, "kafka_transactions_total", "counter",
         "Kafka transactions of delivery = \"exactly_once\", by result: committed, aborted.");
  kafka_transactions.Render("outboxd_kafka_transactions_total", "result", &out);
  Gauge(&out, "events_skipped_total", "counter",
        "Events not published again because the checkpoint shows Kafka committed them (exactly-once restarts).",
        events_skipped);
  Gauge(&out, "transactions_split_total", "counter",
        "PostgreSQL transactions that outgrew one Kafka transaction and were committed in pieces (exactly-once).",
        transactions_split);
  Gauge(&out, "producer_fenced_total", "counter",
        "Times another producer with the same transactional.id fenced this one (exactly-once).", producer_fenced);
  Family(&out, "checkpoint_bounded_total", "counter",
         "Exactly-once starts whose checkpoint reached past the server's WAL history (a promotion, a restore), "
         "so that it was trusted only in part or not at all, by reason: timeline, ahead_of_server.");
  checkpoint_bounded.Render("outboxd_checkpoint_bounded_total", "reason", &out);
  Family(&out, "publish_latency_seconds", "histogram", "Commit time to Kafka acknowledgement.");
  publish_latency.Render("outboxd_publish_latency_seconds", &out);
  Gauge(&out, "replication_lag_bytes", "gauge", "Server WAL end minus confirmed flush LSN.", replication_lag_bytes);
  Gauge(&out, "confirmed_flush_lsn", "gauge", "Last flush LSN sent to PostgreSQL, as a number.", confirmed_flush_lsn);
  Gauge(&out, "received_lsn", "gauge", "Newest WAL position received, as a number.", received_lsn);
  Gauge(&out, "inflight_events", "gauge", "Events produced and not yet acknowledged.", inflight_events);
  Gauge(&out, "producer_queue_bytes", "gauge", "Bytes waiting in the producer queue.", producer_queue_bytes);
  Gauge(&out, "standby", "gauge", "1 while waiting for another instance to release the slot.", standby);
  Gauge(&out, "slot_invalidated", "gauge", "1 when PostgreSQL invalidated the replication slot (wal_status lost): events were lost upstream; see the README section on faults.", slot_invalidated);
  Gauge(&out, "up", "gauge", "1 while the process runs.", up);
  Gauge(&out, "streaming", "gauge", "1 while a replication session streams from the slot.", streaming);
  Gauge(&out, "kafka_brokers_up", "gauge", "Kafka brokers the producer is connected to (-1 before the first statistics report).", kafka_brokers_up);
  if (slot_known.load(std::memory_order_relaxed) != 0) {
    Gauge(&out, "slot_active", "gauge", "1 while some process (this one or another) holds the slot, from pg_replication_slots.", slot_active);
    Gauge(&out, "slot_retained_wal_bytes", "gauge", "WAL the slot keeps on the server: pg_current_wal_lsn() minus restart_lsn.", slot_retained_wal_bytes);
    if (slot_safe_wal_size_bytes.load(std::memory_order_relaxed) != kUnknown) {
      Gauge(&out, "slot_safe_wal_size_bytes", "gauge", "WAL that can still be written before the slot is in danger of invalidation (max_slot_wal_keep_size).", slot_safe_wal_size_bytes);
    }
    Family(&out, "slot_wal_status", "gauge", "1 for the slot's current wal_status in pg_replication_slots, 0 for the others.");
    const int status = slot_wal_status.load(std::memory_order_relaxed);
    for (int i = 0; i < static_cast<int>(std::size(kSlotWalStatuses)); ++i) {
      fmt::format_to(std::back_inserter(out), "outboxd_slot_wal_status{{status=\"{}\"}} {}\n",
                     kSlotWalStatuses[i], i == status ? 1 : 0);
    }
    Gauge(&out, "slot_checked_timestamp_seconds", "gauge", "Unix time of the last successful pg_replication_slots query.", slot_checked_unixtime);
  }
  return out;
}

void Metrics::SetLastError(std::string_view message) {
  absl::MutexLock lock(&last_error_mu_);
  last_error_.assign(message.data(), message.size());
}

std::string Metrics::LastError() const {
  absl::MutexLock lock(&last_error_mu_);
  return last_error_;
}

}  // namespace outboxd::telemetry
