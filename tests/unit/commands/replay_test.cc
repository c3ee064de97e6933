#include "commands/replay.h"

#include <string>
#include <vector>

#include "../pipeline/fakes.h"
#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "outbox/v1/envelope.pb.h"
#include "outbox/values.h"

namespace outboxd::commands {
namespace {

using ::testing::HasSubstr;
using outbox::kJsonbOid;
using outbox::kTextOid;
using outbox::kTimestamptzOid;
using outbox::kUuidOid;
using pgoutput::RelationColumn;
using pgoutput::TupleData;
using pgoutput::TupleValue;

std::vector<RelationColumn> Columns() {
  return {{.name = "id", .type_oid = kUuidOid},
          {.name = "aggregate_type", .type_oid = kTextOid},
          {.name = "aggregate_id", .type_oid = kTextOid},
          {.name = "event_type", .type_oid = kTextOid},
          {.name = "payload", .type_oid = kJsonbOid},
          {.name = "headers", .type_oid = kJsonbOid},
          {.name = "created_at", .type_oid = kTimestamptzOid}};
}

TupleData Row(const std::vector<std::optional<std::string_view>>& values) {
  TupleData row;
  for (const auto& v : values) {
    row.values.push_back(v ? TupleValue{TupleValue::Kind::kText, *v} : TupleValue{});
  }
  return row;
}

outbox::TableConfig Table() {
  outbox::TableConfig table;
  table.schema = "public";
  table.table = "outbox";
  table.topic = "events.{aggregate_type}";
  return table;
}

TEST(ParseReplayTimeTest, AcceptsRfc3339AndNamesTheFlagOtherwise) {
  auto t = ParseReplayTime("--since", "2026-01-01T11:00:00.5+01:00");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(absl::ToUnixMillis(*t), 1767261600500);
  for (const char* bad : {"2026-01-01", "2026-01-01 10:00:00", "yesterday", ""}) {
    auto r = ParseReplayTime("--until", bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("--until \"")) << bad;
  }
}

TEST(ReplayPublisherTest, ProducesTheLivePathsRecordWithTheOriginalId) {
  testing::FakeSink sink;
  ReplayPublisher publisher(Table(), &sink);
  ASSERT_TRUE(publisher.Bind(Columns()).ok());
  ASSERT_TRUE(publisher
                  .Publish(Row({"0190F6A1-8A4B-7C3D-9E2F-0123456789AB", "order", "42", "Placed",
                                "{\"n\": 1}", "{\"traceparent\": \"00-1\"}",
                                "2026-01-01 10:00:00+00"}))
                  .ok());
  ASSERT_EQ(sink.produced.size(), 1u);
  const testing::Produced& p = sink.produced[0];
  EXPECT_EQ(p.topic, "events.order");
  EXPECT_EQ(p.key, "0190f6a1-8a4b-7c3d-9e2f-0123456789ab");
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(p.value));
  EXPECT_EQ(envelope.id(), "0190f6a1-8a4b-7c3d-9e2f-0123456789ab");
  EXPECT_EQ(envelope.payload(), "{\"n\": 1}");
  EXPECT_EQ(envelope.source().table(), "outbox");
  EXPECT_EQ(envelope.source().commit_lsn(), 0u);
  EXPECT_FALSE(envelope.source().has_commit_time());
  EXPECT_EQ(p.headers[0], std::make_pair(std::string("outbox-id"), envelope.id()));

  EXPECT_EQ(publisher.result().sent, 0u);  // not before the delivery report
  sink.ack_on_flush = true;
  ASSERT_TRUE(publisher.Finish(absl::Seconds(1)).ok());
  EXPECT_EQ(publisher.result().rows, 1u);
  EXPECT_EQ(publisher.result().sent, 1u);
  EXPECT_EQ(publisher.result().failed, 0u);
}

TEST(ReplayPublisherTest, BadRowsAndFailedDeliveriesAreCountedAndKept) {
  testing::FakeSink sink;
  ReplayPublisher publisher(Table(), &sink);
  ASSERT_TRUE(publisher.Bind(Columns()).ok());
  // NULL aggregate_type: the mapper's own error.
  ASSERT_TRUE(publisher.Publish(Row({"0190f6a1-8a4b-7c3d-9e2f-0123456789ab", std::nullopt, "1", "E",
                                     "{}", std::nullopt, std::nullopt}))
                  .ok());
  EXPECT_EQ(publisher.result().failed, 1u);
  EXPECT_THAT(publisher.first_error().message(), HasSubstr("column \"aggregate_type\" is NULL"));
  ASSERT_TRUE(publisher.Publish(Row({"0190f6a1-8a4b-7c3d-9e2f-0123456789ac", "a", "1", "E", "{}",
                                     std::nullopt, std::nullopt}))
                  .ok());
  sink.DeliverAll(absl::UnavailableError("broker down"));
  EXPECT_EQ(publisher.result().rows, 2u);
  EXPECT_EQ(publisher.result().sent, 0u);
  EXPECT_EQ(publisher.result().failed, 2u);
}

TEST(ReplayPublisherTest, WaitsOutAFullQueue) {
  testing::FakeSink sink;
  sink.queue_limit = 1;
  sink.on_poll = [&sink] { sink.DeliverAll(absl::OkStatus()); };
  ReplayPublisher publisher(Table(), &sink);
  ASSERT_TRUE(publisher.Bind(Columns()).ok());
  for (const char* id : {"0190f6a1-8a4b-7c3d-9e2f-0123456789a1", "0190f6a1-8a4b-7c3d-9e2f-0123456789a2"}) {
    ASSERT_TRUE(publisher.Publish(Row({id, "a", "1", "E", "{}", std::nullopt, std::nullopt})).ok());
  }
  EXPECT_EQ(sink.queue_full_answers, 1);
  EXPECT_EQ(sink.produced.size(), 2u);
}

TEST(ReplayPublisherTest, DryRunMapsAndRoutesWithoutASink) {
  ReplayPublisher publisher(Table(), nullptr);
  ASSERT_TRUE(publisher.Bind(Columns()).ok());
  ASSERT_TRUE(publisher.Publish(Row({"0190f6a1-8a4b-7c3d-9e2f-0123456789a1", "bad topic", "1", "E",
                                     "{}", std::nullopt, std::nullopt}))
                  .ok());
  EXPECT_EQ(publisher.result().failed, 1u);
  EXPECT_THAT(publisher.first_error().message(), HasSubstr("cannot route outbox row"));
  EXPECT_TRUE(publisher.Finish(absl::Seconds(1)).ok());
}

}  // namespace
}  // namespace outboxd::commands

namespace outboxd::commands {
namespace {

TEST(ParseReplayFlagsTest, ReadsEveryFlagInBothForms) {
  auto options = ParseReplayFlags({"--table", "public.outbox", "--since=2026-01-01T10:00:00Z",
                                   "--until", "2026-01-01T12:00:00+01:00", "--dry-run"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->table, "public.outbox");
  EXPECT_EQ(absl::ToUnixSeconds(options->since), 1767261600);
  ASSERT_TRUE(options->until.has_value());
  EXPECT_EQ(*options->until - options->since, absl::Hours(1));
  EXPECT_TRUE(options->dry_run);
}

TEST(ParseReplayFlagsTest, DatabaseInBothForms) {
  auto options = ParseReplayFlags({"--database", "orders", "--table", "outbox", "--since=2026-01-01T10:00:00Z"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->database, "orders");
  options = ParseReplayFlags({"--database=billing", "--table", "outbox", "--since=2026-01-01T10:00:00Z"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->database, "billing");
  EXPECT_EQ(ParseReplayFlags({"--database=", "--table", "t", "--since=2026-01-01T10:00:00Z"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

config::Config ParseConfigText(std::string_view source, std::string_view outbox) {
  const std::string text = "[source]\ndsn = \"host=db dbname=postgres user=o\"\n" + std::string(source) +
                           "[sink.kafka]\n\"bootstrap.servers\" = \"k:9092\"\n" + std::string(outbox);
  auto config = config::ParseConfig(text, [](std::string_view) -> std::optional<std::string> { return std::nullopt; });
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : config::Config();
}

// replay --database: required with [source] databases, and then reads that
// database's DSN and the [[outbox]] entries that apply to it.
TEST(ReplayConfigTest, DatabaseChoosesTheDsnAndTables) {
  const config::Config cluster = ParseConfigText(
      "databases = [\"orders\", \"billing\"]\nslot = \"s_{database}\"\n",
      "[[outbox]]\ntable = \"outbox\"\ntopic = \"{database}.events\"\n"
      "[[outbox]]\ntable = \"ledger\"\ndatabase = \"billing\"\n");
  absl::StatusOr<config::Config> billing = ReplayConfig(cluster, "billing");
  ASSERT_TRUE(billing.ok()) << billing.status();
  EXPECT_EQ(billing->source.dsn, "user='o' dbname='billing' host='db'");
  ASSERT_EQ(billing->outbox.size(), 2u);
  EXPECT_EQ(billing->outbox[0].topic, "billing.events");
  absl::StatusOr<config::Config> orders = ReplayConfig(cluster, "orders");
  ASSERT_TRUE(orders.ok()) << orders.status();
  EXPECT_EQ(orders->outbox.size(), 1u);

  EXPECT_THAT(std::string(ReplayConfig(cluster, "").status().message()),
              HasSubstr("say which one to replay from with --database NAME"));
  EXPECT_THAT(std::string(ReplayConfig(cluster, "shipping").status().message()),
              HasSubstr("--database shipping is not in [source] databases (orders, billing)"));

  const config::Config single = ParseConfigText("", "[[outbox]]\ntable = \"outbox\"\n");
  EXPECT_TRUE(ReplayConfig(single, "").ok());
  EXPECT_TRUE(ReplayConfig(single, "postgres").ok());
  EXPECT_EQ(ReplayConfig(single, "orders").status().code(), absl::StatusCode::kInvalidArgument);
}

// A table without created_at (Debezium's) replays by id range or every row.
TEST(ParseReplayFlagsTest, AnIdRangeOrEveryRowInsteadOfATimeWindow) {
  auto all = ParseReplayFlags({"--table", "outboxevent", "--all", "--dry-run"});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->selection, ReplaySelection::kAll);
  auto range = ParseReplayFlags({"--table", "outboxevent", "--from-id=0190f6a1-0000-7000-8000-000000000000",
                                 "--to-id", "0190f6a2-0000-7000-8000-000000000000"});
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->selection, ReplaySelection::kIdRange);
  EXPECT_EQ(range->from_id, "0190f6a1-0000-7000-8000-000000000000");
  EXPECT_EQ(range->to_id, "0190f6a2-0000-7000-8000-000000000000");
  auto open_end = ParseReplayFlags({"--table", "outboxevent", "--from-id", "x"});
  ASSERT_TRUE(open_end.ok()) << open_end.status();
  EXPECT_EQ(open_end->to_id, "");
  auto time = ParseReplayFlags({"--table", "outbox", "--since", "2026-01-01T00:00:00Z"});
  ASSERT_TRUE(time.ok()) << time.status();
  EXPECT_EQ(time->selection, ReplaySelection::kTime);
}

TEST(ParseReplayFlagsTest, SaysWhatIsMissingOrWrong) {
  auto message = [](const std::vector<std::string_view>& args) {
    auto options = ParseReplayFlags(args);
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(options.status().message());
  };
  EXPECT_THAT(message({"--since", "2026-01-01T00:00:00Z"}), HasSubstr("replay needs --table T"));
  EXPECT_THAT(message({"--table", "t"}), HasSubstr("replay needs --since TIME"));
  EXPECT_THAT(message({"--table", "t", "--since", "2026-01-01T00:00:00Z", "--bogus"}),
              HasSubstr("unknown argument '--bogus'"));
  EXPECT_THAT(message({"--table", "t", "--since", "2026-01-01T00:00:00Z", "--until",
                       "2026-01-01T00:00:00Z"}),
              HasSubstr("--until must be later than --since"));
  EXPECT_THAT(message({"--table", "t", "--since"}), HasSubstr("unknown argument '--since'"));
  EXPECT_THAT(message({"--table", "t"}), HasSubstr("--from-id/--to-id ID (a range of ids) or --all"));
  EXPECT_THAT(message({"--table", "t", "--all", "--since", "2026-01-01T00:00:00Z"}),
              HasSubstr("replay takes one selection of rows"));
  EXPECT_THAT(message({"--table", "t", "--from-id", "a", "--until", "2026-01-01T00:00:00Z"}),
              HasSubstr("replay takes one selection of rows"));
  EXPECT_THAT(message({"--table", "t", "--to-id="}), HasSubstr("--from-id and --to-id need an id"));
}

}  // namespace
}  // namespace outboxd::commands
