#include "replication/slot_query.h"

#include <cstdlib>
#include <vector>

#include "common/status_macros.h"
#include "fmt/format.h"
#include "replication/standby_source.h"
#include "replication/timeline.h"

namespace outboxd::replication {

absl::StatusOr<SlotState> ReadSlot(PgConnection& conn, std::string_view slot, bool* found) {
  const int version = conn.server_version();
  ASSIGN_OR_RETURN(
      std::vector<Row> rows,
      conn.Query(fmt::format("SELECT slot_type, plugin, database, active, active_pid, {}, confirmed_flush_lsn, {}, {}, "
                             "{} FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
                             version >= 130000 ? "wal_status" : "NULL",
                             version >= 170000 ? "failover, synced" : "false, false",
                             version >= 160000 ? "conflicting" : "NULL",
                             version >= 170000 ? "invalidation_reason" : "NULL", QuoteLiteral(slot))));
  *found = !rows.empty();
  SlotState state;
  if (rows.empty()) return state;
  const Row& row = rows[0];
  if (row.size() < 11) return absl::InternalError("pg_replication_slots returned fewer columns than asked for");
  state.slot_type = row[0].value_or("");
  state.plugin = row[1].value_or("");
  state.database = row[2].value_or("");
  state.active = row[3].value_or("f") == "t";
  if (row[4].has_value()) state.active_pid = std::atoi(row[4]->c_str());
  state.wal_status = row[5].value_or("");
  if (row[6].has_value()) {
    absl::StatusOr<Lsn> confirmed = Lsn::Parse(*row[6]);
    if (!confirmed.ok()) {
      return absl::InternalError(fmt::format("PostgreSQL returned an unreadable confirmed_flush_lsn: {}",
                                             std::string(confirmed.status().message())));
    }
    state.confirmed_flush = *confirmed;
  }
  state.failover = row[7].value_or("f") == "t";
  state.synced = row[8].value_or("f") == "t";
  std::optional<bool> conflicting;
  if (row[9].has_value()) conflicting = *row[9] == "t";
  state.invalidation = ClassifyInvalidation(state.wal_status, conflicting, row[10]);
  return state;
}

std::string DecidingSetting(PgConnection& conn, const Invalidation& invalidation) {
  const char* name = nullptr;
  if (invalidation.kind == InvalidationKind::kIdleTimeout) name = "idle_replication_slot_timeout";
  if (invalidation.kind == InvalidationKind::kWalRemoved || invalidation.kind == InvalidationKind::kLost) {
    name = "max_slot_wal_keep_size";
  }
  if (name == nullptr) return "";
  auto rows = conn.Query(fmt::format("SHOW {}", name));
  if (!rows.ok() || rows->empty() || (*rows)[0].empty()) return "";
  return (*rows)[0][0].value_or("");
}

Lsn HistorySwitch(PgConnection& conn, const std::optional<SavedState>& saved, std::string_view slot,
                  const SystemInfo& info) {
  if (!saved.has_value() || saved->slot != slot || saved->system_id != info.system_id || saved->timeline <= 0 ||
      saved->timeline == info.timeline || info.timeline < 2) {
    return Lsn::Invalid();
  }
  absl::StatusOr<std::vector<TimelineSwitch>> history = ReadTimelineHistory(conn, static_cast<uint32_t>(info.timeline));
  if (!history.ok()) return Lsn::Invalid();
  for (const TimelineSwitch& entry : *history) {
    if (static_cast<int>(entry.timeline) == saved->timeline) return entry.switch_point;
  }
  return Lsn::Invalid();
}

absl::Status ReadStandby(PgConnection& conn, const StreamOptions& options, const SlotState& slot, bool found,
                         SystemInfo* info) {
  ASSIGN_OR_RETURN(std::vector<Row> rows,
                   conn.Query("SELECT pg_catalog.pg_is_in_recovery(), "
                              "pg_catalog.current_setting('hot_standby_feedback'), "
                              "pg_catalog.current_setting('primary_slot_name')"));
  if (rows.empty() || rows[0].size() < 3) return absl::InternalError("pg_is_in_recovery() returned no row");
  info->in_recovery = rows[0][0].value_or("f") == "t";
  if (!info->in_recovery) return absl::OkStatus();
  info->hot_standby_feedback = rows[0][1].value_or("");
  info->primary_slot_name = rows[0][2].value_or("");
  return CheckStandbySource(StandbySource{.server_version = info->server_version,
                                          .failover = options.failover,
                                          .slot_found = found,
                                          .slot_synced = found && slot.synced,
                                          .slot = options.slot});
}

}  // namespace outboxd::replication
