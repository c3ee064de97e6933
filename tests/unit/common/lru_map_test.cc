#include "common/lru_map.h"

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd {
namespace {

using ::testing::UnorderedElementsAre;

std::vector<std::string> Keys(LruMap<int>& map) {
  std::vector<std::string> keys;
  map.ForEach([&](std::string_view key, int) { keys.emplace_back(key); });
  return keys;
}

TEST(LruMapTest, DropsTheLeastRecentlyUsedEntryToMakeRoom) {
  LruMap<int> map(3);
  EXPECT_FALSE(map.Insert("a", 1).has_value());
  EXPECT_FALSE(map.Insert("b", 2).has_value());
  EXPECT_FALSE(map.Insert("c", 3).has_value());
  ASSERT_NE(map.Get("a"), nullptr);  // "b" is now the least recently used
  EXPECT_EQ(map.Insert("d", 4), std::optional<int>(2)) << "the dropped value comes back, to be released";
  EXPECT_THAT(Keys(map), UnorderedElementsAre("a", "c", "d"));
  EXPECT_EQ(map.Get("b"), nullptr);
  EXPECT_EQ(*map.Get("a"), 1);
  EXPECT_EQ(map.size(), 3u);
}

TEST(LruMapTest, ContainsDoesNotChangeTheOrder) {
  LruMap<int> map(2);
  map.Insert("a", 1);
  map.Insert("b", 2);
  EXPECT_TRUE(map.Contains("a"));
  EXPECT_EQ(map.Insert("c", 3), std::optional<int>(1));
  EXPECT_FALSE(map.Contains("a"));
}

TEST(LruMapTest, PinnedEntriesAreNeverDropped) {
  LruMap<int> map(2);
  LruMap<int>::Slot a, b;
  map.Insert("a", 1, &a);
  map.Insert("b", 2, &b);
  map.Pin(a);
  map.Pin(b);
  // Everything pinned: the map grows past its capacity rather than drop one.
  EXPECT_FALSE(map.Insert("c", 3).has_value());
  EXPECT_EQ(map.size(), 3u);
  EXPECT_EQ(map.key(a), "a");
  map.Unpin(a);  // now the only candidate
  EXPECT_EQ(map.Insert("d", 4), std::optional<int>(3)) << "c was less recently used than a";
  EXPECT_EQ(map.Insert("e", 5), std::optional<int>(1));
  EXPECT_EQ(map.key(b), "b");
  EXPECT_EQ(map.value(b), 2);
}

TEST(LruMapTest, SlotsOfDroppedEntriesAreReused) {
  LruMap<int> map(1);
  LruMap<int>::Slot first, second;
  map.Insert("a", 1, &first);
  map.Insert("b", 2, &second);
  EXPECT_EQ(first, second);
  EXPECT_EQ(map.key(second), "b");
  EXPECT_EQ(map.Find("a"), std::nullopt);
  EXPECT_EQ(map.Find("b"), std::optional<LruMap<int>::Slot>(second));
}

TEST(LruMapTest, StaysWithinItsCapacityUnderManyKeys) {
  LruMap<int> map(100);
  for (int i = 0; i < 10000; ++i) {
    map.Insert("topic." + std::to_string(i), i);
    ASSERT_NE(map.Get("topic.0"), nullptr) << "a key used all along was dropped at " << i;
  }
  EXPECT_EQ(map.size(), 100u);
}

}  // namespace
}  // namespace outboxd
