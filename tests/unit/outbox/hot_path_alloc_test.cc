// Checks the hot-path promise of the outbox core: once warm, mapping an inserted row of the
// shape sql/outbox.sql gives (no row headers) and encoding its envelope allocate nothing.
// Global operator new is replaced in this binary only, to count allocations.
#include <cstdlib>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "outbox/envelope.h"
#include "outbox/table_mapping.h"
#include "outbox/values.h"

namespace {
thread_local size_t allocations = 0;
}  // namespace

void* operator new(size_t size) {
  ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace outboxd::outbox {
namespace {

using Kind = pgoutput::TupleValue::Kind;

pgoutput::RelationMessage OutboxRelation() {
  pgoutput::RelationMessage relation;
  relation.oid = 16385;
  relation.schema = "public";
  relation.name = "outbox";
  for (auto [name, type] : std::vector<std::pair<std::string, uint32_t>>{
           {"id", kUuidOid}, {"aggregate_type", kTextOid}, {"aggregate_id", kTextOid},
           {"event_type", kTextOid}, {"payload", kJsonbOid}, {"headers", kJsonbOid},
           {"destination", kTextOid}, {"created_at", kTimestamptzOid}}) {
    pgoutput::RelationColumn column;
    column.name = name;
    column.type_oid = type;
    relation.columns.push_back(column);
  }
  return relation;
}

TEST(HotPathAllocationTest, MapInsertAndEncodeAllocateNothingOnceWarm) {
  TableMapper mapper({TableConfig{}});
  mapper.OnRelation(OutboxRelation());
  const TableBinding* binding = mapper.Find(16385);
  ASSERT_NE(binding, nullptr);
  const std::string payload =
      R"({"note": ")" + std::string(180, 'x') + R"(", "customer": "customer-7", "order_id": 7})";
  const pgoutput::TupleData row{{{Kind::kText, "3f0e6c1e-9a55-4c43-8a1e-6f1d2b7c9e01"},
                                 {Kind::kText, "BenchOrder"},
                                 {Kind::kText, "order-12345"},
                                 {Kind::kText, "OrderCreated"},
                                 {Kind::kText, payload},
                                 {Kind::kNull, {}},
                                 {Kind::kNull, {}},
                                 {Kind::kText, "2026-11-27 05:01:02.123456+00"}}};
  OutboxEvent event;
  std::string value;
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  auto once = [&] {
    ASSERT_TRUE(mapper.MapInsert(*binding, row, &event).ok());
    event.source.schema = "public";
    event.source.table = "outbox";
    EncodeEnvelope(event, &value);
    RecordHeaders(event, &headers);
  };
  once();  // grows the strings and vectors once
  const size_t before = allocations;
  for (int i = 0; i < 1000; ++i) once();
  EXPECT_EQ(allocations - before, 0u);
  EXPECT_EQ(event.id, "3f0e6c1e-9a55-4c43-8a1e-6f1d2b7c9e01");
  EXPECT_GT(value.size(), payload.size());
}

TEST(HotPathAllocationTest, CounterSeesAllocations) {
  // Guards the test itself: a replaced operator new that counted nothing would pass above.
  const size_t before = allocations;
  auto* p = new std::vector<int>(100);
  delete p;
  EXPECT_GE(allocations - before, 2u);
}

}  // namespace
}  // namespace outboxd::outbox
