// Dead letters: the Kafka record that stands in for a bad event (a row or a
// message outboxd cannot publish), so that the stream goes on and nothing is
// dropped silently. Its headers say why and where from; its value keeps what
// can be kept of the event. The layout is documented in docs/configuration.md
// ([errors]) and is part of the public interface.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "outbox/event.h"
#include "pgoutput/messages.h"

namespace outboxd::outbox {

// Header names of a dead letter.
inline constexpr std::string_view kDlqReasonHeader = "outboxd-dlq-reason";
inline constexpr std::string_view kDlqErrorHeader = "outboxd-dlq-error";
inline constexpr std::string_view kDlqSourceHeader = "outboxd-dlq-source";
inline constexpr std::string_view kDlqCommitLsnHeader = "outboxd-dlq-commit-lsn";
inline constexpr std::string_view kDlqLsnHeader = "outboxd-dlq-lsn";
inline constexpr std::string_view kDlqXidHeader = "outboxd-dlq-xid";
inline constexpr std::string_view kDlqOutboxIdHeader = "outbox-id";
inline constexpr std::string_view kDlqTopicHeader = "outboxd-dlq-topic";
inline constexpr std::string_view kDlqValueHeader = "outboxd-dlq-value";

// What to do with a bad event ([errors] on_bad_event).
enum class BadEventPolicy {
  kDeadLetter,  // produce a dead letter in its place and go on (default)
  kStop,        // stop with the error, confirming nothing at or after it
};

struct DeadLetter {
  std::string reason;  // a bad_event code (common/bad_event.h)
  std::string key;     // the outbox id when known, else empty
  std::string value;
  std::vector<Header> headers;
};

// A row the mapper rejected. Value: a JSON object of the row as pgoutput sent
// it, column name -> text value (binary values as "\\x" hex, NULL as null,
// unchanged TOAST values left out); outboxd-dlq-value = "row".
// `event` holds what the mapper read before it failed (its id when valid)
// and the source position.
void DeadLetterForRow(std::string_view reason, std::string_view detail, const OutboxEvent& event,
                      const pgoutput::RelationMessage& relation, const pgoutput::TupleData& row,
                      DeadLetter* out);

// A logical decoding message whose content is not an outbox event. Value: the
// content as written; outboxd-dlq-value = "message".
void DeadLetterForMessage(std::string_view reason, std::string_view detail,
                          const OutboxEvent& event, std::string_view content, DeadLetter* out);

// An event that mapped but could not be routed or produced. Value: its
// outbox.v1.Envelope; without the payload when `keep_payload` is false (an
// oversize payload); outboxd-dlq-value = "envelope" or "envelope-without-payload".
// `topic` is the topic it was meant for ("" when routing failed).
void DeadLetterForEvent(std::string_view reason, std::string_view detail, const OutboxEvent& event,
                        std::string_view topic, bool keep_payload, DeadLetter* out);

}  // namespace outboxd::outbox
