// [source] databases, discovery_interval, slot templates, max_active_slots,
// publication lists, [[outbox]] database/publication: every key and every
// refusal of a config that serves several databases or publications.
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

EnvLookup NoEnv() {
  return [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
}

// A config with `source` as the body of [source] (after dsn) and one
// [[outbox]] per entry of `outbox` (each the body of that entry).
std::string File(std::string_view source, std::string_view outbox = "table = \"public.outbox\"\n") {
  return "[source]\ndsn = \"host=db dbname=postgres user=outboxd\"\n" + std::string(source) +
         "[sink.kafka]\n\"bootstrap.servers\" = \"k:9092\"\n[[outbox]]\n" + std::string(outbox);
}

absl::StatusOr<Config> Parse(const std::string& text) { return ParseConfig(text, NoEnv()); }

std::string ErrorOf(const std::string& text) {
  absl::StatusOr<Config> config = Parse(text);
  EXPECT_FALSE(config.ok()) << text;
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(config.status().message());
}

TEST(ClusterConfigTest, NoDatabasesKeyIsOneStreamAsBefore) {
  absl::StatusOr<Config> config = Parse(File(""));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.selection, DatabaseSelection::kDsn);
  EXPECT_TRUE(config->source.databases.empty());
  EXPECT_EQ(config->source.slot, "outboxd");
  EXPECT_EQ(config->source.slot_template, "outboxd");
  EXPECT_THAT(config->source.publications, ElementsAre("outboxd"));
  EXPECT_EQ(config->source.max_active_slots, 0);
  EXPECT_EQ(config->source.discovery_interval, absl::Seconds(30));
  EXPECT_FALSE(config->MultiStream());
}

TEST(ClusterConfigTest, DatabaseListAndStar) {
  absl::StatusOr<Config> list =
      Parse(File("databases = [\"orders\", \"billing\"]\nslot = \"outboxd_{database}\"\nmax_active_slots = 2\n"));
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->source.selection, DatabaseSelection::kList);
  EXPECT_THAT(list->source.databases, ElementsAre("orders", "billing"));
  EXPECT_EQ(list->source.slot_template, "outboxd_{database}");
  EXPECT_EQ(list->source.slot, "") << "one per stream";
  EXPECT_EQ(list->source.max_active_slots, 2);
  EXPECT_TRUE(list->MultiStream());

  absl::StatusOr<Config> all =
      Parse(File("databases = \"*\"\ndiscovery_interval = \"5m\"\nslot = \"outboxd_{database}\"\n"));
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->source.selection, DatabaseSelection::kAll);
  EXPECT_EQ(all->source.discovery_interval, absl::Minutes(5));
}

// One listed database needs no template: there is one slot.
TEST(ClusterConfigTest, OneListedDatabaseMayKeepAFixedSlot) {
  absl::StatusOr<Config> config = Parse(File("databases = [\"orders\"]\nslot = \"relay\"\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->MultiStream());
}

TEST(ClusterConfigTest, DatabasesRefusals) {
  EXPECT_EQ(ErrorOf(File("databases = \"orders\"\n")),
            "config: line 3: source.databases = \"orders\": a single string must be \"*\"; write databases = "
            "[\"orders\", \"billing\"] (those databases) or databases = \"*\" (every database that allows "
            "connections and has the publication)");
  EXPECT_THAT(ErrorOf(File("databases = []\n")), HasSubstr("line 3: source.databases is an empty list"));
  EXPECT_THAT(ErrorOf(File("databases = 3\n")), HasSubstr("line 3: source.databases is an integer; write"));
  EXPECT_THAT(ErrorOf(File("databases = [\"a\", 3]\n")),
              HasSubstr("source.databases #2 is an integer: every entry is a database name in quotes"));
  EXPECT_THAT(ErrorOf(File("databases = [\"*\"]\n")), HasSubstr("source.databases #1 is \"*\" inside a list"));
  EXPECT_THAT(ErrorOf(File("databases = [\"a\", \"a\"]\nslot = \"s_{database}\"\n")),
              HasSubstr("source.databases #2 = \"a\" is listed twice"));
  EXPECT_THAT(ErrorOf(File("databases = [\"" + std::string(64, 'd') + "\"]\n")),
              HasSubstr("a database name is 1 to 63 bytes"));
  EXPECT_THAT(ErrorOf(File("databases = [\"\"]\n")), HasSubstr("a database name is 1 to 63 bytes"));
}

TEST(ClusterConfigTest, SeveralDatabasesNeedDatabaseInTheSlot) {
  EXPECT_EQ(ErrorOf(File("databases = [\"orders\", \"billing\"]\nslot = \"outboxd\"\n")),
            "config: line 4: source.slot = \"outboxd\" is one name, but source.databases gives several databases "
            "and a replication slot belongs to one: put {database} in it, e.g. slot = \"outboxd_{database}\" (slot "
            "names are cluster-wide)");
  // The default slot name too, and "*" always.
  EXPECT_THAT(ErrorOf(File("databases = \"*\"\n")), HasSubstr("line 3: source.slot = \"outboxd\" is one name"));
}

TEST(ClusterConfigTest, SlotTemplateRefusals) {
  EXPECT_THAT(ErrorOf(File("slot = \"outboxd_{db}\"\n")), HasSubstr("source.slot = \"outboxd_{db}\": a replication "
                                                                     "slot name is 1 to 63 lower-case"));
  // Too long once filled in: known now for a list (with "*", PlanStreams refuses that database).
  EXPECT_THAT(ErrorOf(File("databases = [\"orders\", \"billing\"]\nslot = \"" + std::string(58, 's') +
                           "{database}\"\n")),
              HasSubstr("source.slot: slot template"));
  // Two listed databases that the template cannot tell apart.
  EXPECT_EQ(ErrorOf(File("databases = [\"Orders\", \"orders\"]\nslot = \"s_{database}\"\n")),
            "config: line 4: source.slot = \"s_{database}\" gives the slot \"s_orders\" to both database \"Orders\" "
            "publication \"outboxd\" and database \"orders\" publication \"outboxd\"; a slot serves one stream: "
            "change the template or the names ({database} is lower-cased, other characters than a-z, 0-9 and _ "
            "become _)");
  // Filled in at once without `databases`, from the DSN's dbname.
  absl::StatusOr<Config> config = Parse(File("slot = \"outboxd_{database}_{publication}\"\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source.slot, "outboxd_postgres_outboxd");
  EXPECT_EQ(config->source.slot_template, "outboxd_{database}_{publication}");
}

TEST(ClusterConfigTest, DiscoveryIntervalOnlyWithStar) {
  EXPECT_EQ(ErrorOf(File("discovery_interval = \"10s\"\n")),
            "config: line 3: source.discovery_interval applies to databases = \"*\" only (outboxd lists the "
            "databases again that often); remove it, or set databases = \"*\"");
  EXPECT_THAT(ErrorOf(File("databases = \"*\"\nslot = \"s_{database}\"\ndiscovery_interval = \"100ms\"\n")),
              HasSubstr("source.discovery_interval"));
}

TEST(ClusterConfigTest, MaxActiveSlotsRange) {
  for (std::string_view bad : {"-1", "\"2\"", "10001", "1.5"}) {
    EXPECT_THAT(ErrorOf(File("max_active_slots = " + std::string(bad) + "\n")),
                HasSubstr("line 3: source.max_active_slots must be an integer from 0 (no cap) to 10000"))
        << bad;
  }
}

TEST(ClusterConfigTest, PublicationList) {
  absl::StatusOr<Config> config =
      Parse(File("publication = [\"outboxd_0\", \"outboxd_1\"]\nslot = \"outboxd_{publication}\"\n",
                 "table = \"public.outbox_0\"\npublication = \"outboxd_0\"\n[[outbox]]\ntable = "
                 "\"public.outbox_1\"\npublication = \"outboxd_1\"\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->source.publications, ElementsAre("outboxd_0", "outboxd_1"));
  EXPECT_EQ(config->source.publication, "outboxd_0");
  EXPECT_EQ(config->outbox[1].publication, "outboxd_1");
  EXPECT_TRUE(config->MultiStream());

  EXPECT_EQ(ErrorOf(File("publication = [\"a\", \"b\"]\n")),
            "config: line 3: source.slot = \"outboxd\" is one name, but source.publication lists 2 publications, "
            "each streamed through its own slot: put {publication} in it, e.g. slot = \"outboxd_{publication}\"");
  EXPECT_THAT(ErrorOf(File("publication = []\n")), HasSubstr("source.publication is an empty list"));
  EXPECT_THAT(ErrorOf(File("publication = [\"a\", \"a\"]\n")), HasSubstr("#2 = \"a\" is listed twice"));
  EXPECT_THAT(ErrorOf(File("publication = [\"a\", \"B\"]\nslot = \"s_{publication}\"\n")),
              HasSubstr("source.publication #2 = \"B\": use 1 to 63 lower-case"));
}

TEST(ClusterConfigTest, OutboxDatabaseAndPublication) {
  absl::StatusOr<Config> config = Parse(File(
      "databases = [\"orders\", \"billing\"]\nslot = \"s_{database}\"\n",
      "table = \"public.outbox\"\ndatabase = \"orders\"\ntopic = \"orders.{aggregate_type}\"\n[[outbox]]\n"
      "table = \"public.outbox\"\ndatabase = \"billing\"\ntopic = \"billing.{database}\"\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->outbox[0].database, "orders");
  EXPECT_EQ(config->outbox[1].database, "billing");
  EXPECT_EQ(config->outbox[1].topic, "billing.{database}");

  // An entry for a database that is not streamed.
  EXPECT_THAT(ErrorOf(File("databases = [\"orders\", \"billing\"]\nslot = \"s_{database}\"\n",
                           "table = \"outbox\"\ndatabase = \"shipping\"\n[[outbox]]\ntable = \"x\"\n")),
              HasSubstr("[[outbox]] #1 database = \"shipping\" is not in [source] databases"));
  EXPECT_THAT(ErrorOf(File("", "table = \"outbox\"\ndatabase = \"orders\"\n")),
              HasSubstr("[[outbox]] #1 database = \"orders\", but without [source] databases outboxd streams the "
                        "DSN's database \"postgres\" only"));
  EXPECT_TRUE(Parse(File("", "table = \"outbox\"\ndatabase = \"postgres\"\n")).ok());
  EXPECT_TRUE(Parse(File("databases = \"*\"\nslot = \"s_{database}\"\n", "table = \"outbox\"\ndatabase = \"any\"\n")).ok());
  EXPECT_THAT(ErrorOf(File("", "table = \"outbox\"\npublication = \"other\"\n")),
              HasSubstr("[[outbox]] #1 publication = \"other\" is not one of [source] publication (outboxd)"));
  EXPECT_THAT(ErrorOf(File("", "table = \"outbox\"\ndatabase = \"\"\n")),
              HasSubstr("[[outbox]] #1 database must not be empty"));
  // A listed database that nothing applies to.
  EXPECT_EQ(ErrorOf(File("databases = [\"orders\", \"billing\"]\nslot = \"s_{database}\"\n",
                         "table = \"outbox\"\ndatabase = \"orders\"\n")),
            "config: line 3: [source] databases lists \"billing\", but no [[outbox]] entry applies to it and "
            "[messages] is off: its slot would publish nothing; add an [[outbox]] entry with database = \"billing\" "
            "(or one without database)");
}

TEST(ClusterConfigTest, OneTablePerStream) {
  // An unscoped entry applies everywhere: a second entry for the table collides.
  EXPECT_THAT(ErrorOf(File("databases = [\"orders\", \"billing\"]\nslot = \"s_{database}\"\n",
                           "table = \"outbox\"\n[[outbox]]\ntable = \"outbox\"\ndatabase = \"orders\"\n")),
              HasSubstr("[[outbox]] #2 table = \"public.outbox\" is already configured by [[outbox]] #1; list each "
                        "table once per database and publication"));
}

TEST(ClusterConfigTest, DsnDbnameThatIsAConnectionStringIsRefused) {
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"dbname='host=x dbname=y'\"\ndatabases = \"*\"\nslot = \"s_{database}\"\n"
                      "[sink.kafka]\n\"bootstrap.servers\" = \"k:9092\"\n[[outbox]]\ntable = \"outbox\"\n"),
              HasSubstr("its dbname is itself a connection string"));
}

TEST(ClusterConfigTest, FixedTransactionalIdNeedsOneStream) {
  const std::string sink = "[sink]\ndelivery = \"exactly_once\"\ntransactional_id = \"relay\"\n";
  EXPECT_THAT(ErrorOf(File("databases = \"*\"\nslot = \"s_{database}\"\n") + sink),
              HasSubstr("sink.transactional_id is one id, but this config can give several streams"));
  EXPECT_TRUE(Parse(File("") + sink).ok());
}

// Without `databases` the database is known when the file is read: {database}
// in a topic is filled in at once, so the topic stays fixed.
TEST(ClusterConfigTest, SingleStreamFillsDatabaseInTopics) {
  absl::StatusOr<Config> config = Parse(File("", "table = \"outbox\"\ntopic = \"{database}.{aggregate_type}\"\n"
                                                 "[messages]\nenabled = true\ntopic = \"{database}.messages\"\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->outbox[0].topic, "postgres.{aggregate_type}");
  EXPECT_EQ(config->messages.topic, "postgres.messages");
  // A database name that cannot be in a topic name.
  EXPECT_THAT(ErrorOf("[source]\ndsn = \"host=db dbname='my db'\"\n[sink.kafka]\n\"bootstrap.servers\" = \"k:9092\"\n"
                      "[[outbox]]\ntable = \"outbox\"\ntopic = \"{database}.events\"\n"),
              HasSubstr("line 7: [[outbox]] #1 topic = \"{database}.events\" with {database} = \"my db\" (the DSN's "
                        "database): topic template"));
  // With `databases`, each stream fills it in (config::StreamConfig).
  absl::StatusOr<Config> cluster = Parse(File("databases = \"*\"\nslot = \"s_{database}\"\n",
                                              "table = \"outbox\"\ntopic = \"{database}.events\"\n"));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_EQ(cluster->outbox[0].topic, "{database}.events");
}

TEST(DsnTest, WithDatabaseReplacesOrAddsDbnameThroughLibpq) {
  EXPECT_EQ(*DsnWithDatabase("host=db port=5432 dbname=app user=o", "orders"),
            "user='o' dbname='orders' host='db' port='5432'")
      << "libpq's keyword order";
  EXPECT_EQ(*DsnWithDatabase("host=db user=o", "billing"), "user='o' host='db' dbname='billing'");
  // Quotes and backslashes in values survive; a URI becomes key/value pairs.
  EXPECT_EQ(*DsnWithDatabase("host=db password='it\\'s'", "a b"), "password='it\\'s' host='db' dbname='a b'");
  EXPECT_EQ(*DsnWithDatabase("postgresql://u@db:5433/app?sslmode=require", "orders"),
            "user='u' dbname='orders' host='db' port='5433' sslmode='require'");
  EXPECT_EQ(DsnWithDatabase("host='unterminated", "x").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DsnTest, DsnDatabaseIsTheDbnameOrTheUser) {
  EXPECT_EQ(DsnDatabase("host=db dbname=app user=o"), "app");
  EXPECT_EQ(DsnDatabase("postgresql://o@db/shop"), "shop");
  if (getenv("PGDATABASE") == nullptr) {
    EXPECT_EQ(DsnDatabase("host=db user=relay"), "relay");
  }
}

}  // namespace
}  // namespace outboxd::config
