// The SQL toolkit (sql/*.sql) against the real PostgreSQL 15 of the local
// stack, run with psql as an operator would: each file twice (idempotence), then
// what it promises, end to end through outboxd and Kafka where it matters.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPsql[] = "/usr/lib/postgresql/15/bin/psql";

using Result = CommandResult;

// psql -f sql/<file> as the superuser, with -v variables; `env` is prepended
// (NAME=value ...) to the command's environment.
Result Psql(const std::string& file, const std::string& vars = "", const std::string& env = "") {
  return RunShell(fmt::format("{} {} \"{}\" -X -v ON_ERROR_STOP=1 {} -f {}/sql/{}", env, kPsql, PgDsn(), vars,
                         OUTBOXD_SOURCE_DIR, file));
}

std::string DsnAs(const std::string& role) {
  return fmt::format("host=127.0.0.1 port={} dbname=app user={}", PgPort(), role);
}

std::set<std::string> Keys(const std::vector<Record>& records) {
  std::set<std::string> keys;
  for (const Record& r : records) keys.insert(r.key);
  return keys;
}

// Inserts `rows` events into `table` (schema-qualified) with the given
// created_at expression; returns their ids.
std::set<std::string> Insert(Sql& sql, const std::string& table, int rows,
                             const std::string& created_at = "now()") {
  std::set<std::string> ids;
  for (const auto& row : sql.Query(fmt::format(
           "INSERT INTO {} (aggregate_type, aggregate_id, event_type, payload, created_at) "
           "SELECT 'Order', g::text, 'OrderCreated', jsonb_build_object('seq', g), {} "
           "FROM generate_series(1, {}) AS g RETURNING id",
           table, created_at, rows))) {
    ids.insert(*row[0]);
  }
  return ids;
}

class SqlToolkitTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Stack("status")) << "run deploy/local/stack.sh up"; }
  Sql sql_;
};

TEST_F(SqlToolkitTest, OutboxSqlIsIdempotentAndKeepsItsInterface) {
  for (int i = 0; i < 2; ++i) {
    Result r = Psql("outbox.sql");
    ASSERT_EQ(r.code, 0) << "run " << i + 1 << ":\n" << r.output;
  }
  EXPECT_EQ(sql_.Scalar("SELECT pubinsert AND NOT (pubupdate OR pubdelete OR pubtruncate) FROM "
                        "pg_publication WHERE pubname = 'outboxd'"),
            "t");
  EXPECT_EQ(sql_.Scalar("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'outboxd' AND "
                        "schemaname = 'public' AND tablename = 'outbox'"),
            "1");
  EXPECT_EQ(sql_.Scalar("SELECT to_regprocedure('public.outbox_emit(text,text,text,jsonb,jsonb,text)') "
                        "IS NOT NULL"),
            "t");
}

// role.sql gives a role that streams end to end and reads nothing but the
// outbox; its password comes from the environment and is never echoed.
TEST_F(SqlToolkitTest, RoleSqlMakesALeastPrivilegeRoleThatStreams) {
  TestSource source = CreateDefaultSource(sql_, "role");
  const std::string role = UniqueName("relay");
  const std::string business = UniqueName("orders");
  sql_.Exec(fmt::format("CREATE TABLE public.{} (id int PRIMARY KEY, secret text)", business));
  absl::Cleanup cleanup = [&] {
    DropSource(sql_, source);
    sql_.Exec(fmt::format("DROP TABLE public.{}", business));
    sql_.Exec(fmt::format("DROP OWNED BY {0}; DROP ROLE IF EXISTS {0}", role));
  };
  const std::string password = "Pw-" + UniqueName("x") + "'\"$";
  const std::string vars = fmt::format("-v outboxd_role={} -v outboxd_tables=public.{}", role, source.table);
  for (int i = 0; i < 2; ++i) {
    // -e echoes every statement: the password statement must still not show.
    // Through the environment, as an operator would: not on psql's command line.
    setenv("OUTBOXD_ROLE_PASSWORD", password.c_str(), 1);
    Result r = Psql("role.sql", vars + " -e");
    unsetenv("OUTBOXD_ROLE_PASSWORD");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_THAT(r.output, Not(HasSubstr(password)));
    EXPECT_THAT(r.output, HasSubstr("password set from OUTBOXD_ROLE_PASSWORD"));
  }
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE "
                                    "rolname = '{}'",
                                    role)),
            "t");
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT rolcanlogin AND rolreplication AND NOT rolsuper AND NOT "
                                    "rolcreatedb AND NOT rolcreaterole AND NOT rolbypassrls FROM pg_roles "
                                    "WHERE rolname = '{}'",
                                    role)),
            "t");

  {
    auto conn = replication::PgConnection::Connect(DsnAs(role), false);
    ASSERT_TRUE(conn.ok()) << conn.status();
    EXPECT_TRUE((*conn)->Query(fmt::format("SELECT count(*) FROM public.{}", source.table)).ok());
    auto business_read = (*conn)->Query(fmt::format("SELECT * FROM public.{}", business));
    EXPECT_EQ(business_read.status().code(), absl::StatusCode::kPermissionDenied) << business_read.status();
    auto create = (*conn)->Query(fmt::format("CREATE TABLE public.{} (x int)", UniqueName("nope")));
    EXPECT_EQ(create.status().code(), absl::StatusCode::kPermissionDenied) << create.status();
    auto write = (*conn)->Query(fmt::format(
        "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) VALUES ('a','b','c','{{}}')",
        source.table));
    EXPECT_EQ(write.status().code(), absl::StatusCode::kPermissionDenied) << write.status();
  }

  std::string config = ConfigFor(source);
  config.replace(config.find(PgDsn()), PgDsn().size(), DsnAs(role));
  {
    OutboxdProcess outboxd(config);
    outboxd.Start();
    ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(30))) << outboxd.Log();
    const std::set<std::string> ids = Insert(sql_, "public." + source.table, 20);
    std::vector<Record> records =
        ReadUntilAllKeys({source.topic_prefix + ".Order"}, ids, absl::Seconds(60));
    EXPECT_EQ(Keys(records), ids);
    EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
  }

  // The doctor agrees: no superuser warning, no failure.
  const std::string path = fmt::format("/tmp/{}.toml", UniqueName("role"));
  FILE* f = fopen(path.c_str(), "w");
  fputs(config.c_str(), f);
  fclose(f);
  Result check = RunShell(fmt::format("{} check --config {}", OUTBOXD_BINARY, path));
  EXPECT_EQ(check.code, 0) << check.output;
  EXPECT_THAT(check.output, HasSubstr(fmt::format("ok    privileges   role {} has REPLICATION and is not a "
                                                  "superuser",
                                                  role)));
  EXPECT_THAT(check.output, HasSubstr("ok    replication"));
  std::remove(path.c_str());
}

// purge.sql: a day-partitioned outbox published under the root's name, whose
// old partitions can be dropped without losing an event, even one that outboxd
// had not published yet.
TEST_F(SqlToolkitTest, PartitionedOutboxPublishesUnderTheRootAndSurvivesDroppingPartitions) {
  const std::string root = UniqueName("outbox_days");
  const std::string publication = UniqueName("days_pub");
  const std::string vars = fmt::format("-v partitioned_outbox=public.{} -v publication={}", root, publication);
  TestSource source{.table = root, .publication = publication, .slot = UniqueName("days_slot"),
                    .topic_prefix = UniqueName("it.days")};
  absl::Cleanup cleanup = [&] { DropSource(sql_, source); };
  Result first = Psql("purge.sql", vars);
  ASSERT_EQ(first.code, 0) << first.output;
  EXPECT_THAT(first.output, HasSubstr("created"));
  Result second = Psql("purge.sql", vars);
  ASSERT_EQ(second.code, 0) << second.output;
  EXPECT_THAT(second.output, HasSubstr("(0 rows)")) << "nothing left to create on the second run";
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.{}'::regclass",
                                    root)),
            "8");  // today and 7 days ahead
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT pubviaroot AND pubinsert AND NOT pubupdate FROM pg_publication "
                                    "WHERE pubname = '{}'",
                                    publication)),
            "t");

  // An old day, as if the table had been in use for a while.
  const std::string old_day = sql_.Scalar("SELECT to_char((now() AT TIME ZONE 'UTC')::date - 10, 'YYYYMMDD')");
  sql_.Exec(fmt::format(
      "CREATE TABLE public.{0}_p{1} PARTITION OF public.{0} FOR VALUES FROM "
      "((to_date('{1}', 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC')) TO "
      "(((to_date('{1}', 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'))",
      root, old_day));
  const std::string old_ts = fmt::format("(to_date('{}', 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC') + "
                                         "interval '12 hours'",
                                         old_day);

  std::string config = ConfigFor(source);
  // {table} renders the relation name pgoutput sent: the root's, not a partition's.
  config.replace(config.find(".{aggregate_type}"), strlen(".{aggregate_type}"), ".{table}");
  const std::string topic = source.topic_prefix + "." + root;

  OutboxdProcess outboxd(config);
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(30))) << outboxd.Log();
  std::set<std::string> ids = Insert(sql_, "public." + root, 5);
  for (const std::string& id : Insert(sql_, "public." + root, 5, old_ts)) ids.insert(id);
  std::vector<Record> records = ReadUntilAllKeys({topic}, ids, absl::Seconds(60));
  ASSERT_EQ(Keys(records), ids) << outboxd.Log();
  for (const Record& r : records) {
    ::outbox::v1::Envelope e;
    ASSERT_TRUE(e.ParseFromString(r.value));
    EXPECT_EQ(e.source().table(), root);
  }
  ASSERT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();

  // Written while outboxd is down, then its partition dropped before outboxd
  // ever read it: the WAL still has the inserts.
  std::set<std::string> unpublished = Insert(sql_, "public." + root, 5, old_ts);
  const std::string dropped = sql_.Scalar(fmt::format(
      "SELECT string_agg(partition, ',') FROM public.outbox_maintain_partitions('public.{}', '7 days') "
      "WHERE action = 'dropped'",
      root));
  EXPECT_EQ(dropped, fmt::format("{}_p{}", root, old_day));
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT to_regclass('public.{}_p{}') IS NULL", root, old_day)), "t");
  std::set<std::string> after = Insert(sql_, "public." + root, 5);

  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(30))) << outboxd.Log();
  for (const std::string& id : unpublished) ids.insert(id);
  for (const std::string& id : after) ids.insert(id);
  records = ReadUntilAllKeys({topic}, ids, absl::Seconds(60));
  EXPECT_EQ(Keys(records), ids) << outboxd.Log();
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();
}

// purge.sql's other two patterns: delete-on-insert (still published) and the
// batched purge of old rows.
TEST_F(SqlToolkitTest, DeleteOnInsertPublishesAndPurgeDeletesOnlyOldRows) {
  ASSERT_EQ(Psql("purge.sql").code, 0);
  TestSource source = CreateDefaultSource(sql_, "purge");
  absl::Cleanup cleanup = [&] { DropSource(sql_, source); };
  const std::string table = "public." + source.table;
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT outbox_set_delete_on_insert('{}', true)", table)), "t");
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT outbox_set_delete_on_insert('{}', true)", table)), "t");

  OutboxdProcess outboxd(ConfigFor(source));
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(30))) << outboxd.Log();
  const std::set<std::string> ids = Insert(sql_, table, 10);
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT count(*) FROM {}", table)), "0") << "deleted on insert";
  std::vector<Record> records = ReadUntilAllKeys({source.topic_prefix + ".Order"}, ids, absl::Seconds(60));
  EXPECT_EQ(Keys(records), ids);
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0) << outboxd.Log();

  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT outbox_set_delete_on_insert('{}', false)", table)), "f");
  Insert(sql_, table, 25, "now() - interval '5 days'");
  Insert(sql_, table, 3);
  Result purge = RunShell(fmt::format("{} \"{}\" -X -v ON_ERROR_STOP=1 -c \"CALL outbox_purge('{}', interval "
                                 "'1 day', 10)\"",
                                 kPsql, PgDsn(), table));
  ASSERT_EQ(purge.code, 0) << purge.output;
  EXPECT_THAT(purge.output, HasSubstr("deleted 25 row(s)"));
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT count(*) FROM {}", table)), "3");
}

// monitoring.sql: outboxd_slot_status shows lag, retained WAL, wal_status and
// the active walsender.
TEST_F(SqlToolkitTest, MonitoringViewShowsLagRetainedWalAndTheActiveSender) {
  for (int i = 0; i < 2; ++i) {
    Result r = Psql("monitoring.sql");
    ASSERT_EQ(r.code, 0) << r.output;
  }
  TestSource source = CreateDefaultSource(sql_, "mon");
  absl::Cleanup cleanup = [&] { DropSource(sql_, source); };
  sql_.Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", source.slot));
  Insert(sql_, "public." + source.table, 50);
  auto status = [&](const std::string& column) {
    return sql_.Scalar(fmt::format("SELECT {} FROM outboxd_slot_status WHERE slot_name = '{}'", column,
                                   source.slot));
  };
  EXPECT_EQ(status("wal_status"), "reserved");
  EXPECT_EQ(status("active"), "f");
  EXPECT_EQ(status("active_pid"), "");
  EXPECT_GT(std::stoll(status("lag_bytes")), 0) << "50 rows were written after the slot's position";
  EXPECT_GE(std::stoll(status("retained_wal_bytes")), std::stoll(status("lag_bytes")));
  EXPECT_EQ(status("confirmed_flush_lsn"), sql_.ConfirmedFlush(source.slot).ToString());

  OutboxdProcess outboxd(ConfigFor(source));
  outboxd.Start();
  ASSERT_TRUE(outboxd.WaitForLog("streaming slot", absl::Seconds(30))) << outboxd.Log();
  ASSERT_TRUE(WaitFor([&] { return !status("active_pid").empty(); }, absl::Seconds(10)));
  EXPECT_EQ(status("active_pid"),
            sql_.Scalar(fmt::format("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'",
                                    source.slot)));
  EXPECT_EQ(status("application_name"), "outboxd");
  // Once the 50 events are acknowledged, the confirmed position passes them.
  const std::vector<Record> records =
      ReadTopics({source.topic_prefix + ".Order"}, 50, absl::Seconds(60));
  ASSERT_EQ(records.size(), 50u) << outboxd.Log();
  ASSERT_TRUE(WaitForConfirmedPast(sql_, source.slot, LastCommitLsn(records), absl::Seconds(60)))
      << outboxd.Log();
  EXPECT_EQ(outboxd.Stop(SIGTERM), 0);

  EXPECT_EQ(sql_.Scalar("SELECT note FROM outboxd_settings WHERE name = 'wal_level'"), "must be logical");
  EXPECT_THAT(sql_.Scalar("SELECT note FROM outboxd_settings WHERE name = 'max_slot_wal_keep_size'"),
              HasSubstr("unbounded"));
}

// docs/examples/alembic_add_outbox.py mirrors sql/outbox.sql: applied (twice)
// to a fresh database it gives the same table, publication and function, and
// its downgrade removes them.
TEST_F(SqlToolkitTest, AlembicExampleMirrorsOutboxSql) {
  const std::string db = UniqueName("it_alembic");
  sql_.Exec(fmt::format("CREATE DATABASE {}", db));
  absl::Cleanup cleanup = [&] { sql_.Exec(fmt::format("DROP DATABASE IF EXISTS {}", db)); };
  const std::string dsn = fmt::format("host=127.0.0.1 port={} dbname={} user=postgres", PgPort(), db);
  auto migrate = [&](const std::string& direction) {
    return RunShell(fmt::format("/usr/bin/python3 {0}/tests/integration/alembic_sql.py "
                           "{0}/docs/examples/alembic_add_outbox.py {1} | {2} \"{3}\" -X -q -v ON_ERROR_STOP=1",
                           OUTBOXD_SOURCE_DIR, direction, kPsql, dsn));
  };
  for (int i = 0; i < 2; ++i) {
    Result r = migrate("upgrade");
    ASSERT_EQ(r.code, 0) << r.output;
  }
  ASSERT_EQ(Psql("outbox.sql").code, 0);
  const std::string describe =
      "SELECT string_agg(format('%s %s %s %s', column_name, data_type, is_nullable, column_default), "
      "'; ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'public' AND "
      "table_name = 'outbox'";
  const std::string publication =
      "SELECT pubinsert::text || pubupdate::text || pubdelete::text || pubtruncate::text || "
      "(SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables t WHERE "
      "t.pubname = p.pubname) FROM pg_publication p WHERE pubname = 'outboxd'";
  auto in_db = [&](const std::string& query, int code = 0) {
    Result r = RunShell(fmt::format("{} \"{}\" -X -At -c \"{}\"", kPsql, dsn, query));
    EXPECT_EQ(r.code, code) << r.output;
    return r.output;
  };
  EXPECT_EQ(in_db(describe), sql_.Scalar(describe) + "\n");
  EXPECT_EQ(in_db(publication), "truefalsefalsefalsepublic.outbox\n");
  // outbox_emit() behaves the same: returns the id, refuses NULLs.
  EXPECT_THAT(in_db("SELECT outbox_emit('a', 'b', 'c', '{}')"), ::testing::MatchesRegex("[0-9a-f-]{36}\n"));
  EXPECT_THAT(in_db("SELECT outbox_emit(NULL, 'b', 'c', '{}')", 1), HasSubstr("must not be NULL"));

  Result down = migrate("downgrade");
  ASSERT_EQ(down.code, 0) << down.output;
  EXPECT_EQ(in_db("SELECT to_regclass('public.outbox') IS NULL AND NOT EXISTS (SELECT 1 FROM pg_publication "
                  "WHERE pubname = 'outboxd')"),
            "t\n");
}

}  // namespace
}  // namespace outboxd::it
