#include "replication/slot_creation.h"

#include <utility>

#include "replication/pg_connection.h"
#include "telemetry/logging.h"

namespace outboxd::replication {
namespace {

// A snapshot each second at first (a consistent point needs one written after the
// creation began, and more while transactions that were open then still run), then
// every 10 s: each is a WAL record of a few dozen bytes on the primary.
constexpr absl::Duration kEagerRequests = absl::Seconds(10);
constexpr absl::Duration kLaterRequestEvery = absl::Seconds(10);

}  // namespace

SlotCreationWatch::SlotCreationWatch(Options options)
    : options_(std::move(options)), next_log_(options_.first_log) {
  wait_.slot = options_.slot;
  wait_.where = options_.where;
  wait_.on_standby = options_.on_standby;
  wait_.primary_dsn = !options_.primary_dsn.empty();
}

SlotCreationWatch::~SlotCreationWatch() = default;

absl::Status SlotCreationWatch::Tick(absl::Duration waited) {
  wait_.waited = waited;
  if (options_.on_standby && !options_.primary_dsn.empty() && waited >= next_request_) {
    if (absl::Status requested = RequestSnapshot(); absl::IsCancelled(requested)) return requested;
    next_request_ = waited < kEagerRequests ? waited : waited + kLaterRequestEvery;
  }
  if (waited >= next_log_) {
    telemetry::LogInfo("{}", CreationWaitMessage(wait_));
    next_log_ = waited + options_.log_every;
  }
  return absl::OkStatus();
}

absl::Status SlotCreationWatch::RequestSnapshot() {
  auto failed = [&](const absl::Status& status) {
    primary_.reset();
    if (absl::IsCancelled(status)) return status;
    wait_.last_request_error = std::string(status.message());
    if (!request_failing_) {
      telemetry::LogWarn("creating replication slot \"{}\" on a hot standby: cannot ask the primary for a standby "
                         "snapshot ([source] primary_dsn): {}; the creation waits for the primary's next write "
                         "meanwhile, and outboxd asks again. The role needs EXECUTE on pg_log_standby_snapshot() "
                         "on the primary (sql/role.sql)",
                         options_.slot, status.message());
      request_failing_ = true;
    }
    return status;
  };
  if (primary_ == nullptr) {
    auto conn = PgConnection::Connect(options_.primary_dsn, /*replication=*/false, options_.stop_fd);
    if (!conn.ok()) return failed(conn.status());
    primary_ = std::move(*conn);
    // A primary that hangs must not hold the wait, nor a stop, for long.
    if (auto set = primary_->Query("SET statement_timeout = '5s'"); !set.ok()) return failed(set.status());
  }
  auto rows = primary_->Query("SELECT pg_log_standby_snapshot()::text");
  if (!rows.ok()) return failed(rows.status());
  ++wait_.snapshots_requested;
  wait_.last_request_error.clear();
  if (request_failing_ || wait_.snapshots_requested == 1) {
    telemetry::LogInfo("creating replication slot \"{}\" on hot standby {}: asked the primary ({}) for a standby "
                       "snapshot, written at {}; the creation completes once the standby replays it",
                       options_.slot, options_.where, primary_->Describe(),
                       !rows->empty() && !(*rows)[0].empty() ? (*rows)[0][0].value_or("?") : "?");
  }
  request_failing_ = false;
  return absl::OkStatus();
}

}  // namespace outboxd::replication
