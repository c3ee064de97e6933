#include "outbox/table_mapping.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/bad_event.h"
#include "common/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "outbox/values.h"

namespace outboxd::outbox {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsNull;
using ::testing::NotNull;
using Kind = pgoutput::TupleValue::Kind;

constexpr uint32_t kInt4Oid = 23;

std::string Message(const absl::Status& status) {
  return std::string(status.message().data(), status.message().size());
}

MATCHER_P(HeaderIs, key_value, "") {
  return arg.key == key_value.first && arg.value == key_value.second;
}

pgoutput::RelationMessage Relation(uint32_t oid, std::string schema, std::string name,
                                   std::vector<std::pair<std::string, uint32_t>> columns) {
  pgoutput::RelationMessage relation;
  relation.oid = oid;
  relation.schema = std::move(schema);
  relation.name = std::move(name);
  for (auto& [column, type] : columns) {
    pgoutput::RelationColumn c;
    c.name = column;
    c.type_oid = type;
    relation.columns.push_back(std::move(c));
  }
  return relation;
}

// sql/outbox.sql's table.
pgoutput::RelationMessage DefaultRelation(uint32_t oid = 16385) {
  return Relation(oid, "public", "outbox",
                  {{"id", kUuidOid},
                   {"aggregate_type", kTextOid},
                   {"aggregate_id", kTextOid},
                   {"event_type", kTextOid},
                   {"payload", kJsonbOid},
                   {"headers", kJsonbOid},
                   {"destination", kTextOid},
                   {"created_at", kTimestamptzOid}});
}

pgoutput::TupleValue T(std::string_view text) { return {Kind::kText, text}; }
pgoutput::TupleValue B(std::string_view bytes) { return {Kind::kBinary, bytes}; }
pgoutput::TupleValue Null() { return {Kind::kNull, {}}; }
pgoutput::TupleValue Toast() { return {Kind::kUnchangedToast, {}}; }

constexpr std::string_view kId = "0190f6a1-8a4b-7c3d-9e2f-0123456789ab";

pgoutput::TupleData DefaultRow() {
  return pgoutput::TupleData{{T(kId), T("order"), T("42"), T("OrderCreated"),
                              T(R"({"total": 12.50, "items": [1, 2]})"),
                              T(R"({"traceparent": "00-abc-01", "tenant": "acme"})"),
                              T("orders.v1"),
                              T("2026-11-27 03:09:58.123456+00")}};
}

int64_t PgMicros(int y, int mo, int d, int h, int mi, int s, int64_t micros = 0) {
  return TimeToPgTimestamp(absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s),
                                           absl::UTCTimeZone())) +
         micros;
}

class TableMappingTest : public ::testing::Test {
 protected:
  TableMappingTest() : mapper_({TableConfig{}}) { mapper_.OnRelation(DefaultRelation()); }

  absl::Status Map(const pgoutput::TupleData& row) {
    const TableBinding* binding = mapper_.Find(16385);
    if (binding == nullptr) return absl::InternalError("no binding");
    return mapper_.MapInsert(*binding, row, &event_);
  }

  TableMapper mapper_;
  OutboxEvent event_;
};

TEST_F(TableMappingTest, DefaultTableBindsEveryColumn) {
  const TableBinding* binding = mapper_.Find(16385);
  ASSERT_THAT(binding, NotNull());
  EXPECT_EQ(binding->config, &mapper_.tables()[0]);
  EXPECT_EQ(binding->config_index, 0u);
  EXPECT_EQ(binding->schema, "public");
  EXPECT_EQ(binding->table, "outbox");
  EXPECT_EQ(binding->column_count, 8u);
  EXPECT_EQ(binding->id, 0);
  EXPECT_EQ(binding->aggregate_type, 1);
  EXPECT_EQ(binding->aggregate_id, 2);
  EXPECT_EQ(binding->event_type, 3);
  EXPECT_EQ(binding->payload, 4);
  EXPECT_EQ(binding->headers, 5);
  EXPECT_EQ(binding->destination, 6);
  EXPECT_EQ(binding->created_at, 7);
  EXPECT_EQ(binding->payload_type_oid, kJsonbOid);
}

TEST_F(TableMappingTest, MapsDefaultRow) {
  event_.source.table = "left over";
  ASSERT_TRUE(Map(DefaultRow()).ok());
  EXPECT_EQ(event_.id, kId);
  EXPECT_EQ(event_.aggregate_type, "order");
  EXPECT_EQ(event_.aggregate_id, "42");
  EXPECT_EQ(event_.event_type, "OrderCreated");
  EXPECT_EQ(event_.payload, R"({"total": 12.50, "items": [1, 2]})");
  EXPECT_EQ(event_.content_type, "application/json");
  EXPECT_THAT(event_.headers, ElementsAre(HeaderIs(std::pair("traceparent", "00-abc-01")),
                                          HeaderIs(std::pair("tenant", "acme"))));
  EXPECT_EQ(event_.destination, "orders.v1");
  EXPECT_EQ(event_.created_at, PgMicros(2026, 11, 27, 3, 9, 58, 123456));
  EXPECT_EQ(event_.source.table, "");  // cleared; the caller fills the source
}

TEST_F(TableMappingTest, OptionalColumnsMayBeNull) {
  pgoutput::TupleData row = DefaultRow();
  row.values[5] = Null();
  row.values[6] = Null();
  row.values[7] = Null();
  ASSERT_TRUE(Map(row).ok());
  EXPECT_TRUE(event_.headers.empty());
  EXPECT_FALSE(event_.destination.has_value());
  EXPECT_FALSE(event_.created_at.has_value());
}

TEST_F(TableMappingTest, ReusedEventIsCleared) {
  ASSERT_TRUE(Map(DefaultRow()).ok());
  pgoutput::TupleData row = DefaultRow();
  row.values[5] = Null();
  row.values[6] = Null();
  row.values[7] = Null();
  ASSERT_TRUE(Map(row).ok());
  EXPECT_TRUE(event_.headers.empty());
  EXPECT_FALSE(event_.destination.has_value());
  EXPECT_FALSE(event_.created_at.has_value());
}

TEST(TableMapperTest, DebeziumTableMappedByConfigAlone) {
  TableConfig config;
  config.schema = "inventory";
  config.table = "outboxevent";
  config.columns.aggregate_type = "aggregatetype";
  config.columns.aggregate_id = "aggregateid";
  config.columns.event_type = "type";
  TableMapper mapper({config});
  mapper.OnRelation(Relation(777, "inventory", "outboxevent",
                             {{"id", kUuidOid},
                              {"aggregatetype", kVarcharOid},
                              {"aggregateid", kVarcharOid},
                              {"type", kVarcharOid},
                              {"payload", kJsonbOid}}));
  const TableBinding* binding = mapper.Find(777);
  ASSERT_THAT(binding, NotNull());
  EXPECT_EQ(binding->headers, -1);
  EXPECT_EQ(binding->destination, -1);
  EXPECT_EQ(binding->created_at, -1);
  OutboxEvent event;
  ASSERT_TRUE(mapper
                  .MapInsert(*binding,
                             {{T("7F1C0F1E-0000-4000-8000-00000000000A"), T("Order"), T("1"),
                               T("OrderCreated"), T(R"({"id": 1})")}},
                             &event)
                  .ok());
  EXPECT_EQ(event.id, "7f1c0f1e-0000-4000-8000-00000000000a");
  EXPECT_EQ(event.aggregate_type, "Order");
  EXPECT_EQ(event.aggregate_id, "1");
  EXPECT_EQ(event.event_type, "OrderCreated");
  EXPECT_EQ(event.payload, R"({"id": 1})");
  EXPECT_TRUE(event.headers.empty());
  EXPECT_FALSE(event.destination.has_value());
  EXPECT_FALSE(event.created_at.has_value());
}

TEST(TableMapperTest, ChoosesTheConfigOfTheTable) {
  TableConfig a;
  a.table = "outbox_a";
  TableConfig b;
  b.table = "outbox_b";
  b.columns.payload = "body";
  TableMapper mapper({a, b});
  mapper.OnRelation(Relation(1, "public", "outbox_b", {{"body", kTextOid}}));
  mapper.OnRelation(Relation(2, "public", "outbox_a", {{"payload", kByteaOid}}));
  ASSERT_THAT(mapper.Find(1), NotNull());
  ASSERT_THAT(mapper.Find(2), NotNull());
  EXPECT_EQ(mapper.Find(1)->config_index, 1u);
  EXPECT_EQ(mapper.Find(1)->config, &mapper.tables()[1]);
  EXPECT_EQ(mapper.Find(1)->payload, 0);
  EXPECT_EQ(mapper.Find(1)->payload_type_oid, kTextOid);
  EXPECT_EQ(mapper.Find(2)->config_index, 0u);
  EXPECT_EQ(mapper.Find(2)->payload_type_oid, kByteaOid);
}

TEST(TableMapperTest, RelationThatIsNotAnOutboxTable) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(Relation(10, "public", "orders", {{"id", kInt4Oid}}));
  mapper.OnRelation(Relation(11, "other", "outbox", {{"id", kUuidOid}}));
  mapper.OnRelation(Relation(12, "public", "Outbox", {{"id", kUuidOid}}));  // case-sensitive
  mapper.OnRelation(Relation(13, "", "outbox", {{"id", kUuidOid}}));        // pg_catalog
  EXPECT_THAT(mapper.Find(10), IsNull());
  EXPECT_THAT(mapper.Find(11), IsNull());
  EXPECT_THAT(mapper.Find(12), IsNull());
  EXPECT_THAT(mapper.Find(13), IsNull());
  EXPECT_THAT(mapper.Find(99), IsNull());
}

TEST(TableMapperTest, ColumnNamesAreCaseSensitive) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(Relation(1, "public", "outbox", {{"ID", kUuidOid}, {"payload", kJsonbOid}}));
  ASSERT_THAT(mapper.Find(1), NotNull());
  EXPECT_EQ(mapper.Find(1)->id, -1);
  EXPECT_EQ(mapper.Find(1)->payload, 1);
}

TEST(TableMapperTest, OidReusedByAnotherTableIsForgotten) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(DefaultRelation(500));
  ASSERT_THAT(mapper.Find(500), NotNull());
  mapper.OnRelation(Relation(500, "public", "orders", {{"id", kInt4Oid}}));
  EXPECT_THAT(mapper.Find(500), IsNull());
}

TEST(TableMapperTest, RecreatedTableBindsItsNewOid) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(DefaultRelation(500));
  mapper.OnRelation(DefaultRelation(600));  // dropped and re-created
  ASSERT_THAT(mapper.Find(600), NotNull());
  EXPECT_EQ(mapper.Find(600)->table, "outbox");
}

TEST(TableMapperTest, RebindsAfterColumnsReordered) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(DefaultRelation(1));
  mapper.OnRelation(Relation(1, "public", "outbox",
                             {{"payload", kTextOid},
                              {"event_type", kTextOid},
                              {"aggregate_id", kTextOid},
                              {"aggregate_type", kTextOid},
                              {"id", kUuidOid}}));
  const TableBinding* binding = mapper.Find(1);
  ASSERT_THAT(binding, NotNull());
  EXPECT_EQ(binding->payload, 0);
  EXPECT_EQ(binding->id, 4);
  EXPECT_EQ(binding->headers, -1);
  EXPECT_EQ(binding->created_at, -1);
  EXPECT_EQ(binding->payload_type_oid, kTextOid);
  EXPECT_EQ(binding->column_count, 5u);
  OutboxEvent event;
  ASSERT_TRUE(
      mapper.MapInsert(*binding, {{T("hello"), T("Created"), T("9"), T("thing"), T(kId)}}, &event)
          .ok());
  EXPECT_EQ(event.id, kId);
  EXPECT_EQ(event.aggregate_type, "thing");
  EXPECT_EQ(event.aggregate_id, "9");
  EXPECT_EQ(event.event_type, "Created");
  EXPECT_EQ(event.payload, "hello");
  EXPECT_EQ(event.content_type, "text/plain");
}

TEST(TableMapperTest, RebindsAfterColumnRenamedAndDropped) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(DefaultRelation(1));
  // ALTER TABLE outbox RENAME aggregate_type TO kind; ALTER TABLE outbox DROP headers;
  mapper.OnRelation(Relation(1, "public", "outbox",
                             {{"id", kUuidOid},
                              {"kind", kTextOid},
                              {"aggregate_id", kTextOid},
                              {"event_type", kTextOid},
                              {"payload", kJsonbOid},
                              {"destination", kTextOid},
                              {"created_at", kTimestamptzOid}}));
  const TableBinding* binding = mapper.Find(1);
  ASSERT_THAT(binding, NotNull());
  EXPECT_EQ(binding->aggregate_type, -1);
  EXPECT_EQ(binding->headers, -1);
  EXPECT_EQ(binding->destination, 5);
  OutboxEvent event;
  const absl::Status status = mapper.MapInsert(
      *binding, {{T(kId), T("order"), T("1"), T("E"), T("{}"), Null(), Null()}}, &event);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("outbox table public.outbox: column \"aggregate_type\""));
  EXPECT_THAT(Message(status), HasSubstr("does not exist"));
}

TEST_F(TableMappingTest, MissingRequiredColumn) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(Relation(3, "public", "outbox",
                             {{"id", kUuidOid},
                              {"aggregate_type", kTextOid},
                              {"event_type", kTextOid},
                              {"payload", kJsonbOid}}));
  ASSERT_THAT(mapper.Find(3), NotNull());
  const absl::Status status =
      mapper.MapInsert(*mapper.Find(3), {{T(kId), T("a"), T("e"), T("{}")}}, &event_);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("outbox table public.outbox: column \"aggregate_id\" does "
                                         "not exist"));
  EXPECT_THAT(Message(status), HasSubstr("[[outbox]]"));
}

TEST_F(TableMappingTest, NullAggregateIdMessage) {
  pgoutput::TupleData row = DefaultRow();
  row.values[2] = Null();
  const absl::Status status = Map(row);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(status),
            "outbox table public.outbox: column \"aggregate_id\" is NULL; every outbox row needs "
            "it (see docs/configuration.md, [[outbox]] columns)");
}

TEST_F(TableMappingTest, EveryRequiredColumnRejectsNull) {
  const std::vector<std::pair<int, std::string>> required = {
      {0, "id"}, {1, "aggregate_type"}, {2, "aggregate_id"}, {3, "event_type"}, {4, "payload"}};
  for (const auto& [pos, name] : required) {
    pgoutput::TupleData row = DefaultRow();
    row.values[static_cast<size_t>(pos)] = Null();
    const absl::Status status = Map(row);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(Message(status), HasSubstr("column \"" + name + "\" is NULL")) << name;
  }
}

TEST_F(TableMappingTest, UnchangedToastIsRejected) {
  for (size_t pos : {size_t{4}, size_t{5}}) {  // a required and an optional column
    pgoutput::TupleData row = DefaultRow();
    row.values[pos] = Toast();
    const absl::Status status = Map(row);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(status), HasSubstr(pos == 4 ? "column \"payload\"" : "column \"headers\""));
    EXPECT_THAT(Message(status), HasSubstr("TOAST"));
  }
}

TEST_F(TableMappingTest, BadUuid) {
  pgoutput::TupleData row = DefaultRow();
  row.values[0] = T("not-a-uuid");
  const absl::Status status = Map(row);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status),
              HasSubstr("outbox table public.outbox: column \"id\" is not a UUID"));
  EXPECT_THAT(Message(status), HasSubstr("not-a-uuid"));
}

TEST_F(TableMappingTest, ColumnCountMismatchIsAProtocolProblem) {
  pgoutput::TupleData row = DefaultRow();
  row.values.pop_back();
  EXPECT_EQ(Map(row).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TableMappingTest, InvalidUtf8IsRejected) {
  pgoutput::TupleData row = DefaultRow();
  row.values[1] = T("ord\xe9r");  // LATIN1 é
  const absl::Status status = Map(row);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("column \"aggregate_type\" is not valid UTF-8"));
}

TEST(CanonicalUuidTest, AcceptsCommonForms) {
  const std::string canonical = "0190f6a1-8a4b-7c3d-9e2f-0123456789ab";
  for (std::string_view text :
       {"0190f6a1-8a4b-7c3d-9e2f-0123456789ab", "0190F6A1-8A4B-7C3D-9E2F-0123456789AB",
        "{0190f6a1-8a4b-7c3d-9e2f-0123456789ab}", "0190f6a18a4b7c3d9e2f0123456789ab",
        "{0190F6A18A4B7C3D9E2F0123456789AB}"}) {
    absl::StatusOr<std::string> uuid = CanonicalUuid(text);
    ASSERT_TRUE(uuid.ok()) << text;
    EXPECT_EQ(*uuid, canonical) << text;
  }
}

TEST(CanonicalUuidTest, RejectsOthers) {
  for (std::string_view text :
       {"", "0190f6a1-8a4b-7c3d-9e2f-0123456789a", "0190f6a1-8a4b-7c3d-9e2f-0123456789abc",
        "0190f6a18-a4b-7c3d-9e2f-0123456789ab", "0190f6a1-8a4b-7c3d-9e2f-0123456789ag",
        "{0190f6a1-8a4b-7c3d-9e2f-0123456789ab", "0190f6a1+8a4b+7c3d+9e2f+0123456789ab",
        "0190f6a18a4b7c3d9e2f0123456789a-"}) {
    EXPECT_EQ(CanonicalUuid(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

// ---- Payload by type.

class PayloadTest : public ::testing::Test {
 protected:
  absl::Status MapPayload(uint32_t type, pgoutput::TupleValue value) {
    TableMapper mapper({TableConfig{}});
    mapper.OnRelation(Relation(1, "public", "outbox",
                               {{"id", kUuidOid},
                                {"aggregate_type", kTextOid},
                                {"aggregate_id", kTextOid},
                                {"event_type", kTextOid},
                                {"payload", type}}));
    return mapper.MapInsert(*mapper.Find(1), {{T(kId), T("a"), T("1"), T("e"), value}}, &event_);
  }
  OutboxEvent event_;
};

TEST_F(PayloadTest, JsonAndJsonbAsIs) {
  ASSERT_TRUE(MapPayload(kJsonOid, T(R"({ "b":1,  "a" : 2 })")).ok());
  EXPECT_EQ(event_.payload, R"({ "b":1,  "a" : 2 })");
  EXPECT_EQ(event_.content_type, "application/json");
  ASSERT_TRUE(MapPayload(kJsonbOid, T(R"({"a": 2, "b": 1})")).ok());
  EXPECT_EQ(event_.payload, R"({"a": 2, "b": 1})");
  EXPECT_EQ(event_.content_type, "application/json");
}

TEST_F(PayloadTest, TextTypes) {
  for (uint32_t type : {kTextOid, kVarcharOid, kBpcharOid}) {
    ASSERT_TRUE(MapPayload(type, T("hello ")).ok());
    EXPECT_EQ(event_.payload, "hello ");
    EXPECT_EQ(event_.content_type, "text/plain");
  }
}

TEST_F(PayloadTest, ByteaHex) {
  ASSERT_TRUE(MapPayload(kByteaOid, T("\\x00ff10Ab")).ok());
  EXPECT_EQ(event_.payload, std::string("\x00\xff\x10\xab", 4));
  EXPECT_EQ(event_.content_type, "application/octet-stream");
  ASSERT_TRUE(MapPayload(kByteaOid, T("\\x")).ok());
  EXPECT_EQ(event_.payload, "");
}

TEST_F(PayloadTest, ByteaBadHex) {
  for (std::string_view bad : {"\\x0", "\\x0g", "\\xzz00", "abc\\000", "x00"}) {
    const absl::Status status = MapPayload(kByteaOid, T(bad));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Message(status), HasSubstr("column \"payload\"")) << bad;
  }
  EXPECT_THAT(Message(MapPayload(kByteaOid, T("abc\\000"))), HasSubstr("bytea_output"));
}

TEST_F(PayloadTest, OtherTypesAsText) {
  ASSERT_TRUE(MapPayload(kInt4Oid, T("42")).ok());
  EXPECT_EQ(event_.payload, "42");
  EXPECT_EQ(event_.content_type, "text/plain");
}

TEST_F(PayloadTest, BinaryFormWhereTrivial) {
  ASSERT_TRUE(MapPayload(kByteaOid, B(std::string_view("\x00\x01", 2))).ok());
  EXPECT_EQ(event_.payload, std::string("\x00\x01", 2));
  EXPECT_EQ(event_.content_type, "application/octet-stream");
  ASSERT_TRUE(MapPayload(kTextOid, B("hi")).ok());
  EXPECT_EQ(event_.payload, "hi");
  ASSERT_TRUE(MapPayload(kJsonbOid, B("\x01{\"a\": 1}")).ok());
  EXPECT_EQ(event_.payload, "{\"a\": 1}");
  EXPECT_EQ(MapPayload(kJsonbOid, B("\x02{}")).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status status = MapPayload(kInt4Oid, B(std::string_view("\0\0\0\x2a", 4)));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("binary"));
}

TEST(TableMapperTest, BinaryUuidAndText) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(DefaultRelation(1));
  OutboxEvent event;
  const std::string uuid_bytes("\x01\x90\xf6\xa1\x8a\x4b\x7c\x3d\x9e\x2f\x01\x23\x45\x67\x89\xab",
                               16);
  ASSERT_TRUE(mapper
                  .MapInsert(*mapper.Find(1),
                             {{B(uuid_bytes), B("order"), T("1"), T("e"), T("{}"), Null(), Null(),
                               B(std::string_view("\0\0\0\0\0\0\0\x01", 8))}},
                             &event)
                  .ok());
  EXPECT_EQ(event.id, kId);
  EXPECT_EQ(event.aggregate_type, "order");
  EXPECT_EQ(event.created_at, 1);
  EXPECT_EQ(mapper
                .MapInsert(*mapper.Find(1),
                           {{B("short"), T("o"), T("1"), T("e"), T("{}"), Null(), Null(), Null()}},
                           &event)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mapper
                .MapInsert(*mapper.Find(1),
                           {{T(kId), T("o"), T("1"), T("e"), T("{}"), Null(), Null(),
                             B("\x7f\xff\xff\xff\xff\xff\xff\xff")}},
                           &event)
                .code(),
            absl::StatusCode::kInvalidArgument);  // infinity
}

// ---- Headers.

TEST_F(TableMappingTest, HeadersKeepDocumentOrderAndStringifyOtherValues) {
  pgoutput::TupleData row = DefaultRow();
  row.values[5] = T(R"({"z": "last-letter", "a": 1, "m": true, "n": null, )"
                    R"("o": {"x": [1, 2.5]}, "s": "q\"uote"})");
  ASSERT_TRUE(Map(row).ok());
  EXPECT_THAT(event_.headers, ElementsAre(HeaderIs(std::pair("z", "last-letter")),
                                          HeaderIs(std::pair("a", "1")),
                                          HeaderIs(std::pair("m", "true")),
                                          HeaderIs(std::pair("n", "null")),
                                          HeaderIs(std::pair("o", R"({"x":[1,2.5]})")),
                                          HeaderIs(std::pair("s", "q\"uote"))));
}

TEST_F(TableMappingTest, EmptyHeadersObject) {
  pgoutput::TupleData row = DefaultRow();
  row.values[5] = T("{}");
  ASSERT_TRUE(Map(row).ok());
  EXPECT_TRUE(event_.headers.empty());
}

TEST_F(TableMappingTest, HeadersMustBeAnObject) {
  for (std::string_view bad : {"[1, 2]", "\"x\"", "3", "null"}) {
    pgoutput::TupleData row = DefaultRow();
    row.values[5] = T(bad);
    const absl::Status status = Map(row);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Message(status), HasSubstr("column \"headers\"")) << bad;
    EXPECT_THAT(Message(status), HasSubstr("JSON object")) << bad;
  }
}

TEST_F(TableMappingTest, HeadersMustBeJson) {
  pgoutput::TupleData row = DefaultRow();
  row.values[5] = T("{\"a\": ");
  const absl::Status status = Map(row);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("column \"headers\""));
  EXPECT_THAT(Message(status), HasSubstr("not valid JSON"));
}

// ---- created_at.

TEST_F(TableMappingTest, CreatedAtWithOffset) {
  pgoutput::TupleData row = DefaultRow();
  row.values[7] = T("2026-11-27 08:39:58.5+05:30");
  ASSERT_TRUE(Map(row).ok());
  EXPECT_EQ(event_.created_at, PgMicros(2026, 11, 27, 3, 9, 58, 500000));
}

TEST_F(TableMappingTest, BadCreatedAt) {
  for (std::string_view bad : {"infinity", "-infinity", "yesterday"}) {
    pgoutput::TupleData row = DefaultRow();
    row.values[7] = T(bad);
    const absl::Status status = Map(row);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Message(status), HasSubstr("column \"created_at\"")) << bad;
  }
}

TEST(ParsePgTimestampTest, PostgresAndIsoForms) {
  const int64_t base = PgMicros(2026, 11, 27, 3, 9, 58);
  const std::vector<std::pair<std::string_view, int64_t>> cases = {
      {"2000-01-01 00:00:00+00", 0},
      {"2026-11-27 03:09:58.123456+00", base + 123456},
      {"2026-11-27 03:09:58+00", base},
      {"2026-11-27 03:09:58.1+00", base + 100000},
      {"2026-11-27 08:39:58.123456+05:30", base + 123456},
      {"2026-11-26 19:09:58-08", base},
      {"2026-11-27 03:09:58", base},  // timestamp without time zone: UTC
      {"2026-11-27T03:09:58.123456+00:00", base + 123456},
      {"2026-11-27T03:09:58Z", base},
      {"2026-11-27T03:09:58.123456789Z", base + 123456},  // nanoseconds truncated
      {"2026-11-27T05:09:58+0200", base},
      {"2026-11-27 03:09+00", base - 58 * 1000000},
      {"2026-11-27", PgMicros(2026, 11, 27, 0, 0, 0)},
      {"1999-12-31 23:59:59.999999+00", -1},
      {"1900-01-01 00:00:00+05:53:28", PgMicros(1899, 12, 31, 18, 6, 32)},
      {"2024-02-29 12:00:00+00", PgMicros(2024, 2, 29, 12, 0, 0)},
  };
  for (const auto& [text, expected] : cases) {
    absl::StatusOr<int64_t> micros = ParsePgTimestamp(text);
    ASSERT_TRUE(micros.ok()) << text << ": " << micros.status();
    EXPECT_EQ(*micros, expected) << text;
  }
}

TEST(ParsePgTimestampTest, Rejects) {
  for (std::string_view bad :
       {"", "infinity", "-infinity", "2026-11-27 03:09:58 BC", "2026-02-29 00:00:00+00",
        "2026-13-01 00:00:00+00", "2026-11-27 24:00:00+00", "2026-11-27 03:60:00+00",
        "2026-11-27 03:09:58+16", "2026-11-27 03:09:58.+00", "2026-11-27 03:09:58.1234567890+00",
        "Fri Nov 27 03:09:58.123456 2026 PST", "27/11/2026", "2026-11-27 03:09:58+00 ",
        "0000-01-01 00:00:00+00", "10000-01-01 00:00:00+00", "2026-11-27x03:09:58"}) {
    EXPECT_EQ(ParsePgTimestamp(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(Message(ParsePgTimestamp("infinity").status()), HasSubstr("infinity"));
}

TEST(DecodeByteaHexTest, Decodes) {
  std::string out = "old";
  ASSERT_TRUE(DecodeByteaHex("\\xdeadBEEF", &out).ok());
  EXPECT_EQ(out, "\xde\xad\xbe\xef");
  EXPECT_EQ(DecodeByteaHex("\\xabc", &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeByteaHex("", &out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(IsValidUtf8Test, Basics) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\xaf"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\x80"));
}

// ---- Logical decoding messages.

// What outbox_emit() writes: jsonb_build_object(...)::text.
constexpr std::string_view kEmitted =
    R"({"id": "0190f6a1-8a4b-7c3d-9e2f-0123456789ab", )"
    R"("headers": {"traceparent": "00-abc-01", "n": 5}, )"
    R"("payload": {"total": 12345678901234567890123.10, "items": [1, {"x": "}"}]}, "event_type": )"
    R"("OrderCreated", "created_at": "2026-11-27T03:09:58.123456+00:00", "destination": "orders", )"
    R"("aggregate_id": "42", "aggregate_type": "order"})";

TEST(MapLogicalMessageTest, OutboxEmitContent) {
  OutboxEvent event;
  event.source.table = "stale";
  ASSERT_TRUE(MapLogicalMessage(kEmitted, &event).ok());
  EXPECT_EQ(event.id, kId);
  EXPECT_EQ(event.aggregate_type, "order");
  EXPECT_EQ(event.aggregate_id, "42");
  EXPECT_EQ(event.event_type, "OrderCreated");
  // The payload's text as written: digits kept, not re-serialized.
  EXPECT_EQ(event.payload, R"({"total": 12345678901234567890123.10, "items": [1, {"x": "}"}]})");
  EXPECT_EQ(event.content_type, "application/json");
  EXPECT_THAT(event.headers, ElementsAre(HeaderIs(std::pair("traceparent", "00-abc-01")),
                                         HeaderIs(std::pair("n", "5"))));
  EXPECT_EQ(event.destination, "orders");
  EXPECT_EQ(event.created_at, PgMicros(2026, 11, 27, 3, 9, 58, 123456));
  EXPECT_EQ(event.source.table, "");
}

TEST(MapLogicalMessageTest, NullOptionalFields) {
  OutboxEvent event;
  ASSERT_TRUE(MapLogicalMessage(
                  R"({"id": "0190F6A18A4B7C3D9E2F0123456789AB", "aggregate_type": "a", )"
                  R"("aggregate_id": 7, "event_type": "e", "payload": "just text", )"
                  R"("headers": null, "destination": null, "created_at": null, "extra": 1})",
                  &event)
                  .ok());
  EXPECT_EQ(event.id, kId);
  EXPECT_EQ(event.aggregate_id, "7");
  EXPECT_EQ(event.payload, "\"just text\"");  // a JSON string stays JSON text
  EXPECT_EQ(event.content_type, "application/json");
  EXPECT_TRUE(event.headers.empty());
  EXPECT_FALSE(event.destination.has_value());
  EXPECT_FALSE(event.created_at.has_value());
}

TEST(MapLogicalMessageTest, ScalarAndDuplicatePayloads) {
  OutboxEvent event;
  ASSERT_TRUE(MapLogicalMessage(
                  R"({"id":"0190f6a1-8a4b-7c3d-9e2f-0123456789ab","aggregate_type":"a",)"
                  R"("aggregate_id":"1","event_type":"e","payload":1.50})",
                  &event)
                  .ok());
  EXPECT_EQ(event.payload, "1.50");
  ASSERT_TRUE(MapLogicalMessage(
                  "\xEF\xBB\xBF"
                  R"( { "payload" : [1] , "id":"0190f6a1-8a4b-7c3d-9e2f-0123456789ab",)"
                  R"("aggregate_type":"a","aggregate_id":"1","event_type":"e",)"
                  R"("pay\u006coad" : [2, "\"]"] } )",
                  &event)
                  .ok());
  EXPECT_EQ(event.payload, R"([2, "\"]"])");  // the last one wins, as in jsonb
}

TEST(MapLogicalMessageTest, MissingOrWrongFields) {
  const std::string full =
      R"({"id": "0190f6a1-8a4b-7c3d-9e2f-0123456789ab", "aggregate_type": "a", )"
      R"("aggregate_id": "1", "event_type": "e", "payload": {}})";
  OutboxEvent event;
  ASSERT_TRUE(MapLogicalMessage(full, &event).ok());
  for (std::string field : {"id", "aggregate_type", "aggregate_id", "event_type", "payload"}) {
    // Rename the field away.
    std::string content = full;
    content.replace(content.find("\"" + field + "\""), field.size() + 2, "\"gone\"");
    const absl::Status status = MapLogicalMessage(content, &event);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(Message(status), HasSubstr("field \"" + field + "\" is missing")) << field;
  }
  const std::vector<std::pair<std::string, std::string>> wrong = {
      {R"("id": "0190f6a1-8a4b-7c3d-9e2f-0123456789ab")", R"("id": "nope")"},
      {R"("id": "0190f6a1-8a4b-7c3d-9e2f-0123456789ab")", R"("id": 5)"},
      {R"("event_type": "e")", R"("event_type": ["e"])"},
      {R"("payload": {})", R"("payload": null)"},
      {R"("payload": {})", R"("payload": {}, "headers": [1])"},
      {R"("payload": {})", R"("payload": {}, "destination": 3)"},
      {R"("payload": {})", R"("payload": {}, "created_at": 3)"},
      {R"("payload": {})", R"("payload": {}, "created_at": "infinity")"},
  };
  for (const auto& [from, to] : wrong) {
    std::string content = full;
    content.replace(content.find(from), from.size(), to);
    EXPECT_EQ(MapLogicalMessage(content, &event).code(), absl::StatusCode::kInvalidArgument)
        << content;
  }
}

TEST(MapLogicalMessageTest, ContentMustBeAJsonObject) {
  OutboxEvent event;
  for (std::string_view bad : {"", "[1]", "\"x\"", "null", "{\"id\": ", "not json", "{} {}"}) {
    const absl::Status status = MapLogicalMessage(bad, &event);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Message(status), HasSubstr("outbox logical message")) << bad;
  }
  EXPECT_THAT(Message(MapLogicalMessage("[1]", &event)), HasSubstr("not an object"));
}

// ---- Hostile JSON: nesting and size limits.

// A message as in issue 10: about 200 KB, its headers nested arrays 100,000 deep.
// `depth` counts every array and object, the content's own object included.
std::string DeepMessage(size_t depth) {
  return R"({"id": "0190f6a1-8a4b-7c3d-9e2f-0123456789ab", "aggregate_type": "a", )"
         R"("aggregate_id": "1", "event_type": "e", "payload": {}, "headers": {"h": )" +
         std::string(depth - 2, '[') + std::string(depth - 2, ']') + "}}";
}

TEST(MapLogicalMessageTest, HeadersNested100000DeepAreABadEventNotACrash) {
  const std::string content = DeepMessage(100000);
  ASSERT_GT(content.size(), 200000u);
  OutboxEvent event;
  const absl::Status status = MapLogicalMessage(content, &event);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BadEventReason(status), bad_event::kJsonLimit);
  EXPECT_THAT(Message(status), HasSubstr("deeper than the 256 levels"));
}

TEST(MapLogicalMessageTest, Headers100000DeepArraysAreABadEvent) {
  // The headers value itself nested (not an object, but the limit speaks first).
  const std::string deep(100000, '[');
  const std::string content =
      R"({"id": "0190f6a1-8a4b-7c3d-9e2f-0123456789ab", "aggregate_type": "a", )"
      R"("aggregate_id": "1", "event_type": "e", "payload": {}, "headers": )" +
      deep + std::string(100000, ']') + "}";
  OutboxEvent event;
  const absl::Status status = MapLogicalMessage(content, &event);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BadEventReason(status), bad_event::kJsonLimit);
  // Unclosed: the parse stops at the limit, long before the input ends.
  EXPECT_EQ(BadEventReason(MapLogicalMessage("{\"headers\": " + deep, &event)),
            bad_event::kJsonLimit);
}

TEST(MapLogicalMessageTest, DepthLimitBoundary) {
  OutboxEvent event;
  const absl::Status at_limit = MapLogicalMessage(DeepMessage(kMaxJsonDepth), &event);
  ASSERT_TRUE(at_limit.ok()) << at_limit;
  ASSERT_EQ(event.headers.size(), 1u);
  EXPECT_EQ(event.headers[0].value.size(), 2 * (kMaxJsonDepth - 2));
  const absl::Status over = MapLogicalMessage(DeepMessage(kMaxJsonDepth + 1), &event);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BadEventReason(over), bad_event::kJsonLimit);
}

TEST(MapLogicalMessageTest, PayloadDepthCountsToo) {
  const auto message = [](size_t payload_depth) {
    return R"({"id": "0190f6a1-8a4b-7c3d-9e2f-0123456789ab", "aggregate_type": "a", )"
           R"("aggregate_id": "1", "event_type": "e", "payload": )" +
           std::string(payload_depth, '[') + std::string(payload_depth, ']') + "}";
  };
  OutboxEvent event;
  ASSERT_TRUE(MapLogicalMessage(message(kMaxJsonDepth - 1), &event).ok());
  EXPECT_EQ(event.payload.size(), 2 * (kMaxJsonDepth - 1));
  EXPECT_EQ(BadEventReason(MapLogicalMessage(message(kMaxJsonDepth), &event)),
            bad_event::kJsonLimit);
}

TEST(MapLogicalMessageTest, SizeLimitBoundary) {
  const std::string head =
      R"({"id": "0190f6a1-8a4b-7c3d-9e2f-0123456789ab", "aggregate_type": "a", )"
      R"("aggregate_id": "1", "event_type": "e", "payload": ")";
  const auto message = [&head](size_t size) {
    return head + std::string(size - head.size() - 2, 'x') + "\"}";
  };
  OutboxEvent event;
  const std::string at_limit = message(kMaxMessageJsonBytes);
  ASSERT_EQ(at_limit.size(), kMaxMessageJsonBytes);
  ASSERT_TRUE(MapLogicalMessage(at_limit, &event).ok());
  const absl::Status over = MapLogicalMessage(message(kMaxMessageJsonBytes + 1), &event);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BadEventReason(over), bad_event::kJsonLimit);
  EXPECT_THAT(Message(over), HasSubstr("larger than the 16777216 bytes"));
}

TEST(MapLogicalMessageTest, InvalidJsonStaysBadPayload) {
  OutboxEvent event;
  EXPECT_EQ(BadEventReason(MapLogicalMessage("{\"id\": [1,}", &event)), bad_event::kBadPayload);
}

TEST_F(TableMappingTest, Headers100000DeepAreABadEventNotACrash) {
  pgoutput::TupleData row = DefaultRow();
  const std::string deep = "{\"h\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  row.values[5] = T(deep);
  const absl::Status status = Map(row);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BadEventReason(status), bad_event::kJsonLimit);
  EXPECT_THAT(Message(status), HasSubstr("column \"headers\""));
}

TEST_F(TableMappingTest, HeadersDepthAndSizeLimitBoundary) {
  const auto headers = [](size_t depth) {
    return "{\"h\": " + std::string(depth - 1, '[') + std::string(depth - 1, ']') + "}";
  };
  pgoutput::TupleData row = DefaultRow();
  std::string text = headers(kMaxJsonDepth);
  row.values[5] = T(text);
  ASSERT_TRUE(Map(row).ok());
  text = headers(kMaxJsonDepth + 1);
  row.values[5] = T(text);
  EXPECT_EQ(BadEventReason(Map(row)), bad_event::kJsonLimit);

  const auto sized = [](size_t size) { return "{\"h\": \"" + std::string(size - 9, 'x') + "\"}"; };
  text = sized(kMaxHeadersJsonBytes);
  ASSERT_EQ(text.size(), kMaxHeadersJsonBytes);
  row.values[5] = T(text);
  ASSERT_TRUE(Map(row).ok());
  text = sized(kMaxHeadersJsonBytes + 1);
  row.values[5] = T(text);
  const absl::Status over = Map(row);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BadEventReason(over), bad_event::kJsonLimit);
}

}  // namespace
}  // namespace outboxd::outbox
