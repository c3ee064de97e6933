#include "replication/slot_invalidation.h"

#include "fmt/format.h"

namespace outboxd::replication {
namespace {

std::string With(std::string_view name, std::string_view setting) {
  return setting.empty() ? std::string(name) : fmt::format("{} = {}", name, setting);
}

}  // namespace

Invalidation ClassifyInvalidation(std::string_view wal_status, std::optional<bool> conflicting,
                                  const std::optional<std::string>& invalidation_reason) {
  if (invalidation_reason.has_value() && !invalidation_reason->empty()) {
    const std::string& reason = *invalidation_reason;
    InvalidationKind kind = InvalidationKind::kOther;
    if (reason == "wal_removed") kind = InvalidationKind::kWalRemoved;
    if (reason == "rows_removed") kind = InvalidationKind::kRowsRemoved;
    if (reason == "wal_level_insufficient") kind = InvalidationKind::kWalLevelInsufficient;
    if (reason == "idle_timeout") kind = InvalidationKind::kIdleTimeout;
    // The value goes into log lines: keep what a server could send within reason.
    return {kind, kind == InvalidationKind::kOther ? reason.substr(0, 64) : reason};
  }
  if (conflicting.has_value() && *conflicting) return {InvalidationKind::kConflict, "conflict"};
  if (wal_status != "lost") return {};
  // 16 says conflicting = false for a slot that lost its WAL; 17 and later name every reason.
  if (conflicting.has_value()) return {InvalidationKind::kWalRemoved, "wal_removed"};
  return {InvalidationKind::kLost, "lost"};
}

std::string InvalidationCause(const Invalidation& invalidation, std::string_view setting) {
  switch (invalidation.kind) {
    case InvalidationKind::kNone:
      return "it is valid";
    case InvalidationKind::kWalRemoved:
    case InvalidationKind::kLost:
      return fmt::format("it fell more than {} behind, and PostgreSQL removed WAL it still needed",
                         With("max_slot_wal_keep_size", setting));
    case InvalidationKind::kRowsRemoved:
      return "a conflict with recovery on this hot standby: the primary removed catalog rows the slot still "
             "needed to decode (hot_standby_feedback is off, or the standby was disconnected and no physical "
             "slot on the primary kept them)";
    case InvalidationKind::kWalLevelInsufficient:
      return "a conflict with recovery on this hot standby: the primary's wal_level went below logical, so its "
             "WAL no longer holds what logical decoding needs";
    case InvalidationKind::kIdleTimeout:
      return fmt::format("no client streamed it for longer than {} (PostgreSQL 18), and a checkpoint "
                         "invalidated it",
                         With("idle_replication_slot_timeout", setting));
    case InvalidationKind::kConflict:
      return "a conflict with recovery on this hot standby (PostgreSQL 16 does not say which: the primary "
             "removed catalog rows the slot needed, or its wal_level went below logical)";
    case InvalidationKind::kOther:
      return "a reason this version of outboxd does not know; the server's log tells more";
  }
  return "unknown";
}

std::string InvalidationPrevention(const Invalidation& invalidation) {
  switch (invalidation.kind) {
    case InvalidationKind::kNone:
      return "";
    case InvalidationKind::kWalRemoved:
    case InvalidationKind::kLost:
      return "keep outboxd streaming (alerts on outboxd_slot_wal_status and outboxd_replication_lag_bytes) and "
             "give max_slot_wal_keep_size room for the longest outage you must ride out";
    case InvalidationKind::kRowsRemoved:
    case InvalidationKind::kConflict:
      return "on the standby set hot_standby_feedback = on and primary_slot_name to a physical slot on the "
             "primary, so that the primary keeps the catalog rows the slot needs (outboxd check verifies both)";
    case InvalidationKind::kWalLevelInsufficient:
      return "keep wal_level = logical on the primary";
    case InvalidationKind::kIdleTimeout:
      return "raise idle_replication_slot_timeout well past the longest time outboxd may be stopped "
             "(upgrades, outages), or set it to 0 (off); outboxd check warns when it is too short";
    case InvalidationKind::kOther:
      return "read the server's log around the invalidation";
  }
  return "";
}

std::string DescribeInvalidation(const Invalidation& invalidation, std::string_view setting) {
  const std::string cause = InvalidationCause(invalidation, setting);
  if (invalidation.kind == InvalidationKind::kLost) return fmt::format("wal_status lost: {}", cause);
  return fmt::format("{}: {}", invalidation.reason, cause);
}

}  // namespace outboxd::replication
