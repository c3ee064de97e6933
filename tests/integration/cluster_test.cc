// One outboxd per cluster, the parts that land before the stream supervisor:
// discovery of the databases to stream, `check` with one block per database
// (and --json), and `replay --database`, against the real local PostgreSQL
// and Kafka (deploy/local/stack.sh up).
#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/discovery.h"
#include "config/config.h"
#include "config/streams.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "nlohmann/json.hpp"

namespace outboxd::it {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string DsnOf(const std::string& database) {
  return fmt::format("host=127.0.0.1 port={} dbname={} user=postgres", PgPort(), database);
}

// A connection to another database of the local cluster; ADD_FAILURE on errors.
class Db {
 public:
  explicit Db(const std::string& database) {
    auto conn = replication::PgConnection::Connect(DsnOf(database), false);
    EXPECT_TRUE(conn.ok()) << conn.status();
    if (conn.ok()) conn_ = std::move(*conn);
  }
  void Exec(const std::string& sql) {
    if (conn_ == nullptr) return;
    auto rows = conn_->Query(sql);
    EXPECT_TRUE(rows.ok()) << sql << ": " << rows.status();
  }

 private:
  std::unique_ptr<replication::PgConnection> conn_;
};

constexpr char kOutboxTable[] =
    "CREATE TABLE public.outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text NOT NULL, "
    "aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb, destination "
    "text, created_at timestamptz NOT NULL DEFAULT now())";

// Three databases of one cluster: `with_pub` and `blocked` have the outbox
// table and the publication, `without_pub` the table only; `blocked` does not
// allow connections (datallowconn false).
class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "run deploy/local/stack.sh up";
    publication_ = UniqueName("cl_pub");
    for (const std::string* db : {&with_pub_, &without_pub_, &blocked_}) {
      sql_.Exec(fmt::format("CREATE DATABASE {}", *db));
      Db conn(*db);
      conn.Exec(kOutboxTable);
      if (db != &without_pub_) {
        conn.Exec(fmt::format("CREATE PUBLICATION {} FOR TABLE public.outbox WITH (publish = 'insert')",
                              publication_));
      }
    }
    sql_.Exec(fmt::format("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", blocked_));
  }
  void TearDown() override {
    for (const std::string& db : {with_pub_, without_pub_, blocked_}) {
      sql_.Exec(fmt::format("DROP DATABASE IF EXISTS {} WITH (FORCE)", db));
    }
  }

  // A cluster config: DSN on the app database, `databases` as given.
  std::string Config(const std::string& databases, const std::string& extra_outbox = "") const {
    return fmt::format(R"([source]
dsn = "{}"
databases = {}
slot = "{}_{{database}}"
publication = "{}"

[sink.kafka]
"bootstrap.servers" = "{}"

[[outbox]]
table = "public.outbox"
topic = "{}.{{database}}.{{aggregate_type}}"
{}
[http]
listen = "off"
)",
                       PgDsn(), databases, UniqueName("cl_slot"), publication_, KafkaBootstrap(), topic_prefix_,
                       extra_outbox);
  }

  config::Config Parsed(const std::string& toml) const {
    auto config = config::ParseConfig(toml, [](std::string_view) -> std::optional<std::string> { return {}; });
    EXPECT_TRUE(config.ok()) << config.status();
    return config.ok() ? *config : config::Config();
  }

  CommandResult Outboxd(const std::string& args, const std::string& toml) {
    const std::string path = fmt::format("/tmp/{}.toml", UniqueName("cluster"));
    std::ofstream(path) << toml;
    CommandResult result = RunOutboxd(fmt::format("{} --config {}", args, path));
    std::remove(path.c_str());
    return result;
  }

  Sql sql_;
  std::string publication_;
  const std::string with_pub_ = UniqueName("cl_orders");
  const std::string without_pub_ = UniqueName("cl_reports");
  const std::string blocked_ = UniqueName("cl_closed");
  const std::string topic_prefix_ = UniqueName("it.cluster");
};

// Discovery connects to each database that allows connections and sees its
// publications; "*" then streams only the one that has the publication.
TEST_F(ClusterTest, DiscoveryFindsTheDatabasesWithThePublication) {
  const config::Config config = Parsed(Config("\"*\""));
  absl::StatusOr<cluster::Discovery> found = cluster::DiscoverDatabases(config, {});
  ASSERT_TRUE(found.ok()) << found.status();
  std::map<std::string, std::vector<std::string>> by_name;
  for (const config::DiscoveredDatabase& db : found->databases) by_name[db.name] = db.publications;
  ASSERT_TRUE(by_name.contains(with_pub_));
  EXPECT_EQ(by_name[with_pub_], std::vector<std::string>{publication_});
  ASSERT_TRUE(by_name.contains(without_pub_));
  EXPECT_TRUE(by_name[without_pub_].empty());
  EXPECT_FALSE(by_name.contains(blocked_)) << "datallowconn = false";
  EXPECT_FALSE(by_name.contains("template1"));
  EXPECT_TRUE(found->unreachable.empty());

  absl::StatusOr<config::StreamPlan> plan = config::PlanStreams(config, found->databases, "/tmp/state");
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->streams.size(), 1u) << "only the database with the publication (others of the shared server "
                                         "lack this test's publication)";
  EXPECT_EQ(plan->streams[0].database, with_pub_);
  EXPECT_EQ(plan->streams[0].slot, config.source.slot_template.substr(0, config.source.slot_template.find('{')) +
                                       with_pub_);
  EXPECT_THAT(plan->streams[0].dsn, HasSubstr("dbname='" + with_pub_ + "'"));
  EXPECT_EQ(plan->streams[0].tables[0].topic, topic_prefix_ + "." + with_pub_ + ".{aggregate_type}");

  // A stop ends discovery at once.
  int stop[2];
  ASSERT_EQ(pipe(stop), 0);
  ASSERT_EQ(write(stop[1], "s", 1), 1);
  absl::StatusOr<cluster::Discovery> stopped = cluster::DiscoverDatabases(config, {.stop_fd = stop[0]});
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled) << stopped.status();
  close(stop[0]);
  close(stop[1]);
}

// check: the server once, then one block per database; a listed database
// without the publication, or that refuses connections, FAILs in its block.
TEST_F(ClusterTest, CheckPrintsOneBlockPerDatabase) {
  const std::string toml = Config(fmt::format("[\"{}\", \"{}\", \"{}\"]", with_pub_, without_pub_, blocked_));
  const CommandResult r = Outboxd("check", toml);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("== cluster (discovery on database \"app\")\nok    connect"));
  EXPECT_THAT(r.output, HasSubstr(fmt::format("ok    databases    3 database(s) listed: {}, {}, {}", with_pub_,
                                              without_pub_, blocked_)));
  const size_t orders = r.output.find(fmt::format("== database \"{}\" (slot ", with_pub_));
  const size_t reports = r.output.find(fmt::format("== database \"{}\"\n", without_pub_));
  const size_t closed = r.output.find(fmt::format("== database \"{}\"\n", blocked_));
  const size_t kafka = r.output.find("== Kafka\nok    kafka");
  ASSERT_NE(orders, std::string::npos) << r.output;
  ASSERT_NE(reports, std::string::npos) << r.output;
  ASSERT_NE(closed, std::string::npos) << r.output;
  ASSERT_NE(kafka, std::string::npos) << r.output;
  const std::string orders_block = r.output.substr(orders, r.output.find("\n== ", orders + 1) - orders);
  EXPECT_THAT(orders_block, HasSubstr(fmt::format("ok    connect      host=127.0.0.1 port={} dbname={}", PgPort(),
                                                  with_pub_)));
  EXPECT_THAT(orders_block, HasSubstr("ok    privileges   role postgres may SELECT the 1 outbox table(s)"));
  EXPECT_THAT(orders_block, HasSubstr(fmt::format("ok    publication  '{}' publishes inserts of all 1 outbox table(s)",
                                                  publication_)));
  EXPECT_THAT(orders_block, HasSubstr("ok    slot         "));
  EXPECT_THAT(orders_block, Not(HasSubstr("FAIL")));
  const std::string reports_block = r.output.substr(reports, r.output.find("\n== ", reports + 1) - reports);
  EXPECT_THAT(reports_block, HasSubstr(fmt::format("FAIL  publication  database \"{}\" has no publication \"{}\"",
                                                   without_pub_, publication_)));
  const std::string closed_block = r.output.substr(closed, r.output.find("\n== ", closed + 1) - closed);
  EXPECT_THAT(closed_block, HasSubstr("FAIL  databases    database \"" + blocked_ +
                                      "\" (in [source] databases) does not exist or does not allow connections"));
  // Server-wide checks are not repeated per database.
  EXPECT_EQ(r.output.find("wal_level"), r.output.rfind("wal_level"));
}

TEST_F(ClusterTest, CheckJsonHasOneObjectPerCheckWithItsDatabase) {
  const std::string toml = Config(fmt::format("[\"{}\", \"{}\"]", with_pub_, without_pub_));
  const CommandResult r = Outboxd("check --json", toml);
  EXPECT_EQ(r.code, 1) << r.output;
  // stderr (merged here) carries no log lines for check: the output is the document.
  const nlohmann::json doc = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.output;
  int fails = 0, of_orders = 0;
  bool reports_publication_fail = false, kafka_without_database = false;
  for (const nlohmann::json& check : doc["checks"]) {
    ASSERT_TRUE(check.contains("name") && check.contains("status") && check.contains("message") &&
                check.contains("hint"))
        << check.dump();
    fails += check["status"] == "fail";
    of_orders += check.value("database", "") == with_pub_;
    if (check.value("database", "") == without_pub_ && check["name"] == "publication" && check["status"] == "fail") {
      reports_publication_fail = true;
      EXPECT_THAT(check["message"].get<std::string>(), HasSubstr("has no publication"));
    }
    if (check["name"] == "kafka") kafka_without_database = !check.contains("database");
  }
  EXPECT_GE(of_orders, 4) << "connect, privileges, publication, slot";
  EXPECT_TRUE(reports_publication_fail) << r.output;
  EXPECT_TRUE(kafka_without_database) << r.output;
  EXPECT_EQ(doc["summary"]["fail"], fails);
}

// replay --database reads that database's outbox and fills {database} in the
// topic; without it, a config of several databases is refused.
TEST_F(ClusterTest, ReplayReadsTheChosenDatabase) {
  Db orders(with_pub_);
  orders.Exec("INSERT INTO public.outbox (aggregate_type, aggregate_id, event_type, payload) "
              "SELECT 'Order', g::text, 'OrderCreated', '{}' FROM generate_series(1, 3) g");
  const std::string toml = Config(fmt::format("[\"{}\", \"{}\"]", with_pub_, without_pub_));
  const CommandResult refused = Outboxd("replay --table public.outbox --since 2000-01-01T00:00:00Z", toml);
  EXPECT_EQ(refused.code, 2) << refused.output;
  EXPECT_THAT(refused.output, HasSubstr("say which one to replay from with --database NAME"));

  const CommandResult r = Outboxd(
      fmt::format("replay --database {} --table public.outbox --since 2000-01-01T00:00:00Z", with_pub_), toml);
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string topic = topic_prefix_ + "." + with_pub_ + ".Order";
  const std::vector<Record> records = ReadTopics({topic}, 3, absl::Seconds(30));
  EXPECT_EQ(records.size(), 3u) << r.output;

  // The other database's outbox is empty: nothing to replay there.
  const CommandResult empty = Outboxd(
      fmt::format("replay --database {} --table public.outbox --since 2000-01-01T00:00:00Z --dry-run", without_pub_),
      toml);
  EXPECT_EQ(empty.code, 0) << empty.output;
  EXPECT_THAT(empty.output, HasSubstr("0 row"));
}

}  // namespace
}  // namespace outboxd::it
