// Envelope: the Kafka record value (outbox.v1.Envelope, proto/outbox/v1/
// envelope.proto) and the record headers (outbox-id, event-type, content-type,
// then the row's own headers).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "outbox/event.h"

namespace outboxd::outbox {

// Serializes `event` as outbox.v1.Envelope into `out` (replacing its content).
void EncodeEnvelope(const OutboxEvent& event, std::string* out);

// Parses an outbox.v1.Envelope back into `out` (after Clear()): for dead
// letters of records the broker refused. InvalidArgumentError when `bytes` is
// not an Envelope.
absl::Status DecodeEnvelope(std::string_view bytes, OutboxEvent* out);

// Record headers as (key, value) views into `event`, in this order: outbox-id,
// event-type, content-type, then the event's own headers.
void RecordHeaders(const OutboxEvent& event,
                   std::vector<std::pair<std::string_view, std::string_view>>* out);

}  // namespace outboxd::outbox
