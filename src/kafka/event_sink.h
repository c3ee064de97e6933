// EventSink: the narrow interface the pipeline uses to produce records and
// receive their delivery reports. RdKafkaSink is the librdkafka implementation;
// tests use fakes.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"

namespace outboxd::kafka {

struct ProduceRequest {
  std::string_view topic;
  std::string_view key;
  std::string_view value;
  const std::vector<std::pair<std::string_view, std::string_view>>* headers = nullptr;
  uint64_t token = 0;  // handed back in the delivery report
  // The value is an outbox.v1.Envelope: with [schema_registry] it goes out in
  // Confluent's wire format. False for values that are not (payload mode).
  bool envelope = true;
  bool null_value = false;   // a tombstone: the value is null, not empty
  int64_t timestamp_ms = 0;  // Unix milliseconds; 0: the producer's clock
  int32_t partition = -1;    // -1: the partitioner chooses from the key
};

// Called from Poll()/Flush() on the caller's thread, once per produced record:
// OK when the broker acknowledged it (acks=all), else the reason; a record the
// broker refused as bad (e.g. MSG_SIZE_TOO_LARGE) carries a bad-event reason
// (common/bad_event.h). The caller knows by the token which event it was, and
// dead-letters that event from its source row, never from the bytes produced.
using DeliveryHandler = std::function<void(uint64_t token, const absl::Status& status)>;

class EventSink {
 public:
  virtual ~EventSink() = default;

  virtual void SetDeliveryHandler(DeliveryHandler handler) = 0;

  // Enqueues one record; the bytes are copied. ResourceExhaustedError when the
  // record cannot be taken yet (the producer queue is full, a schema id is
  // being looked up): backpressure, wait on WakeFd, poll and try again; the
  // caller keeps the replication session alive meanwhile. Other errors are
  // failures of this record that produce no delivery report; a bad record
  // (larger than message.max.bytes, invalid topic) is a BadEventError
  // (InvalidArgument with a reason code, common/bad_event.h).
  virtual absl::Status Produce(const ProduceRequest& request) = 0;

  // Serves delivery reports, waiting up to `timeout` for at least one event.
  virtual void Poll(absl::Duration timeout) = 0;

  // Waits until every produced record has its delivery report, up to `timeout`.
  // DeadlineExceededError if some are still outstanding.
  virtual absl::Status Flush(absl::Duration timeout) = 0;

  // Records produced and not yet reported.
  virtual size_t InFlight() const = 0;

  // Checks that the cluster answers a metadata request within `timeout`.
  virtual absl::Status CheckReachable(absl::Duration timeout) = 0;

  // A fatal producer error (e.g. idempotence state lost) reported by the
  // library, or OK. After a fatal error the sink must be rebuilt.
  virtual absl::Status FatalError() const = 0;

  // A descriptor that becomes readable when Poll(0) has something to serve
  // (delivery reports, errors), for the caller's poll(); -1 when the sink
  // cannot signal one (the caller then polls it on a short timer). Poll clears it.
  virtual int WakeFd() const { return -1; }

  // Prepares to produce to `topic` (a fixed topic, the dead-letter topic), so
  // that its first record does not wait for the topic's metadata. Optional.
  virtual void PrepareTopic(std::string_view topic) {}

  // Drops everything queued or in flight; their reports come back failed on
  // the next Poll. Lets a session hand a working producer to the next one.
  virtual void Purge() {}

  // Kafka transactions ([sink] delivery = "exactly_once"), for a sink made
  // with a transactional.id; others return UnimplementedError. Records
  // produced between Begin and Commit become visible to read_committed
  // consumers together, at the commit, or never.
  virtual absl::Status BeginTransaction() { return absl::UnimplementedError("not transactional"); }
  // Flushes the open transaction's records and commits it, waiting at most
  // `timeout`. DeadlineExceededError: not finished yet, call again (the call
  // resumes). AbortedError: the transaction cannot commit (a record failed,
  // the coordinator timed it out): call AbortTransaction, then produce its
  // records again. A fatal error (fenced: IsFenced) leaves the sink unusable.
  virtual absl::Status CommitTransaction(absl::Duration timeout) {
    return absl::UnimplementedError("not transactional");
  }
  // Aborts the open transaction, waiting at most `timeout`; same errors.
  virtual absl::Status AbortTransaction(absl::Duration timeout) {
    return absl::UnimplementedError("not transactional");
  }
};

inline constexpr char kFencedUrl[] = "type.outboxd/fenced";

// A status that says another producer with the same transactional.id took
// over (Kafka fenced this one): it must stop producing for good.
inline absl::Status FencedError(std::string_view message) {
  absl::Status status = absl::AbortedError(absl::string_view(message.data(), message.size()));
  status.SetPayload(kFencedUrl, absl::Cord("1"));
  return status;
}
inline bool IsFenced(const absl::Status& status) {
  return status.GetPayload(kFencedUrl).has_value();
}

}  // namespace outboxd::kafka
