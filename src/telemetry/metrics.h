// Metrics: the counters and gauges of ../docs (DESIGN "Metrics"), kept as
// atomics so the pipeline updates them without locks and an HTTP thread can
// render them. Names are Prometheus names without the outboxd_ prefix.
// `Metrics` is one stream's set (its series carry database and slot labels);
// `ProcessMetrics` the process-wide set (unlabelled); `MetricsRegistry` owns
// both, one Metrics per (database, slot), and renders them together.
//
// Why not prometheus-cpp (Debian's prometheus-cpp-dev 1.0, core): measured by
// tests/unit/telemetry/metrics_bench.cc, its per-event cost matches ours only
// when the caller caches a Counter* per (database, slot, topic) (Family::Add
// per event is 6-9x slower), which LabeledCounter already does inside without
// changing the pipeline's calls; and serializing 3 of its families for 20
// streams takes about as long as rendering all 27 of ours. So it would add a
// dependency (CI, image) for no gain on the hot path or at idle.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

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
  // Appends "name{<prefix>label_name="v"} n" lines; `prefix` is "" or the
  // stream's labels followed by a comma.
  void Render(std::string_view name, std::string_view prefix, std::string_view label_name,
              std::string* out) const;

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
  // `labels` is "" or the stream's labels, e.g. database="app",slot="s".
  void Render(std::string_view name, std::string_view labels, std::string* out) const;

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

// Which stream a Metrics set belongs to: its `database` and `slot` labels.
struct StreamLabels {
  std::string database;
  std::string slot;

  friend bool operator==(const StreamLabels&, const StreamLabels&) = default;
  friend bool operator<(const StreamLabels& a, const StreamLabels& b) {
    return a.database != b.database ? a.database < b.database : a.slot < b.slot;
  }
};

// One stream's metrics: the pipeline, the relay and the slot monitor of that
// stream write them.
struct Metrics {
  // Declares every known label value of the labelled counters (reconnect
  // targets, dead-letter reasons) so each is exported at 0 from the start.
  // Without labels (tests, a pipeline alone) the series render unlabelled.
  Metrics();
  explicit Metrics(StreamLabels labels);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  LabeledCounter events_published;       // {topic}
  LabeledCounter events_dead_lettered;   // {reason}
  LabeledCounter changes_ignored;        // {kind}: update, delete, truncate, message, relation
  LabeledCounter reconnects;             // {target}: postgres, kafka
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
  // 1 once the stream stopped for good on a fatal error (slot invalidated or
  // dropped, on_bad_event = "stop", a protocol violation): the process's
  // other streams go on. Set by whoever ran it (the stream supervisor).
  std::atomic<int> stopped{0};
  // From the periodic pg_replication_slots query (SlotMonitor); rendered only
  // once a query succeeded. wal_status is an index into kSlotWalStatuses.
  std::atomic<int> slot_known{0};
  std::atomic<int> slot_active{0};
  std::atomic<int> slot_wal_status{-1};
  std::atomic<int64_t> slot_retained_wal_bytes{0};
  std::atomic<int64_t> slot_safe_wal_size_bytes{kUnknown};  // NULL: no max_slot_wal_keep_size
  std::atomic<int64_t> slot_checked_unixtime{0};
  // What PostgreSQL 16 to 18 say about the slot (same query), -1 or kUnknown
  // where the server does not say it (older versions): the slot is on a hot
  // standby (pg_is_in_recovery(), any version); conflicting (16+); why it was
  // invalidated, an index into kSlotInvalidationReasons, -1 while valid (16+);
  // synced (17+); inactive_since as Unix time, 0 while in use (17+); the
  // server's idle_replication_slot_timeout in seconds, 0 for off (18+).
  std::atomic<int> slot_on_standby{0};
  std::atomic<int> slot_conflicting{-1};
  std::atomic<int> slot_invalidation_reason{-1};
  std::atomic<int> slot_invalidation_known{0};
  std::atomic<int> slot_synced{-1};
  std::atomic<int64_t> slot_inactive_since_unixtime{kUnknown};
  std::atomic<int64_t> slot_idle_timeout_seconds{kUnknown};

  static constexpr int64_t kUnknown = std::numeric_limits<int64_t>::min();
  static constexpr const char* kSlotWalStatuses[] = {"reserved", "extended", "unreserved", "lost"};
  // outboxd_slot_invalidation_reason{reason}: 17's and 18's invalidation_reason,
  // "conflict" for 16's conflicting = true, "other" for a reason of a newer server.
  static constexpr const char* kSlotInvalidationReasons[] = {"wal_removed", "rows_removed", "wal_level_insufficient",
                                                             "idle_timeout", "conflict",     "other"};

  // Why the last session ended (transient error), for /readyz; cleared while streaming.
  void SetLastError(std::string_view message);
  std::string LastError() const;

  const StreamLabels& labels() const { return labels_; }

  // This stream's series alone, in the Prometheus text exposition format,
  // every name prefixed outboxd_ (the process's are MetricsRegistry's).
  std::string RenderPrometheus() const;

 private:
  const StreamLabels labels_;
  mutable absl::Mutex last_error_mu_;
  std::string last_error_ ABSL_GUARDED_BY(last_error_mu_);
};

// The process-wide metrics: no database or slot label.
struct ProcessMetrics {
  ProcessMetrics();
  ProcessMetrics(const ProcessMetrics&) = delete;
  ProcessMetrics& operator=(const ProcessMetrics&) = delete;

  std::atomic<int> up{1};
  // Brokers the (shared) producer is connected to, from librdkafka's
  // statistics; -1 until the first report.
  std::atomic<int> kafka_brokers_up{-1};
  // {result}: ok, unreachable (no answer, timeout, 5xx), refused (4xx: auth,
  // incompatible schema, unknown subject). Only with [schema_registry].
  LabeledCounter schema_registry_requests;
  // 1 once the process knows which streams it serves (the first discovery
  // ran, or a single-stream config): before that, no stream is no news.
  std::atomic<int> streams_known{0};
};

// Owns the process-wide set and one Metrics per stream, created and removed
// at run time (a database that gains or loses the publication), and renders
// them together: each family's HELP and TYPE once, then its series for every
// stream. Thread-safe.
class MetricsRegistry {
 public:
  // `version` becomes outboxd_build_info{version="..."} 1.
  explicit MetricsRegistry(std::string version = "");

  ProcessMetrics& process() { return process_; }
  const ProcessMetrics& process() const { return process_; }

  // The set of one stream; AlreadyExistsError when (database, slot) has one.
  // The registry keeps a reference until RemoveStream, so a scrape never
  // reads a set that its stream just dropped.
  absl::StatusOr<std::shared_ptr<Metrics>> AddStream(const StreamLabels& labels);
  // Its series disappear from the next scrape. No-op when absent.
  void RemoveStream(const StreamLabels& labels);
  // Every stream's set, by database then slot.
  std::vector<std::shared_ptr<const Metrics>> Streams() const;

  std::string RenderPrometheus() const;

 private:
  const std::string version_;
  ProcessMetrics process_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Metrics>> streams_ ABSL_GUARDED_BY(mu_);  // sorted by labels
};

// A Prometheus label value with \, " and newline escaped.
std::string EscapeLabelValue(std::string_view value);

}  // namespace outboxd::telemetry
