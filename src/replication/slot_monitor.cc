#include "replication/slot_monitor.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <iterator>

#include "absl/time/clock.h"
#include "common/format.h"
#include "telemetry/logging.h"
#include "replication/pg_connection.h"

namespace outboxd::replication {

const char* SlotMonitor::Query() {
  // On a hot standby pg_current_wal_lsn() fails; the receive position stands in.
  return "SELECT active, wal_status, "
         "pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() "
         "ELSE pg_current_wal_lsn() END, restart_lsn)::bigint, safe_wal_size "
         "FROM pg_replication_slots WHERE slot_name = $1";
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
  absl::StatusOr<std::vector<replication::Row>> rows = conn_->QueryParams(Query(), {slot_});
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
  metrics_->slot_checked_unixtime.store(absl::ToUnixSeconds(absl::Now()), std::memory_order_relaxed);
  metrics_->slot_known.store(1, std::memory_order_relaxed);
  return interval_;
}

}  // namespace outboxd::replication
