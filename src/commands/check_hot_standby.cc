// `outboxd check`, decoding on a hot standby and what PostgreSQL 16 to 18 say about a slot
// (check_doctor.h): when [source] dsn reaches a standby, what decoding there needs (16+,
// hot_standby_feedback, a physical slot on the primary, and on the primary through
// [source] primary_dsn: wal_level = logical, that slot, pg_log_standby_snapshot()); the
// limits that can invalidate the slot before outboxd's alerts give an operator time to act
// (18's idle_replication_slot_timeout, max_slot_wal_keep_size at the server's WAL rate); and
// per slot conflicting, synced, inactive_since and why it was invalidated.
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "commands/check_doctor.h"
#include "common/format.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "replication/slot_invalidation.h"
#include "replication/standby_source.h"

namespace outboxd::commands::check {
namespace {

// OutboxdNoInstanceStreaming and OutboxdStreamNotStreaming fire after 5 minutes without a
// streaming instance (deploy/prometheus/alerts.yml); a limit that invalidates a slot less than
// an hour after that leaves an operator too little time to bring outboxd back.
constexpr absl::Duration kAlertDelay = absl::Minutes(5);
constexpr absl::Duration kTimeToAct = absl::Hours(1);
// An average WAL rate over less than this says little about the server's load.
constexpr absl::Duration kMinRateWindow = absl::Minutes(10);

std::string Duration(absl::Duration d) { return absl::FormatDuration(absl::Trunc(d, absl::Seconds(1))); }

std::string Bytes(double bytes) {
  static constexpr const char* kUnits[] = {"bytes", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} bytes", bytes) : fmt::format("{:.1f} {}", bytes, kUnits[unit]);
}

// A pg_settings value with its unit as a duration (idle_replication_slot_timeout's unit was
// minutes in 18's betas and is seconds since).
absl::Duration SettingDuration(const std::string& setting, const std::string& unit) {
  const double value = std::atof(setting.c_str());
  if (unit == "min") return absl::Minutes(value);
  if (unit == "ms") return absl::Milliseconds(value);
  if (unit == "h") return absl::Hours(value);
  return absl::Seconds(value);
}

}  // namespace

void PostgresDoctor::CheckHotStandby() {
  auto rows = Query("hot_standby",
                    "SELECT pg_is_in_recovery(), current_setting('hot_standby_feedback'), "
                    "current_setting('primary_slot_name'), r.status, r.sender_host, r.sender_port::text "
                    "FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true");
  if (!rows) return;
  if (Value(*rows, 0, 0) != "t") {
    if (!source_.primary_dsn.empty()) {
      report_.Ok("hot_standby", "[source] dsn reaches a primary: [source] primary_dsn is used only while dsn "
                                "reaches a hot standby");
    }
    return;
  }
  const int version = pg_.server_version();
  const std::string feedback = Value(*rows, 0, 1), primary_slot = Value(*rows, 0, 2);
  const std::string receiver = Value(*rows, 0, 3), sender_host = Value(*rows, 0, 4), sender_port = Value(*rows, 0, 5);
  if (absl::Status usable = replication::CheckStandbySource(replication::StandbySource{
          .server_version = version, .failover = source_.failover, .slot_found = false, .slot_synced = false,
          .slot = source_.slot});
      !usable.ok()) {
    report_.Fail("hot_standby", std::string(usable.message()));
    if (version < replication::kMinStandbyDecodingVersion) return;
  } else {
    report_.Ok("hot_standby", fmt::format("[source] dsn reaches a hot standby of PostgreSQL {}: outboxd decodes "
                                          "there (docs/operations.md, \"Decoding on a standby\")",
                                          version / 10000));
  }
  if (feedback == "on") {
    report_.Ok("hot_standby", "hot_standby_feedback = on: the primary keeps the catalog rows the slot needs");
  } else {
    report_.Fail("hot_standby",
                 fmt::format("hot_standby_feedback = {}: the primary's vacuum removes catalog rows the slot still "
                             "needs, and PostgreSQL then invalidates the slot (rows_removed): events are lost "
                             "upstream",
                             feedback),
                 "on the standby: ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf()");
  }
  if (primary_slot.empty()) {
    report_.Fail("hot_standby",
                 "primary_slot_name is not set: while the standby is disconnected the primary keeps neither the "
                 "WAL nor the catalog rows its logical slot needs, so a vacuum there can invalidate it "
                 "(rows_removed)",
                 "on the primary: SELECT pg_create_physical_replication_slot('<name>'); on the standby: ALTER "
                 "SYSTEM SET primary_slot_name = '<name>'; SELECT pg_reload_conf()");
  } else {
    report_.Ok("hot_standby", fmt::format("primary_slot_name = '{}'", primary_slot));
  }
  const std::string upstream =
      sender_host.empty() ? std::string("its primary") : fmt::format("{}:{}", sender_host, sender_port);
  if (receiver.empty()) {
    report_.Warn("hot_standby",
                 "no WAL receiver is visible: the standby receives no WAL (archive recovery only?), or the role "
                 "may not see pg_stat_wal_receiver; a slot there moves only as far as the standby replays",
                 "check primary_conninfo on the standby; GRANT pg_read_all_stats to outboxd's role to let check "
                 "see it");
  } else if (receiver != "streaming") {
    report_.Warn("hot_standby",
                 fmt::format("the WAL receiver is '{}', not streaming from {}: the slot does not move meanwhile",
                             receiver, upstream),
                 "see the standby's log and primary_conninfo");
  }

  if (source_.primary_dsn.empty()) {
    report_.Warn("primary",
                 fmt::format("[source] primary_dsn is not set: check cannot verify the primary ({}): its wal_level "
                             "and the standby's physical slot there; and creating the slot on this standby waits "
                             "for the primary's next write (minutes or more on a quiet primary)",
                             upstream),
                 sender_host.empty() ? "set [source] primary_dsn to the primary's connection string"
                                     : fmt::format("set [source] primary_dsn = \"host={} port={} dbname=... "
                                                   "user=...\"",
                                                   sender_host, sender_port));
    return;
  }
  absl::StatusOr<std::unique_ptr<PgConnection>> primary = PgConnection::Connect(source_.primary_dsn, false);
  if (!primary.ok()) {
    report_.Fail("primary", std::string(primary.status().message()), "check [source] primary_dsn");
    return;
  }
  const std::string where = (*primary)->Describe();
  auto facts = (*primary)->QueryParams(
      "SELECT pg_is_in_recovery(), current_setting('wal_level'), "
      "has_function_privilege('pg_catalog.pg_log_standby_snapshot()', 'EXECUTE'), "
      "(SELECT slot_type FROM pg_replication_slots WHERE slot_name = $1), "
      "(SELECT active FROM pg_replication_slots WHERE slot_name = $1), "
      "(SELECT COALESCE(catalog_xmin, xmin)::text FROM pg_replication_slots WHERE slot_name = $1)",
      {primary_slot});
  if (!facts.ok()) {
    report_.Fail("primary", fmt::format("{}: query failed: {}", where, facts.status().message()),
                 "[source] primary_dsn must reach the primary (PostgreSQL 16+)");
    return;
  }
  if (Value(*facts, 0, 0) == "t") {
    report_.Fail("primary", fmt::format("{} is itself a standby (pg_is_in_recovery() is true)", where),
                 "point [source] primary_dsn at the primary: only it can log a standby snapshot");
    return;
  }
  const std::string wal_level = Value(*facts, 0, 1);
  if (wal_level == "logical") {
    report_.Ok("primary", fmt::format("{}: wal_level = logical", where));
  } else {
    report_.Fail("primary",
                 fmt::format("{}: wal_level = {}: the primary's WAL lacks what logical decoding needs, so no slot "
                             "on a standby can decode (a slot that did is invalidated: wal_level_insufficient)",
                             where, wal_level),
                 "on the primary: ALTER SYSTEM SET wal_level = logical, then restart it");
  }
  if (!primary_slot.empty()) {
    const std::string type = Value(*facts, 0, 3), active = Value(*facts, 0, 4), horizon = Value(*facts, 0, 5);
    if (type.empty()) {
      report_.Fail("primary",
                   fmt::format("the standby's primary_slot_name '{}' is no slot on the primary: nothing keeps the "
                               "rows and WAL the standby needs",
                               primary_slot),
                   fmt::format("on the primary: SELECT pg_create_physical_replication_slot('{}')", primary_slot));
    } else if (type != "physical") {
      report_.Fail("primary", fmt::format("'{}' on the primary is a {} slot, not a physical one", primary_slot, type),
                   "give the standby a physical slot of its own (primary_slot_name)");
    } else if (active != "t") {
      report_.Warn("primary",
                   fmt::format("physical slot '{}' on the primary is not in use: the standby is not connected to "
                               "it",
                               primary_slot),
                   "check primary_conninfo and the standby's log");
    } else {
      report_.Ok("primary", fmt::format("physical slot '{}' is in use by the standby{}", primary_slot,
                                        horizon.empty() ? " (no feedback horizon yet)"
                                                        : fmt::format(", holding rows back from xid {}", horizon)));
    }
  }
  if (Value(*facts, 0, 2) == "t") {
    report_.Ok("primary", "the role may call pg_log_standby_snapshot(): creating the slot here takes seconds");
  } else {
    report_.Warn("primary",
                 "the role may not call pg_log_standby_snapshot() on the primary (superusers only by default): "
                 "creating the slot on this standby waits for the primary's next write",
                 "on the primary, as a superuser: GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO <role> "
                 "(sql/role.sql)");
  }
}

void PostgresDoctor::CheckSlotLimits() {
  const absl::Duration act_by = kAlertDelay + kTimeToAct;
  if (pg_.server_version() >= 180000) {
    auto rows = Query("idle_timeout",
                      "SELECT setting, unit FROM pg_settings WHERE name = 'idle_replication_slot_timeout'");
    if (!rows) return;
    const absl::Duration timeout = SettingDuration(Value(*rows, 0, 0), Value(*rows, 0, 1));
    if (rows->empty() || timeout <= absl::ZeroDuration()) {
      report_.Ok("idle_timeout", "idle_replication_slot_timeout = 0: PostgreSQL never invalidates an unused slot");
    } else if (timeout <= kAlertDelay) {
      report_.Warn("idle_timeout",
                   fmt::format("idle_replication_slot_timeout = {}: a slot that no outboxd streams for that long is "
                               "invalidated at the next checkpoint (idle_timeout), before OutboxdNoInstanceStreaming "
                               "even fires ({}): an upgrade or a short outage loses events",
                               Duration(timeout), Duration(kAlertDelay)),
                   fmt::format("raise it well past the longest time outboxd may be stopped (at least {}), or set it "
                               "to 0: ALTER SYSTEM SET idle_replication_slot_timeout = 0; SELECT pg_reload_conf()",
                               Duration(act_by)));
    } else if (timeout < act_by) {
      report_.Warn("idle_timeout",
                   fmt::format("idle_replication_slot_timeout = {}: a slot that no outboxd streams for that long is "
                               "invalidated at the next checkpoint (idle_timeout), {} after "
                               "OutboxdNoInstanceStreaming fires: little time to bring outboxd back",
                               Duration(timeout), Duration(timeout - kAlertDelay)),
                   fmt::format("raise it to at least {}, or set it to 0", Duration(act_by)));
    } else {
      report_.Ok("idle_timeout",
                 fmt::format("idle_replication_slot_timeout = {}: an operator has {} after "
                             "OutboxdNoInstanceStreaming fires to bring outboxd back before the slot is invalidated",
                             Duration(timeout), Duration(timeout - kAlertDelay)));
    }
  }

  // How soon max_slot_wal_keep_size invalidates the slot of a stopped outboxd, at the
  // primary's average WAL rate (a standby writes no WAL of its own: ask primary_dsn).
  auto keep = Query("wal_keep", "SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'");
  if (!keep || keep->empty() || Value(*keep) == "-1") return;
  const double keep_bytes = std::atof(Value(*keep).c_str()) * 1024 * 1024;
  constexpr std::string_view kRate =
      "SELECT wal_bytes::float8, extract(epoch FROM now() - stats_reset)::float8, stats_reset::text FROM pg_stat_wal "
      "WHERE stats_reset IS NOT NULL";
  std::unique_ptr<PgConnection> primary;
  PgConnection* rate_on = &pg_;
  auto recovery = Query("wal_keep", "SELECT pg_is_in_recovery()");
  if (!recovery) return;
  if (Value(*recovery) == "t") {
    if (source_.primary_dsn.empty()) return;  // CheckHotStandby said what primary_dsn would add
    auto conn = PgConnection::Connect(source_.primary_dsn, false);
    if (!conn.ok()) return;  // reported by CheckHotStandby
    primary = std::move(*conn);
    rate_on = primary.get();
  }
  auto rate = rate_on->Query(std::string(kRate));
  if (!rate.ok() || rate->empty()) return;
  const double bytes = std::atof(Value(*rate, 0, 0).c_str()), seconds = std::atof(Value(*rate, 0, 1).c_str());
  if (seconds < absl::ToDoubleSeconds(kMinRateWindow) || bytes <= 0) return;
  const double per_second = bytes / seconds;
  const absl::Duration until = absl::Seconds(keep_bytes / per_second);
  const std::string what = fmt::format(
      "at the primary's average WAL rate since {} ({}/min; peaks are higher), a slot that no outboxd streams "
      "reaches max_slot_wal_keep_size = {} in about {}",
      Value(*rate, 0, 2), Bytes(per_second * 60), Bytes(keep_bytes), Duration(until));
  if (until < act_by) {
    report_.Warn("wal_keep",
                 fmt::format("{}: {} OutboxdNoInstanceStreaming fires ({}), and the slot is then invalidated "
                             "(wal_removed)",
                             what, until <= kAlertDelay ? "before" : "less than an hour after", Duration(kAlertDelay)),
                 fmt::format("raise max_slot_wal_keep_size to what the WAL rate writes in the longest outage to ride "
                             "out (at least {} at this rate), if the disk allows",
                             Bytes(per_second * absl::ToDoubleSeconds(act_by))));
  } else {
    report_.Ok("wal_keep", what);
  }
}

void PostgresDoctor::CheckSlotFacts() {
  const int version = pg_.server_version();
  if (version < 160000) return;  // nothing beyond wal_status, which CheckSlot reports
  const bool v17 = version >= 170000;
  auto rows = Query("slot",
                    fmt::format("SELECT conflicting, {} FROM pg_replication_slots WHERE slot_name = $1 AND "
                                "slot_type = 'logical'",
                                v17 ? "invalidation_reason, synced, inactive_since::text, "
                                      "extract(epoch FROM now() - inactive_since)::float8"
                                    : "NULL, NULL, NULL, NULL"),
                    {source_.slot});
  if (!rows || rows->empty()) return;  // CheckSlot said it is missing
  std::optional<bool> conflicting;
  if ((*rows)[0][0].has_value()) conflicting = Value(*rows) == "t";
  const replication::Invalidation invalidation =
      replication::ClassifyInvalidation("", conflicting, (*rows)[0][1]);
  if (invalidation.invalidated()) return;  // CheckSlot fails it with the reason
  auto boolean = [](const std::string& v) { return v == "t" ? "true" : v == "f" ? "false" : "-"; };
  std::vector<std::string> facts = {fmt::format("conflicting {}", boolean(Value(*rows, 0, 0)))};
  if (v17) facts.push_back(fmt::format("synced {}", boolean(Value(*rows, 0, 2))));
  const std::string inactive_since = Value(*rows, 0, 3);
  const absl::Duration idle = absl::Seconds(std::atof(Value(*rows, 0, 4).c_str()));
  facts.push_back(inactive_since.empty() ? std::string("in use")
                                         : fmt::format("inactive since {} ({})", inactive_since, Duration(idle)));
  report_.Ok("slot", fmt::format("'{}' {}", source_.slot, fmt::join(facts, ", ")));
  if (version < 180000 || inactive_since.empty()) return;
  auto timeout_rows = Query("idle_timeout",
                            "SELECT setting, unit FROM pg_settings WHERE name = 'idle_replication_slot_timeout'");
  if (!timeout_rows || timeout_rows->empty()) return;
  const absl::Duration timeout = SettingDuration(Value(*timeout_rows, 0, 0), Value(*timeout_rows, 0, 1));
  if (timeout > absl::ZeroDuration() && idle * 2 >= timeout) {
    report_.Warn("idle_timeout",
                 fmt::format("slot '{}' has not been streamed for {} of idle_replication_slot_timeout = {}: the first "
                             "checkpoint after {} invalidates it (idle_timeout){}",
                             source_.slot, Duration(idle), Duration(timeout), Duration(timeout),
                             idle >= timeout ? ", which may happen any moment now" : ""),
                 "start outboxd now (outboxd run), or raise idle_replication_slot_timeout");
  }
}

std::string PostgresDoctor::InvalidationOf(const std::string& slot) {
  const int version = pg_.server_version();
  auto rows = pg_.QueryParams(
      fmt::format("SELECT wal_status, {}, {}, current_setting('max_slot_wal_keep_size'), {} FROM "
                  "pg_replication_slots WHERE slot_name = $1",
                  version >= 160000 ? "conflicting" : "NULL", version >= 170000 ? "invalidation_reason" : "NULL",
                  version >= 180000 ? "current_setting('idle_replication_slot_timeout')" : "NULL"),
      {slot});
  if (!rows.ok() || rows->empty()) return "wal_status lost";
  std::optional<bool> conflicting;
  if ((*rows)[0][1].has_value()) conflicting = Value(*rows, 0, 1) == "t";
  const replication::Invalidation invalidation =
      replication::ClassifyInvalidation(Value(*rows, 0, 0), conflicting, (*rows)[0][2]);
  const std::string setting = invalidation.kind == replication::InvalidationKind::kIdleTimeout ? Value(*rows, 0, 4)
                              : invalidation.kind == replication::InvalidationKind::kWalRemoved ||
                                      invalidation.kind == replication::InvalidationKind::kLost
                                  ? Value(*rows, 0, 3)
                                  : std::string();
  const std::string prevent = replication::InvalidationPrevention(invalidation);
  return fmt::format("{}{}", replication::DescribeInvalidation(invalidation, setting),
                     prevent.empty() ? "" : fmt::format("; to keep it from happening again: {}", prevent));
}

}  // namespace outboxd::commands::check
