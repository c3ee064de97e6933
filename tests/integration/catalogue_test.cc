// The catalogue of mistakes (issue 24): one row per mistake an operator makes
// when pointing outboxd at a database, a broker or a registry. For each,
// `outboxd check` must report it (FAIL, or WARN where the setup can be meant)
// with what to do, and `outboxd run` must say it clearly (refuse to start,
// exit, or log it) where it would otherwise dead-letter every row or stall in
// silence. docs/operations.md ("What check catches") is this table in prose.
//
// The rows run against the local stack, and against the servers of
// catalogue_stack.sh (a ctest fixture) where the mistake is the server's own:
// PostgreSQL with wal_level = replica, PostgreSQL with two slots and two WAL
// senders, a broker that does not auto-create topics and cannot run
// transactions. The schema registry is a fake in this process: it answers
// as Confluent's does for a subject holding an incompatible schema.
#include <httplib.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "nlohmann/json.hpp"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;

// The ports catalogue_stack.sh wrote, or nothing when it is not up.
std::map<std::string, std::string> CatalogueEnv() {
  std::map<std::string, std::string> env;
  std::ifstream file(std::string(OUTBOXD_SOURCE_DIR) + "/.run/catalogue/env");
  std::string line;
  while (std::getline(file, line)) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return env;
}

std::string DsnOnPort(const std::string& port, const std::string& database = "app",
                      const std::string& user = "postgres") {
  return fmt::format("host=127.0.0.1 port={} dbname={} user={}", port, database, user);
}

std::string ReplaceOnce(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from << "\nin\n" << text;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// A registry answering as Confluent's does when the subject holds a schema the
// envelope cannot follow: the compatibility test says no, registering is 409.
class IncompatibleRegistry {
 public:
  IncompatibleRegistry() {
    auto json = [](httplib::Response& res, int status, const std::string& body) {
      res.status = status;
      res.set_content(body, "application/vnd.schemaregistry.v1+json");
    };
    server_.Get("/config", [json](const httplib::Request&, httplib::Response& res) {
      json(res, 200, R"({"compatibilityLevel":"BACKWARD"})");
    });
    server_.Get(R"(/config/.*)", [json](const httplib::Request&, httplib::Response& res) {
      json(res, 404, R"({"error_code":40408,"message":"Subject does not have subject-level compatibility configured"})");
    });
    server_.Post(R"(/compatibility/subjects/.*)", [json](const httplib::Request&, httplib::Response& res) {
      json(res, 200, R"({"is_compatible":false,"messages":["The new schema's message Envelope removed field id of type int64"]})");
    });
    // The envelope's import is registered fine (the server sees the subject's
    // %2F decoded).
    server_.Post(R"(/subjects/google(/|%2F)protobuf(/|%2F)timestamp\.proto/versions)",
                 [json](const httplib::Request&, httplib::Response& res) { json(res, 200, R"({"id":1})"); });
    server_.Post(R"(/subjects/google(/|%2F)protobuf(/|%2F)timestamp\.proto)",
                 [json](const httplib::Request&, httplib::Response& res) {
                   json(res, 200, R"({"subject":"google/protobuf/timestamp.proto","version":1,"id":1})");
                 });
    server_.Post(R"(/subjects/.*/versions)", [json](const httplib::Request&, httplib::Response& res) {
      json(res, 409, R"({"error_code":409,"message":"Schema being registered is incompatible with an earlier schema"})");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // bind_to_any_port listens already: a request before the loop starts waits in the backlog.
  }
  ~IncompatibleRegistry() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return fmt::format("http://127.0.0.1:{}", port_); }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

enum class Server { kLocal, kReplica, kSmall, kStrictKafka };

// One row's world: a server, an outbox table with its publication, the config
// `check` and `run` read, and what to undo afterwards.
struct Scene {
  std::string pg_port;
  std::string kafka;
  std::unique_ptr<Sql> sql;
  TestSource source;
  std::string config;
  std::vector<std::function<void()>> undo;
  std::vector<std::string> run_args;  // after `run --config FILE`
  std::unique_ptr<IncompatibleRegistry> registry;

  std::string Dsn() const { return DsnOnPort(pg_port); }
  // Debezium's documented outbox table instead of the default one, mapped by
  // [outbox.columns] with `field` named `column` (a typo, when they differ
  // from the table's).
  void Debezium(const std::string& id_type = "uuid") {
    sql->Exec(fmt::format("DROP PUBLICATION {}; DROP TABLE public.{}", source.publication, source.table));
    sql->Exec(fmt::format("CREATE TABLE public.{} (id {} PRIMARY KEY, aggregatetype varchar(255) NOT NULL, "
                          "aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb)",
                          source.table, id_type));
    sql->Exec(fmt::format("CREATE PUBLICATION {} FOR TABLE public.{} WITH (publish = 'insert')", source.publication,
                          source.table));
    config = ReplaceOnce(config, "\n[messages]", R"(key = "aggregate_id"
value = "payload"
[outbox.columns]
aggregate_type = "aggregatetype"
aggregate_id = "aggregateid"
event_type = "type"

[messages])");
  }
  void Column(const std::string& field, const std::string& column) {
    const std::string line = fmt::format("\n{} = \"", field);
    const size_t at = config.find("[outbox.columns]");
    const size_t existing = config.find(line, at);
    if (existing != std::string::npos && existing < config.find("[messages]")) {
      const size_t end = config.find('\n', existing + 1);
      config.replace(existing, end - existing, fmt::format("\n{} = \"{}\"", field, column));
    } else {
      config = ReplaceOnce(config, "[outbox.columns]", fmt::format("[outbox.columns]\n{} = \"{}\"", field, column));
    }
  }
  void Insert(const std::string& aggregate_type) {
    sql->Exec(fmt::format("INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) VALUES ('{}', "
                          "'a-1', 'Happened', '{{}}')",
                          source.table, aggregate_type));
  }
  // A login role made for the row, dropped after it.
  std::string Role(const std::string& attributes, bool select) {
    const std::string role = UniqueName("cat_role");
    sql->Exec(fmt::format("CREATE ROLE {} LOGIN {}", role, attributes));
    if (select) sql->Exec(fmt::format("GRANT SELECT ON public.{} TO {}", source.table, role));
    Sql* on = sql.get();
    undo.push_back([on, role] { on->Exec(fmt::format("DROP OWNED BY {0}; DROP ROLE {0}", role)); });
    config = ReplaceOnce(config, Dsn(), DsnOnPort(pg_port, "app", role));
    return role;
  }
};

// What `run` does about the mistake.
enum class Run {
  kExits,  // exits with `exit_code`, its log saying `log`
  kLogs,   // logs `log` and goes on (streams, or retries saying why)
};

struct Mistake {
  std::string name;
  Server server = Server::kLocal;
  std::function<void(Scene&)> make;
  // check: a finding of this status and name whose message and hint hold these.
  std::string status;  // "fail" or "warn"
  std::string check;
  std::string message;
  std::string hint;
  Run run = Run::kExits;
  int exit_code = 0;
  std::string log;
};

std::ostream& operator<<(std::ostream& out, const Mistake& m) { return out << m.name; }

const std::vector<Mistake>& Catalogue() {
  static const auto* rows = new std::vector<Mistake>{
      // ---- The outbox table's columns: each required column misnamed, and a wrong type.
      {.name = "IdColumnMisnamed",
       .make = [](Scene& s) { s.Debezium(); s.Column("id", "idd"); },
       .status = "fail", .check = "columns",
       .message = "has no column \"idd\" ([outbox.columns] id): every row would be dead-lettered (missing_column)",
       .hint = "did you mean \"id\"? set [outbox.columns] id = \"id\"",
       .run = Run::kExits, .exit_code = 2, .log = "outboxd refuses to start: every row of an outbox table would be "
                                                  "dead-lettered"},
      {.name = "AggregateTypeColumnMisnamed",
       .make = [](Scene& s) { s.Debezium(); s.Column("aggregate_type", "aggregatetyp"); },
       .status = "fail", .check = "columns",
       .message = "has no column \"aggregatetyp\" ([outbox.columns] aggregate_type)",
       .hint = "did you mean \"aggregatetype\"?",
       .run = Run::kExits, .exit_code = 2, .log = "error columns: "},
      {.name = "AggregateIdColumnLeftAtItsDefault",
       .make = [](Scene& s) {
         s.Debezium();
         s.config = ReplaceOnce(s.config, "aggregate_id = \"aggregateid\"\n", "");
       },
       .status = "fail", .check = "columns",
       .message = "has no column \"aggregate_id\" ([outbox.columns] aggregate_id, the default name)",
       .hint = "did you mean \"aggregateid\"? set [outbox.columns] aggregate_id = \"aggregateid\"",
       .run = Run::kExits, .exit_code = 2, .log = "error columns: "},
      {.name = "EventTypeColumnMisnamed",
       .make = [](Scene& s) { s.Debezium(); s.Column("event_type", "event_type_typo"); },
       .status = "fail", .check = "columns",
       .message = "has no column \"event_type_typo\" ([outbox.columns] event_type)",
       .hint = "did you mean \"type\"? set [outbox.columns] event_type = \"type\"",
       .run = Run::kExits, .exit_code = 2, .log = "error columns: "},
      {.name = "PayloadColumnMisnamed",
       .make = [](Scene& s) { s.Debezium(); s.Column("payload", "body"); },
       .status = "fail", .check = "columns",
       .message = "has no column \"body\" ([outbox.columns] payload)",
       .hint = "the table's columns: id uuid, aggregatetype character varying(255)",
       .run = Run::kExits, .exit_code = 2, .log = "error columns: "},
      {.name = "IdColumnOfTheWrongType",
       .make = [](Scene& s) { s.Debezium("bigint"); },
       .status = "fail", .check = "columns",
       .message = "column \"id\" is of type bigint: it can never hold a UUID, so every row would be dead-lettered "
                  "(invalid_uuid)",
       .hint = "ADD COLUMN event_id uuid NOT NULL DEFAULT gen_random_uuid()",
       .run = Run::kExits, .exit_code = 2, .log = "error columns: "},
      // ---- The publication.
      {.name = "TableNotInThePublication",
       .make = [](Scene& s) {
         s.sql->Exec(fmt::format("ALTER PUBLICATION {} DROP TABLE public.{}", s.source.publication, s.source.table));
       },
       .status = "fail", .check = "publication", .message = "lacks public.",
       .hint = "ALTER PUBLICATION",
       .run = Run::kExits, .exit_code = 1, .log = "is not in publication"},
      {.name = "PublicationPublishesUpdatesAndDeletesOnly",
       .make = [](Scene& s) {
         s.sql->Exec(fmt::format("ALTER PUBLICATION {} SET (publish = 'update, delete')", s.source.publication));
       },
       .status = "fail", .check = "publication",
       .message = "does not publish inserts: no outbox row would ever reach outboxd",
       .hint = "SET (publish = 'insert')",
       .run = Run::kExits, .exit_code = 1, .log = "does not publish inserts"},
      {.name = "PublicationColumnListDropsARequiredColumn",
       .make = [](Scene& s) {
         s.sql->Exec(fmt::format("DROP PUBLICATION {0}; CREATE PUBLICATION {0} FOR TABLE public.{1} (id, "
                                 "aggregate_type, aggregate_id, payload) WITH (publish = 'insert')",
                                 s.source.publication, s.source.table));
       },
       .status = "fail", .check = "columns",
       .message = "column \"event_type\" is not in publication",
       .hint = "ADD TABLE public.",
       .run = Run::kExits, .exit_code = 2, .log = "pgoutput never sends it"},
      {.name = "PublicationRowFilterDropsRows",
       .make = [](Scene& s) {
         s.sql->Exec(fmt::format("DROP PUBLICATION {0}; CREATE PUBLICATION {0} FOR TABLE public.{1} WHERE "
                                 "(aggregate_type = 'Order') WITH (publish = 'insert')",
                                 s.source.publication, s.source.table));
       },
       .status = "warn", .check = "publication",
       .message = "WHERE (aggregate_type = 'Order'::text): the others never reach outboxd, so they are neither "
                  "published nor dead-lettered",
       .hint = "(without WHERE)",
       .run = Run::kLogs, .log = "warn publication: "},
      // ---- The slot.
      {.name = "SlotWithAnotherPlugin",
       .make = [](Scene& s) {
         s.sql->Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'test_decoding')", s.source.slot));
       },
       .status = "fail", .check = "slot", .message = "with plugin 'test_decoding'; outboxd needs a logical pgoutput slot",
       .hint = "choose another [source] slot name",
       .run = Run::kExits, .exit_code = 1, .log = "uses output plugin \"test_decoding\""},
      {.name = "SlotOfAnotherDatabase",
       .make = [](Scene& s) {
         Sql other(DsnOnPort(s.pg_port, "postgres"));
         other.Exec(fmt::format("SELECT pg_create_logical_replication_slot('{}', 'pgoutput')", s.source.slot));
         const std::string dsn = DsnOnPort(s.pg_port, "postgres");
         const std::string slot = s.source.slot;
         s.undo.push_back([dsn, slot] { Sql(dsn).DropSlotWhenInactive(slot); });
       },
       .status = "fail", .check = "slot", .message = "belongs to database 'postgres', not 'app'",
       .hint = "fix dbname in [source] dsn",
       .run = Run::kExits, .exit_code = 1, .log = "belongs to database \"postgres\", not \"app\""},
      // ---- The server.
      {.name = "WalLevelBelowLogical",
       .server = Server::kReplica,
       .make = [](Scene&) {},
       .status = "fail", .check = "wal_level", .message = "is 'replica': the server writes no logical decoding",
       .hint = "ALTER SYSTEM SET wal_level = logical",
       .run = Run::kExits, .exit_code = 1, .log = "wal_level is 'replica'; logical decoding needs wal_level = "
                                                  "logical"},
      {.name = "ReplicationSlotsExhausted",
       .server = Server::kSmall,
       .make = [](Scene& s) {
         const int max = std::stoi(s.sql->Scalar("SHOW max_replication_slots"));
         const int used = std::stoi(s.sql->Scalar("SELECT count(*) FROM pg_replication_slots"));
         for (int i = used; i < max; ++i) {
           const std::string fill = UniqueName("cat_fill");
           s.sql->Exec(fmt::format("SELECT pg_create_physical_replication_slot('{}')", fill));
           Sql* on = s.sql.get();
           s.undo.push_back([on, fill] { on->Exec(fmt::format("SELECT pg_drop_replication_slot('{}')", fill)); });
         }
       },
       .status = "fail", .check = "slot", .message = "is missing and all 2 replication slots are in use",
       .hint = "raise max_replication_slots",
       .run = Run::kLogs, .log = "all replication slots are in use"},
      {.name = "WalSendersExhausted",
       .server = Server::kSmall,
       .make = [](Scene& s) {
         // Two idle replication connections hold both WAL senders.
         auto held = std::make_shared<std::vector<std::unique_ptr<replication::PgConnection>>>();
         for (int i = 0; i < 2; ++i) {
           auto conn = replication::PgConnection::Connect(s.Dsn(), /*replication=*/true);
           ASSERT_TRUE(conn.ok()) << conn.status();
           held->push_back(std::move(*conn));
         }
         s.undo.push_back([held] { held->clear(); });
       },
       .status = "fail", .check = "wal_senders",
       .message = "all 2 WAL senders (max_wal_senders) are in use",
       .hint = "raise max_wal_senders",
       .run = Run::kLogs, .log = "exceeds max_wal_senders"},
      // ---- The role.
      {.name = "RoleWithoutReplication",
       .make = [](Scene& s) { s.Role("NOREPLICATION", true); },
       .status = "fail", .check = "privileges", .message = "lacks REPLICATION",
       .hint = "REPLICATION",
       .run = Run::kExits, .exit_code = 1, .log = "give it the REPLICATION attribute"},
      {.name = "RoleWithoutSelect",
       .make = [](Scene& s) {
         s.Role("REPLICATION", false);
         // SELECT is what the initial snapshot (and replay) reads with.
         s.config = ReplaceOnce(s.config, "create_slot = true", "create_slot = true\nsnapshot = \"initial\"");
         const std::string dir = fmt::format("/tmp/{}", UniqueName("cat_state"));
         s.run_args = {"--state-dir", dir};
         s.undo.push_back([dir] { RunShell("rm -rf " + dir); });
       },
       .status = "fail", .check = "privileges", .message = "may not SELECT public.",
       .hint = "GRANT SELECT ON public.",
       .run = Run::kExits, .exit_code = 1, .log = "outboxd's role needs SELECT on the outbox table to read it"},
      // ---- Topics.
      {.name = "TopicTemplateRendersInvalidNames",
       .make = [](Scene& s) { s.Insert("Order"); s.Insert("bad type!"); },
       .status = "fail", .check = "topic",
       .message = "renders no valid topic name for 1 of the 2 distinct value(s) present (aggregate_type 'bad "
                  "type!'): their events are dead-lettered (invalid_topic)",
       .hint = "Kafka topic names are 1 to 249 characters",
       .run = Run::kLogs, .log = "error topic: "},
      {.name = "BrokerDoesNotCreateTheTopicsTheRowsRouteTo",
       .server = Server::kStrictKafka,
       .make = [](Scene& s) { s.Insert("Order"); },
       .status = "fail", .check = "topic",
       .message = "1 of them do not exist, and the brokers do not auto-create topics",
       .hint = "create them before starting outboxd",
       .run = Run::kLogs, .log = "the brokers do not auto-create topics"},
      // ---- Table-less events.
      {.name = "MessagesWhilePublicMayEmit",
       .make = [](Scene& s) {
         s.config = ReplaceOnce(s.config, "[messages]\nenabled = false", "[messages]\nenabled = true");
       },
       .status = "fail", .check = "messages", .message = "[messages] is enabled and PUBLIC may execute",
       .hint = "sql/messages.sql",
       .run = Run::kLogs, .log = "error messages: [messages] is enabled and PUBLIC may execute"},
      // ---- Exactly-once.
      {.name = "ExactlyOnceWithABrokerWithoutTransactions",
       .server = Server::kStrictKafka,
       .make = [](Scene& s) {
         s.config = ReplaceOnce(s.config, "[sink.kafka]", "[sink]\ndelivery = \"exactly_once\"\n\n[sink.kafka]");
       },
       .status = "fail", .check = "delivery",
       .message = "the brokers cannot run transactions: transaction.state.log.replication.factor = 3",
       .hint = "delivery = \"at_least_once\"",
       .run = Run::kLogs, .log = "error delivery: the brokers cannot run transactions"},
      // ---- The schema registry.
      {.name = "RegistrySubjectWithAnIncompatibleSchema",
       .make = [](Scene& s) {
         s.registry = std::make_unique<IncompatibleRegistry>();
         s.config = ReplaceOnce(s.config, fmt::format("topic = \"{}.{{aggregate_type}}\"", s.source.topic_prefix),
                                fmt::format("topic = \"{}.fixed\"", s.source.topic_prefix));
         s.config += fmt::format("\n[schema_registry]\nurl = \"{}\"\n", s.registry->url());
       },
       .status = "fail", .check = "registry",
       .message = "the registry would refuse outbox.v1.Envelope under compatibility BACKWARD",
       .hint = "topic_record_name",
       .run = Run::kExits, .exit_code = 1, .log = "-value/versions: HTTP 409, error_code 409: Schema being registered "
                                                  "is incompatible with an earlier schema"},
  };
  return *rows;
}

// The finding of `check --json` output that matches, or null.
const nlohmann::json* FindFinding(const nlohmann::json& doc, const Mistake& m) {
  for (const nlohmann::json& f : doc["checks"]) {
    if (f.value("status", "") == m.status && f.value("name", "") == m.check &&
        f.value("message", "").find(m.message) != std::string::npos) {
      return &f;
    }
  }
  return nullptr;
}

class CatalogueTest : public ::testing::TestWithParam<Mistake> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "run deploy/local/stack.sh up";
    const Mistake& m = GetParam();
    const std::map<std::string, std::string> env = CatalogueEnv();
    scene_.pg_port = PgPort();
    scene_.kafka = KafkaBootstrap();
    if (m.server != Server::kLocal) {
      ASSERT_FALSE(env.empty()) << "start tests/integration/catalogue_stack.sh up (the ctest fixture does)";
    }
    if (m.server == Server::kReplica) scene_.pg_port = env.at("REPLICA_PG_PORT");
    if (m.server == Server::kSmall) scene_.pg_port = env.at("SMALL_PG_PORT");
    if (m.server == Server::kStrictKafka) scene_.kafka = env.at("STRICT_KAFKA");
    scene_.sql = std::make_unique<Sql>(scene_.Dsn());
    scene_.source = CreateDefaultSource(*scene_.sql, "cat");
    scene_.config = ReplaceOnce(ReplaceOnce(ConfigFor(scene_.source), PgDsn(), scene_.Dsn()),
                                fmt::format("\"bootstrap.servers\" = \"{}\"", KafkaBootstrap()),
                                fmt::format("\"bootstrap.servers\" = \"{}\"", scene_.kafka));
    m.make(scene_);
  }
  void TearDown() override {
    process_.reset();
    for (auto it = scene_.undo.rbegin(); it != scene_.undo.rend(); ++it) (*it)();
    if (scene_.sql != nullptr) DropSource(*scene_.sql, scene_.source);
  }

  Scene scene_;
  std::unique_ptr<OutboxdProcess> process_;
};

TEST_P(CatalogueTest, CheckReportsItAndRunSaysIt) {
  const Mistake& m = GetParam();
  // check: the finding, with what to do, and the exit code that gates a deployment.
  const std::string path = fmt::format("/tmp/{}.toml", UniqueName("catalogue"));
  std::ofstream(path) << scene_.config;
  const CommandResult check = RunOutboxd(fmt::format("check --config {} --json 2>/dev/null", path));
  const CommandResult text = RunOutboxd(fmt::format("check --config {}", path));
  std::remove(path.c_str());
  const nlohmann::json doc = nlohmann::json::parse(check.output, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(doc.is_object()) << check.output;
  const nlohmann::json* finding = FindFinding(doc, m);
  ASSERT_NE(finding, nullptr) << "no " << m.status << " '" << m.check << "' finding saying \"" << m.message
                              << "\":\n" << text.output;
  EXPECT_THAT(finding->value("hint", ""), HasSubstr(m.hint)) << text.output;
  EXPECT_EQ(check.code, m.status == "fail" ? 1 : 0) << text.output;
  EXPECT_EQ(text.code, check.code);
  EXPECT_EQ(doc["summary"]["fail"].get<int>() > 0, check.code == 1);
  std::cout << "[ check ] " << m.name << "\n" << text.output;

  // run: refuses or logs it, before any row is dead-lettered or the stream stalls.
  process_ = std::make_unique<OutboxdProcess>(scene_.config);
  process_->set_extra_args(scene_.run_args);
  process_->Start();
  if (m.run == Run::kExits) {
    const std::optional<int> code = process_->WaitExit(absl::Seconds(60));
    ASSERT_TRUE(code.has_value()) << "still running:\n" << process_->Log();
    EXPECT_EQ(*code, m.exit_code) << process_->Log();
    EXPECT_THAT(process_->Log(), HasSubstr(m.log));
  } else {
    EXPECT_TRUE(process_->WaitForLog(m.log, absl::Seconds(60))) << process_->Log();
    EXPECT_TRUE(process_->running()) << process_->Log();
    EXPECT_EQ(process_->Stop(SIGTERM, absl::Seconds(30)), 0) << process_->Log();
  }
  std::istringstream log(process_->Log());
  for (std::string line; std::getline(log, line);) {
    if (line.find(m.log) != std::string::npos) {
      std::cout << "[ run ] " << m.name << ": " << line << "\n";
      break;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Mistakes, CatalogueTest, ::testing::ValuesIn(Catalogue()),
                         [](const ::testing::TestParamInfo<Mistake>& info) { return info.param.name; });

// Finding 2 of issue 24, where the server tracks commit times (the small
// server does): replay --since selects a Debezium table's rows by the commit
// time of the transaction that inserted them.
TEST(DebeziumReplayTest, SinceSelectsByCommitTimeWhereTrackCommitTimestampIsOn) {
  const std::map<std::string, std::string> env = CatalogueEnv();
  ASSERT_FALSE(env.empty()) << "start tests/integration/catalogue_stack.sh up (the ctest fixture does)";
  const std::string dsn = DsnOnPort(env.at("SMALL_PG_PORT"));
  Sql sql(dsn);
  ASSERT_EQ(sql.Scalar("SHOW track_commit_timestamp"), "on");
  const std::string table = UniqueName("dbz_commit_time");
  sql.Exec(fmt::format("CREATE TABLE public.{} (id uuid PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text "
                       "NOT NULL, type text NOT NULL, payload jsonb)",
                       table));
  sql.Exec(fmt::format("INSERT INTO public.{} VALUES (gen_random_uuid(), 'Customer', 'c-1', 'Created', '{{}}')", table));
  const std::string between = sql.Scalar("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                         "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
  for (int i = 2; i <= 4; ++i) {
    sql.Exec(fmt::format("INSERT INTO public.{} VALUES (gen_random_uuid(), 'Customer', 'c-{}', 'Created', '{{}}')",
                         table, i));
  }
  const std::string config_path = fmt::format("/tmp/{}.toml", UniqueName("replay_commit"));
  std::ofstream(config_path) << fmt::format(R"([source]
dsn = "{}"
[sink.kafka]
"bootstrap.servers" = "{}"
[[outbox]]
table = "public.{}"
[outbox.columns]
aggregate_type = "aggregatetype"
aggregate_id = "aggregateid"
event_type = "type"
[http]
listen = "off"
)",
                                            dsn, KafkaBootstrap(), table);
  const CommandResult r =
      RunOutboxd(fmt::format("replay --config {} --table {} --since {} --dry-run", config_path, table, between));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(fmt::format("dry run: 3 row(s) of public.{} with commit time >= ", table)));
  std::remove(config_path.c_str());
  sql.Exec(fmt::format("DROP TABLE public.{}", table));
}

}  // namespace
}  // namespace outboxd::it
