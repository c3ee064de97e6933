// AtLeastOnceMode: [sink] delivery = "at_least_once", the default. Every
// event is produced by the idempotent producer as it is read; its transaction
// is confirmed to PostgreSQL once all of its records were acknowledged (the
// AckTracker's safe LSN, as it is). A fault re-publishes what was in flight:
// duplicates, never gaps. Nothing to do at Begin, Commit or after a batch.
#pragma once

#include <cstdint>
#include <string_view>

#include "pipeline/delivery_mode.h"

namespace outboxd::pipeline {

class AtLeastOnceMode final : public DeliveryMode {
 public:
  std::string_view name() const override { return "at_least_once"; }
  void BeginSession(Session* session) override { session_ = session; }
  void OnBegin(const pgoutput::BeginMessage&) override {}
  bool AlreadyInKafka(Lsn, EventPosition) override { return false; }
  absl::Status BeforeProduce() override { return absl::OkStatus(); }
  // Commit time to acknowledgement: when a consumer can see the event.
  void OnAcknowledged(int64_t commit_time) override;
  absl::Status OnCommit(const pgoutput::CommitMessage&) override { return absl::OkStatus(); }
  absl::Status AfterBatch(bool) override { return absl::OkStatus(); }
  Lsn ClampFlush(Lsn safe) const override { return safe; }
  absl::Time NextDeadline() const override { return absl::InfiniteFuture(); }
  absl::Status Stop() override { return absl::OkStatus(); }
  uint64_t UnacknowledgedAtStop(uint64_t unacknowledged) const override { return unacknowledged; }
  absl::Status EndSession(absl::Status status) override {
    session_ = nullptr;
    return status;
  }

 private:
  Session* session_ = nullptr;
};

}  // namespace outboxd::pipeline
