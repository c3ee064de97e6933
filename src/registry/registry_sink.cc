#include "registry/registry_sink.h"

#include <utility>

#include "common/format.h"
#include "fmt/format.h"

namespace outboxd::registry {

RegistrySink::RegistrySink(std::unique_ptr<kafka::EventSink> inner, SubjectStrategy strategy,
                           SchemaIdResolver resolve, std::string unframed_topic)
    : inner_(std::move(inner)), strategy_(strategy), resolve_(std::move(resolve)),
      unframed_topic_(std::move(unframed_topic)) {}

void RegistrySink::SetDeliveryHandler(kafka::DeliveryHandler handler) {
  inner_->SetDeliveryHandler(std::move(handler));
}

void RegistrySink::SetFailedRecordHandler(kafka::FailedRecordHandler handler) {
  inner_->SetFailedRecordHandler(
      [handler = std::move(handler)](const kafka::ProduceRequest& record, const absl::Status& status) {
        // An Envelope's first byte is a field tag, never 0x00: a value that
        // parses as a frame is one we framed.
        absl::StatusOr<Frame> frame = ParseFrame(record.value);
        if (!record.envelope || !frame.ok()) return handler(record, status);
        kafka::ProduceRequest unframed = record;
        unframed.value = frame->message;
        handler(unframed, status);
      });
}

absl::StatusOr<int32_t> RegistrySink::IdForTopic(std::string_view topic) {
  if (auto it = topic_ids_.find(absl::string_view(topic.data(), topic.size())); it != topic_ids_.end()) return it->second;
  const std::string subject = SubjectName(strategy_, topic);
  absl::StatusOr<int32_t> id = resolve_(subject);
  if (!id.ok()) {
    if (absl::IsUnavailable(id.status())) {
      return absl::AbortedError(fmt::format(
          "no schema id for subject {} (topic {}): {}; nothing was produced unframed, retrying", subject, topic,
          id.status().message()));
    }
    return absl::FailedPreconditionError(fmt::format(
        "the schema registry refused subject {} (topic {}): {}; outboxd stopped before producing to it: fix the "
        "subject's schema or compatibility in the registry, or [schema_registry] in the config",
        subject, topic, id.status().message()));
  }
  topic_ids_.emplace(std::string(topic), *id);
  return *id;
}

absl::Status RegistrySink::Prepare(const std::vector<std::string>& topics) {
  for (const std::string& topic : topics) {
    if (topic == unframed_topic_) continue;
    if (absl::StatusOr<int32_t> id = IdForTopic(topic); !id.ok()) return id.status();
  }
  return absl::OkStatus();
}

absl::Status RegistrySink::Produce(const kafka::ProduceRequest& request) {
  if (!request.envelope || request.topic == unframed_topic_) return inner_->Produce(request);
  absl::StatusOr<int32_t> id = IdForTopic(request.topic);
  if (!id.ok()) return id.status();
  FrameEnvelope(*id, request.value, &framed_);
  kafka::ProduceRequest framed = request;
  framed.value = framed_;
  return inner_->Produce(framed);
}

}  // namespace outboxd::registry
