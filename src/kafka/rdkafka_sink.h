// RdKafkaSink: EventSink over librdkafka's producer. Idempotent (enable.
// idempotence=true, acks=all) whatever the user's properties say; every other
// property from [sink.kafka] is passed through. Delivery reports are served by
// Poll/Flush on the caller's thread.
#pragma once

#include <librdkafka/rdkafka.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kafka/event_sink.h"

namespace outboxd::kafka {

class RdKafkaSink : public EventSink {
 public:
  // InvalidArgumentError naming the property librdkafka rejected.
  static absl::StatusOr<std::unique_ptr<RdKafkaSink>> Create(
      const std::vector<std::pair<std::string, std::string>>& properties);
  ~RdKafkaSink() override;

  void SetDeliveryHandler(DeliveryHandler handler) override { handler_ = std::move(handler); }
  absl::Status Produce(const ProduceRequest& request) override;
  void Poll(absl::Duration timeout) override;
  absl::Status Flush(absl::Duration timeout) override;
  size_t InFlight() const override;
  absl::Status CheckReachable(absl::Duration timeout) override;
  absl::Status FatalError() const override;

  // Drops everything queued or in flight; their reports come back failed
  // (purged) on the next Poll. Used before rebuilding after a failure.
  void Purge();

 private:
  RdKafkaSink() = default;
  static void OnDelivery(rd_kafka_t* rk, const rd_kafka_message_t* msg, void* opaque);
  rd_kafka_t* rk_ = nullptr;
  DeliveryHandler handler_;
};

}  // namespace outboxd::kafka
