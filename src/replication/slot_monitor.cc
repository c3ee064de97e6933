#include "replication/slot_monitor.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <iterator>
#include <optional>

#include "absl/time/clock.h"
#include "common/format.h"
#include "telemetry/logging.h"
#include "replication/pg_connection.h"
#include "replication/slot_invalidation.h"
#include "fmt/format.h"

namespace outboxd::replication {
namespace {

// The index of telemetry::Metrics::kSlotInvalidationReasons; -1 while valid.
int ReasonIndex(const Invalidation& invalidation) {
  switch (invalidation.kind) {
    case InvalidationKind::kNone:
      return -1;
    case InvalidationKind::kWalRemoved:
    case InvalidationKind::kLost:
      return 0;
    case InvalidationKind::kRowsRemoved:
      return 1;
    case InvalidationKind::kWalLevelInsufficient:
      return 2;
    case InvalidationKind::kIdleTimeout:
      return 3;
    case InvalidationKind::kConflict:
      return 4;
    case InvalidationKind::kOther:
      return 5;
  }
  return 5;
}

}  // namespace

std::string SlotMonitor::Query(int server_version) {
  // On a hot standby pg_current_wal_lsn() fails; the receive position stands in
  // (the replay position when nothing is received: archive recovery).
  return fmt::format(
      "SELECT active, wal_status, "
      "pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN COALESCE(pg_last_wal_receive_lsn(), "
      "pg_last_wal_replay_lsn()) ELSE pg_current_wal_lsn() END, restart_lsn)::bigint, safe_wal_size, "
      "pg_is_in_recovery(), {}, {}, {}, {}, {} "
      "FROM pg_replication_slots WHERE slot_name = $1",
      server_version >= 160000 ? "conflicting" : "NULL::bool",
      server_version >= 170000 ? "invalidation_reason" : "NULL::text",
      server_version >= 170000 ? "synced" : "NULL::bool",
      server_version >= 170000 ? "COALESCE(extract(epoch FROM inactive_since)::bigint, 0)" : "NULL::bigint",
      server_version >= 180000
          ? "(SELECT (setting::float8 * CASE unit WHEN 'min' THEN 60 WHEN 'h' THEN 3600 WHEN 'ms' THEN 0.001 "
            "ELSE 1 END)::bigint FROM pg_settings WHERE name = 'idle_replication_slot_timeout')"
          : "NULL::bigint");
}

SlotMonitor::SlotMonitor(std::string dsn, std::string slot, absl::Duration interval,
                         telemetry::Metrics* metrics)
    : dsn_(std::move(dsn)), slot_(std::move(slot)), interval_(interval), metrics_(metrics) {
  if (pipe2(stop_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) stop_pipe_[0] = stop_pipe_[1] = -1;
  thread_ = std::thread([this] { Loop(); });
}

SlotMonitor::~SlotMonitor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  // Ends a connection attempt or query in progress at once (a stop must not
  // wait for connect_timeout).
  if (stop_pipe_[1] >= 0) {
    const char byte = 's';
    [[maybe_unused]] const ssize_t n = write(stop_pipe_[1], &byte, 1);
  }
  thread_.join();
  conn_.reset();
  for (int fd : stop_pipe_) {
    if (fd >= 0) close(fd);
  }
}

void SlotMonitor::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    const absl::Duration wait = CheckOnce();
    lock.lock();
    wake_.wait_for(lock, absl::ToChronoMilliseconds(wait), [this] { return stop_; });
  }
}

absl::Duration SlotMonitor::CheckOnce() {
  auto fail = [&](const absl::Status& status) {
    conn_.reset();
    if (absl::IsCancelled(status)) return interval_;  // stopping
    if (!failing_) {
      telemetry::LogWarn("slot monitor: cannot read pg_replication_slots for slot '{}': {}; the "
              "outboxd_slot_* metrics keep their last values (see outboxd_slot_checked_"
              "timestamp_seconds); retrying every {}",
              slot_, status.message(), absl::FormatDuration(interval_));
      failing_ = true;
    }
    return interval_;
  };
  if (!conn_) {
    auto conn = replication::PgConnection::Connect(dsn_, /*replication=*/false, stop_pipe_[0]);
    if (!conn.ok()) return fail(conn.status());
    conn_ = std::move(*conn);
    // Never let a stuck server hold this thread (and a clean shutdown) for long.
    if (auto set = conn_->Query("SET statement_timeout = '5s'"); !set.ok()) return fail(set.status());
  }
  absl::StatusOr<std::vector<replication::Row>> rows = conn_->QueryParams(Query(conn_->server_version()), {slot_});
  if (!rows.ok()) return fail(rows.status());
  if (failing_) {
    telemetry::LogInfo("slot monitor: reading pg_replication_slots again");
    failing_ = false;
  }
  if (rows->empty()) {
    // Not created yet (create_slot makes it when streaming starts), or dropped.
    metrics_->slot_known.store(0, std::memory_order_relaxed);
    return std::min(interval_, absl::Seconds(1));
  }
  const replication::Row& row = rows->front();
  auto text = [&](size_t i) -> std::string { return row.size() > i && row[i] ? *row[i] : ""; };
  metrics_->slot_active.store(text(0) == "t" ? 1 : 0, std::memory_order_relaxed);
  int status = -1;
  for (int i = 0; i < static_cast<int>(std::size(telemetry::Metrics::kSlotWalStatuses)); ++i) {
    if (text(1) == telemetry::Metrics::kSlotWalStatuses[i]) status = i;
  }
  metrics_->slot_wal_status.store(status, std::memory_order_relaxed);
  metrics_->slot_retained_wal_bytes.store(std::atoll(text(2).c_str()), std::memory_order_relaxed);
  metrics_->slot_safe_wal_size_bytes.store(text(3).empty() ? telemetry::Metrics::kUnknown : std::atoll(text(3).c_str()),
                                           std::memory_order_relaxed);
  metrics_->slot_on_standby.store(text(4) == "t" ? 1 : 0, std::memory_order_relaxed);
  auto flag = [&](size_t i) { return i < row.size() && row[i] ? (*row[i] == "t" ? 1 : 0) : -1; };
  metrics_->slot_conflicting.store(flag(5), std::memory_order_relaxed);
  metrics_->slot_synced.store(flag(7), std::memory_order_relaxed);
  const int version = conn_->server_version();
  if (version >= 160000) {
    std::optional<bool> conflicting;
    if (flag(5) >= 0) conflicting = flag(5) == 1;
    const Invalidation invalidation = ClassifyInvalidation(text(1), conflicting, row.size() > 6 ? row[6] : std::nullopt);
    metrics_->slot_invalidation_reason.store(ReasonIndex(invalidation), std::memory_order_relaxed);
    metrics_->slot_invalidation_known.store(1, std::memory_order_relaxed);
  }
  auto number = [&](size_t i) {
    return i < row.size() && row[i] ? std::atoll(row[i]->c_str()) : telemetry::Metrics::kUnknown;
  };
  metrics_->slot_inactive_since_unixtime.store(number(8), std::memory_order_relaxed);
  metrics_->slot_idle_timeout_seconds.store(number(9), std::memory_order_relaxed);
  metrics_->slot_checked_unixtime.store(absl::ToUnixSeconds(absl::Now()), std::memory_order_relaxed);
  metrics_->slot_known.store(1, std::memory_order_relaxed);
  return interval_;
}

}  // namespace outboxd::replication
