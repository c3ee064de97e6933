// Envelope: the Kafka record value (outbox.v1.Envelope, proto/outbox/v1/
// envelope.proto) and the record headers (outbox-id, event-type, content-type,
// then the row's own headers).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "outbox/event.h"

namespace outboxd::outbox {

// Serializes `event` as outbox.v1.Envelope into `out` (replacing its content).
void EncodeEnvelope(const OutboxEvent& event, std::string* out);

// Record headers as (key, value) views into `event`, in this order: outbox-id,
// event-type, content-type, then the event's own headers.
void RecordHeaders(const OutboxEvent& event,
                   std::vector<std::pair<std::string_view, std::string_view>>* out);

}  // namespace outboxd::outbox
