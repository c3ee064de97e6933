// RegistrySink: an EventSink in front of another that frames envelope values
// in Confluent's wire format (registry/wire_format.h) with the schema id of
// the topic's subject. Ids are resolved once per subject (at start for fixed
// topics, on first sight for templated ones) and cached: no registry call per
// event. A record whose id cannot be resolved is not produced at all: nothing
// goes out unframed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kafka/event_sink.h"
#include "registry/wire_format.h"

namespace outboxd::registry {

// Subject -> schema id, talking to the registry when needed. Errors as
// SchemaRegistryClient's (UnavailableError: try again later).
using SchemaIdResolver = std::function<absl::StatusOr<int32_t>(const std::string& subject)>;

class RegistrySink : public kafka::EventSink {
 public:
  // Records to `unframed_topic` (the dead-letter topic, whose values are of
  // several kinds named by a header) and records with envelope = false pass
  // through as they are.
  RegistrySink(std::unique_ptr<kafka::EventSink> inner, SubjectStrategy strategy, SchemaIdResolver resolve,
               std::string unframed_topic);

  // Resolves the ids of these topics now, so that a registry that is down or
  // refuses the schema shows before streaming starts. Errors: AbortedError when
  // the registry is unreachable (transient), FailedPreconditionError otherwise
  // (incompatible schema, no such subject, access denied: fatal).
  absl::Status Prepare(const std::vector<std::string>& topics);

  void SetDeliveryHandler(kafka::DeliveryHandler handler) override;
  // Hands refused records back with the framing removed, as the pipeline
  // produced them (it decodes the envelope to dead-letter it).
  void SetFailedRecordHandler(kafka::FailedRecordHandler handler) override;
  // Frames and produces. A topic first seen here costs one registry lookup,
  // bounded by [schema_registry] timeout; its errors as Prepare's.
  absl::Status Produce(const kafka::ProduceRequest& request) override;
  void Poll(absl::Duration timeout) override { inner_->Poll(timeout); }
  absl::Status Flush(absl::Duration timeout) override { return inner_->Flush(timeout); }
  size_t InFlight() const override { return inner_->InFlight(); }
  absl::Status CheckReachable(absl::Duration timeout) override { return inner_->CheckReachable(timeout); }
  absl::Status FatalError() const override { return inner_->FatalError(); }
  // The event loop waits on the producer's queue and keeps its topic handles:
  // a wrapper that hid them would leave delivery reports to the status timer.
  int WakeFd() const override { return inner_->WakeFd(); }
  void PrepareTopic(std::string_view topic) override { inner_->PrepareTopic(topic); }
  void Purge() override { inner_->Purge(); }
  absl::Status BeginTransaction() override { return inner_->BeginTransaction(); }
  absl::Status CommitTransaction(absl::Duration timeout) override { return inner_->CommitTransaction(timeout); }
  absl::Status AbortTransaction(absl::Duration timeout) override { return inner_->AbortTransaction(timeout); }

 private:
  absl::StatusOr<int32_t> IdForTopic(std::string_view topic);

  std::unique_ptr<kafka::EventSink> inner_;
  SubjectStrategy strategy_;
  SchemaIdResolver resolve_;
  std::string unframed_topic_;
  absl::flat_hash_map<std::string, int32_t> topic_ids_;
  std::string framed_;  // reused: the framed value of the record being produced
};

}  // namespace outboxd::registry
