// SlotMonitor: every few seconds, on its own ordinary libpq connection and
// thread, reads the slot's row of pg_replication_slots (active, wal_status,
// retained WAL, safe_wal_size, and where the server says them: on a standby,
// conflicting, invalidation_reason, synced, inactive_since, 18's
// idle_replication_slot_timeout) into the metrics. It never touches the
// replication connection, so a slow query cannot stall the pipeline.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "telemetry/metrics.h"

namespace outboxd::replication {

class PgConnection;

class SlotMonitor {
 public:
  // Starts the thread; the first query runs at once. Errors are logged (once
  // per outage) and retried at the next interval, never fatal.
  SlotMonitor(std::string dsn, std::string slot, absl::Duration interval, telemetry::Metrics* metrics);
  ~SlotMonitor();  // stops and joins
  SlotMonitor(const SlotMonitor&) = delete;
  SlotMonitor& operator=(const SlotMonitor&) = delete;

  // The query for a server of `server_version`, for tests and docs: one row
  // for slot $1.
  static std::string Query(int server_version);

 private:
  void Loop();
  // Returns how long to wait before the next check.
  absl::Duration CheckOnce();

  const std::string dsn_;
  const std::string slot_;
  const absl::Duration interval_;
  telemetry::Metrics* metrics_;
  std::unique_ptr<replication::PgConnection> conn_;
  bool failing_ = false;  // an error was logged and not yet followed by a success

  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  int stop_pipe_[2] = {-1, -1};  // readable once stopping: ends a connect or query
  std::thread thread_;
};

}  // namespace outboxd::replication
