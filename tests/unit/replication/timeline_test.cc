// IDENTIFY_SYSTEM's row and TIMELINE_HISTORY's file, parsed: what real
// servers send, and hostile content refused with DataLossError.
#include "replication/timeline.h"

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::replication {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Row = std::vector<std::optional<std::string>>;

TEST(IdentifySystemTest, ParsesARow) {
  absl::StatusOr<SystemIdentity> id = ParseIdentifySystem(Row{"7312345678901234567", "3", "0/1A2B3C8", "app"});
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->system_id, "7312345678901234567");
  EXPECT_EQ(id->timeline, 3u);
  EXPECT_EQ(id->xlog_pos, Lsn(0x1A2B3C8));
  EXPECT_EQ(id->database, "app");
  // A physical connection has no database.
  id = ParseIdentifySystem(Row{"1", "1", "16/B374D848", std::nullopt});
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->database, "");
  EXPECT_EQ(id->xlog_pos, Lsn(0x16B374D848));
}

TEST(IdentifySystemTest, RefusesWhatItCannotRead) {
  const std::vector<Row> bad = {
      Row{"1", "1", "0/1"},                                      // 3 columns
      Row{std::nullopt, "1", "0/1", "app"},                      // no system id
      Row{"73x", "1", "0/1", "app"},                             // not decimal
      Row{std::string(21, '9'), "1", "0/1", "app"},              // over 20 digits
      Row{"1", "0", "0/1", "app"},                               // timeline 0
      Row{"1", "-1", "0/1", "app"},
      Row{"1", "2147483648", "0/1", "app"},                      // past what an int holds
      Row{"1", "1x", "0/1", "app"},
      Row{"1", std::nullopt, "0/1", "app"},
      Row{"1", "1", std::nullopt, "app"},                        // no xlogpos
      Row{"1", "1", "nope", "app"},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(ParseIdentifySystem(bad[i]).status().code(), absl::StatusCode::kDataLoss) << "row " << i;
  }
  absl::Status status = ParseIdentifySystem(Row{"1", std::string(5000, 'z'), "0/1", "app"}).status();
  EXPECT_THAT(status.message(), HasSubstr("timeline"));
  EXPECT_LT(status.message().size(), 200u) << "a hostile value is quoted, bounded";
}

// As PostgreSQL writes it (writeTimeLineHistory): each file repeats its
// parent's lines, then a blank line and its own.
constexpr char kHistoryOf3[] =
    "1\t0/3000158\tno recovery target specified\n"
    "\n"
    "2\t0/5000A28\tat restore point \"before_migration\"\n";

TEST(TimelineHistoryTest, ParsesWhatPostgresWrites) {
  absl::StatusOr<std::vector<TimelineSwitch>> history = ParseTimelineHistory(kHistoryOf3, 3);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_THAT(*history, ElementsAre(TimelineSwitch{1, Lsn(0x3000158)}, TimelineSwitch{2, Lsn(0x5000A28)}));
  // Comments, blank lines, spaces for tabs, no final newline, a history that skips a
  // sibling timeline (4 forked from 2, not from 3), an empty reason.
  history = ParseTimelineHistory("# made by hand\n  1 0/10\n\r\n2\t1/0\t\n", 4);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_THAT(*history, ElementsAre(TimelineSwitch{1, Lsn(0x10)}, TimelineSwitch{2, Lsn(0x100000000)}));
  history = ParseTimelineHistory("1\t0/10", 2);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_THAT(*history, ElementsAre(TimelineSwitch{1, Lsn(0x10)}));
  // Nothing but comments: no ancestor known.
  history = ParseTimelineHistory("# nothing\n", 2);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_TRUE(history->empty());
}

TEST(TimelineHistoryTest, RefusesHostileContentNamingTheLine) {
  struct Case {
    std::string content;
    uint32_t current;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"x\t0/10\treason\n", 2, "line 1"},                      // not a timeline
      {"1\n", 2, "switch point"},                             // no switch point
      {"1\tnope\n", 2, "switch point"},
      {"1\t0/10\n0\t0/20\n", 3, "line 2"},                    // timeline 0
      {"1\t0/10\n1\t0/20\n", 3, "increase"},                  // not increasing
      {"2\t0/10\n1\t0/20\n", 3, "increase"},
      {"1\t0/20\n2\t0/10\n", 3, "before the previous"},       // switch points backwards
      {"2\t0/10\n", 2, "not an ancestor"},                    // its own timeline
      {"5\t0/10\n", 2, "not an ancestor"},                    // a later one
      {"4294967296\t0/10\n", 2, "timeline ID"},               // past 32 bits
      {std::string("1\t0/10\0\n", 8), 2, "NUL"},
  };
  for (const Case& c : cases) {
    absl::Status status = ParseTimelineHistory(c.content, c.current).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.content;
    EXPECT_THAT(status.message(), HasSubstr(c.says)) << c.content;
  }
  // Bounded: size and entries.
  EXPECT_EQ(ParseTimelineHistory(std::string(kMaxTimelineHistoryBytes + 1, '#'), 2).status().code(),
            absl::StatusCode::kDataLoss);
  std::string many;
  for (uint32_t t = 1; t <= kMaxTimelineHistoryEntries + 1; ++t) many += fmt::format("{}\t0/{:X}\n", t, t);
  absl::Status status = ParseTimelineHistory(many, kMaxTimelineHistoryEntries + 2).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("more than"));
  // A long line is quoted, bounded.
  status = ParseTimelineHistory(std::string(100000, 'z'), 2).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_LT(status.message().size(), 300u);
}

// Random bytes never crash the parser, and whatever it accepts is a proper
// history: increasing timelines below the current one, switch points in order.
TEST(TimelineHistoryTest, RandomBytes) {
  std::mt19937 rng(20);
  const std::string alphabet = "0123456789ABCDEF/\t \n#x";
  for (int i = 0; i < 20000; ++i) {
    std::string content(rng() % 64, '\0');
    for (char& c : content) c = i % 2 == 0 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng());
    absl::StatusOr<std::vector<TimelineSwitch>> history = ParseTimelineHistory(content, 9);
    if (!history.ok()) {
      EXPECT_EQ(history.status().code(), absl::StatusCode::kDataLoss);
      continue;
    }
    for (size_t k = 0; k < history->size(); ++k) {
      EXPECT_LT((*history)[k].timeline, 9u);
      if (k > 0) {
        EXPECT_LT((*history)[k - 1].timeline, (*history)[k].timeline);
        EXPECT_LE((*history)[k - 1].switch_point, (*history)[k].switch_point);
      }
    }
  }
}

}  // namespace
}  // namespace outboxd::replication
