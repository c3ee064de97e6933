// SlotCreationWatch: what outboxd does while CREATE_REPLICATION_SLOT waits
// (PgConnection::QueryWhileWaiting calls Tick every second). It logs what the
// creation waits for every so often, and on a hot standby with [source]
// primary_dsn it asks the primary for a standby snapshot
// (pg_log_standby_snapshot()), so that a quiet primary does not hold the
// creation until its next write (standby_source.h).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "replication/standby_source.h"

namespace outboxd::replication {

class PgConnection;

class SlotCreationWatch {
 public:
  struct Options {
    std::string slot;
    std::string where;        // the server creating it, PgConnection::Describe()
    bool on_standby = false;
    std::string primary_dsn;  // [source] primary_dsn; "" for none
    int stop_fd = -1;         // ends a connection attempt to the primary at once
    absl::Duration first_log = absl::Seconds(5);
    absl::Duration log_every = absl::Seconds(30);
  };

  explicit SlotCreationWatch(Options options);
  ~SlotCreationWatch();
  SlotCreationWatch(const SlotCreationWatch&) = delete;
  SlotCreationWatch& operator=(const SlotCreationWatch&) = delete;

  // Called with the time waited so far. CancelledError once a stop was
  // requested while it talked to the primary; a primary that cannot be
  // reached or refuses is logged (once per outage) and asked again later.
  absl::Status Tick(absl::Duration waited);

  const CreationWait& wait() const { return wait_; }

 private:
  absl::Status RequestSnapshot();

  Options options_;
  CreationWait wait_;
  absl::Duration next_log_;
  absl::Duration next_request_ = absl::ZeroDuration();
  bool request_failing_ = false;
  std::unique_ptr<PgConnection> primary_;
};

}  // namespace outboxd::replication
