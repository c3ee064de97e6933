// Metrics: the counters and gauges of ../docs (DESIGN "Metrics"), kept as
// atomics so the pipeline updates them without locks and an HTTP thread can
// render them. Names are Prometheus names without the outboxd_ prefix.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace outboxd::telemetry {

// A counter family with one label (e.g. topic, reason, target).
class LabeledCounter {
 public:
  void Add(std::string_view label, uint64_t n = 1);
  // Exports `label` at 0 until it is first added to: an alert on rate() or
  // increase() needs a sample before the first increment to see it.
  void Declare(std::string_view label) { Add(label, 0); }
  // Calls `warn(limit + 1)` once, when the number of distinct labels passes
  // `limit`: a label taken from event data (a topic rendered from
  // {event_type} or {destination}) can grow without bound.
  void WarnAbove(size_t limit, std::function<void(size_t)> warn) {
    absl::MutexLock lock(&mu_);
    warn_limit_ = limit;
    warn_ = std::move(warn);
  }
  uint64_t Get(std::string_view label) const;
  // Appends "name{label_name="v"} n" lines.
  void Render(std::string_view name, std::string_view label_name, std::string* out) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint64_t> values_ ABSL_GUARDED_BY(mu_);
  size_t warn_limit_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(size_t)> warn_ ABSL_GUARDED_BY(mu_);
};

// Distinct topics past which outboxd logs a warning once: a topic template over
// an unbounded field ({event_type}, {destination}, {aggregate_type}) makes one
// topic, and one outboxd_events_published_total series, per value.
inline constexpr size_t kManyTopics = 1000;

class Histogram {
 public:
  // Observes `seconds` `count` times (e.g. once per event of a batch).
  void Observe(double seconds, uint64_t count = 1);
  void Render(std::string_view name, std::string* out) const;

 private:
  static constexpr double kBounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,    1,     2.5,  5,     10,   30};
  static constexpr size_t kBuckets = sizeof(kBounds) / sizeof(kBounds[0]);
  std::atomic<uint64_t> counts_[kBuckets + 1] = {};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micros_{0};
};

// Every value outboxd_reconnects_total{target} can take.
inline constexpr std::string_view kReconnectTargets[] = {"postgres", "kafka"};

// Every value outboxd_checkpoint_bounded_total{reason} can take: a checkpoint
// of another timeline (trusted only before the switch point), one past the
// server's WAL position (not trusted). pipeline/checkpoint.h names them too.
inline constexpr std::string_view kCheckpointBoundReasons[] = {"timeline", "ahead_of_server"};

struct Metrics {
  // Declares every known label value of the labelled counters (reconnect
  // targets, dead-letter reasons) so each is exported at 0 from the start.
  Metrics();

  LabeledCounter events_published;       // {topic}
  LabeledCounter events_dead_lettered;   // {reason}
  LabeledCounter changes_ignored;        // {kind}: update, delete, truncate, message, relation
  LabeledCounter reconnects;             // {target}: postgres, kafka
  // {result}: ok, unreachable (no answer, timeout, 5xx), refused (4xx: auth,
  // incompatible schema, unknown subject). Only with [schema_registry].
  LabeledCounter schema_registry_requests;
  std::atomic<uint64_t> transactions{0};
  // [sink] delivery = "exactly_once": Kafka transactions by result (committed,
  // aborted), events skipped because a checkpoint says Kafka holds them,
  // PostgreSQL transactions split over several Kafka transactions, and the
  // times another producer with the same transactional.id fenced this one.
  LabeledCounter kafka_transactions;  // {result}
  std::atomic<uint64_t> events_skipped{0};
  std::atomic<uint64_t> transactions_split{0};
  std::atomic<uint64_t> producer_fenced{0};
  // Exactly-once starts whose checkpoint reached past the server's history,
  // so that less was skipped than it says: {reason} of kCheckpointBoundReasons.
  LabeledCounter checkpoint_bounded;
  Histogram publish_latency;
  std::atomic<int64_t> replication_lag_bytes{0};
  std::atomic<uint64_t> confirmed_flush_lsn{0};
  std::atomic<uint64_t> received_lsn{0};
  std::atomic<uint64_t> server_wal_end{0};
  std::atomic<int64_t> inflight_events{0};
  std::atomic<int64_t> producer_queue_bytes{0};
  std::atomic<int> standby{0};
  std::atomic<int> slot_invalidated{0};  // 1: PostgreSQL invalidated the slot (gap upstream)
  std::atomic<int> streaming{0};
  std::atomic<int> up{1};
  // Brokers the producer is connected to, from librdkafka's statistics; -1
  // until the first report.
  std::atomic<int> kafka_brokers_up{-1};
  // From the periodic pg_replication_slots query (SlotMonitor); rendered only
  // once a query succeeded. wal_status is an index into kSlotWalStatuses.
  std::atomic<int> slot_known{0};
  std::atomic<int> slot_active{0};
  std::atomic<int> slot_wal_status{-1};
  std::atomic<int64_t> slot_retained_wal_bytes{0};
  std::atomic<int64_t> slot_safe_wal_size_bytes{kUnknown};  // NULL: no max_slot_wal_keep_size
  std::atomic<int64_t> slot_checked_unixtime{0};

  static constexpr int64_t kUnknown = std::numeric_limits<int64_t>::min();
  static constexpr const char* kSlotWalStatuses[] = {"reserved", "extended", "unreserved", "lost"};

  // Why the last session ended (transient error), for /readyz; cleared while streaming.
  void SetLastError(std::string_view message);
  std::string LastError() const;

  // Prometheus text exposition format, every name prefixed outboxd_.
  std::string RenderPrometheus() const;

 private:
  mutable absl::Mutex last_error_mu_;
  std::string last_error_ ABSL_GUARDED_BY(last_error_mu_);
};

}  // namespace outboxd::telemetry
