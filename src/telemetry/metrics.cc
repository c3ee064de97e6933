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

void LabeledCounter::Render(std::string_view name, std::string_view prefix, std::string_view label_name,
                            std::string* out) const {
  std::vector<std::pair<std::string, uint64_t>> rows;
  {
    absl::MutexLock lock(&mu_);
    rows.assign(values_.begin(), values_.end());
  }
  std::sort(rows.begin(), rows.end());
  for (const auto& [label, value] : rows) {
    fmt::format_to(std::back_inserter(*out), "{}{{{}{}=\"{}\"}} {}\n", name, prefix, label_name,
                   EscapeLabelValue(label), value);
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

void Histogram::Render(std::string_view name, std::string_view labels, std::string* out) const {
  const std::string prefix = labels.empty() ? std::string() : std::string(labels) + ",";
  const std::string braces = labels.empty() ? std::string() : "{" + std::string(labels) + "}";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    fmt::format_to(std::back_inserter(*out), "{}_bucket{{{}le=\"{}\"}} {}\n", name, prefix, kBounds[i], cumulative);
  }
  cumulative += counts_[kBuckets].load(std::memory_order_relaxed);
  fmt::format_to(std::back_inserter(*out), "{}_bucket{{{}le=\"+Inf\"}} {}\n", name, prefix, cumulative);
  fmt::format_to(std::back_inserter(*out), "{}_sum{} {}\n", name, braces, sum_micros_.load(std::memory_order_relaxed) / 1e6);
  fmt::format_to(std::back_inserter(*out), "{}_count{} {}\n", name, braces, count_.load(std::memory_order_relaxed));
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

void Family(std::string* out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(*out), "# HELP outboxd_{} {}\n# TYPE outboxd_{} {}\n", name, help, name, type);
}

// One stream's labels as rendered inside braces: `database="a",slot="b"`, or
// "" for an unlabelled set.
std::string LabelText(const StreamLabels& labels) {
  if (labels.database.empty() && labels.slot.empty()) return "";
  return fmt::format("database=\"{}\",slot=\"{}\"", EscapeLabelValue(labels.database), EscapeLabelValue(labels.slot));
}

template <typename T>
void Sample(std::string* out, std::string_view name, std::string_view labels, const std::atomic<T>& value) {
  if (labels.empty()) {
    fmt::format_to(std::back_inserter(*out), "outboxd_{} {}\n", name, value.load(std::memory_order_relaxed));
  } else {
    fmt::format_to(std::back_inserter(*out), "outboxd_{}{{{}}} {}\n", name, labels, value.load(std::memory_order_relaxed));
  }
}

// A per-stream family: its header once, then `samples` for each stream that
// `has` it. Streams are given with their label text.
struct StreamFamily {
  const char* name;
  const char* type;
  const char* help;
  void (*samples)(const Metrics& m, const std::string& labels, std::string* out);
  bool (*has)(const Metrics& m);
};

std::string Prefix(const std::string& labels) { return labels.empty() ? labels : labels + ","; }
bool Always(const Metrics&) { return true; }
bool SlotKnown(const Metrics& m) { return m.slot_known.load(std::memory_order_relaxed) != 0; }
// A slot fact that only some server versions give (-1 / kUnknown: not given).
template <typename T>
bool SlotSays(const Metrics& m, const std::atomic<T>& fact, T unknown) {
  return SlotKnown(m) && fact.load(std::memory_order_relaxed) != unknown;
}

#define OUTBOXD_GAUGE(field) [](const Metrics& m, const std::string& l, std::string* out) { Sample(out, kName_##field, l, m.field); }

constexpr const char* kName_transactions = "transactions_total";
constexpr const char* kName_events_skipped = "events_skipped_total";
constexpr const char* kName_transactions_split = "transactions_split_total";
constexpr const char* kName_producer_fenced = "producer_fenced_total";
constexpr const char* kName_replication_lag_bytes = "replication_lag_bytes";
constexpr const char* kName_confirmed_flush_lsn = "confirmed_flush_lsn";
constexpr const char* kName_received_lsn = "received_lsn";
constexpr const char* kName_inflight_events = "inflight_events";
constexpr const char* kName_producer_queue_bytes = "producer_queue_bytes";
constexpr const char* kName_standby = "standby";
constexpr const char* kName_slot_invalidated = "slot_invalidated";
constexpr const char* kName_streaming = "streaming";
constexpr const char* kName_stopped = "stopped";
constexpr const char* kName_slot_active = "slot_active";
constexpr const char* kName_slot_retained_wal_bytes = "slot_retained_wal_bytes";
constexpr const char* kName_slot_safe_wal_size_bytes = "slot_safe_wal_size_bytes";
constexpr const char* kName_slot_checked_unixtime = "slot_checked_timestamp_seconds";
constexpr const char* kName_slot_on_standby = "slot_on_standby";
constexpr const char* kName_slot_conflicting = "slot_conflicting";
constexpr const char* kName_slot_synced = "slot_synced";
constexpr const char* kName_slot_inactive_since_unixtime = "slot_inactive_since_timestamp_seconds";
constexpr const char* kName_slot_idle_timeout_seconds = "slot_idle_timeout_seconds";

const StreamFamily kStreamFamilies[] = {
    {"events_published_total", "counter", "Events acknowledged by Kafka, by topic.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       m.events_published.Render("outboxd_events_published_total", Prefix(l), "topic", out);
     },
     Always},
    {"events_dead_lettered_total", "counter", "Bad events sent to the dead-letter topic, by reason.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       m.events_dead_lettered.Render("outboxd_events_dead_lettered_total", Prefix(l), "reason", out);
     },
     Always},
    {"changes_ignored_total", "counter",
     "Changes that are not events (updates, deletes, truncates, non-transactional or foreign messages), by kind.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       m.changes_ignored.Render("outboxd_changes_ignored_total", Prefix(l), "kind", out);
     },
     Always},
    {"reconnects_total", "counter", "Reconnections after a transient fault, by target.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       m.reconnects.Render("outboxd_reconnects_total", Prefix(l), "target", out);
     },
     Always},
    {"transactions_total", "counter", "Committed transactions received.", OUTBOXD_GAUGE(transactions), Always},
    {"kafka_transactions_total", "counter",
     "Kafka transactions of delivery = \"exactly_once\", by result: committed, aborted.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       m.kafka_transactions.Render("outboxd_kafka_transactions_total", Prefix(l), "result", out);
     },
     Always},
    {"events_skipped_total", "counter",
     "Events not published again because the checkpoint shows Kafka committed them (exactly-once restarts).",
     OUTBOXD_GAUGE(events_skipped), Always},
    {"transactions_split_total", "counter",
     "PostgreSQL transactions that outgrew one Kafka transaction and were committed in pieces (exactly-once).",
     OUTBOXD_GAUGE(transactions_split), Always},
    {"producer_fenced_total", "counter",
     "Times another producer with the same transactional.id fenced this one (exactly-once).",
     OUTBOXD_GAUGE(producer_fenced), Always},
    {"checkpoint_bounded_total", "counter",
     "Exactly-once starts whose checkpoint reached past the server's WAL history (a promotion, a restore), "
     "so that it was trusted only in part or not at all, by reason: timeline, ahead_of_server.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       m.checkpoint_bounded.Render("outboxd_checkpoint_bounded_total", Prefix(l), "reason", out);
     },
     Always},
    {"publish_latency_seconds", "histogram", "Commit time to Kafka acknowledgement.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       m.publish_latency.Render("outboxd_publish_latency_seconds", l, out);
     },
     Always},
    {"replication_lag_bytes", "gauge", "Server WAL end minus confirmed flush LSN.",
     OUTBOXD_GAUGE(replication_lag_bytes), Always},
    {"confirmed_flush_lsn", "gauge", "Last flush LSN sent to PostgreSQL, as a number.",
     OUTBOXD_GAUGE(confirmed_flush_lsn), Always},
    {"received_lsn", "gauge", "Newest WAL position received, as a number.", OUTBOXD_GAUGE(received_lsn), Always},
    {"inflight_events", "gauge", "Events produced and not yet acknowledged.", OUTBOXD_GAUGE(inflight_events), Always},
    {"producer_queue_bytes", "gauge", "Bytes waiting in the producer queue.", OUTBOXD_GAUGE(producer_queue_bytes),
     Always},
    {"standby", "gauge", "1 while waiting for another instance to release the slot.", OUTBOXD_GAUGE(standby), Always},
    {"slot_invalidated", "gauge",
     "1 when PostgreSQL invalidated the replication slot (wal_status lost): events were lost upstream; see the "
     "README section on faults.",
     OUTBOXD_GAUGE(slot_invalidated), Always},
    {"streaming", "gauge", "1 while a replication session streams from the slot.", OUTBOXD_GAUGE(streaming), Always},
    {"stopped", "gauge",
     "1 once the stream stopped on a fatal error (its last error is on /readyz); the other streams go on.",
     OUTBOXD_GAUGE(stopped), Always},
    {"slot_active", "gauge",
     "1 while some process (this one or another) holds the slot, from pg_replication_slots.",
     OUTBOXD_GAUGE(slot_active), SlotKnown},
    {"slot_retained_wal_bytes", "gauge", "WAL the slot keeps on the server: pg_current_wal_lsn() minus restart_lsn.",
     OUTBOXD_GAUGE(slot_retained_wal_bytes), SlotKnown},
    {"slot_safe_wal_size_bytes", "gauge",
     "WAL that can still be written before the slot is in danger of invalidation (max_slot_wal_keep_size).",
     OUTBOXD_GAUGE(slot_safe_wal_size_bytes),
     [](const Metrics& m) {
       return SlotKnown(m) && m.slot_safe_wal_size_bytes.load(std::memory_order_relaxed) != Metrics::kUnknown;
     }},
    {"slot_wal_status", "gauge", "1 for the slot's current wal_status in pg_replication_slots, 0 for the others.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       const int status = m.slot_wal_status.load(std::memory_order_relaxed);
       for (int i = 0; i < static_cast<int>(std::size(Metrics::kSlotWalStatuses)); ++i) {
         fmt::format_to(std::back_inserter(*out), "outboxd_slot_wal_status{{{}status=\"{}\"}} {}\n", Prefix(l),
                        Metrics::kSlotWalStatuses[i], i == status ? 1 : 0);
       }
     },
     SlotKnown},
    {"slot_checked_timestamp_seconds", "gauge", "Unix time of the last successful pg_replication_slots query.",
     OUTBOXD_GAUGE(slot_checked_unixtime), SlotKnown},
    {"slot_on_standby", "gauge", "1 when the slot is on a hot standby (outboxd decodes there), 0 on a primary.",
     OUTBOXD_GAUGE(slot_on_standby), SlotKnown},
    {"slot_conflicting", "gauge",
     "pg_replication_slots.conflicting (PostgreSQL 16+): 1 once a conflict with recovery on a standby invalidated "
     "the slot.",
     OUTBOXD_GAUGE(slot_conflicting), [](const Metrics& m) { return SlotSays(m, m.slot_conflicting, -1); }},
    {"slot_invalidation_reason", "gauge",
     "1 for the reason PostgreSQL (16+) gives for invalidating the slot (invalidation_reason, or conflict on 16), 0 "
     "for the others; all 0 while the slot is valid.",
     [](const Metrics& m, const std::string& l, std::string* out) {
       const int reason = m.slot_invalidation_reason.load(std::memory_order_relaxed);
       for (int i = 0; i < static_cast<int>(std::size(Metrics::kSlotInvalidationReasons)); ++i) {
         fmt::format_to(std::back_inserter(*out), "outboxd_slot_invalidation_reason{{{}reason=\"{}\"}} {}\n",
                        Prefix(l), Metrics::kSlotInvalidationReasons[i], i == reason ? 1 : 0);
       }
     },
     [](const Metrics& m) { return SlotSays(m, m.slot_invalidation_known, 0); }},
    {"slot_synced", "gauge",
     "pg_replication_slots.synced (PostgreSQL 17+): 1 when the slot is a copy synchronized from a primary.",
     OUTBOXD_GAUGE(slot_synced), [](const Metrics& m) { return SlotSays(m, m.slot_synced, -1); }},
    {"slot_inactive_since_timestamp_seconds", "gauge",
     "pg_replication_slots.inactive_since as Unix time (PostgreSQL 17+): since when no process streams the slot; "
     "0 while one does.",
     OUTBOXD_GAUGE(slot_inactive_since_unixtime),
     [](const Metrics& m) { return SlotSays(m, m.slot_inactive_since_unixtime, Metrics::kUnknown); }},
    {"slot_idle_timeout_seconds", "gauge",
     "The server's idle_replication_slot_timeout in seconds (PostgreSQL 18+; 0: off): a slot inactive longer is "
     "invalidated (idle_timeout) at the next checkpoint.",
     OUTBOXD_GAUGE(slot_idle_timeout_seconds),
     [](const Metrics& m) { return SlotSays(m, m.slot_idle_timeout_seconds, Metrics::kUnknown); }},
};

#undef OUTBOXD_GAUGE

// Every per-stream family over `streams` (each with its label text).
void RenderStreams(const std::vector<std::pair<const Metrics*, std::string>>& streams, std::string* out) {
  for (const StreamFamily& family : kStreamFamilies) {
    bool header = false;
    for (const auto& [metrics, labels] : streams) {
      if (!family.has(*metrics)) continue;
      if (!header) {
        Family(out, family.name, family.type, family.help);
        header = true;
      }
      family.samples(*metrics, labels, out);
    }
  }
}

}  // namespace

Metrics::Metrics() : Metrics(StreamLabels{}) {}

Metrics::Metrics(StreamLabels labels) : labels_(std::move(labels)) {
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
  RenderStreams({{this, LabelText(labels_)}}, &out);
  return out;
}

ProcessMetrics::ProcessMetrics() = default;

MetricsRegistry::MetricsRegistry(std::string version) : version_(std::move(version)) {}

absl::StatusOr<std::shared_ptr<Metrics>> MetricsRegistry::AddStream(const StreamLabels& labels) {
  absl::MutexLock lock(&mu_);
  auto at = std::lower_bound(streams_.begin(), streams_.end(), labels,
                             [](const std::shared_ptr<Metrics>& m, const StreamLabels& l) { return m->labels() < l; });
  if (at != streams_.end() && (*at)->labels() == labels) {
    return absl::AlreadyExistsError(fmt::format("metrics of database \"{}\" slot \"{}\" exist already",
                                                labels.database, labels.slot));
  }
  auto metrics = std::make_shared<Metrics>(labels);
  streams_.insert(at, metrics);
  return metrics;
}

void MetricsRegistry::RemoveStream(const StreamLabels& labels) {
  absl::MutexLock lock(&mu_);
  streams_.erase(std::remove_if(streams_.begin(), streams_.end(),
                                [&](const std::shared_ptr<Metrics>& m) { return m->labels() == labels; }),
                 streams_.end());
}

std::vector<std::shared_ptr<const Metrics>> MetricsRegistry::Streams() const {
  absl::MutexLock lock(&mu_);
  return {streams_.begin(), streams_.end()};
}

std::string MetricsRegistry::RenderPrometheus() const {
  const std::vector<std::shared_ptr<const Metrics>> streams = Streams();
  std::string out;
  Family(&out, "up", "gauge", "1 while the process runs.");
  Sample(&out, "up", "", process_.up);
  if (!version_.empty()) {
    Family(&out, "build_info", "gauge", "1, labelled with the version of outboxd.");
    fmt::format_to(std::back_inserter(out), "outboxd_build_info{{version=\"{}\"}} 1\n", EscapeLabelValue(version_));
  }
  Family(&out, "kafka_brokers_up", "gauge",
         "Kafka brokers the producer is connected to (-1 before the first statistics report).");
  Sample(&out, "kafka_brokers_up", "", process_.kafka_brokers_up);
  Family(&out, "schema_registry_requests_total", "counter",
         "Schema registry requests, by result: ok, unreachable, refused.");
  process_.schema_registry_requests.Render("outboxd_schema_registry_requests_total", "", "result", &out);
  std::vector<std::pair<const Metrics*, std::string>> labelled;
  labelled.reserve(streams.size());
  for (const auto& m : streams) labelled.emplace_back(m.get(), LabelText(m->labels()));
  RenderStreams(labelled, &out);
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
