// End to end: hostile input from a database role (issue 10, item 7). A message
// whose headers nest 100,000 deep is dead-lettered, never a crash, and the stream
// goes on; after sql/messages.sql only roles granted EXECUTE can emit events.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string HeaderOf(const Record& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "<absent>";
}

constexpr char kEmitFunctions[] =
    "SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p WHERE p.proname = "
    "'pg_logical_emit_message' AND p.pronamespace = 'pg_catalog'::regnamespace";

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "the local stack is not up: run deploy/local/stack.sh up";
    source_ = CreateDefaultSource(sql_, "hostile");
  }
  void TearDown() override {
    if (outboxd_) outboxd_->Stop(SIGKILL);
    DropSource(sql_, source_);
  }
  void StartOutboxd() {
    std::string config = ConfigFor(source_);
    const std::string off = "[messages]\nenabled = false";
    config.replace(config.find(off), off.size(),
                   fmt::format("[messages]\nenabled = true\ntopic = \"{}.{{aggregate_type}}\"",
                               source_.topic_prefix));
    config += fmt::format("\n[errors]\ndead_letter_topic = \"{}\"\n", DlqTopic());
    outboxd_ = std::make_unique<OutboxdProcess>(config);
    outboxd_->Start();
    ASSERT_TRUE(outboxd_->WaitForLog("streaming slot", absl::Seconds(30))) << outboxd_->Log();
  }
  std::string DlqTopic() const { return source_.topic_prefix + ".dlq"; }
  std::string Topic() const { return source_.topic_prefix + ".Order"; }
  static std::string Emit(const std::string& id, const std::string& headers_sql) {
    return fmt::format(
        "SELECT pg_logical_emit_message(true, 'outbox', '{{\"id\": \"{}\", \"aggregate_type\": "
        "\"Order\", \"aggregate_id\": \"a-1\", \"event_type\": \"OrderCreated\", \"payload\": {{}}, "
        "\"headers\": ' || {} || '}}')",
        id, headers_sql);
  }

  Sql sql_;
  TestSource source_;
  std::unique_ptr<OutboxdProcess> outboxd_;
};

TEST_F(HostileTest, MessageWithHeadersNested100000DeepIsDeadLetteredAndTheStreamGoesOn) {
  StartOutboxd();
  const std::string hostile = "00000000-0000-4000-8000-00000000d001";
  const std::string normal = "00000000-0000-4000-8000-00000000d002";
  // About 200 KB: {"h": [[[...]]]} 100,000 deep.
  sql_.Exec("BEGIN; " +
            Emit(hostile, "'{\"h\": ' || repeat('[', 100000) || repeat(']', 100000) || '}'") +
            "; COMMIT;");
  sql_.Exec(fmt::format(
      "INSERT INTO public.{} (id, aggregate_type, aggregate_id, event_type, payload) VALUES "
      "('{}', 'Order', 'a-2', 'OrderCreated', '{{}}')",
      source_.table, normal));

  const std::vector<Record> dead =
      ReadTopicsUntil({DlqTopic()}, [](const auto& r) { return !r.empty(); }, absl::Seconds(60));
  ASSERT_EQ(dead.size(), 1u) << outboxd_->Log();
  for (const auto& [k, v] : dead[0].headers) {
    std::cout << "dead letter header " << k << ": " << v << "\n";
  }
  // The content was never parsed past the limit, so its id is unknown: no key.
  EXPECT_EQ(dead[0].key, "");
  EXPECT_EQ(HeaderOf(dead[0], "outboxd-dlq-reason"), "json_limit");
  EXPECT_EQ(HeaderOf(dead[0], "outboxd-dlq-source"), "message:outbox");
  EXPECT_EQ(HeaderOf(dead[0], "outboxd-dlq-value"), "message");
  EXPECT_THAT(HeaderOf(dead[0], "outboxd-dlq-error"), HasSubstr("deeper than the 256 levels"));
  EXPECT_GT(dead[0].value.size(), 200000u);  // the content as it was emitted
  EXPECT_THAT(dead[0].value, HasSubstr(hostile));

  const std::vector<Record> good =
      ReadTopicsUntil({Topic()}, [](const auto& r) { return !r.empty(); }, absl::Seconds(60));
  ASSERT_EQ(good.size(), 1u) << outboxd_->Log();
  EXPECT_EQ(good[0].key, normal);
  EXPECT_TRUE(WaitForConfirmedPast(sql_, source_.slot, LastCommitLsn(good), absl::Seconds(30)))
      << outboxd_->Log();
  EXPECT_TRUE(outboxd_->running()) << outboxd_->Log();
}

// sql/messages.sql revokes EXECUTE from PUBLIC: a role without the grant cannot
// emit (permission denied), a role with it can, and its event is published.
TEST_F(HostileTest, OnlyRolesGrantedExecuteCanEmitEvents) {
  const std::string reader = UniqueName("it_reader");
  const std::string app = UniqueName("it_app");
  sql_.Exec(fmt::format("CREATE ROLE {} LOGIN; CREATE ROLE {} LOGIN", reader, app));
  // Runs at scope exit, failed assertions included.
  struct Finally {
    std::function<void()> run;
    ~Finally() { run(); }
  };
  const Finally restore{[&] {
    // Leave the shared cluster as it was: PostgreSQL's default is EXECUTE to PUBLIC.
    for (const auto& row : sql_.Query(kEmitFunctions)) {
      sql_.Exec(fmt::format("GRANT EXECUTE ON FUNCTION {} TO PUBLIC", *row[0]));
      sql_.Exec(fmt::format("REVOKE EXECUTE ON FUNCTION {} FROM {}", *row[0], app));
    }
    sql_.Exec(fmt::format("DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {}", reader, app));
  }};
  const std::string as_role = "host=127.0.0.1 port=" + PgPort() + " dbname=app user=";
  const std::string valid = "00000000-0000-4000-8000-00000000d011";
  const std::string forged = "00000000-0000-4000-8000-00000000d012";

  // Before: PostgreSQL's default lets any role emit.
  {
    auto conn = replication::PgConnection::Connect(as_role + reader, false);
    ASSERT_TRUE(conn.ok()) << conn.status();
    EXPECT_TRUE((*conn)->Query("SELECT pg_logical_emit_message(false, 'it', 'x')").ok());
  }
  const CommandResult applied = RunShell(fmt::format(
      "/usr/lib/postgresql/15/bin/psql \"{}\" -X -q -v ON_ERROR_STOP=1 -v app_roles={} -f {}/sql/messages.sql",
      PgDsn(), app, OUTBOXD_SOURCE_DIR));
  ASSERT_EQ(applied.code, 0) << applied.output;
  EXPECT_THAT(applied.output, Not(HasSubstr("PUBLIC")));

  StartOutboxd();
  {
    auto conn = replication::PgConnection::Connect(as_role + reader, false);
    ASSERT_TRUE(conn.ok()) << conn.status();
    const auto denied = (*conn)->Query("BEGIN; " + Emit(forged, "'{}'") + "; COMMIT;");
    EXPECT_FALSE(denied.ok());
    EXPECT_THAT(std::string(denied.status().message()),
                HasSubstr("permission denied for function pg_logical_emit_message"));
  }
  {
    auto conn = replication::PgConnection::Connect(as_role + app, false);
    ASSERT_TRUE(conn.ok()) << conn.status();
    const auto emitted = (*conn)->Query("BEGIN; " + Emit(valid, "'{}'") + "; COMMIT;");
    EXPECT_TRUE(emitted.ok()) << emitted.status();
  }
  const std::vector<Record> published =
      ReadTopicsUntil({Topic()}, [](const auto& r) { return !r.empty(); }, absl::Seconds(60));
  // Only the granted role's event; the forged one never reached the WAL.
  ASSERT_EQ(published.size(), 1u) << outboxd_->Log();
  EXPECT_EQ(published[0].key, valid);
  EXPECT_TRUE(ReadTopics({DlqTopic()}, 1, absl::Seconds(2)).empty());
}

std::string WriteConfig(const std::string& toml) {
  const std::string path = fmt::format("/tmp/{}.toml", UniqueName("hostile"));
  std::ofstream(path) << toml;
  return path;
}

TEST_F(HostileTest, CheckFailsWhileMessagesAreOnAndPublicMayEmit) {
  std::string config = ConfigFor(source_);
  const std::string off = "[messages]\nenabled = false";
  config.replace(config.find(off), off.size(), "[messages]\nenabled = true");
  const std::string path = WriteConfig(config);
  struct Finally {
    std::function<void()> run;
    ~Finally() { run(); }
  };
  const Finally restore{[&] {
    for (const auto& row : sql_.Query(kEmitFunctions)) {
      sql_.Exec(fmt::format("GRANT EXECUTE ON FUNCTION {} TO PUBLIC", *row[0]));
    }
    std::remove(path.c_str());
  }};
  const CommandResult open = RunOutboxd("check --config " + path);
  std::cout << open.output;
  EXPECT_EQ(open.code, 1) << open.output;
  EXPECT_THAT(open.output, HasSubstr("FAIL  messages     [messages] is enabled and PUBLIC may execute "
                                     "pg_logical_emit_message(boolean,text,bytea), "
                                     "pg_logical_emit_message(boolean,text,text)"));
  EXPECT_THAT(open.output, HasSubstr("-> as a superuser: psql -v app_roles="));

  const CommandResult applied = RunShell(fmt::format(
      "/usr/lib/postgresql/15/bin/psql \"{}\" -X -q -v ON_ERROR_STOP=1 -f {}/sql/messages.sql",
      PgDsn(), OUTBOXD_SOURCE_DIR));
  ASSERT_EQ(applied.code, 0) << applied.output;
  const CommandResult closed = RunOutboxd("check --config " + path);
  EXPECT_THAT(closed.output, HasSubstr("ok    messages     [messages] is enabled and PUBLIC cannot "
                                       "execute pg_logical_emit_message"));
  EXPECT_THAT(closed.output, Not(HasSubstr("FAIL  messages")));
}

// The local server's wal_sender_timeout is PostgreSQL's default, 60 s.
TEST_F(HostileTest, StatusIntervalTheServerCannotWaitForIsRefused) {
  std::string config = ConfigFor(source_);
  const std::string source = "[source]\n";
  config.replace(config.find(source), source.size(), "[source]\nstatus_interval = \"60s\"\n");
  const std::string path = WriteConfig(config);
  const CommandResult check = RunOutboxd("check --config " + path);
  EXPECT_EQ(check.code, 1) << check.output;
  EXPECT_THAT(check.output, HasSubstr("FAIL  wal_sender   [source] status_interval = 60000 ms is not "
                                      "below the server's wal_sender_timeout = 60000 ms"));
  // `run` refuses at start (exit 2) instead of streaming into timeouts; the
  // timeout only bounds a regression.
  const CommandResult run = RunShell(fmt::format("timeout -s KILL 60 {} run --config {}", OUTBOXD_BINARY, path));
  std::remove(path.c_str());
  EXPECT_EQ(run.code, 2) << run.output;
  EXPECT_THAT(run.output, HasSubstr("set status_interval to less than half of wal_sender_timeout"));
}

}  // namespace
}  // namespace outboxd::it
