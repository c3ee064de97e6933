// `outboxd check` as a doctor, against the real local PostgreSQL and Kafka: each
// finding appears with its level (ok / WARN / FAIL) and what to do, and the exit
// code is 1 exactly when something FAILs.
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using Result = CommandResult;

Result Check(const std::string& toml) {
  const std::string path = fmt::format("/tmp/{}.toml", UniqueName("doctor"));
  std::ofstream(path) << toml;
  Result result = RunOutboxd(fmt::format("check --config {}", path));
  std::remove(path.c_str());
  return result;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

class DoctorTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Stack("status")) << "run deploy/local/stack.sh up"; }
  void TearDown() override {
    DropSource(sql_, source_);
    for (const std::string& role : roles_) sql_.Exec(fmt::format("DROP OWNED BY {0}; DROP ROLE {0}", role));
  }
  // A role with the given attributes, SELECT on the test table if `select`.
  std::string Role(const std::string& attributes, bool select) {
    const std::string role = UniqueName("doc_role");
    roles_.push_back(role);
    sql_.Exec(fmt::format("CREATE ROLE {} LOGIN {}", role, attributes));
    if (select) sql_.Exec(fmt::format("GRANT SELECT ON public.{} TO {}", source_.table, role));
    return role;
  }
  std::string ConfigAs(const std::string& role) {
    return Replace(ConfigFor(source_), PgDsn(),
                   fmt::format("host=127.0.0.1 port={} dbname=app user={}", PgPort(), role));
  }

  Sql sql_;
  TestSource source_ = CreateDefaultSource(sql_, "doctor");
  std::vector<std::string> roles_;
};

// Whatever version the stack runs: check names it as supported, and failover = true is a
// failure before PostgreSQL 17; from 17 on, the primary's synchronized_standby_slots is checked.
TEST_F(DoctorTest, VersionIsNamedAndFailoverNeedsSeventeen) {
  const int version = std::stoi(sql_.Scalar("SHOW server_version_num"));
  Result plain = Check(ConfigFor(source_));
  EXPECT_THAT(plain.output, HasSubstr(fmt::format("ok    version      PostgreSQL {}: supported (14, 15, 16, 17 and 18)",
                                                  version / 10000)));
  Result r = Check(Replace(ConfigFor(source_), "create_slot = true", "create_slot = true\nfailover = true"));
  if (version < 170000) {
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_THAT(r.output, HasSubstr(fmt::format("FAIL  failover     failover = true needs PostgreSQL 17 or later; the "
                                                "server is {}",
                                                version / 10000)));
  } else {
    EXPECT_THAT(r.output, HasSubstr("WARN  failover     synchronized_standby_slots is empty")) << r.output;
  }
}

TEST_F(DoctorTest, SuperuserAndUnboundedWalAreWarningsNotFailures) {
  Result r = Check(ConfigFor(source_));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("WARN  privileges   role postgres is a superuser"));
  EXPECT_THAT(r.output, HasSubstr("sql/role.sql"));
  EXPECT_THAT(r.output, HasSubstr("WARN  wal_keep     max_slot_wal_keep_size = -1 (unbounded)"));
  EXPECT_THAT(r.output, HasSubstr("ok    replication"));
  EXPECT_THAT(r.output, HasSubstr("ok    wal_level"));
  EXPECT_THAT(r.output, HasSubstr("ok    publication"));
  EXPECT_THAT(r.output, HasSubstr("ok    topic"));
  EXPECT_THAT(r.output, HasSubstr("auto-create on")) << "the local broker auto-creates topics";
  EXPECT_THAT(r.output, HasSubstr("0 failure(s)"));
  // Every WARN says what to do on the next line.
  EXPECT_THAT(r.output, HasSubstr("\n                   -> "));
  // No standby streams from the local server: check's own replication
  // connection is not one (finding 3 of issue 24).
  EXPECT_THAT(r.output, Not(HasSubstr("WARN  failover")));
  EXPECT_THAT(r.output, HasSubstr(fmt::format("ok    columns      public.{}: every column outboxd reads is there and "
                                              "sent: id (uuid), aggregate_type (text)",
                                              source_.table)));
}

// Finding 4 of issue 24: with create_slot = false, a typo in the slot name got
// a hint to create the typo. The database's logical slots are listed and the
// closest is suggested; with create_slot = true, creating a near-namesake warns.
TEST_F(DoctorTest, AMissingSlotListsTheDatabasesSlotsAndSuggestsTheClosest) {
  sql_.Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", source_.slot));
  const std::string typo = source_.slot + "t";
  std::string config = Replace(ConfigFor(source_), fmt::format("slot = \"{}\"", source_.slot),
                               fmt::format("slot = \"{}\"", typo));
  Result created = Check(config);
  EXPECT_EQ(created.code, 0) << created.output;
  EXPECT_THAT(created.output, HasSubstr(fmt::format("WARN  slot         '{}' is missing and will be created on start "
                                                    "(create_slot = true), but '{}' exists",
                                                    typo, source_.slot)));
  config = Replace(config, "create_slot = true", "create_slot = false");
  Result r = Check(config);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr(fmt::format("FAIL  slot         '{}' is missing and create_slot = false; this "
                                              "database's logical slots: ",
                                              typo)));
  EXPECT_THAT(r.output, HasSubstr(fmt::format("{} (pgoutput, inactive)", source_.slot)));
  EXPECT_THAT(r.output, HasSubstr(fmt::format("-> did you mean '{}'? set [source] slot = \"{}\"", source_.slot,
                                              source_.slot)));
  EXPECT_THAT(r.output, Not(HasSubstr(fmt::format("pg_create_logical_replication_slot('{}'", typo))));
}

// Finding 10 of issue 24: for a table that does not exist, check said the role
// may SELECT it, then that it does not exist.
TEST_F(DoctorTest, AMissingTableIsNotReportedAsReadable) {
  const std::string config = Replace(ConfigFor(source_), fmt::format("table = \"public.{}\"", source_.table),
                                     "table = \"public.no_such_outbox\"");
  Result r = Check(config);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("may SELECT the 1 outbox table(s)")));
  EXPECT_THAT(r.output, HasSubstr("FAIL  publication  outbox table(s) public.no_such_outbox do not exist"));
}

TEST_F(DoctorTest, MissingReplicationIsAFailure) {
  Result r = Check(ConfigAs(Role("NOREPLICATION", true)));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("FAIL  privileges"));
  EXPECT_THAT(r.output, HasSubstr("lacks REPLICATION"));
  EXPECT_THAT(r.output, HasSubstr("REPLICATION"));
  EXPECT_THAT(r.output, HasSubstr("FAIL  replication")) << "the walsender refuses the role";
}

TEST_F(DoctorTest, MissingSelectIsAFailure) {
  const std::string role = Role("REPLICATION", false);
  Result r = Check(ConfigAs(role));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr(fmt::format("ok    privileges   role {} has REPLICATION", role)));
  EXPECT_THAT(r.output, HasSubstr(fmt::format("FAIL  privileges   role {} may not SELECT public.{}", role,
                                              source_.table)));
  EXPECT_THAT(r.output, HasSubstr(fmt::format("GRANT SELECT ON public.{} TO {}", source_.table, role)));
}

TEST_F(DoctorTest, TableNotInPublicationFails) {
  sql_.Exec(fmt::format("ALTER PUBLICATION {} DROP TABLE public.{}", source_.publication, source_.table));
  Result r = Check(ConfigFor(source_));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr(fmt::format("FAIL  publication  '{}' lacks public.{}", source_.publication,
                                              source_.table)));
  EXPECT_THAT(r.output, HasSubstr(fmt::format("ALTER PUBLICATION {} ADD TABLE public.{}", source_.publication,
                                              source_.table)));
}

TEST_F(DoctorTest, UnmappedTablesAndPublishedDeletesAreWarnings) {
  const std::string other = UniqueName("other");
  sql_.Exec(fmt::format("CREATE TABLE public.{} (id int PRIMARY KEY)", other));
  sql_.Exec(fmt::format("ALTER PUBLICATION {} ADD TABLE public.{}", source_.publication, other));
  sql_.Exec(fmt::format("ALTER PUBLICATION {} SET (publish = 'insert, delete')", source_.publication));
  Result r = Check(ConfigFor(source_));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(fmt::format("WARN  publication  '{}' also publishes public.{}, which no "
                                              "[[outbox]] maps",
                                              source_.publication, other)));
  EXPECT_THAT(r.output, HasSubstr("publishes updates, deletes or truncates too"));
  EXPECT_THAT(r.output, HasSubstr(fmt::format("SET (publish = 'insert')")));
  sql_.Exec(fmt::format("DROP PUBLICATION {}; DROP TABLE public.{}", source_.publication, other));
}

TEST_F(DoctorTest, PartitionedTableNeedsPublishViaRoot) {
  const std::string root = UniqueName("doc_parts");
  sql_.Exec(fmt::format(
      "CREATE TABLE public.{0} (id uuid NOT NULL, aggregate_type text NOT NULL, aggregate_id text NOT NULL, "
      "event_type text NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now()) "
      "PARTITION BY RANGE (created_at); CREATE TABLE public.{0}_all PARTITION OF public.{0} DEFAULT; "
      "ALTER PUBLICATION {1} ADD TABLE public.{0}",
      root, source_.publication));
  const std::string config = Replace(ConfigFor(source_), fmt::format("table = \"public.{}\"", source_.table),
                                     fmt::format("table = \"public.{}\"", root));
  Result r = Check(config);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr(fmt::format("FAIL  publication  public.{} is partitioned but", root)));
  EXPECT_THAT(r.output, HasSubstr("publish_via_partition_root = true"));

  sql_.Exec(fmt::format("ALTER PUBLICATION {} SET (publish_via_partition_root = true)", source_.publication));
  r = Check(config);
  EXPECT_THAT(r.output, HasSubstr("(partitioned ones via their root)")) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr("FAIL  publication")));
  sql_.Exec(fmt::format("DROP PUBLICATION {}; DROP TABLE public.{}", source_.publication, root));
}

TEST_F(DoctorTest, FixedTopicsAreLookedUpWithoutCreatingThem) {
  const std::string missing = UniqueName("it.doctor.fixed");
  const std::string config =
      Replace(ConfigFor(source_), fmt::format("topic = \"{}.{{aggregate_type}}\"", source_.topic_prefix),
              fmt::format("topic = \"{}\"", missing));
  for (int i = 0; i < 2; ++i) {  // the first look-up must not have created it
    Result r = Check(config);
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr(fmt::format("WARN  topic        '{}' (public.{}) does not exist yet",
                                                missing, source_.table)));
    EXPECT_THAT(r.output, HasSubstr("kafka-topics.sh"));
  }
  // The stack's readiness probe topic exists.
  Result r = Check(Replace(config, missing, "_outboxd_stack_ready"));
  EXPECT_THAT(r.output, HasSubstr("ok    topic        '_outboxd_stack_ready' (public."));
  EXPECT_THAT(r.output, HasSubstr("exists with 1 partition(s)"));
}

// Exactly-once: check names the mode and the transactional id, and looks the
// checkpoint topic up without creating it (nor starting a transactional
// producer, which would fence a running instance).
TEST_F(DoctorTest, ExactlyOnceModeAndItsCheckpointTopicAreReported) {
  const std::string checkpoints = UniqueName("it.doctor.checkpoints");
  const std::string config = Replace(ConfigFor(source_), "[sink.kafka]",
                                     fmt::format("[sink]\ndelivery = \"exactly_once\"\ncheckpoint_topic = \"{}\"\n\n"
                                                 "[sink.kafka]",
                                                 checkpoints));
  for (int i = 0; i < 2; ++i) {  // the first look-up must not have created it
    Result r = Check(config);
    EXPECT_EQ(r.code, 0) << r.output;
    // The id in use, with the system identifier the replication line printed
    // (finding 7 of issue 24: it printed a placeholder).
    const std::string system = sql_.Scalar("SELECT system_identifier FROM pg_control_system()");
    EXPECT_THAT(r.output, HasSubstr(fmt::format("replication connection works (system {},", system)));
    EXPECT_THAT(r.output, HasSubstr(fmt::format("exactly_once: Kafka transactions with transactional.id "
                                                "'outboxd-{}-{}'",
                                                system, source_.slot)));
    EXPECT_THAT(r.output, Not(HasSubstr("<system identifier>")));
    EXPECT_THAT(r.output, HasSubstr(fmt::format("checkpoint topic '{}' does not exist yet", checkpoints)));
  }
  Result r = Check(ConfigFor(source_));
  EXPECT_THAT(r.output, HasSubstr("at_least_once: after a fault an event may be published twice"));
}

TEST_F(DoctorTest, SlotStatusAndRetainedWalAreShown) {
  sql_.Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", source_.slot));
  sql_.Exec(fmt::format(
      "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) "
      "SELECT 'a', g::text, 'e', '{{}}' FROM generate_series(1, 100) g",
      source_.table));
  Result r = Check(ConfigFor(source_));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(fmt::format("ok    slot         '{}' wal_status reserved, confirmed ",
                                              source_.slot)));
  EXPECT_THAT(r.output, HasSubstr("of WAL, not in use"));
}

// An invalidated slot is a failure that points to the runbook. PostgreSQL
// invalidates a slot that retains more than max_slot_wal_keep_size at a
// checkpoint; with 1MB, two WAL switches and a checkpoint do it.
TEST_F(DoctorTest, InvalidatedSlotFailsAndABoundedKeepSizeIsOk) {
  sql_.Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", source_.slot));
  sql_.Exec("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
  sql_.Exec("SELECT pg_reload_conf()");
  ASSERT_TRUE(WaitFor([&] { return sql_.Scalar("SHOW max_slot_wal_keep_size") == "1MB"; }, absl::Seconds(10)));
  const bool lost = WaitFor(
      [&] {
        sql_.Exec(fmt::format("INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) "
                              "VALUES ('a', 'b', 'c', '{{}}')",
                              source_.table));
        sql_.Exec("SELECT pg_switch_wal()");
        sql_.Exec("CHECKPOINT");
        return sql_.Scalar(fmt::format("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
                                       source_.slot)) == "lost";
      },
      absl::Seconds(30), absl::Milliseconds(100));
  Result r = Check(ConfigFor(source_));
  sql_.Exec("ALTER SYSTEM RESET max_slot_wal_keep_size");
  sql_.Exec("SELECT pg_reload_conf()");
  ASSERT_TRUE(lost) << "PostgreSQL did not invalidate the slot";
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr(fmt::format("FAIL  slot         '{}' was invalidated", source_.slot)));
  EXPECT_THAT(r.output, HasSubstr("docs/operations.md"));
  EXPECT_THAT(r.output, HasSubstr("ok    wal_keep     max_slot_wal_keep_size = 1024 kB"));
  ASSERT_TRUE(WaitFor([&] { return sql_.Scalar("SHOW max_slot_wal_keep_size") == "-1"; }, absl::Seconds(10)));
}

// Secrets in the DSN and in [sink.kafka] never appear, whether the servers
// accept them (the local PostgreSQL trusts 127.0.0.1 and ignores the password)
// or not (the local Kafka speaks no SASL, so the handshake fails).
TEST_F(DoctorTest, NeverPrintsSecrets) {
  const std::string pg_secret = "PgS3cret-" + UniqueName("p");
  const std::string kafka_secret = "K4fkaS3cret-" + UniqueName("k");
  std::string config = Replace(ConfigFor(source_), PgDsn(), PgDsn() + " password=" + pg_secret);
  config = Replace(config, "[sink.kafka]\n",
                   fmt::format("[sink.kafka]\n\"security.protocol\" = \"sasl_plaintext\"\n"
                               "\"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.username\" = \"outboxd\"\n"
                               "\"sasl.password\" = \"{}\"\n\"socket.timeout.ms\" = 3000\n",
                               kafka_secret));
  Result r = Check(config);
  EXPECT_THAT(r.output, HasSubstr("ok    connect")) << r.output;
  EXPECT_THAT(r.output, HasSubstr("FAIL  kafka")) << r.output;
  EXPECT_THAT(r.output, Not(HasSubstr(pg_secret)));
  EXPECT_THAT(r.output, Not(HasSubstr(kafka_secret)));
}

TEST_F(DoctorTest, StatusIntervalAboveHalfTheSenderTimeoutWarns) {
  const std::string config = Replace(ConfigFor(source_), "create_slot = true",
                                     "create_slot = true\nstatus_interval = \"45s\"");
  Result r = Check(config);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("WARN  wal_sender   wal_sender_timeout = 60000 ms but [source] "
                                  "status_interval = 45000 ms"));
}

}  // namespace
}  // namespace outboxd::it
