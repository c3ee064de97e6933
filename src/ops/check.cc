#include "ops/check.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/format.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "kafka/rdkafka_sink.h"
#include "replication/pg_connection.h"

namespace outboxd::ops {
namespace {

using replication::PgConnection;
using replication::QuoteLiteral;
using replication::Row;

class Report {
 public:
  explicit Report(std::ostream& out) : out_(out) {}
  void Ok(std::string_view check, std::string_view detail) {
    out_ << fmt::format("ok    {:<12} {}\n", check, detail);
  }
  void Warn(std::string_view check, std::string_view detail) {
    out_ << fmt::format("warn  {:<12} {}\n", check, detail);
  }
  void Fail(std::string_view check, std::string_view detail) {
    out_ << fmt::format("FAIL  {:<12} {}\n", check, detail);
    failed_ = true;
  }
  bool failed() const { return failed_; }

 private:
  std::ostream& out_;
  bool failed_ = false;
};

std::string Value(const std::vector<Row>& rows, size_t row = 0, size_t col = 0) {
  if (rows.size() <= row || rows[row].size() <= col || !rows[row][col]) return "";
  return *rows[row][col];
}

void CheckPostgres(const Config& config, Report& report) {
  absl::StatusOr<std::unique_ptr<PgConnection>> conn = PgConnection::Connect(config.source.dsn, false);
  if (!conn.ok()) {
    report.Fail("connect", fmt::format("{}; check [source] dsn, that PostgreSQL runs and that "
                                       "pg_hba.conf admits this user",
                                       conn.status().message()));
    return;
  }
  PgConnection& pg = **conn;
  report.Ok("connect", fmt::format("{} (server {})", pg.Describe(), pg.server_version()));

  auto role = pg.Query("SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user");
  if (!role.ok()) {
    report.Fail("privileges", std::string(role.status().message()));
  } else if (Value(*role, 0, 0) == "t" || Value(*role, 0, 1) == "t") {
    report.Ok("privileges", Value(*role, 0, 1) == "t"
                                ? "superuser (works; a role with only REPLICATION and SELECT on the outbox tables is safer)"
                                : "REPLICATION");
  } else {
    report.Fail("privileges", "the role lacks REPLICATION: run ALTER ROLE <user> REPLICATION as a "
                              "superuser");
  }

  auto wal_level = pg.Query("SHOW wal_level");
  if (!wal_level.ok()) {
    report.Fail("wal_level", std::string(wal_level.status().message()));
  } else if (Value(*wal_level) == "logical") {
    report.Ok("wal_level", "logical");
  } else {
    report.Fail("wal_level", fmt::format("is '{}'; set wal_level = logical in postgresql.conf and "
                                         "restart PostgreSQL",
                                         Value(*wal_level)));
  }

  const std::string pub = QuoteLiteral(config.source.publication);
  auto publication = pg.Query(fmt::format("SELECT pubinsert FROM pg_publication WHERE pubname = {}", pub));
  if (!publication.ok()) {
    report.Fail("publication", std::string(publication.status().message()));
  } else if (publication->empty()) {
    report.Fail("publication", fmt::format("'{}' does not exist: run sql/outbox.sql or CREATE "
                                           "PUBLICATION {} FOR TABLE ... WITH (publish = 'insert')",
                                           config.source.publication, config.source.publication));
  } else {
    std::vector<std::string> missing;
    for (const outbox::TableConfig& table : config.outbox) {
      auto in_pub = pg.Query(fmt::format(
          "SELECT 1 FROM pg_publication_tables WHERE pubname = {} AND schemaname = {} AND "
          "tablename = {}",
          pub, QuoteLiteral(table.schema), QuoteLiteral(table.table)));
      if (!in_pub.ok() || in_pub->empty()) missing.push_back(table.schema + "." + table.table);
    }
    if (Value(*publication) != "t") {
      report.Fail("publication", fmt::format("'{}' does not publish inserts: ALTER PUBLICATION {} "
                                             "SET (publish = 'insert')",
                                             config.source.publication, config.source.publication));
    } else if (!missing.empty()) {
      report.Fail("publication", fmt::format("'{}' lacks {}: ALTER PUBLICATION {} ADD TABLE {}",
                                             config.source.publication, fmt::join(missing, ", "),
                                             config.source.publication, fmt::join(missing, ", ")));
    } else {
      report.Ok("publication", fmt::format("'{}' covers {} outbox table(s)", config.source.publication,
                                           config.outbox.size()));
    }
  }

  auto slot = pg.Query(fmt::format(
      "SELECT plugin, slot_type, wal_status, active_pid::text, confirmed_flush_lsn::text, "
      "pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) "
      "FROM pg_replication_slots WHERE slot_name = {}",
      QuoteLiteral(config.source.slot)));
  if (!slot.ok()) {
    report.Fail("slot", std::string(slot.status().message()));
  } else if (slot->empty()) {
    if (config.source.create_slot) {
      report.Ok("slot", fmt::format("'{}' is missing and will be created on start (create_slot = "
                                    "true)",
                                    config.source.slot));
    } else {
      report.Fail("slot", fmt::format("'{}' is missing and create_slot = false: create it with "
                                      "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
                                      config.source.slot, config.source.slot));
    }
  } else if (Value(*slot, 0, 0) != "pgoutput" || Value(*slot, 0, 1) != "logical") {
    report.Fail("slot", fmt::format("'{}' is a {} slot with plugin '{}'; outboxd needs a logical "
                                    "pgoutput slot: choose another [source] slot name",
                                    config.source.slot, Value(*slot, 0, 1), Value(*slot, 0, 0)));
  } else if (Value(*slot, 0, 2) == "lost") {
    report.Fail("slot", fmt::format("'{}' was invalidated by PostgreSQL (wal_status lost): events "
                                    "in the lost WAL are gone; see docs/operations.md",
                                    config.source.slot));
  } else {
    const std::string active = Value(*slot, 0, 3);
    report.Ok("slot", fmt::format("'{}' wal_status {}, confirmed {}, retains {}{}", config.source.slot,
                                  Value(*slot, 0, 2), Value(*slot, 0, 4), Value(*slot, 0, 5),
                                  active.empty() ? "" : ", in use by PID " + active));
  }
}

void CheckKafka(const Config& config, Report& report) {
  auto sink = kafka::RdKafkaSink::Create(config.kafka.properties);
  if (!sink.ok()) {
    report.Fail("kafka", std::string(sink.status().message()));
    return;
  }
  absl::Status reachable = (*sink)->CheckReachable(absl::Seconds(5));
  if (!reachable.ok()) {
    // The sink's message names the brokers and what to check.
    report.Fail("kafka", std::string(reachable.message()));
    return;
  }
  for (const auto& [key, value] : config.kafka.properties) {
    if (key == "bootstrap.servers") report.Ok("kafka", fmt::format("{} answers", value));
  }
}

}  // namespace

int RunCheck(const Config& config, std::ostream& out) {
  Report report(out);
  CheckPostgres(config, report);
  CheckKafka(config, report);
  return report.failed() ? 1 : 0;
}

}  // namespace outboxd::ops
