// Decoding on a hot standby (PostgreSQL 16+): whether the server [source] dsn reaches can
// host outboxd's slot, and what outboxd says while a slot's creation there waits. Pure.
//
// A logical slot on a standby can only be created once the standby replayed a
// running-transactions record (xl_running_xacts, "standby snapshot") written after the
// creation began: the primary's background writer logs one within 15 s of any write, but a
// quiet primary writes none, and the creation waits for the next write there. With [source]
// primary_dsn, outboxd asks the primary for one (pg_log_standby_snapshot()) while it waits.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace outboxd::replication {

// PostgreSQL 16 was the first to decode on a standby.
inline constexpr int kMinStandbyDecodingVersion = 160000;

// What Start knows about a server in recovery and the slot there.
struct StandbySource {
  int server_version = 0;
  bool failover = false;     // [source] failover
  bool slot_found = false;
  bool slot_synced = false;  // pg_replication_slots.synced (17+)
  std::string slot;
};

// OK when outboxd can create or stream its slot on this standby, else FailedPreconditionError
// saying what to do: a server older than 16; failover = true (PostgreSQL refuses failover slots
// on a standby, and needs none there: a standby's slot stays with it at promotion); a slot that
// is a synchronized copy of the primary's failover slot (it cannot be streamed until promotion).
absl::Status CheckStandbySource(const StandbySource& source);

// What a wait for CREATE_REPLICATION_SLOT looks like to outboxd.
struct CreationWait {
  std::string slot;
  std::string where;         // the server, PgConnection::Describe()
  bool on_standby = false;
  bool primary_dsn = false;  // [source] primary_dsn is set
  absl::Duration waited;
  int snapshots_requested = 0;  // pg_log_standby_snapshot() calls that succeeded
  std::string last_request_error;  // the primary's last refusal, "" when none
};

// The periodic log line: what the creation waits for and what would end the wait.
std::string CreationWaitMessage(const CreationWait& wait);

// The error for a creation that waited its whole limit (the relay retries it).
std::string CreationTimeoutMessage(const CreationWait& wait, absl::Duration limit);

}  // namespace outboxd::replication
