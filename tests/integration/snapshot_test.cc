// [source] snapshot = "initial" end to end (real PostgreSQL, real Kafka): rows
// committed before the first start and rows committed while the snapshot is
// read are each published exactly once; a crash in the middle of the snapshot
// is redone on the next start, losing nothing (duplicates allowed).
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <map>
#include <set>
#include <utility>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::it {
namespace {

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_dir_ = fmt::format("/tmp/{}", UniqueName("snapshot_state"));
    ASSERT_EQ(RunShell("mkdir -p " + state_dir_).code, 0);
    mark_ = fmt::format("{}/{}.state.snapshot-pending", state_dir_, source_.slot);
  }
  void TearDown() override {
    if (process_) process_->Stop(SIGTERM);
    DropSource(sql_, source_);
    RunShell("rm -rf " + state_dir_);
  }

  std::string Config() {
    std::string config = ConfigFor(source_);
    const std::string anchor = "create_slot = true\n";
    config.replace(config.find(anchor), anchor.size(),
                   anchor + fmt::format("snapshot = \"initial\"\nstate_dir = \"{}\"\n", state_dir_));
    return config;
  }

  // Inserts `n` rows in one transaction, tagged `tag`; returns their ids.
  std::vector<std::string> InsertRows(Sql& sql, int n, const std::string& tag, size_t payload_bytes = 10) {
    const std::vector<replication::Row> rows = sql.Query(fmt::format(
        "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload) SELECT 'order', "
        "'{}-' || g, 'OrderPlaced', jsonb_build_object('pad', repeat('x', {})) FROM "
        "generate_series(1, {}) g RETURNING id",
        source_.table, tag, payload_bytes, n));
    std::vector<std::string> ids;
    for (const replication::Row& row : rows) ids.push_back(row[0].value_or(""));
    return ids;
  }

  // How often each outbox id (the record key: key = "id") was read, until all of `ids` were seen.
  std::map<std::string, int> ReadIds(const std::set<std::string>& ids) {
    std::map<std::string, int> seen;
    for (const Record& r : ReadUntilAllKeys({source_.topic_prefix + ".order"}, ids, absl::Seconds(120))) {
      ++seen[r.key];
    }
    return seen;
  }

  Sql sql_;
  TestSource source_ = CreateDefaultSource(sql_, "snap");
  std::string state_dir_;
  std::string mark_;
  std::unique_ptr<OutboxdProcess> process_;
};

// How many of the committed ids never arrived, and how many arrived more than once.
std::pair<size_t, size_t> Tally(const std::set<std::string>& all, const std::map<std::string, int>& seen) {
  size_t missing = 0, twice = 0;
  for (const std::string& id : all) {
    const auto it = seen.find(id);
    if (it == seen.end()) ++missing;
    else if (it->second > 1) ++twice;
  }
  return {missing, twice};
}

TEST_F(SnapshotTest, RowsBeforeTheSlotAndDuringTheSnapshotAreEachPublishedOnce) {
  const std::vector<std::string> before = InsertRows(sql_, 5000, "before");
  ASSERT_EQ(before.size(), 5000u);

  // A writer commits rows all along: before, during and after the snapshot.
  std::atomic<bool> writing{true};
  std::vector<std::string> during;
  std::thread writer([&] {
    Sql sql;
    for (int i = 0; writing.load() || i < 20; ++i) {
      for (const std::string& id : InsertRows(sql, 5, fmt::format("w{}", i))) during.push_back(id);
      usleep(5000);
    }
  });
  process_ = std::make_unique<OutboxdProcess>(Config());
  process_->Start();
  const bool streaming = process_->WaitForLog("streaming slot", absl::Seconds(120));
  // Keep writing a little after streaming started, then stop.
  WaitFor([&] { return false; }, absl::Milliseconds(500));
  writing.store(false);
  writer.join();
  ASSERT_TRUE(streaming) << process_->Log();
  EXPECT_THAT(process_->Log(), ::testing::HasSubstr("initial snapshot: published"));

  std::set<std::string> all(before.begin(), before.end());
  all.insert(during.begin(), during.end());
  const std::map<std::string, int> seen = ReadIds(all);
  const auto [missing, twice] = Tally(all, seen);
  std::printf("snapshot figures: %zu rows before the first start, %zu rows written during, %zu "
              "records read, %zu missing, %zu published twice\n",
              before.size(), during.size(), seen.size(), missing, twice);
  EXPECT_EQ(missing, 0u) << process_->Log().substr(0, 20000);
  EXPECT_EQ(twice, 0u);
  EXPECT_EQ(seen.size(), all.size());
  EXPECT_NE(access(mark_.c_str(), F_OK), 0) << "the snapshot mark must be gone";
}

TEST_F(SnapshotTest, ACrashInTheMiddleOfTheSnapshotIsRedoneWithoutLoss) {
  // Enough rows that the snapshot takes a while to deliver.
  std::vector<std::string> before = InsertRows(sql_, 40000, "big", 2000);
  ASSERT_EQ(before.size(), 40000u);
  process_ = std::make_unique<OutboxdProcess>(Config());
  process_->Start();
  ASSERT_TRUE(process_->WaitForLog("publishing the initial snapshot", absl::Seconds(60))) << process_->Log();
  process_->Stop(SIGKILL);
  // The slot exists and the snapshot did not finish: the mark says so.
  const std::string slot_exists = sql_.Scalar(fmt::format(
      "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'", source_.slot));
  ASSERT_EQ(slot_exists, "1");
  ASSERT_EQ(access(mark_.c_str(), F_OK), 0)
      << "the snapshot finished before the kill; the test needs more rows";

  // Committed while outboxd was down: in the slot, and in the redone snapshot.
  const std::vector<std::string> while_down = InsertRows(sql_, 100, "down");
  process_->Start();
  ASSERT_TRUE(process_->WaitForLog("streaming slot", absl::Seconds(180))) << process_->Log();
  EXPECT_THAT(process_->Log(), ::testing::HasSubstr("was interrupted"));
  const std::vector<std::string> after = InsertRows(sql_, 100, "after");

  std::set<std::string> all(before.begin(), before.end());
  all.insert(while_down.begin(), while_down.end());
  all.insert(after.begin(), after.end());
  const std::map<std::string, int> seen = ReadIds(all);
  const auto [missing, twice] = Tally(all, seen);
  std::printf("snapshot restart figures: %zu rows before, %zu while down, %zu after; %zu missing, "
              "%zu published more than once\n",
              before.size(), while_down.size(), after.size(), missing, twice);
  EXPECT_EQ(missing, 0u);
  EXPECT_NE(access(mark_.c_str(), F_OK), 0) << "the snapshot mark must be gone";
}

}  // namespace
}  // namespace outboxd::it
