// RdKafkaSink: EventSink over librdkafka's producer. Idempotent (enable.
// idempotence=true, acks=all) whatever the user's properties say; every other
// property from [sink.kafka] is passed through. Delivery reports are served by
// Poll/Flush on the caller's thread.
#pragma once

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/lru_map.h"
#include "kafka/event_sink.h"

namespace outboxd::kafka {

using KafkaProperties = std::vector<std::pair<std::string, std::string>>;

struct RdKafkaSinkOptions {
  // librdkafka's log lines (syslog level 0-7, facility, message), with secret
  // property values redacted. Called from librdkafka's own threads, so it must
  // be thread-safe. Unset: librdkafka writes them to stderr itself.
  std::function<void(int level, std::string_view facility, std::string_view message)> log;
  // Client-level errors (all brokers down, authentication failed, ...), called
  // from Poll/Flush on the caller's thread. Informative: librdkafka keeps
  // retrying by itself, and a fatal one also shows in FatalError().
  std::function<void(const absl::Status& error)> error;
  // Broker connections in state UP, from librdkafka's statistics (every
  // statistics.interval.ms, 2000 unless set), called from Poll/Flush. Setting
  // it turns the statistics on; readiness (/readyz) is built on it.
  std::function<void(int brokers_up)> brokers_up;
  // Non-empty: a transactional producer ([sink] delivery = "exactly_once")
  // with this transactional.id. InitTransactions must succeed before the
  // first transaction.
  std::string transactional_id;
};

// Delivery report statuses (the pipeline treats any non-OK as failed):
//   InvalidArgument   the record itself is bad: too large for the broker,
//                     invalid or unknown topic (dead-letter it); a
//                     BadEventError with its reason code;
//   PermissionDenied  the principal may not write the topic or cluster;
//   Aborted           purged by Purge(), or the producer hit a fatal error;
//   Unavailable       everything else: timed out, broker down, not enough
//                     replicas after retries (transient: reconnect and resume).
class RdKafkaSink : public EventSink {
 public:
  // InvalidArgumentError naming the property librdkafka rejected. Messages
  // never contain the value of a secret property (see IsSecretProperty).
  static absl::StatusOr<std::unique_ptr<RdKafkaSink>> Create(const KafkaProperties& properties,
                                                             RdKafkaSinkOptions options = {});
  ~RdKafkaSink() override;

  // The user's properties that Create overrides to keep delivery safe
  // (enable.idempotence other than true, acks / request.required.acks other
  // than all), in input order; the caller warns about them.
  static std::vector<std::string> OverriddenProperties(const KafkaProperties& properties);

  // True for properties whose value must never be shown: names containing
  // "password", "secret", "sasl.oauthbearer.config" or "ssl.key".
  static bool IsSecretProperty(std::string_view name);

  void SetDeliveryHandler(DeliveryHandler handler) override { handler_ = std::move(handler); }
  absl::Status Produce(const ProduceRequest& request) override;
  void Poll(absl::Duration timeout) override;
  absl::Status Flush(absl::Duration timeout) override;
  // Exact count kept by the sink (produced minus reported), not
  // rd_kafka_outq_len, which also counts queued events such as errors.
  size_t InFlight() const override { return in_flight_.load(std::memory_order_relaxed); }
  absl::Status CheckReachable(absl::Duration timeout) override;
  absl::Status FatalError() const override;
  // The read end of a pipe that librdkafka writes to when its main queue
  // (delivery reports, errors, statistics) goes from empty to non-empty.
  int WakeFd() const override { return wake_read_; }
  void PrepareTopic(std::string_view topic) override;

  // Drops everything queued or in flight; their reports come back failed
  // (purged) on the next Poll. Used before rebuilding after a failure, and
  // before a producer is kept for the next session.
  void Purge() override;

  // Registers the transactional.id with its coordinator: fences any older
  // producer with the same id and aborts the transaction it left open.
  // Retries until `timeout`, returning CancelledError as soon as `stop_fd`
  // (-1: none) is readable.
  absl::Status InitTransactions(absl::Duration timeout, int stop_fd);
  absl::Status BeginTransaction() override;
  absl::Status CommitTransaction(absl::Duration timeout) override;
  absl::Status AbortTransaction(absl::Duration timeout) override;

  // The librdkafka handle, still owned by the sink: for statistics
  // (rd_kafka_outq_len) and for tests (mock cluster, rd_kafka_test_fatal_error).
  rd_kafka_t* handle() const { return rk_; }
  // Empty unless transactional.
  const std::string& transactional_id() const { return options_.transactional_id; }

  static constexpr size_t kMaxTopicHandles = 1024;
  // Whether a handle for `topic` is cached (for tests); does not touch it.
  bool HasTopicHandle(std::string_view topic) const;

 private:
  RdKafkaSink() = default;
  static void OnDelivery(rd_kafka_t* rk, const rd_kafka_message_t* msg, void* opaque);
  static void OnError(rd_kafka_t* rk, int err, const char* reason, void* opaque);
  static void OnLog(const rd_kafka_t* rk, int level, const char* facility, const char* message);
  static int OnStats(rd_kafka_t* rk, char* json, size_t json_len, void* opaque);
  std::string Redact(std::string text) const;
  // The status of a failed transactional call `what` (consumes `error`).
  absl::Status TxnStatus(rd_kafka_error_t* error, std::string_view what);

  rd_kafka_t* rk_ = nullptr;
  DeliveryHandler handler_;
  RdKafkaSinkOptions options_;
  std::vector<std::string> secret_values_;  // to scrub from librdkafka's words
  std::string bootstrap_servers_;           // named in reachability errors
  int64_t message_max_bytes_ = 0;           // named in size errors
  // A topic handle per topic name, so that producing never goes through
  // librdkafka's by-name path, which in 2.0.x leaves a new topic's metadata to
  // a 1-second timer: rd_kafka_topic_new asks for it at once. Bounded: a
  // template over an unbounded field must not grow it forever, so past
  // kMaxTopicHandles the least recently used handle is released (librdkafka
  // keeps what is in flight on it alive).
  absl::StatusOr<rd_kafka_topic_t*> Topic(std::string_view name);
  LruMap<rd_kafka_topic_t*> topics_{kMaxTopicHandles};
  rd_kafka_queue_t* main_queue_ = nullptr;
  int wake_read_ = -1;
  int wake_write_ = -1;
  std::atomic<size_t> in_flight_{0};
};

}  // namespace outboxd::kafka
