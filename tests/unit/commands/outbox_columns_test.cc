#include "commands/outbox_columns.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::commands {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr uint32_t kUuid = 2950, kVarchar = 1043, kText = 25, kJsonb = 3802, kInt8 = 20, kTimestamptz = 1184;

// Debezium's documented outbox table.
std::vector<TableColumn> Debezium() {
  return {{"id", kUuid, "uuid", ""},
          {"aggregatetype", kVarchar, "character varying(255)", ""},
          {"aggregateid", kVarchar, "character varying(255)", ""},
          {"type", kVarchar, "character varying(255)", ""},
          {"payload", kJsonb, "jsonb", ""}};
}

outbox::TableConfig DebeziumConfig() {
  outbox::TableConfig table;
  table.table = "outboxevent";
  table.columns.aggregate_type = "aggregatetype";
  table.columns.aggregate_id = "aggregateid";
  table.columns.event_type = "type";
  return table;
}

std::vector<ColumnFinding> Diagnose(const outbox::TableConfig& table, const std::vector<TableColumn>& columns) {
  return DiagnoseColumns(table, "public.outboxevent", columns, "outboxd");
}

TEST(DiagnoseColumnsTest, ADebeziumTableMappedByConfigIsOk) {
  const std::vector<ColumnFinding> findings = Diagnose(DebeziumConfig(), Debezium());
  ASSERT_THAT(findings, SizeIs(1));
  EXPECT_EQ(findings[0].status, CheckStatus::kOk);
  EXPECT_EQ(findings[0].message,
            "public.outboxevent: every column outboxd reads is there and sent: id (uuid), aggregate_type = "
            "aggregatetype (character varying(255)), aggregate_id = aggregateid (character varying(255)), "
            "event_type = type (character varying(255)), payload (jsonb)");
}

// Finding 1 of issue 24: a typo in a column name passed check and dead-lettered every row.
TEST(DiagnoseColumnsTest, AMisspeltRequiredColumnFailsAndSuggestsTheColumnMeant) {
  outbox::TableConfig table = DebeziumConfig();
  table.columns.event_type = "event_type_typo";
  std::vector<ColumnFinding> findings = Diagnose(table, Debezium());
  ASSERT_THAT(findings, SizeIs(1));
  EXPECT_EQ(findings[0].status, CheckStatus::kFail);
  EXPECT_EQ(findings[0].message,
            "public.outboxevent has no column \"event_type_typo\" ([outbox.columns] event_type): every row would be "
            "dead-lettered (missing_column)");
  EXPECT_EQ(findings[0].hint,
            "did you mean \"type\"? set [outbox.columns] event_type = \"type\"; the table's columns: id uuid, "
            "aggregatetype character varying(255), aggregateid character varying(255), type character varying(255), "
            "payload jsonb");

  // A close spelling wins; the default names on a Debezium table point to Debezium's.
  table = DebeziumConfig();
  table.columns.aggregate_id = "agregateid";
  findings = Diagnose(table, Debezium());
  ASSERT_THAT(findings, SizeIs(1));
  EXPECT_THAT(findings[0].hint, HasSubstr("did you mean \"aggregateid\"? set [outbox.columns] aggregate_id = "
                                          "\"aggregateid\""));
  outbox::TableConfig defaults;
  defaults.table = "outboxevent";
  findings = Diagnose(defaults, Debezium());
  ASSERT_THAT(findings, SizeIs(3));  // aggregate_type, aggregate_id, event_type under their default names
  EXPECT_EQ(findings[0].message,
            "public.outboxevent has no column \"aggregate_type\" ([outbox.columns] aggregate_type, the default "
            "name): every row would be dead-lettered (missing_column)");
  EXPECT_THAT(findings[0].hint, HasSubstr("did you mean \"aggregatetype\"?"));
  EXPECT_THAT(findings[2].hint, HasSubstr("did you mean \"type\"?"));
}

TEST(DiagnoseColumnsTest, EachRequiredColumnMissingIsAFailure) {
  for (const char* name : {"id", "aggregate_type", "aggregate_id", "event_type", "payload"}) {
    const std::string field = name;
    outbox::TableConfig table = DebeziumConfig();
    std::string* column = field == "id"               ? &table.columns.id
                          : field == "aggregate_type" ? &table.columns.aggregate_type
                          : field == "aggregate_id"   ? &table.columns.aggregate_id
                          : field == "event_type"     ? &table.columns.event_type
                                                      : &table.columns.payload;
    *column = "nope_" + field;
    const std::vector<ColumnFinding> findings = Diagnose(table, Debezium());
    ASSERT_THAT(findings, SizeIs(1)) << field;
    EXPECT_EQ(findings[0].status, CheckStatus::kFail) << field;
    EXPECT_THAT(findings[0].message, HasSubstr("([outbox.columns] " + field + ")")) << field;
  }
}

TEST(DiagnoseColumnsTest, AnIdThatCannotHoldAUuidFails) {
  std::vector<TableColumn> columns = Debezium();
  columns[0] = {"id", kInt8, "bigint", ""};
  const std::vector<ColumnFinding> findings = Diagnose(DebeziumConfig(), columns);
  ASSERT_THAT(findings, SizeIs(1));
  EXPECT_EQ(findings[0].status, CheckStatus::kFail);
  EXPECT_EQ(findings[0].message,
            "public.outboxevent column \"id\" is of type bigint: it can never hold a UUID, so every row would be "
            "dead-lettered (invalid_uuid)");
  EXPECT_THAT(findings[0].hint, HasSubstr("ADD COLUMN event_id uuid NOT NULL DEFAULT gen_random_uuid()"));
  // Text holding UUIDs is fine.
  columns[0] = {"id", kText, "text", ""};
  EXPECT_EQ(Diagnose(DebeziumConfig(), columns)[0].status, CheckStatus::kOk);
}

TEST(DiagnoseColumnsTest, OptionalColumnsOfTheWrongTypeAndNamedOptionsMissing) {
  std::vector<TableColumn> columns = Debezium();
  columns.push_back({"created_at", kInt8, "bigint", ""});
  columns.push_back({"headers", kText, "text", ""});
  outbox::TableConfig table = DebeziumConfig();
  table.record.key_column = "tenant";
  std::vector<ColumnFinding> findings = Diagnose(table, columns);
  ASSERT_THAT(findings, SizeIs(3));
  EXPECT_EQ(findings[0].status, CheckStatus::kWarn);
  EXPECT_THAT(findings[0].message, HasSubstr("column \"headers\" is of type text"));
  EXPECT_EQ(findings[1].status, CheckStatus::kFail);
  EXPECT_THAT(findings[1].message, HasSubstr("column \"created_at\" is of type bigint: it is not a timestamp"));
  EXPECT_EQ(findings[2].status, CheckStatus::kWarn);
  EXPECT_EQ(findings[2].message,
            "public.outboxevent has no column \"tenant\" (key_column): every record gets a null key: the "
            "partitioner spreads them, and an aggregate's events lose their order");
  // Optional columns under their default names may be absent: nothing to say.
  EXPECT_EQ(Diagnose(DebeziumConfig(), Debezium())[0].status, CheckStatus::kOk);
}

TEST(DiagnoseColumnsTest, AColumnPgoutputDoesNotSendFails) {
  std::vector<TableColumn> columns = Debezium();
  columns[3].unsent = "is not in publication 'outboxd''s column list";
  const std::vector<ColumnFinding> findings = Diagnose(DebeziumConfig(), columns);
  ASSERT_THAT(findings, SizeIs(1));
  EXPECT_EQ(findings[0].status, CheckStatus::kFail);
  EXPECT_EQ(findings[0].message,
            "public.outboxevent column \"type\" (event_type) is not in publication 'outboxd''s column list: "
            "pgoutput never sends it, so every row would be dead-lettered (missing_column)");
  EXPECT_THAT(findings[0].hint, HasSubstr("ALTER PUBLICATION outboxd DROP TABLE public.outboxevent; ALTER "
                                          "PUBLICATION outboxd ADD TABLE public.outboxevent"));
}

TEST(DiagnoseColumnsTest, ADestinationTopicNeedsTheDestinationColumn) {
  outbox::TableConfig table = DebeziumConfig();
  table.topic = "{destination}";
  const std::vector<ColumnFinding> findings = Diagnose(table, Debezium());
  ASSERT_THAT(findings, SizeIs(1));
  EXPECT_EQ(findings[0].status, CheckStatus::kFail);
  EXPECT_THAT(findings[0].message, HasSubstr("has no column \"destination\""));
  EXPECT_EQ(TemplateFields("x.{aggregate_type}.{destination}"),
            (std::vector<std::string>{"aggregate_type", "destination"}));
}

}  // namespace
}  // namespace outboxd::commands
