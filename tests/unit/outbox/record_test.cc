#include "outbox/record.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/bad_event.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "outbox/envelope.h"
#include "outbox/routing.h"
#include "outbox/table_mapping.h"
#include "outbox/v1/envelope.pb.h"
#include "outbox/values.h"

namespace outboxd::outbox {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using Kind = pgoutput::TupleValue::Kind;

constexpr std::string_view kId = "0190f6a1-8a4b-7c3d-9e2f-0123456789ab";

// Debezium's default outbox table plus the columns its options place.
pgoutput::RelationMessage DebeziumRelation() {
  pgoutput::RelationMessage relation;
  relation.oid = 7;
  relation.schema = "public";
  relation.name = "outboxevent";
  for (auto [name, type] : std::vector<std::pair<std::string, uint32_t>>{
           {"id", kUuidOid}, {"aggregatetype", kTextOid}, {"aggregateid", kTextOid},
           {"type", kTextOid}, {"payload", kJsonbOid}, {"tenant", kTextOid},
           {"region", kTextOid}, {"created_at", kTimestamptzOid}, {"part", 23},
           {"tracingspancontext", kTextOid}}) {
    pgoutput::RelationColumn column;
    column.name = name;
    column.type_oid = type;
    relation.columns.push_back(column);
  }
  return relation;
}

pgoutput::TupleValue T(std::string_view text) { return {Kind::kText, text}; }
pgoutput::TupleValue Null() { return {Kind::kNull, {}}; }

pgoutput::TupleData Row() {
  return pgoutput::TupleData{{T(kId), T("order"), T("42"), T("OrderCreated"),
                              T(R"({"total": 12.50})"), T("acme"), T("eu"),
                              T("2026-11-27 03:09:58.123456+00"), T("3"),
                              T("# a comment\ntracestate=x\ntraceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n")}};
}

TableConfig DebeziumTable() {
  TableConfig table;
  table.table = "outboxevent";
  table.columns.aggregate_type = "aggregatetype";
  table.columns.aggregate_id = "aggregateid";
  table.columns.event_type = "type";
  table.key = KeySource::kAggregateId;
  table.record.value = ValueFormat::kPayload;
  return table;
}

class RecordTest : public ::testing::Test {
 protected:
  // Maps Row() (or `row`) under `table` and builds its record into record_.
  absl::Status Build(TableConfig table, const pgoutput::TupleData& row = Row()) {
    return BuildWith(DebeziumRelation(), std::move(table), row);
  }
  absl::Status BuildWith(const pgoutput::RelationMessage& relation, TableConfig table,
                         const pgoutput::TupleData& row) {
    mapper_ = std::make_unique<TableMapper>(std::vector<TableConfig>{std::move(table)});
    mapper_->OnRelation(relation);
    const TableBinding* binding = mapper_->Find(7);
    if (binding == nullptr) return absl::InternalError("no binding");
    if (absl::Status mapped = mapper_->MapInsert(*binding, row, &event_); !mapped.ok()) return mapped;
    event_.source.schema = "public";
    event_.source.table = "outboxevent";
    const TableConfig& config = mapper_->tables().front();
    return BuildRecord(event_, config.record, RecordKey(event_, config.key), &record_);
  }

  std::unique_ptr<TableMapper> mapper_;
  OutboxEvent event_;
  Record record_;
};

TEST_F(RecordTest, PayloadModeIsDebeziumsDefaultRecord) {
  ASSERT_EQ(Build(DebeziumTable()).code(), absl::StatusCode::kOk);
  EXPECT_EQ(record_.key, "42");
  EXPECT_EQ(record_.value, R"({"total": 12.50})");
  EXPECT_FALSE(record_.null_value);
  // The id header, then the traceparent from the tracing span context; no outbox-id etc.
  EXPECT_THAT(record_.headers,
              ElementsAre(Pair("id", kId),
                          Pair("traceparent",
                               "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")));
  EXPECT_EQ(record_.timestamp_ms, 0);
  EXPECT_EQ(record_.partition, -1);
}

TEST_F(RecordTest, IdHeaderNameIsConfigurableAndEmptyDropsIt) {
  TableConfig table = DebeziumTable();
  table.record.id_header = "eventId";
  table.record.tracing_column.clear();
  ASSERT_EQ(Build(table).code(), absl::StatusCode::kOk);
  EXPECT_THAT(record_.headers, ElementsAre(Pair("eventId", kId)));
  table.record.id_header.clear();
  ASSERT_EQ(Build(table).code(), absl::StatusCode::kOk);
  EXPECT_TRUE(record_.headers.empty());
}

TEST_F(RecordTest, HeaderFieldsWithAliasInConfiguredOrder) {
  TableConfig table = DebeziumTable();
  table.record.fields = {{"region", Placement::kHeader, ""},
                         {"tenant", Placement::kHeader, "x-tenant"},
                         {"type", Placement::kHeader, "eventType"}};
  ASSERT_EQ(Build(table).code(), absl::StatusCode::kOk);
  EXPECT_THAT(record_.headers,
              ElementsAre(Pair("id", kId), Pair("region", "eu"), Pair("x-tenant", "acme"),
                          Pair("eventType", "OrderCreated"), Pair("traceparent", testing::_)));
}

TEST_F(RecordTest, NullHeaderFieldAddsNoHeader) {
  TableConfig table = DebeziumTable();
  table.record.tracing_column.clear();
  table.record.fields = {{"tenant", Placement::kHeader, ""}};
  pgoutput::TupleData row = Row();
  row.values[5] = Null();
  ASSERT_EQ(Build(table, row).code(), absl::StatusCode::kOk);
  EXPECT_THAT(record_.headers, ElementsAre(Pair("id", kId)));
}

TEST_F(RecordTest, EnvelopeFieldsBecomeAttributes) {
  TableConfig table = DebeziumTable();
  table.record.value = ValueFormat::kEnvelope;
  table.record.tracing_column.clear();
  table.record.fields = {{"tenant", Placement::kEnvelope, "tenantId"},
                         {"region", Placement::kHeader, ""}};
  ASSERT_EQ(Build(table).code(), absl::StatusCode::kOk);
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromArray(record_.value.data(), static_cast<int>(record_.value.size())));
  ASSERT_EQ(envelope.attributes_size(), 1);
  EXPECT_EQ(envelope.attributes(0).key(), "tenantId");
  EXPECT_EQ(envelope.attributes(0).value(), "acme");
  EXPECT_EQ(envelope.payload(), R"({"total": 12.50})");
  // Envelope mode keeps outboxd's headers, then the header fields.
  EXPECT_THAT(record_.headers,
              ElementsAre(Pair("outbox-id", kId), Pair("event-type", "OrderCreated"),
                          Pair("content-type", "application/json"), Pair("region", "eu")));
}

TEST_F(RecordTest, KeyFromAnyColumnAndNullKeyWhenNull) {
  TableConfig table = DebeziumTable();
  table.record.key_column = "tenant";
  ASSERT_EQ(Build(table).code(), absl::StatusCode::kOk);
  EXPECT_EQ(record_.key, "acme");
  pgoutput::TupleData row = Row();
  row.values[5] = Null();
  ASSERT_EQ(Build(table, row).code(), absl::StatusCode::kOk);
  EXPECT_EQ(record_.key.data(), nullptr);
}

TEST_F(RecordTest, TimestampFromTimestamptzOrUnixMillis) {
  TableConfig table = DebeziumTable();
  table.record.timestamp_column = "created_at";
  ASSERT_EQ(Build(table).code(), absl::StatusCode::kOk);
  EXPECT_EQ(record_.timestamp_ms, 1795748998123);  // 2026-11-27T03:09:58.123Z
  pgoutput::TupleData row = Row();
  row.values[8] = T("1700000000000");  // a bigint column: Unix milliseconds
  table.record.timestamp_column = "part";
  ASSERT_EQ(Build(table, row).code(), absl::StatusCode::kOk);
  EXPECT_EQ(record_.timestamp_ms, 1700000000000);
  table.record.timestamp_column = "created_at";
  row.values[7] = Null();  // no timestamp: the producer's clock
  ASSERT_EQ(Build(table, row).code(), absl::StatusCode::kOk);
  EXPECT_EQ(record_.timestamp_ms, 0);
}

TEST_F(RecordTest, BadTimestampIsABadEvent) {
  TableConfig table = DebeziumTable();
  table.record.timestamp_column = "region";
  const absl::Status status = Build(table);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BadEventReason(status), bad_event::kInvalidValue);
  EXPECT_THAT(std::string(status.message()), HasSubstr("\"region\""));
  pgoutput::TupleData row = Row();
  table.record.timestamp_column = "created_at";
  row.values[7] = T("1969-12-31 23:59:59+00");
  EXPECT_EQ(BadEventReason(Build(table, row)), bad_event::kInvalidValue);
}

TEST_F(RecordTest, PartitionFromIntegerColumn) {
  TableConfig table = DebeziumTable();
  table.record.partition_column = "part";
  ASSERT_EQ(Build(table).code(), absl::StatusCode::kOk);
  EXPECT_EQ(record_.partition, 3);
  pgoutput::TupleData row = Row();
  for (std::string_view bad : {"-1", "2147483648", "x", "1.5", ""}) {
    SCOPED_TRACE(bad);
    row.values[8] = T(bad);
    const absl::Status status = Build(table, row);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(BadEventReason(status), bad_event::kInvalidValue);
  }
  row.values[8] = Null();
  ASSERT_EQ(Build(table, row).code(), absl::StatusCode::kOk);
  EXPECT_EQ(record_.partition, -1);
}

TEST_F(RecordTest, TombstoneOnNullOrEmptyPayloadOnlyWhenEnabled) {
  TableConfig table = DebeziumTable();
  pgoutput::TupleData row = Row();
  row.values[4] = Null();
  // Off (the default): a NULL payload stays a bad event.
  EXPECT_EQ(BadEventReason(Build(table, row)), bad_event::kNullColumn);
  table.record.tombstone_on_empty_payload = true;
  for (ValueFormat format : {ValueFormat::kPayload, ValueFormat::kEnvelope}) {
    table.record.value = format;
    ASSERT_EQ(Build(table, row).code(), absl::StatusCode::kOk);
    EXPECT_TRUE(record_.null_value);
    EXPECT_TRUE(record_.value.empty());
    EXPECT_EQ(record_.key, "42");
  }
  table.record.value = ValueFormat::kPayload;
  pgoutput::TupleData empty = Row();
  empty.values[4] = T("");
  ASSERT_EQ(Build(table, empty).code(), absl::StatusCode::kOk);
  EXPECT_TRUE(record_.null_value);
  ASSERT_EQ(Build(table).code(), absl::StatusCode::kOk);  // a payload: a normal record
  EXPECT_FALSE(record_.null_value);
}

// Debezium's router calls a payload empty when its text trims to nothing (Java's trim: every
// char up to U+0020); anything else, a lone non-ASCII space included, is a payload.
TEST_F(RecordTest, TombstoneOnWhitespaceOnlyTextPayloadLikeDebezium) {
  pgoutput::RelationMessage relation = DebeziumRelation();
  relation.columns[4].type_oid = kTextOid;
  TableConfig table = DebeziumTable();
  table.record.tombstone_on_empty_payload = true;
  for (std::string_view blank : std::vector<std::string_view>{" ", " \t\r\n", std::string_view("\x01\x1f ", 3)}) {
    SCOPED_TRACE(testing::PrintToString(blank));
    pgoutput::TupleData row = Row();
    row.values[4] = T(blank);
    ASSERT_EQ(BuildWith(relation, table, row).code(), absl::StatusCode::kOk);
    EXPECT_TRUE(record_.null_value);
  }
  for (std::string_view text : {" x ", "\u00a0", "!"}) {
    SCOPED_TRACE(text);
    pgoutput::TupleData row = Row();
    row.values[4] = T(text);
    ASSERT_EQ(BuildWith(relation, table, row).code(), absl::StatusCode::kOk);
    EXPECT_FALSE(record_.null_value);
    EXPECT_EQ(record_.value, text);
  }
  EXPECT_FALSE(record_.null_value);
}

TEST(TraceparentTest, ReadsJavaPropertiesText) {
  EXPECT_EQ(TraceparentFromProperties("traceparent=00-a-b-01"), "00-a-b-01");
  EXPECT_EQ(TraceparentFromProperties("  traceparent : 00-a-b-01  \r\n"), "00-a-b-01");
  EXPECT_EQ(TraceparentFromProperties("#traceparent=no\n!x\ntraceparent=yes"), "yes");
  EXPECT_EQ(TraceparentFromProperties("tracestate=a=b"), std::nullopt);
  EXPECT_EQ(TraceparentFromProperties("traceparent="), std::nullopt);
  EXPECT_EQ(TraceparentFromProperties(""), std::nullopt);
  EXPECT_EQ(TraceparentFromProperties(std::string_view("\0\xff=", 3)), std::nullopt);
}

}  // namespace
}  // namespace outboxd::outbox
