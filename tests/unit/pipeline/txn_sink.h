// TxnSink: a FakeSink with Kafka transactions, for exactly-once tests:
// records become visible (committed) only at a commit that succeeds.
#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "fakes.h"
#include "gtest/gtest.h"
#include "pipeline/checkpoint.h"

namespace outboxd::testing {

inline constexpr char kCheckpoints[] = "outboxd.checkpoints";

// A transactional FakeSink: records become visible (committed) only at a
// commit that succeeds; `commit_hook` decides each commit attempt.
class TxnSink : public FakeSink {
 public:
  absl::Status BeginTransaction() override {
    EXPECT_FALSE(open) << "a transaction began inside another";
    open = true;
    first_ = produced.size();
    ++begins;
    begin_times.push_back(absl::Now());
    return begin_error;
  }
  absl::Status CommitTransaction(absl::Duration) override {
    EXPECT_TRUE(open);
    ++commit_calls;
    if (commit_hook) {
      if (absl::Status s = commit_hook(); !s.ok()) return s;
    }
    DeliverAll(absl::OkStatus());  // the commit flushes
    for (size_t i = first_; i < produced.size(); ++i) visible.push_back(produced[i]);
    open = false;
    ++commits;
    commit_times.push_back(absl::Now());
    return absl::OkStatus();
  }
  absl::Status AbortTransaction(absl::Duration) override {
    DeliverAll(absl::AbortedError("Local: Purged"));
    open = false;
    ++aborts;
    return absl::OkStatus();
  }

  std::vector<std::string> VisibleIds() const {
    std::vector<std::string> ids;
    for (const auto& p : visible) {
      if (p.topic != kCheckpoints) ids.push_back(p.key);
    }
    return ids;
  }
  // The checkpoints committed, in order.
  std::vector<pipeline::Checkpoint> Checkpoints() const {
    std::vector<pipeline::Checkpoint> out;
    for (const auto& p : visible) {
      if (p.topic != kCheckpoints) continue;
      absl::StatusOr<pipeline::Checkpoint> c = pipeline::DecodeCheckpoint(p.value);
      EXPECT_TRUE(c.ok()) << c.status();
      if (c.ok()) out.push_back(*c);
    }
    return out;
  }

  bool open = false;
  int begins = 0, commits = 0, commit_calls = 0, aborts = 0;
  absl::Status begin_error = absl::OkStatus();
  std::function<absl::Status()> commit_hook;
  std::vector<Produced> visible;
  std::vector<absl::Time> begin_times, commit_times;  // real time, of the calls that succeeded

 private:
  size_t first_ = 0;
};

}  // namespace outboxd::testing
