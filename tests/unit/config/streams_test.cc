// config::PlanStreams: the config and the discovered databases in, the streams
// (database, publication, slot, DSN, tables, state file) out.
#include "config/streams.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

Config Parse(std::string_view source, std::string_view outbox = "[[outbox]]\ntable = \"public.outbox\"\n") {
  const std::string text = "[source]\ndsn = \"host=db port=5432 dbname=postgres user=outboxd\"\n" +
                           std::string(source) + "[sink.kafka]\n\"bootstrap.servers\" = \"k:9092\"\n" +
                           std::string(outbox);
  absl::StatusOr<Config> config =
      ParseConfig(text, [](std::string_view) -> std::optional<std::string> { return std::nullopt; });
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : Config();
}

std::vector<std::string> Slots(const StreamPlan& plan) {
  std::vector<std::string> out;
  for (const StreamSpec& s : plan.streams) out.push_back(s.slot);
  return out;
}

TEST(PlanStreamsTest, WithoutDatabasesTheDsnIsUsedAsItIs) {
  const Config config = Parse("slot = \"relay\"\n");
  absl::StatusOr<StreamPlan> plan = PlanStreams(config, {{"postgres", {"outboxd"}}}, "/var/lib/outboxd");
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_THAT(plan->streams, SizeIs(1));
  const StreamSpec& s = plan->streams[0];
  EXPECT_EQ(s.database, "postgres");
  EXPECT_EQ(s.publication, "outboxd");
  EXPECT_EQ(s.slot, "relay");
  EXPECT_EQ(s.dsn, "host=db port=5432 dbname=postgres user=outboxd") << "unchanged, byte for byte";
  ASSERT_THAT(s.tables, SizeIs(1));
  EXPECT_EQ(s.tables[0].table, "outbox");
  EXPECT_EQ(s.messages_topic, "outbox.event.{aggregate_type}");
  EXPECT_EQ(s.state_file, "/var/lib/outboxd/relay.state");
  EXPECT_THAT(plan->refused, IsEmpty());
  EXPECT_EQ(PlanStreams(config, {{"a", {"outboxd"}}, {"b", {"outboxd"}}}, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  // The DSN's database without the publication: nothing to stream, and said so.
  plan = PlanStreams(config, {{"postgres", {}}}, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->streams, IsEmpty());
  ASSERT_THAT(plan->refused, SizeIs(1));
  EXPECT_THAT(plan->refused[0].reason, HasSubstr("has no publication \"outboxd\""));
}

TEST(PlanStreamsTest, StarStreamsEveryDatabaseWithThePublication) {
  const Config config = Parse("databases = \"*\"\nslot = \"outboxd_{database}\"\n");
  absl::StatusOr<StreamPlan> plan = PlanStreams(
      config, {{"shipping", {"outboxd"}}, {"orders", {"outboxd"}}, {"reports", {}}, {"billing", {"outboxd"}}}, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Slots(*plan), ElementsAre("outboxd_billing", "outboxd_orders", "outboxd_shipping"));
  EXPECT_EQ(plan->streams[1].dsn, "user='outboxd' dbname='orders' host='db' port='5432'");
  EXPECT_EQ(plan->streams[1].state_file, "") << "no state directory";
  EXPECT_THAT(plan->refused, IsEmpty()) << "a database without the publication is simply not ours";
}

TEST(PlanStreamsTest, ListedDatabasesMissingOrWithoutThePublicationAreRefused) {
  const Config config = Parse("databases = [\"orders\", \"billing\", \"gone\"]\nslot = \"outboxd_{database}\"\n");
  absl::StatusOr<StreamPlan> plan = PlanStreams(config, {{"orders", {"outboxd"}}, {"billing", {}}, {"other", {"outboxd"}}}, "/s");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Slots(*plan), ElementsAre("outboxd_orders"));
  ASSERT_THAT(plan->refused, SizeIs(2));
  EXPECT_EQ(plan->refused[0].database, "gone");
  EXPECT_THAT(plan->refused[0].reason, HasSubstr("does not exist or does not allow connections"));
  EXPECT_EQ(plan->refused[1].database, "billing");
  EXPECT_EQ(plan->refused[1].publication, "outboxd");
  EXPECT_THAT(plan->refused[1].reason, HasSubstr("has no publication \"outboxd\""));
}

// Found by "*": names the slot template cannot tell apart. Neither is
// streamed: which one would win could change from one discovery to the next.
TEST(PlanStreamsTest, CollidingSlotNamesAreAllRefused) {
  const Config config = Parse("databases = \"*\"\nslot = \"outboxd_{database}\"\n");
  absl::StatusOr<StreamPlan> plan =
      PlanStreams(config, {{"Billing-EU", {"outboxd"}}, {"billing_eu", {"outboxd"}}, {"orders", {"outboxd"}}}, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Slots(*plan), ElementsAre("outboxd_orders"));
  ASSERT_THAT(plan->refused, SizeIs(2));
  EXPECT_THAT(plan->refused[0].reason, HasSubstr("gives database \"Billing-EU\" the slot \"outboxd_billing_eu\", "
                                                 "which billing_eu would get too"));
}

TEST(PlanStreamsTest, OverlongSlotIsRefusedForThatDatabaseOnly) {
  const Config config = Parse("databases = \"*\"\nslot = \"outboxd_relay_{database}\"\n");
  absl::StatusOr<StreamPlan> plan =
      PlanStreams(config, {{std::string(60, 'x'), {"outboxd"}}, {"orders", {"outboxd"}}}, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Slots(*plan), ElementsAre("outboxd_relay_orders"));
  ASSERT_THAT(plan->refused, SizeIs(1));
  EXPECT_THAT(plan->refused[0].reason, HasSubstr("shorten the template"));
}

TEST(PlanStreamsTest, TablesApplyByDatabaseAndTopicsGetTheDatabase) {
  const Config config = Parse(
      "databases = [\"orders\", \"billing\"]\nslot = \"outboxd_{database}\"\n",
      "[[outbox]]\ntable = \"public.outbox\"\ntopic = \"{database}.{aggregate_type}\"\n"
      "[[outbox]]\ntable = \"billing.ledger_outbox\"\ndatabase = \"billing\"\ntopic = \"ledger.{database}\"\n"
      "[messages]\nenabled = true\ntopic = \"msg.{database}\"\n");
  absl::StatusOr<StreamPlan> plan = PlanStreams(config, {{"orders", {"outboxd"}}, {"billing", {"outboxd"}}}, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_THAT(plan->streams, SizeIs(2));
  const StreamSpec& billing = plan->streams[0];
  const StreamSpec& orders = plan->streams[1];
  ASSERT_THAT(billing.tables, SizeIs(2));
  EXPECT_EQ(billing.tables[0].topic, "billing.{aggregate_type}");
  EXPECT_EQ(billing.tables[1].topic, "ledger.billing") << "a fixed topic once filled in";
  EXPECT_EQ(billing.messages_topic, "msg.billing");
  ASSERT_THAT(orders.tables, SizeIs(1));
  EXPECT_EQ(orders.tables[0].topic, "orders.{aggregate_type}");
}

TEST(PlanStreamsTest, DatabaseNameThatCannotBeInATopicIsRefused) {
  const Config config =
      Parse("databases = \"*\"\nslot = \"outboxd_{database}\"\n",
            "[[outbox]]\ntable = \"outbox\"\ntopic = \"{database}.events\"\n");
  absl::StatusOr<StreamPlan> plan = PlanStreams(config, {{"my db", {"outboxd"}}, {"orders", {"outboxd"}}}, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Slots(*plan), ElementsAre("outboxd_orders"));
  ASSERT_THAT(plan->refused, SizeIs(1));
  EXPECT_THAT(plan->refused[0].reason, HasSubstr("rename the database or drop {database} from the topic"));
}

// "*" with [[outbox]] entries for some databases only: the others are not ours.
TEST(PlanStreamsTest, StarSkipsDatabasesNoEntryAppliesTo) {
  const Config config = Parse("databases = \"*\"\nslot = \"outboxd_{database}\"\n",
                              "[[outbox]]\ntable = \"outbox\"\ndatabase = \"orders\"\n");
  absl::StatusOr<StreamPlan> plan = PlanStreams(config, {{"orders", {"outboxd"}}, {"billing", {"outboxd"}}}, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Slots(*plan), ElementsAre("outboxd_orders"));
  EXPECT_THAT(plan->refused, IsEmpty());
}

// A sharded outbox: one database, a slot per publication, each publishing its
// own tables.
TEST(PlanStreamsTest, ShardedOutboxIsOneStreamPerPublication) {
  const Config config = Parse(
      "publication = [\"outboxd_0\", \"outboxd_1\"]\nslot = \"outboxd_{publication}\"\n",
      "[[outbox]]\ntable = \"outbox_0\"\npublication = \"outboxd_0\"\n"
      "[[outbox]]\ntable = \"outbox_1\"\npublication = \"outboxd_1\"\n");
  absl::StatusOr<StreamPlan> plan = PlanStreams(config, {{"postgres", {"outboxd_0", "outboxd_1"}}}, "/s");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Slots(*plan), ElementsAre("outboxd_outboxd_0", "outboxd_outboxd_1"));
  EXPECT_EQ(plan->streams[0].dsn, "host=db port=5432 dbname=postgres user=outboxd");
  ASSERT_THAT(plan->streams[0].tables, SizeIs(1));
  EXPECT_EQ(plan->streams[0].tables[0].table, "outbox_0");
  EXPECT_EQ(plan->streams[1].tables[0].table, "outbox_1");
  EXPECT_EQ(plan->streams[1].state_file, "/s/outboxd_outboxd_1.state");
}

TEST(PlanStreamsTest, StreamConfigIsASingleStreamConfig) {
  const Config config = Parse("databases = [\"orders\", \"billing\"]\nslot = \"outboxd_{database}\"\n",
                              "[[outbox]]\ntable = \"outbox\"\ntopic = \"{database}.events\"\n");
  absl::StatusOr<StreamPlan> plan = PlanStreams(config, {{"orders", {"outboxd"}}, {"billing", {"outboxd"}}}, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  const Config one = StreamConfig(config, plan->streams[1]);
  EXPECT_FALSE(one.MultiStream());
  EXPECT_EQ(one.source.slot, "outboxd_orders");
  EXPECT_EQ(one.source.dsn, "user='outboxd' dbname='orders' host='db' port='5432'");
  EXPECT_EQ(one.source.publication, "outboxd");
  ASSERT_THAT(one.outbox, SizeIs(1));
  EXPECT_EQ(one.outbox[0].topic, "orders.events");
}

TEST(PlanStreamsTest, SanitizeAndFill) {
  EXPECT_EQ(SanitizeForSlot("Billing-EU.2"), "billing_eu_2");
  EXPECT_EQ(*FillSlotTemplate("ox_{database}_{publication}", "A", "p"), "ox_a_p");
  EXPECT_EQ(FillSlotTemplate("{database}", std::string(64, 'a'), "p").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FillDatabase("{database}.{database}", "x"), "x.x");
}

}  // namespace
}  // namespace outboxd::config
