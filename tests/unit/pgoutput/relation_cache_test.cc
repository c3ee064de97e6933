#include "pgoutput/relation_cache.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "golden.h"
#include "gtest/gtest.h"
#include "pgoutput/decoder.h"

namespace outboxd::pgoutput {
namespace {

// absl::string_view is not std::string_view in this toolchain; gMock's string matchers need
// a std::string.
std::string Text(const absl::Status& status) { return std::string(status.message()); }

using ::testing::HasSubstr;

RelationMessage MakeRelation(uint32_t oid, std::string name, std::vector<std::string> columns) {
  RelationMessage r;
  r.oid = oid;
  r.schema = "public";
  r.name = std::move(name);
  for (std::string& c : columns) r.columns.push_back({0, std::move(c), 25, -1});
  return r;
}

TEST(RelationCacheTest, UnknownOidIsFailedPrecondition) {
  RelationCache cache;
  const auto got = cache.Get(16400);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Text(got.status()), HasSubstr("no Relation message seen for relation OID 16400"));
}

TEST(RelationCacheTest, PutThenGet) {
  RelationCache cache;
  cache.Put(MakeRelation(16400, "outbox", {"id", "payload"}));
  const auto got = cache.Get(16400);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)->name, "outbox");
  ASSERT_EQ((*got)->columns.size(), 2u);
  EXPECT_EQ((*got)->columns[1].name, "payload");
  EXPECT_EQ(cache.Get(16401).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RelationCacheTest, EveryRelationMessageReplacesTheEntry) {
  RelationCache cache;
  cache.Put(MakeRelation(16400, "outbox", {"id", "payload", "headers"}));
  // After ALTER TABLE the server sends the whole new layout: nothing of the old one survives.
  RelationMessage altered = MakeRelation(16400, "outbox_renamed", {"id"});
  altered.replica_identity = 'f';
  cache.Put(altered);
  EXPECT_EQ(cache.size(), 1u);
  const auto got = cache.Get(16400);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)->name, "outbox_renamed");
  EXPECT_EQ((*got)->replica_identity, 'f');
  ASSERT_EQ((*got)->columns.size(), 1u);
  EXPECT_EQ((*got)->columns[0].name, "id");

  cache.Put(MakeRelation(16500, "other", {"a"}));
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ((*cache.Get(16400))->name, "outbox_renamed");
  EXPECT_EQ((*cache.Get(16500))->name, "other");
}

TEST(RelationCacheTest, ClearForgetsEverything) {
  RelationCache cache;
  cache.Put(MakeRelation(1, "a", {}));
  cache.Put(MakeRelation(2, "b", {}));
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.Get(1).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RelationCacheTest, HoldsDecodedRelationsBeyondTheReceiveBuffer) {
  RelationCache cache;
  uint32_t oid = 0;
  {
    // The decoded Relation owns its strings, so the cache outlives the bytes.
    std::string bytes = testing::LoadGolden("insert.hex")[1].bytes;
    auto m = DecodeMessage(bytes);
    ASSERT_TRUE(m.ok()) << m.status();
    oid = std::get<RelationMessage>(*m).oid;
    cache.Put(std::get<RelationMessage>(std::move(*m)));
    bytes.assign(bytes.size(), 'X');
  }
  const auto got = cache.Get(oid);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)->schema, "capture");
  EXPECT_EQ((*got)->name, "kitchen");
  EXPECT_EQ((*got)->columns.size(), 5u);
}

}  // namespace
}  // namespace outboxd::pgoutput
