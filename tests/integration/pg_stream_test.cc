// PgConnection and PgReplicationStream against the real PostgreSQL of the local
// stack (deploy/local/stack.sh up; port from OUTBOXD_PG_PORT, default 54329).
// Each test makes its own table, publication and slot (random suffix) and drops
// them at the end, so tests can run in parallel with each other and with other
// suites on the same server.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/lsn.h"
#include "common/time.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "replication/copy_frame.h"
#include "replication/pg_connection.h"
#include "replication/pg_replication_stream.h"

namespace outboxd {
// For gtest failure messages.
void PrintTo(Lsn lsn, std::ostream* os) { *os << lsn.ToString(); }
}  // namespace outboxd

namespace outboxd::replication {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string PgPort() {
  const char* port = std::getenv("OUTBOXD_PG_PORT");
  return port != nullptr && *port != '\0' ? port : "54329";
}

std::string Dsn() { return fmt::format("host=127.0.0.1 port={} dbname=app user=postgres", PgPort()); }

std::string RandomSuffix() {
  std::random_device rd;
  return fmt::format("{:08x}", rd());
}

// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
int UnusedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Polls `condition` until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(15)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return condition();
}

uint64_t Be(std::string_view s, size_t offset, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) v = (v << 8) | static_cast<unsigned char>(s[offset + i]);
  return v;
}

// The few pgoutput fields these tests look at (protocol-logicalrep-message-formats.html).
uint32_t RelationOf(std::string_view msg) { return static_cast<uint32_t>(Be(msg, 1, 4)); }  // 'R', 'I'
Lsn CommitEndLsn(std::string_view msg) { return Lsn(Be(msg, 1 + 1 + 8, 8)); }                 // 'C'

// One decoded transaction: the pgoutput messages between 'B' and 'C'.
using Transaction = std::vector<std::string>;

// Reads frames until a whole transaction satisfying `wanted` arrived; returns
// it, or the stream's error, or an empty vector at the deadline.
absl::StatusOr<Transaction> ReadTransaction(ReplicationStream& stream,
                                            const std::function<bool(const Transaction&)>& wanted,
                                            absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  Transaction current;
  while (absl::Now() < deadline) {
    std::string_view frame;
    auto got = stream.ReadFrame(absl::Milliseconds(200), &frame);
    if (!got.ok()) return got.status();
    if (!*got) continue;
    auto decoded = DecodeServerFrame(frame);
    if (!decoded.ok()) return decoded.status();
    const auto* data = std::get_if<XLogData>(&*decoded);
    if (data == nullptr || data->data.empty()) continue;  // keepalive
    const std::string msg(data->data);
    if (msg[0] == 'B') current.clear();
    current.push_back(msg);
    if (msg[0] == 'C') {
      if (wanted(current)) return current;
      current.clear();
    }
  }
  return Transaction{};
}

std::function<bool(const Transaction&)> HasInsertInto(uint32_t relation) {
  return [relation](const Transaction& txn) {
    return std::any_of(txn.begin(), txn.end(),
                       [&](const std::string& m) { return m[0] == 'I' && RelationOf(m) == relation; });
  };
}

std::string Kinds(const Transaction& txn) {
  std::string kinds;
  for (const std::string& msg : txn) kinds.push_back(msg[0]);
  return kinds;
}

// ---------------------------------------------------------------------------
// PgConnection
// ---------------------------------------------------------------------------

std::unique_ptr<PgConnection> MustConnect(std::string_view dsn = Dsn()) {
  auto conn = PgConnection::Connect(dsn, /*replication=*/false);
  if (!conn.ok()) {
    ADD_FAILURE() << conn.status() << " (is the local stack up? bash deploy/local/stack.sh up)";
    return nullptr;
  }
  return *std::move(conn);
}

std::string Scalar(PgConnection& conn, std::string_view sql) {
  auto rows = conn.Query(sql);
  if (!rows.ok()) {
    ADD_FAILURE() << sql << ": " << rows.status();
    return "";
  }
  if (rows->size() != 1 || (*rows)[0].empty() || !(*rows)[0][0].has_value()) return "<null>";
  return *(*rows)[0][0];
}

TEST(PgConnectionTest, RefusedConnectionIsUnavailableAndHidesThePassword) {
  const int port = UnusedPort();
  auto conn = PgConnection::Connect(
      fmt::format("host=127.0.0.1 port={} dbname=app user=postgres password=Sekr3tPw", port), false);
  ASSERT_EQ(conn.status().code(), absl::StatusCode::kUnavailable) << conn.status();
  EXPECT_THAT(conn.status().message(), HasSubstr("127.0.0.1"));
  EXPECT_THAT(conn.status().message(), HasSubstr(fmt::format("port={}", port)));
  EXPECT_THAT(conn.status().message(), Not(HasSubstr("Sekr3tPw")));
}

TEST(PgConnectionTest, RefusedUriConnectionHidesThePassword) {
  auto conn = PgConnection::Connect(
      fmt::format("postgresql://postgres:Sekr3tPw@127.0.0.1:{}/app", UnusedPort()), true);
  ASSERT_EQ(conn.status().code(), absl::StatusCode::kUnavailable) << conn.status();
  EXPECT_THAT(conn.status().message(), Not(HasSubstr("Sekr3tPw")));
}

TEST(PgConnectionTest, MalformedDsnIsInvalidArgumentAndHidesThePassword) {
  // libpq quotes a bad percent-encoded token back in its message.
  auto uri = PgConnection::Connect("postgresql://postgres:Sek%zzr3t@127.0.0.1/app", false);
  ASSERT_EQ(uri.status().code(), absl::StatusCode::kInvalidArgument) << uri.status();
  EXPECT_THAT(uri.status().message(), Not(HasSubstr("Sek%zzr3t")));

  auto kv = PgConnection::Connect("host=127.0.0.1 password=Sekr3tPw bogus_option=1", false);
  ASSERT_EQ(kv.status().code(), absl::StatusCode::kInvalidArgument) << kv.status();
  EXPECT_THAT(kv.status().message(), HasSubstr("bogus_option"));
  EXPECT_THAT(kv.status().message(), Not(HasSubstr("Sekr3tPw")));
}

TEST(PgConnectionTest, UnknownRoleIsUnauthenticated) {
  auto conn = PgConnection::Connect(
      fmt::format("host=127.0.0.1 port={} dbname=app user=pgst_no_such_role", PgPort()), false);
  ASSERT_EQ(conn.status().code(), absl::StatusCode::kUnauthenticated) << conn.status();
  EXPECT_THAT(conn.status().message(), HasSubstr("pgst_no_such_role"));
}

TEST(PgConnectionTest, UnknownDatabaseIsNotFound) {
  auto conn = PgConnection::Connect(
      fmt::format("host=127.0.0.1 port={} dbname=pgst_no_such_db user=postgres", PgPort()), false);
  ASSERT_EQ(conn.status().code(), absl::StatusCode::kNotFound) << conn.status();
  EXPECT_THAT(conn.status().message(), HasSubstr("pgst_no_such_db"));
}

TEST(PgConnectionTest, SetsApplicationNameAndSessionFormats) {
  auto conn = MustConnect();
  ASSERT_NE(conn, nullptr);
  EXPECT_EQ(Scalar(*conn, "SHOW application_name"), "outboxd");
  EXPECT_EQ(Scalar(*conn, "SHOW TimeZone"), "UTC");
  EXPECT_THAT(Scalar(*conn, "SHOW DateStyle"), ::testing::StartsWith("ISO"));
  EXPECT_EQ(Scalar(*conn, "SHOW extra_float_digits"), "3");
  EXPECT_GE(conn->server_version(), 100000);
  EXPECT_EQ(conn->Describe(), fmt::format("host=127.0.0.1 port={} dbname=app user=postgres", PgPort()));
}

// The wait CREATE_REPLICATION_SLOT on a standby uses: a tick every `every` while the server has
// not answered, a limit that cancels the command on the server, and a tick's error ending it.
TEST(PgConnectionTest, QueryWhileWaitingTicksAndCancelsAtItsLimitOrOnATicksError) {
  auto conn = MustConnect();
  ASSERT_NE(conn, nullptr);
  const std::string marker = "outboxd_wait_" + RandomSuffix();
  std::vector<absl::Duration> ticks;
  const absl::Time started = absl::Now();
  auto slow = conn->QueryWhileWaiting(
      fmt::format("SELECT pg_sleep(30) /* {} */", marker), absl::Milliseconds(100),
      [&](absl::Duration waited) {
        ticks.push_back(waited);
        return absl::OkStatus();
      },
      absl::Milliseconds(700));
  EXPECT_EQ(slow.status().code(), absl::StatusCode::kDeadlineExceeded) << slow.status();
  EXPECT_THAT(slow.status().message(), HasSubstr("no answer within 700ms"));
  EXPECT_LT(absl::Now() - started, absl::Seconds(5));
  ASSERT_GE(ticks.size(), 4u);
  EXPECT_LE(ticks.size(), 7u);
  for (size_t i = 1; i < ticks.size(); ++i) EXPECT_GT(ticks[i], ticks[i - 1]);
  // Cancelled on the server, not left running behind a closed wait.
  auto other = MustConnect();
  ASSERT_NE(other, nullptr);
  EXPECT_TRUE(WaitFor([&] {
    return Scalar(*other, fmt::format("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE "
                                      "'%{}%' AND pid <> pg_backend_pid()",
                                      marker)) == "0";
  }));

  auto fresh = MustConnect();
  ASSERT_NE(fresh, nullptr);
  auto refused = fresh->QueryWhileWaiting(
      "SELECT pg_sleep(30)", absl::Milliseconds(50),
      [](absl::Duration) { return absl::CancelledError("stop requested"); }, absl::Seconds(10));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kCancelled);

  // An answer before the first tick is just the answer. (A connection whose command was given up
  // is closed by its owner: the cancelled command's results are not read.)
  auto third = MustConnect();
  ASSERT_NE(third, nullptr);
  auto quick = third->QueryWhileWaiting(
      "SELECT 42", absl::Seconds(1), [](absl::Duration) { return absl::InternalError("never called"); },
      absl::Seconds(10));
  ASSERT_TRUE(quick.ok()) << quick.status();
  EXPECT_EQ((*quick)[0][0].value_or(""), "42");
}

TEST(PgConnectionTest, KeepsTheUsersApplicationNameAndOptions) {
  auto conn = MustConnect(
      fmt::format("{} application_name=mine options='-c statement_timeout=4567 -c TimeZone=Europe/Paris'", Dsn()));
  ASSERT_NE(conn, nullptr);
  EXPECT_EQ(Scalar(*conn, "SHOW application_name"), "mine");
  EXPECT_EQ(Scalar(*conn, "SHOW statement_timeout"), "4567ms");
  EXPECT_EQ(Scalar(*conn, "SHOW TimeZone"), "UTC");  // ours win: we parse the text forms
}

TEST(PgConnectionTest, UriDsnWorksAndDescribeHidesThePassword) {
  // Trust authentication ignores the password, so the connection succeeds.
  auto conn = MustConnect(fmt::format("postgresql://postgres:Sekr3tPw@127.0.0.1:{}/app", PgPort()));
  ASSERT_NE(conn, nullptr);
  EXPECT_EQ(Scalar(*conn, "SELECT current_database()"), "app");
  EXPECT_THAT(conn->Describe(), Not(HasSubstr("Sekr3tPw")));
}

TEST(PgConnectionTest, ReplicationConnectionRunsReplicationCommands) {
  auto conn = PgConnection::Connect(Dsn(), /*replication=*/true);
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto rows = (*conn)->Query("IDENTIFY_SYSTEM");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  ASSERT_EQ((*rows)[0].size(), 4u);
  EXPECT_EQ((*rows)[0][3], "app");
}

TEST(PgConnectionTest, QueryErrorsCarryTheSqlStateAndServerWords) {
  auto conn = MustConnect();
  ASSERT_NE(conn, nullptr);
  auto missing = conn->Query("SELECT * FROM pgst_no_such_table");
  ASSERT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_THAT(missing.status().message(), HasSubstr("relation \"pgst_no_such_table\" does not exist"));
  EXPECT_THAT(missing.status().message(), HasSubstr("SQLSTATE 42P01"));
  EXPECT_EQ(SqlStateOf(missing.status()), "42P01");

  auto syntax = conn->Query("SELEC 1");
  EXPECT_EQ(syntax.status().code(), absl::StatusCode::kInvalidArgument) << syntax.status();
  EXPECT_EQ(SqlStateOf(syntax.status()), "42601");

  auto rows = conn->Query("SELECT 1, NULL::text, 'x' UNION ALL SELECT 2, 'y', NULL");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0], (Row{"1", std::nullopt, "x"}));
  EXPECT_EQ((*rows)[1], (Row{"2", "y", std::nullopt}));

  auto params = conn->QueryParams("SELECT $1::int + 1, $2::text", {"41", "it's"});
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ((*params)[0], (Row{"42", "it's"}));
}

TEST(PgConnectionTest, QuotingRoundTripsThroughTheServer) {
  EXPECT_EQ(QuoteLiteral("it's"), "'it''s'");
  EXPECT_EQ(QuoteIdentifier("a\"b"), "\"a\"\"b\"");
  auto conn = MustConnect();
  ASSERT_NE(conn, nullptr);
  for (const std::string s : {"plain", "it's", "back\\slash\\", "''", "\"dq\"", "é ü", ""}) {
    EXPECT_EQ(Scalar(*conn, fmt::format("SELECT {}", QuoteLiteral(s))), s);
  }
  const std::string weird = "Pg\"st '" + RandomSuffix();
  ASSERT_TRUE(conn->Query(fmt::format("CREATE TEMP TABLE {} (x int)", QuoteIdentifier(weird))).ok());
  EXPECT_EQ(Scalar(*conn, fmt::format("SELECT relname FROM pg_class WHERE relname = {}", QuoteLiteral(weird))),
            weird);
}

TEST(PgConnectionTest, ProtoVersionFollowsTheServerVersion) {
  EXPECT_EQ(ProtoVersionFor(130010), 1);
  EXPECT_EQ(ProtoVersionFor(140000), 2);
  EXPECT_EQ(ProtoVersionFor(150004), 3);
  EXPECT_EQ(ProtoVersionFor(160002), 4);
  EXPECT_EQ(ProtoVersionFor(170000), 4);
}

TEST(ServerVersionTest, OlderThanFourteenIsRefusedWithTheVersionsNamed) {
  for (int version : {140000, 140019, 150014, 160010, 170006, 180000}) {
    EXPECT_TRUE(CheckServerVersion(version).ok()) << version;
  }
  absl::Status s = CheckServerVersion(130020);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("PostgreSQL 13.20 is not supported"));
  EXPECT_THAT(s.message(), HasSubstr("14, 15, 16, 17 and 18"));
  EXPECT_THAT(CheckServerVersion(90624).message(), HasSubstr("PostgreSQL 9.6 is not supported"));
}

TEST(ServerVersionTest, FailoverSlotsNeedSeventeen) {
  EXPECT_TRUE(CheckFailoverSupported(false, 140000).ok());
  EXPECT_TRUE(CheckFailoverSupported(true, 170000).ok());
  EXPECT_TRUE(CheckFailoverSupported(true, 180000).ok());
  absl::Status s = CheckFailoverSupported(true, 160010);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("PostgreSQL 17 or later"));
  EXPECT_THAT(s.message(), HasSubstr("PostgreSQL 16"));
}

TEST(ServerVersionTest, CreateSlotCommandPerVersion) {
  EXPECT_EQ(CreateSlotCommand("s", 140019, false), "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput NOEXPORT_SNAPSHOT");
  EXPECT_EQ(CreateSlotCommand("s", 160010, false),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing')");
  EXPECT_EQ(CreateSlotCommand("s", 170006, true),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)");
}

TEST(CheckSlotTest, ExplainsEveryUnusableSlot) {
  SlotState good;
  good.slot_type = "logical";
  good.plugin = "pgoutput";
  good.database = "app";
  good.wal_status = "reserved";
  EXPECT_TRUE(CheckSlot("s", good, "app").ok());
  SlotState active = good;
  active.active = true;
  active.active_pid = 42;
  EXPECT_TRUE(CheckSlot("s", active, "app").ok()) << "START_REPLICATION reports a busy slot";

  SlotState lost = good;
  lost.wal_status = "lost";
  absl::Status s = CheckSlot("s", lost, "app");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("slot \"s\" was invalidated by PostgreSQL (wal_status lost"));
  EXPECT_THAT(s.message(), HasSubstr("docs/operations.md"));

  SlotState other_db = good;
  other_db.database = "other";
  s = CheckSlot("s", other_db, "app");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("belongs to database \"other\""));

  EXPECT_EQ(ValidateSlotName("Bad-Name").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateSlotName(std::string(64, 'a')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateSlotName("outboxd_1").ok());
}

// ---------------------------------------------------------------------------
// PgReplicationStream
// ---------------------------------------------------------------------------

class PgStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sql_ = MustConnect();
    ASSERT_NE(sql_, nullptr);
    name_ = "pgst_" + RandomSuffix();
    Exec(fmt::format("CREATE TABLE public.{0} (id int PRIMARY KEY, body text NOT NULL)", name_));
    Exec(fmt::format("CREATE PUBLICATION {0} FOR TABLE public.{0} WITH (publish = 'insert')", name_));
    options_.dsn = Dsn();
    options_.slot = name_;
    options_.publication = name_;
    options_.tables = {"public." + name_};
  }

  void TearDown() override {
    streams_.clear();  // closes the walsenders first
    if (sql_ == nullptr) return;
    // The walsender of a closed stream exits asynchronously; a slot still
    // active cannot be dropped yet.
    const std::string slot = QuoteLiteral(name_);
    const bool dropped = WaitFor([&] {
      (void)sql_->Query(fmt::format(
          "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = {} AND active_pid "
          "IS NOT NULL",
          slot));
      auto r = sql_->Query(fmt::format(
          "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}", slot));
      return r.ok();
    });
    EXPECT_TRUE(dropped) << "could not drop slot " << name_;
    Exec(fmt::format("DROP PUBLICATION IF EXISTS {}", name_));
    for (const std::string& pub : extra_publications_) Exec(fmt::format("DROP PUBLICATION IF EXISTS {}", pub));
    Exec(fmt::format("DROP TABLE IF EXISTS public.{0}, public.{0}_other", name_));
  }

  void Exec(const std::string& sql) {
    auto r = sql_->Query(sql);
    ASSERT_TRUE(r.ok()) << sql << ": " << r.status();
  }

  PgReplicationStream* MustStart(const StreamOptions& options) {
    auto stream = PgReplicationStream::Start(options);
    if (!stream.ok()) {
      ADD_FAILURE() << stream.status();
      return nullptr;
    }
    streams_.push_back(*std::move(stream));
    return streams_.back().get();
  }

  std::optional<Row> SlotRow() {
    auto rows = sql_->Query(fmt::format(
        "SELECT plugin, active_pid, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {}",
        QuoteLiteral(name_)));
    if (!rows.ok() || rows->empty()) return std::nullopt;
    return (*rows)[0];
  }

  Lsn ConfirmedFlush() {
    auto row = SlotRow();
    if (!row.has_value() || !(*row)[2].has_value()) return Lsn();
    return Lsn::Parse(*(*row)[2]).value_or(Lsn());
  }

  uint32_t TableOid() {
    const std::string oid = Scalar(*sql_, fmt::format("SELECT 'public.{}'::regclass::oid", name_));
    return static_cast<uint32_t>(std::stoul(oid));
  }

  std::unique_ptr<PgConnection> sql_;
  std::string name_;
  StreamOptions options_;
  std::vector<std::unique_ptr<PgReplicationStream>> streams_;
  std::vector<std::string> extra_publications_;  // quoted names, dropped in TearDown
};

TEST_F(PgStreamTest, StartCreatesTheSlotAndHoldsIt) {
  ASSERT_FALSE(SlotRow().has_value());
  PgReplicationStream* stream = MustStart(options_);
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(stream->info().slot_created);
  EXPECT_TRUE(stream->info().slot_confirmed_flush.valid());
  EXPECT_EQ(stream->info().proto_version, ProtoVersionFor(stream->info().server_version));
  EXPECT_FALSE(stream->info().system_id.empty());
  EXPECT_GE(stream->info().timeline, 1);
  EXPECT_TRUE(stream->info().xlog_pos.valid());

  auto row = SlotRow();
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ((*row)[0], "pgoutput");
  EXPECT_EQ((*row)[1], std::to_string(stream->backend_pid()));

  // Restart on the existing slot: found, not created, same position.
  const Lsn created_at = stream->info().slot_confirmed_flush;
  streams_.clear();
  ASSERT_TRUE(WaitFor([&] { return SlotRow().has_value() && !(*SlotRow())[1].has_value(); }));
  options_.create_slot = false;
  PgReplicationStream* again = MustStart(options_);
  ASSERT_NE(again, nullptr);
  EXPECT_FALSE(again->info().slot_created);
  EXPECT_EQ(again->info().slot_confirmed_flush, created_at);
}

TEST_F(PgStreamTest, MissingPublicationIsFailedPrecondition) {
  options_.publication = name_ + "_missing";
  auto stream = PgReplicationStream::Start(options_);
  ASSERT_EQ(stream.status().code(), absl::StatusCode::kFailedPrecondition) << stream.status();
  EXPECT_THAT(stream.status().message(), HasSubstr(fmt::format("publication \"{}_missing\" does not exist", name_)));
  EXPECT_THAT(stream.status().message(), HasSubstr("sql/outbox.sql"));
  EXPECT_THAT(stream.status().message(), HasSubstr("CREATE PUBLICATION"));
  EXPECT_FALSE(SlotRow().has_value()) << "checks come before creating the slot";
}

TEST_F(PgStreamTest, TableNotInPublicationIsFailedPrecondition) {
  Exec(fmt::format("CREATE TABLE public.{}_other (id int)", name_));
  options_.tables.push_back(fmt::format("public.{}_other", name_));
  auto stream = PgReplicationStream::Start(options_);
  ASSERT_EQ(stream.status().code(), absl::StatusCode::kFailedPrecondition) << stream.status();
  EXPECT_THAT(stream.status().message(),
              HasSubstr(fmt::format("ALTER PUBLICATION {0} ADD TABLE public.{0}_other", name_)));
  EXPECT_FALSE(SlotRow().has_value());
}

TEST_F(PgStreamTest, MissingTableIsFailedPrecondition) {
  options_.tables = {fmt::format("public.{}_nothere", name_)};
  auto stream = PgReplicationStream::Start(options_);
  ASSERT_EQ(stream.status().code(), absl::StatusCode::kFailedPrecondition) << stream.status();
  EXPECT_THAT(stream.status().message(), HasSubstr(fmt::format("public.{}_nothere does not exist", name_)));
}

TEST_F(PgStreamTest, MissingSlotWithoutCreateSlotIsFailedPrecondition) {
  options_.create_slot = false;
  auto stream = PgReplicationStream::Start(options_);
  ASSERT_EQ(stream.status().code(), absl::StatusCode::kFailedPrecondition) << stream.status();
  EXPECT_THAT(stream.status().message(), HasSubstr(fmt::format("replication slot \"{}\" does not exist", name_)));
  EXPECT_THAT(stream.status().message(), HasSubstr("create_slot"));
  EXPECT_FALSE(SlotRow().has_value());
}

TEST_F(PgStreamTest, SlotOfAnotherPluginIsFailedPrecondition) {
  Exec(fmt::format("SELECT pg_create_logical_replication_slot({}, 'test_decoding')", QuoteLiteral(name_)));
  auto stream = PgReplicationStream::Start(options_);
  ASSERT_EQ(stream.status().code(), absl::StatusCode::kFailedPrecondition) << stream.status();
  EXPECT_THAT(stream.status().message(), HasSubstr("uses output plugin \"test_decoding\""));
}

TEST_F(PgStreamTest, PhysicalSlotIsFailedPrecondition) {
  Exec(fmt::format("SELECT pg_create_physical_replication_slot({})", QuoteLiteral(name_)));
  auto stream = PgReplicationStream::Start(options_);
  ASSERT_EQ(stream.status().code(), absl::StatusCode::kFailedPrecondition) << stream.status();
  EXPECT_THAT(stream.status().message(), HasSubstr("is a physical slot"));
}

TEST_F(PgStreamTest, InvalidSlotNameIsInvalidArgument) {
  options_.slot = "Bad-Name";
  EXPECT_EQ(PgReplicationStream::Start(options_).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PgStreamTest, SecondInstanceOnABusySlotIsUnavailable) {
  PgReplicationStream* first = MustStart(options_);
  ASSERT_NE(first, nullptr);
  auto second = PgReplicationStream::Start(options_);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr(fmt::format("is active for PID {}", first->backend_pid())));

  // The first one is unaffected.
  Exec(fmt::format("INSERT INTO public.{} VALUES (1, 'still streaming')", name_));
  const uint32_t oid = TableOid();
  auto txn = ReadTransaction(*first, HasInsertInto(oid));
  ASSERT_TRUE(txn.ok()) << txn.status();
  EXPECT_FALSE(txn->empty());
}

TEST_F(PgStreamTest, InsertsArriveAsBeginRelationInsertCommit) {
  PgReplicationStream* stream = MustStart(options_);
  ASSERT_NE(stream, nullptr);
  const uint32_t oid = TableOid();
  Exec(fmt::format("BEGIN; INSERT INTO public.{0} VALUES (1, 'a'); INSERT INTO public.{0} VALUES (2, 'b'); COMMIT",
                   name_));

  auto txn = ReadTransaction(*stream, HasInsertInto(oid));
  ASSERT_TRUE(txn.ok()) << txn.status();
  ASSERT_FALSE(txn->empty()) << "no transaction with our inserts arrived";
  EXPECT_EQ(Kinds(*txn), "BRIIC");
  EXPECT_EQ(RelationOf((*txn)[1]), oid);
  EXPECT_THAT((*txn)[2], HasSubstr("a"));
  EXPECT_GT(CommitEndLsn(txn->back()), stream->info().slot_confirmed_flush);
}

TEST_F(PgStreamTest, PublicationNamesAreQuotedAsIdentifiers) {
  // Unquoted, pgoutput would fold the name to lower case and find no publication.
  options_.publication = "Pgst \"Mixed\" " + name_;
  extra_publications_.push_back(QuoteIdentifier(options_.publication));
  Exec(fmt::format("CREATE PUBLICATION {} FOR TABLE public.{}", QuoteIdentifier(options_.publication), name_));
  PgReplicationStream* stream = MustStart(options_);
  ASSERT_NE(stream, nullptr);
  Exec(fmt::format("INSERT INTO public.{} VALUES (7, 'quoted')", name_));
  auto txn = ReadTransaction(*stream, HasInsertInto(TableOid()));
  ASSERT_TRUE(txn.ok()) << txn.status();
  EXPECT_EQ(Kinds(*txn), "BRIC");
}

TEST_F(PgStreamTest, SendStatusMovesTheSlotsConfirmedFlush) {
  PgReplicationStream* stream = MustStart(options_);
  ASSERT_NE(stream, nullptr);
  const uint32_t oid = TableOid();
  Exec(fmt::format("INSERT INTO public.{} VALUES (1, 'a')", name_));
  auto txn = ReadTransaction(*stream, HasInsertInto(oid));
  ASSERT_TRUE(txn.ok()) << txn.status();
  ASSERT_FALSE(txn->empty());
  const Lsn end = CommitEndLsn(txn->back());
  ASSERT_LT(ConfirmedFlush(), end) << "nothing confirmed yet";

  StandbyStatus status{.written = end, .flushed = end, .applied = end, .clock = TimeToPgTimestamp(absl::Now())};
  ASSERT_TRUE(stream->SendStatus(status).ok());
  // No ReadFrame meanwhile: SendStatus alone must get the update to the server.
  EXPECT_TRUE(WaitFor([&] { return ConfirmedFlush() >= end; }))
      << "confirmed_flush_lsn stayed at " << ConfirmedFlush().ToString() << ", wanted " << end.ToString();
}

TEST_F(PgStreamTest, ReadFrameReturnsFalseAfterTheTimeout) {
  options_.messages = false;
  PgReplicationStream* stream = MustStart(options_);
  ASSERT_NE(stream, nullptr);
  // Other suites' transactions bring keepalives (PostgreSQL 15 sends one for
  // each transaction it skips); look for one call that timed out.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    std::string_view frame = "stale";
    const absl::Time start = absl::Now();
    auto got = stream->ReadFrame(absl::Milliseconds(300), &frame);
    const absl::Duration took = absl::Now() - start;
    ASSERT_TRUE(got.ok()) << got.status();
    if (*got) {
      EXPECT_FALSE(frame.empty());
      continue;
    }
    EXPECT_TRUE(frame.empty());
    EXPECT_GE(took, absl::Milliseconds(300));
    EXPECT_LT(took, absl::Seconds(3));
    return;
  }
  FAIL() << "ReadFrame never timed out";
}

TEST_F(PgStreamTest, TerminatedWalsenderEndsTheStreamWithUnavailable) {
  PgReplicationStream* stream = MustStart(options_);
  ASSERT_NE(stream, nullptr);
  Exec(fmt::format("SELECT pg_terminate_backend({})", stream->backend_pid()));
  absl::Status error;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (error.ok() && absl::Now() < deadline) {
    std::string_view frame;
    error = stream->ReadFrame(absl::Milliseconds(200), &frame).status();
  }
  ASSERT_EQ(error.code(), absl::StatusCode::kUnavailable) << error;
  EXPECT_THAT(error.message(), HasSubstr("terminating connection due to administrator command"));
  EXPECT_EQ(stream->SendStatus(StandbyStatus{}).code(), absl::StatusCode::kUnavailable);
}

TEST_F(PgStreamTest, OutboxSqlIsIdempotentAndOutboxEmitReachesTheStream) {
  std::ifstream file(std::string(OUTBOXD_SOURCE_DIR) + "/sql/outbox.sql");
  ASSERT_TRUE(file.good());
  std::stringstream sql;
  sql << file.rdbuf();
  for (int i = 0; i < 2; ++i) {
    auto applied = sql_->Query(sql.str());
    ASSERT_TRUE(applied.ok()) << "run " << i + 1 << ": " << applied.status();
  }
  EXPECT_EQ(Scalar(*sql_,
                   "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'outboxd' AND schemaname = 'public' "
                   "AND tablename = 'outbox'"),
            "1");
  EXPECT_EQ(Scalar(*sql_, "SELECT pubinsert::text || pubupdate::text || pubdelete::text FROM pg_publication "
                          "WHERE pubname = 'outboxd'"),
            "truefalsefalse");

  PgReplicationStream* stream = MustStart(options_);
  ASSERT_NE(stream, nullptr);
  const std::string id = Scalar(
      *sql_,
      "SELECT outbox_emit('order', '42', 'OrderCreated', '{\"n\": 1}', '{\"traceparent\": \"00-abc\"}')");
  ASSERT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")))
      << id;

  // 'M': Int8 flags, Int64 lsn, String prefix, Int32 length, Byten content.
  auto txn = ReadTransaction(*stream, [&](const Transaction& t) {
    return std::any_of(t.begin(), t.end(),
                       [&](const std::string& m) { return m[0] == 'M' && m.find(id) != std::string::npos; });
  });
  ASSERT_TRUE(txn.ok()) << txn.status();
  ASSERT_EQ(Kinds(*txn), "BMC");
  const std::string& message = (*txn)[1];
  EXPECT_EQ(message[1], 1) << "transactional";
  EXPECT_EQ(std::string(message.c_str() + 10), "outbox");
  for (const char* part : {"\"aggregate_type\": \"order\"", "\"aggregate_id\": \"42\"",
                           "\"event_type\": \"OrderCreated\"", "\"payload\": {\"n\": 1}",
                           "\"headers\": {\"traceparent\": \"00-abc\"}", "\"created_at\": "}) {
    EXPECT_THAT(message, HasSubstr(part));
  }
}

}  // namespace
}  // namespace outboxd::replication

namespace outboxd::replication {
namespace {

// Against whatever server the stack runs: a failover slot where the server has
// them (17+), a clear refusal where it has not.
TEST_F(PgStreamTest, FailoverSlotIsCreatedOrSetOrRefusedByVersion) {
  const int version = std::stoi(Scalar(*sql_, "SHOW server_version_num"));
  auto failover = [&] {
    return Scalar(*sql_, fmt::format("SELECT failover FROM pg_replication_slots WHERE slot_name = {}",
                                     QuoteLiteral(name_)));
  };
  options_.failover = true;
  if (version < 170000) {
    auto refused = PgReplicationStream::Start(options_);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(refused.status().message(), HasSubstr("PostgreSQL 17 or later"));
    EXPECT_FALSE(SlotRow().has_value()) << "nothing created";
    return;
  }
  // An existing slot made without FAILOVER is altered in place, keeping its position.
  options_.failover = false;
  PgReplicationStream* plain = MustStart(options_);
  ASSERT_NE(plain, nullptr);
  EXPECT_FALSE(plain->info().slot_failover);
  EXPECT_EQ(failover(), "f");
  const Lsn created_at = plain->info().slot_confirmed_flush;
  streams_.clear();
  ASSERT_TRUE(WaitFor([&] { return SlotRow().has_value() && !(*SlotRow())[1].has_value(); }));
  options_.failover = true;
  PgReplicationStream* altered = MustStart(options_);
  ASSERT_NE(altered, nullptr);
  EXPECT_TRUE(altered->info().slot_failover);
  EXPECT_FALSE(altered->info().slot_created);
  EXPECT_EQ(altered->info().slot_confirmed_flush, created_at);
  EXPECT_EQ(failover(), "t");

  // A new slot is created with FAILOVER.
  streams_.clear();
  ASSERT_TRUE(WaitFor([&] {
    return sql_->Query(fmt::format("SELECT pg_drop_replication_slot({})", QuoteLiteral(name_))).ok();
  }));
  PgReplicationStream* created = MustStart(options_);
  ASSERT_NE(created, nullptr);
  EXPECT_TRUE(created->info().slot_created);
  EXPECT_TRUE(created->info().slot_failover);
  EXPECT_EQ(failover(), "t");
}

}  // namespace
}  // namespace outboxd::replication
