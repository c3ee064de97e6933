// `outboxd check`, per slot: the slot's state and retained WAL, and whether a
// failover of the primary would keep it (check_doctor.h).
#include <cstdlib>
#include <string>
#include <vector>

#include "commands/check_doctor.h"
#include "config/parser.h"
#include "common/format.h"
#include "fmt/format.h"
#include "fmt/ranges.h"

namespace outboxd::commands::check {
namespace {

// Whether `name` is a likelier meant slot than `best` for `wanted`: within a
// typo's distance (config::Suggest's rule: 1 edit up to 4 characters, else 2),
// or one is the other with a suffix ("outboxd" and "outboxd_2").
bool Closer(const std::string& wanted, const std::string& name, const std::string& best) {
  const size_t limit = wanted.size() <= 4 ? 1 : 2;
  const size_t distance = config::EditDistance(wanted, name);
  if (distance > limit) return false;
  return best.empty() || distance < config::EditDistance(wanted, best);
}

}  // namespace

// The slot is missing (and could be created). A slot name that is a typo of
// an existing one must not lead to a second slot: name this database's
// logical slots and the closest one.
void PostgresDoctor::MissingSlot() {
  const std::string& slot = source_.slot;
  auto rows = Query("slot",
                    "SELECT slot_name, plugin, active FROM pg_replication_slots WHERE slot_type = 'logical' AND "
                    "database = current_database() ORDER BY slot_name");
  if (!rows) return;
  std::vector<std::string> names, described;
  for (size_t i = 0; i < rows->size(); ++i) {
    names.push_back(Value(*rows, i, 0));
    described.push_back(fmt::format("{} ({}, {})", Value(*rows, i, 0), Value(*rows, i, 1),
                                    Value(*rows, i, 2) == "t" ? "active" : "inactive"));
  }
  std::string closest;
  for (size_t i = 0; i < names.size(); ++i) {
    if (Closer(slot, names[i], closest)) closest = names[i];
  }
  const std::string existing =
      described.empty() ? "this database has no logical slot"
                        : fmt::format("this database's logical slots: {}", NameList(described, 10));
  if (source_.create_slot) {
    if (!closest.empty()) {
      report_.Warn("slot",
                   fmt::format("'{}' is missing and will be created on start (create_slot = true), but '{}' exists: "
                               "if the name is a typo, a second slot starts capturing from now while '{}' keeps "
                               "retaining WAL; {}",
                               slot, closest, closest, existing),
                   fmt::format("if you meant it: set [source] slot = \"{}\"", closest));
    } else {
      report_.Ok("slot", fmt::format("'{}' is missing and will be created on start (create_slot = true); events "
                                     "are captured from then on ({})",
                                     slot, existing));
    }
    return;
  }
  if (!closest.empty()) {
    report_.Fail("slot", fmt::format("'{}' is missing and create_slot = false; {}", slot, existing),
                 fmt::format("did you mean '{}'? set [source] slot = \"{}\"", closest, closest));
  } else {
    report_.Fail("slot", fmt::format("'{}' is missing and create_slot = false; {}", slot, existing),
                 fmt::format("set [source] slot to one of them, or create it (events are captured from its "
                             "creation on): SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
                             slot));
  }
}

void PostgresDoctor::CheckSlot() {
  const std::string& slot = source_.slot;
  // On a hot standby pg_current_wal_lsn() fails; what it replayed stands in.
  auto rows = Query("slot",
                    "WITH here AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                    "ELSE pg_current_wal_lsn() END AS lsn) "
                    "SELECT plugin, slot_type, database, wal_status, active_pid::text, "
                    "confirmed_flush_lsn::text, pg_size_pretty(pg_wal_lsn_diff(here.lsn, "
                    "restart_lsn)), pg_size_pretty(pg_wal_lsn_diff(here.lsn, "
                    "confirmed_flush_lsn)), pg_size_pretty(safe_wal_size) "
                    "FROM pg_replication_slots, here WHERE slot_name = $1",
                    {slot});
  if (!rows) return;
  if (rows->empty()) {
    auto capacity = Query("slot",
                          "SELECT (SELECT count(*) FROM pg_replication_slots), "
                          "current_setting('max_replication_slots')::int");
    if (!capacity) return;
    const int used = std::atoi(Value(*capacity, 0, 0).c_str());
    const int max = std::atoi(Value(*capacity, 0, 1).c_str());
    if (used >= max) {
      report_.Fail("slot",
                   fmt::format("'{}' is missing and all {} replication slots are in use: it cannot be "
                               "created",
                               slot, max),
                   "drop an abandoned slot (SELECT * FROM outboxd_slot_status, sql/monitoring.sql) or "
                   "raise max_replication_slots and restart PostgreSQL");
    } else {
      MissingSlot();
    }
    return;
  }
  const std::string plugin = Value(*rows, 0, 0), type = Value(*rows, 0, 1), database = Value(*rows, 0, 2);
  const std::string wal_status = Value(*rows, 0, 3), active = Value(*rows, 0, 4);
  const std::string retained = Value(*rows, 0, 6), lag = Value(*rows, 0, 7), safe = Value(*rows, 0, 8);
  if (type != "logical" || plugin != "pgoutput") {
    report_.Fail("slot",
                 fmt::format("'{}' is a {} slot with plugin '{}'; outboxd needs a logical pgoutput slot",
                             slot, type, plugin),
                 "choose another [source] slot name (outboxd creates it), or drop this one if nothing "
                 "uses it");
    return;
  }
  auto db = Query("slot", "SELECT current_database()");
  if (db && Value(*db) != database) {
    report_.Fail("slot", fmt::format("'{}' belongs to database '{}', not '{}'", slot, database, Value(*db)),
                 "fix dbname in [source] dsn, or choose another [source] slot name");
    return;
  }
  const std::string where = fmt::format("'{}' wal_status {}, confirmed {}, lag {}, retains {} of WAL{}",
                                        slot, wal_status, Value(*rows, 0, 5), lag, retained,
                                        active.empty() ? ", not in use"
                                                       : fmt::format(", in use by PID {}", active));
  if (wal_status == "lost") {
    report_.Fail("slot",
                 fmt::format("'{}' was invalidated by PostgreSQL ({}): it can no longer decode, and events "
                             "committed after its confirmed position never reach Kafka from it",
                             slot, InvalidationOf(slot)),
                 "follow docs/operations.md, \"Invalidated slot\": replay the gap from the outbox "
                 "table, then drop the slot and let outboxd create a new one");
  } else if (wal_status == "unreserved") {
    report_.Warn("slot",
                 fmt::format("{}: past max_slot_wal_keep_size, the next checkpoint invalidates it "
                             "unless outboxd catches up now",
                             where),
                 "make sure outboxd runs and Kafka accepts (outboxd_replication_lag_bytes must fall); "
                 "raise max_slot_wal_keep_size to buy time");
  } else if (wal_status == "extended") {
    report_.Warn("slot",
                 fmt::format("{}: retains more than max_wal_size{}", where,
                             safe.empty() ? "" : fmt::format(", {} left before invalidation", safe)),
                 "outboxd is behind or was down: check that it streams (docs/operations.md, \"Lag "
                 "growing\")");
  } else {
    report_.Ok("slot", where);
  }
}

// Whether a failover of the primary would keep the slot: a failover slot
// (PostgreSQL 17+), synchronized_standby_slots on the primary, and, where
// [source] standby_dsn reaches a standby, its slot synchronization settings.
void PostgresDoctor::CheckFailover(Part part) {
  const bool server = part != Part::kSlot;
  const bool slot_part = part != Part::kServer;
  const int version = pg_.server_version();
  // A physical standby streams (or catches up); a walsender that only
  // connected (a tool, a test, check's own) or holds a logical slot is none.
  auto standbys = Query("failover",
                        "SELECT count(*) FROM pg_stat_replication r WHERE r.state IN ('streaming', 'catchup') AND "
                        "NOT EXISTS (SELECT 1 FROM pg_replication_slots s WHERE s.active_pid = r.pid AND "
                        "s.slot_type = 'logical')");
  if (!standbys) return;
  const int physical = std::atoi(Value(*standbys).c_str());
  if (!source_.failover) {
    if (server && physical > 0) {
      report_.Warn("failover",
                   fmt::format("{} physical standby(s) stream from this server, but failover = false: if one "
                               "is promoted, the slot is not there and events need a replay",
                               physical),
                   version >= 170000
                       ? "set [source] failover = true and configure the standby (docs/operations.md, "
                         "\"PostgreSQL 17 and later: failover slots\")"
                       : "PostgreSQL 16 and older have no failover slots: follow docs/operations.md "
                         "(\"PostgreSQL 16 and older\", under \"Database failover\")");
    }
    return;
  }
  if (version < 170000) {
    if (server) {
      report_.Fail("failover",
                   fmt::format("failover = true needs PostgreSQL 17 or later; the server is {}", version / 10000),
                   "set failover = false; see docs/operations.md (\"PostgreSQL 16 and older\", under \"Database "
                   "failover\")");
    }
    return;
  }
  if (slot_part) {
    auto slot = Query("failover", "SELECT failover FROM pg_replication_slots WHERE slot_name = $1", {source_.slot});
    if (!slot) return;
    if (!slot->empty() && Value(*slot) != "t") {
      report_.Ok("failover", fmt::format("slot '{}' is not a failover slot yet; outboxd sets FAILOVER on start",
                                         source_.slot));
    }
  }
  auto sync = Query("failover", "SELECT current_setting('synchronized_standby_slots')");
  if (!sync) return;
  const std::string standby_slots = Value(*sync);
  if (!server) {
    if (!source_.standby_dsn.empty()) CheckStandby(standby_slots);
    return;
  }
  if (standby_slots.empty()) {
    report_.Warn("failover",
                 "synchronized_standby_slots is empty: outboxd may publish a transaction that no standby "
                 "has yet, and after a failover the synchronized slot may lag behind",
                 "set synchronized_standby_slots = '<the physical slot of each failover standby>' on the "
                 "primary (ALTER SYSTEM, then SELECT pg_reload_conf())");
  } else {
    auto slots = Query("failover",
                       "SELECT n, s.slot_type, s.active FROM unnest(string_to_array(replace($1, ' ', ''), ',')) "
                       "n LEFT JOIN pg_replication_slots s ON s.slot_name = n",
                       {standby_slots});
    if (!slots) return;
    std::vector<std::string> bad;
    for (const Row& row : *slots) {
      if (row[1].value_or("") != "physical" || row[2].value_or("f") != "t") bad.push_back(row[0].value_or(""));
    }
    if (bad.empty()) {
      report_.Ok("failover", fmt::format("synchronized_standby_slots = '{}': every slot is an active physical "
                                         "slot",
                                         standby_slots));
    } else {
      report_.Warn("failover",
                   fmt::format("synchronized_standby_slots names {} but no active physical slot of that name: "
                               "outboxd waits for it, so streaming stalls while that standby is away",
                               NameList(bad)),
                   "start the standby, or remove the slot from synchronized_standby_slots");
    }
  }
  if (source_.standby_dsn.empty()) {
    report_.Ok("failover", fmt::format("{} physical standby(s) stream from this server; set [source] standby_dsn "
                                       "to have check verify one",
                                       physical));
    return;
  }
  if (slot_part) CheckStandby(standby_slots);
}

void PostgresDoctor::CheckStandby(const std::string& standby_slots) {
  auto conn = PgConnection::Connect(source_.standby_dsn, false);
  if (!conn.ok()) {
    report_.Fail("standby", std::string(conn.status().message()), "check [source] standby_dsn");
    return;
  }
  auto rows = (*conn)->Query(
      "SELECT pg_is_in_recovery(), current_setting('sync_replication_slots'), "
      "current_setting('hot_standby_feedback'), current_setting('primary_slot_name'), "
      "(SELECT synced FROM pg_replication_slots WHERE slot_name = " +
      replication::QuoteLiteral(source_.slot) + ")");
  if (!rows.ok()) {
    report_.Fail("standby", fmt::format("query failed: {}", rows.status().message()),
                 "[source] standby_dsn must reach a PostgreSQL 17+ standby");
    return;
  }
  const std::string where = (*conn)->Describe();
  if (Value(*rows, 0, 0) != "t") {
    report_.Fail("standby", fmt::format("{} is not a standby (pg_is_in_recovery() is false)", where),
                 "point [source] standby_dsn at a physical standby of this primary");
    return;
  }
  std::vector<std::string> todo;
  if (Value(*rows, 0, 1) != "on") todo.push_back("sync_replication_slots = on");
  if (Value(*rows, 0, 2) != "on") todo.push_back("hot_standby_feedback = on");
  const std::string primary_slot = Value(*rows, 0, 3);
  if (primary_slot.empty()) {
    todo.push_back("primary_slot_name = '<its physical slot on the primary>'");
  } else if (("," + standby_slots + ",").find("," + primary_slot + ",") == std::string::npos) {
    todo.push_back(fmt::format("'{}' in the primary's synchronized_standby_slots", primary_slot));
  }
  if (!todo.empty()) {
    report_.Fail("standby", fmt::format("{}: a promotion would not keep slot '{}'", where, source_.slot),
                 fmt::format("set {} (and dbname in primary_conninfo); docs/operations.md, \"PostgreSQL 17 and later: failover slots\"",
                             fmt::join(todo, ", ")));
  } else if (Value(*rows, 0, 4) != "t") {
    report_.Warn("standby",
                 fmt::format("{}: settings are right, but slot '{}' is not synchronized there yet", where,
                             source_.slot),
                 "wait for the slot sync worker (it needs dbname in primary_conninfo and a slot that has "
                 "streamed once), then check again");
  } else {
    report_.Ok("standby", fmt::format("{}: slot '{}' is synchronized; a promotion keeps it", where, source_.slot));
  }
}

}  // namespace outboxd::commands::check
