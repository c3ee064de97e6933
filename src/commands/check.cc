// `outboxd check`: which checks run, for which database. The checks
// themselves live by area in check_postgres.cc, check_slot.cc,
// check_kafka.cc and check_registry.cc; the report model in check_report.h.
#include "commands/check.h"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/discovery.h"
#include "commands/check_doctor.h"
#include "commands/check_report.h"
#include "common/format.h"
#include "config/streams.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "replication/pg_replication_stream.h"

namespace outboxd::commands {
namespace {

using check::PgConnection;
using check::PostgresDoctor;
using check::Value;

// The connection, version and replication checks on `dsn`; the connection, or
// null when it failed (reported).
std::unique_ptr<PgConnection> CheckServer(const std::string& dsn, CheckReport& report, check::Observed& observed) {
  absl::StatusOr<std::unique_ptr<PgConnection>> conn = PgConnection::Connect(dsn, false);
  if (!conn.ok()) {
    report.Fail("connect", std::string(conn.status().message()),
                "check [source] dsn, that PostgreSQL runs, and that pg_hba.conf admits this user");
    return nullptr;
  }
  PgConnection& pg = **conn;
  report.Ok("connect", fmt::format("{} (server {})", pg.Describe(), pg.server_version()));
  if (absl::Status supported = replication::CheckServerVersion(pg.server_version()); !supported.ok()) {
    report.Fail("version", std::string(supported.message()));
    return nullptr;
  }
  if (pg.server_version() >= replication::kNewestTestedServerVersion + 10000) {
    report.Warn("version",
                fmt::format("PostgreSQL {} is newer than outboxd was tested against ({})", pg.server_version() / 10000,
                            replication::kSupportedVersions),
                "it probably works; run outboxd's integration tests against it, or pin a tested version");
  } else {
    report.Ok("version", fmt::format("PostgreSQL {}: supported ({})", pg.server_version() / 10000,
                                     replication::kSupportedVersions));
  }

  // The replication connection is a separate pg_hba.conf entry (database
  // keyword "replication"), often forgotten.
  auto repl = PgConnection::Connect(dsn, true);
  if (!repl.ok()) {
    const std::string message(repl.status().message());
    report.Fail("replication", message,
                message.find("max_wal_senders") != std::string::npos
                    ? "every WAL sender is taken (see wal_senders below): end an abandoned one (SELECT pid, "
                      "application_name, client_addr FROM pg_stat_replication), or raise max_wal_senders and "
                      "restart PostgreSQL"
                    : "pg_hba.conf needs a line with database 'replication' for this user (e.g. hostssl "
                      "replication outboxd 10.0.0.0/8 scram-sha-256), and the role needs REPLICATION");
  } else if (auto identify = (*repl)->Query("IDENTIFY_SYSTEM"); !identify.ok()) {
    report.Fail("replication", fmt::format("IDENTIFY_SYSTEM failed: {}", identify.status().message()),
                "the role needs REPLICATION (sql/role.sql)");
  } else {
    observed.system_id = Value(*identify, 0, 0);
    report.Ok("replication", fmt::format("replication connection works (system {}, WAL at {})",
                                         Value(*identify, 0, 0), Value(*identify, 0, 2)));
  }
  // Closed before the checks that count walsenders: this one is check's own.
  if (repl.ok()) repl->reset();
  return std::move(*conn);
}

// Without [source] databases: one database, its checks in the order they
// always had.
void CheckSingleDatabase(const config::Config& config, CheckReport& report, check::Observed& observed) {
  report.SetDatabase(config::DsnDatabase(config.source.dsn));
  observed.slots = {config.source.slot};
  std::unique_ptr<PgConnection> pg = CheckServer(config.source.dsn, report, observed);
  if (pg == nullptr) return;
  PostgresDoctor doctor(config, *pg, report, &observed);
  doctor.CheckRolePrivileges();
  doctor.CheckTablePrivileges();
  doctor.CheckWalLevel();
  doctor.CheckWalSenders();
  doctor.CheckHotStandby();
  doctor.CheckWalKeepSize();
  doctor.CheckSlotLimits();
  doctor.CheckSenderTimeout();
  doctor.CheckMessagesPrivilege();
  doctor.CheckPublication();
  doctor.CheckRowFilters();
  doctor.CheckColumns();
  doctor.CheckTopicNames();
  doctor.CheckSlot();
  doctor.CheckSlotFacts();
  doctor.CheckFailover(PostgresDoctor::Part::kAll);
}

std::string PublicationNames(const config::Config& config) {
  std::vector<std::string> quoted;
  for (const std::string& p : config.source.publications) quoted.push_back("'" + p + "'");
  return fmt::format("{}", fmt::join(quoted, ", "));
}

// With [source] databases (or several publications): the server once, on the
// DSN's database; then which databases discovery finds; then one block per
// database with its streams. The streams found, for the Kafka checks.
std::vector<config::StreamSpec> CheckCluster(const config::Config& config, CheckReport& report,
                                             check::Observed& observed) {
  report.Block(fmt::format("cluster (discovery on database \"{}\")", config::DsnDatabase(config.source.dsn)));
  std::unique_ptr<PgConnection> home = CheckServer(config.source.dsn, report, observed);
  if (home == nullptr) return {};
  {
    PostgresDoctor server(config, *home, report, &observed);
    server.CheckRolePrivileges();
    server.CheckWalLevel();
    server.CheckWalSenders();
    server.CheckHotStandby();
    server.CheckWalKeepSize();
    server.CheckSlotLimits();
    server.CheckSenderTimeout();
    server.CheckFailover(PostgresDoctor::Part::kServer);
  }

  absl::StatusOr<cluster::Discovery> found = cluster::DiscoverDatabases(config, {});
  if (!found.ok()) {
    report.Fail("databases", fmt::format("cannot list the databases: {}", found.status().message()),
                "the role needs CONNECT on the databases to stream; see the server's message");
    return {};
  }
  absl::StatusOr<config::StreamPlan> plan = config::PlanStreams(config, found->databases, "");
  if (!plan.ok()) {
    report.Fail("databases", std::string(plan.status().message()), "fix [source] dsn");
    return {};
  }
  std::set<std::string> streamed;
  for (const config::StreamSpec& s : plan->streams) streamed.insert(s.database);
  const std::string publications = PublicationNames(config);
  if (config.source.selection == config::DatabaseSelection::kAll) {
    if (streamed.empty()) {
      report.Warn("databases",
                  fmt::format("no database has the publication(s) {}: nothing is streamed until one has (outboxd "
                              "looks again every {})",
                              publications, absl::FormatDuration(config.source.discovery_interval)),
                  "create the publication in each service's database (sql/outbox.sql)");
    } else {
      report.Ok("databases", fmt::format("{} database(s) with the publication(s) {}: {}", streamed.size(),
                                         publications, fmt::join(streamed, ", ")));
    }
  } else if (config.source.selection == config::DatabaseSelection::kList) {
    report.Ok("databases", fmt::format("{} database(s) listed: {}", config.source.databases.size(),
                                       fmt::join(config.source.databases, ", ")));
  }

  // Every database with something to say: its streams, its refusals, or why it
  // could not be inspected.
  std::map<std::string, std::vector<const config::StreamSpec*>> streams;
  std::map<std::string, std::vector<const config::RefusedStream*>> refused;
  std::map<std::string, absl::Status> unreachable;
  for (const config::StreamSpec& s : plan->streams) streams[s.database].push_back(&s);
  for (const config::RefusedStream& r : plan->refused) refused[r.database].push_back(&r);
  for (const cluster::UnreachableDatabase& u : found->unreachable) unreachable[u.name] = u.status;
  std::set<std::string> databases;
  for (const auto& [name, _] : streams) databases.insert(name);
  for (const auto& [name, _] : refused) databases.insert(name);
  for (const auto& [name, _] : unreachable) databases.insert(name);

  for (const std::string& database : databases) {
    std::vector<std::string> slots;
    for (const config::StreamSpec* s : streams[database]) slots.push_back(s->slot);
    report.SetDatabase(database);
    report.Block(slots.empty() ? fmt::format("database \"{}\"", database)
                               : fmt::format("database \"{}\" (slot {})", database, fmt::join(slots, ", ")));
    if (auto it = unreachable.find(database); it != unreachable.end()) {
      report.Fail("connect", std::string(it->second.message()),
                  "grant the role CONNECT on the database, and check pg_hba.conf for it");
      continue;
    }
    for (const config::RefusedStream* r : refused[database]) {
      report.Fail(r->publication.empty() ? "databases" : "publication", r->reason);
    }
    if (streams[database].empty()) continue;
    const config::Config first = config::StreamConfig(config, *streams[database].front());
    absl::StatusOr<std::unique_ptr<PgConnection>> conn = PgConnection::Connect(first.source.dsn, false);
    if (!conn.ok()) {
      report.Fail("connect", std::string(conn.status().message()),
                  "grant the role CONNECT on the database, and check pg_hba.conf for it");
      continue;
    }
    report.Ok("connect", (*conn)->Describe());
    {
      PostgresDoctor doctor(first, **conn, report);
      doctor.CheckTablePrivileges();
      doctor.CheckMessagesPrivilege();
    }
    for (const config::StreamSpec* s : streams[database]) {
      const config::Config one = config::StreamConfig(config, *s);
      observed.slots.push_back(s->slot);
      PostgresDoctor doctor(one, **conn, report, &observed);
      doctor.CheckPublication();
      doctor.CheckRowFilters();
      doctor.CheckColumns();
      doctor.CheckTopicNames();
      doctor.CheckSlot();
      doctor.CheckSlotFacts();
      doctor.CheckFailover(PostgresDoctor::Part::kSlot);
    }
  }
  report.SetDatabase("");
  report.Block("Kafka");
  return std::move(plan->streams);
}

}  // namespace

int RunCheck(const config::Config& config, std::ostream& out, const CheckOptions& options) {
  CheckReport report(options.json ? nullptr : &out);
  check::Observed observed;
  if (config.MultiStream()) {
    // Kafka and the registry see the topics each stream will use ({database}
    // filled in), every table once per stream.
    config::Config topics = config;
    topics.outbox.clear();
    std::vector<std::string> messages_topics;
    for (const config::StreamSpec& stream : CheckCluster(config, report, observed)) {
      topics.outbox.insert(topics.outbox.end(), stream.tables.begin(), stream.tables.end());
      messages_topics.push_back(stream.messages_topic);
    }
    if (config.messages.enabled && messages_topics.size() == 1) topics.messages.topic = messages_topics.front();
    check::CheckKafka(topics, report, observed);
    check::CheckSchemaRegistry(topics, report, observed);
  } else {
    CheckSingleDatabase(config, report, observed);
    report.SetDatabase("");
    check::CheckKafka(config, report, observed);
    check::CheckSchemaRegistry(config, report, observed);
  }
  if (options.json) {
    report.PrintJson(out);
  } else {
    report.PrintSummary(out);
  }
  return report.failed() ? 1 : 0;
}

}  // namespace outboxd::commands
