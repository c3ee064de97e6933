// Bad events: an error that belongs to one event (a row, a message, a record)
// rather than to the stream or the broker. It carries a short stable reason
// code, which the pipeline uses to dead-letter the event (or stop, by config)
// and which becomes the label of outboxd_events_dead_lettered_total{reason}.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/cord.h"

namespace outboxd {

// Reason codes (stable: they appear in metrics, dead-letter headers and docs).
namespace bad_event {
inline constexpr std::string_view kMissingColumn = "missing_column";  // required column absent
inline constexpr std::string_view kNullColumn = "null_column";        // required column NULL
inline constexpr std::string_view kInvalidUuid = "invalid_uuid";      // id is not a UUID
inline constexpr std::string_view kInvalidValue = "invalid_value";    // undecodable column value
inline constexpr std::string_view kBadPayload = "bad_payload";        // logical message content
// JSON (headers, message content) nested deeper or larger than outboxd reads
// (outbox/values.h kMaxJsonDepth and the size limits): hostile or broken input.
inline constexpr std::string_view kJsonLimit = "json_limit";
inline constexpr std::string_view kInvalidTopic = "invalid_topic";    // routed to a bad topic name
inline constexpr std::string_view kUnknownTopic = "unknown_topic";    // the broker has no such topic
inline constexpr std::string_view kMessageTooLarge = "message_too_large";
inline constexpr std::string_view kInvalidRecord = "invalid_record";  // the broker refused it

// Every reason above, so that metrics can export each one at 0 from the start.
inline constexpr std::string_view kAllReasons[] = {
    kMissingColumn, kNullColumn,    kInvalidUuid,   kInvalidValue,    kBadPayload,
    kJsonLimit,     kInvalidTopic,  kUnknownTopic,  kMessageTooLarge, kInvalidRecord,
};
}  // namespace bad_event

inline constexpr char kBadEventReasonUrl[] = "type.outboxd/bad_event_reason";

// InvalidArgumentError(message) tagged with `reason`.
inline absl::Status BadEventError(std::string_view reason, std::string_view message) {
  absl::Status status(absl::StatusCode::kInvalidArgument,
                      absl::string_view(message.data(), message.size()));
  status.SetPayload(kBadEventReasonUrl, absl::Cord(absl::string_view(reason.data(), reason.size())));
  return status;
}

// The reason code of a BadEventError (kept by copies and by absl::Status
// re-wrapping that preserves payloads), or "" for any other status.
inline std::string BadEventReason(const absl::Status& status) {
  if (status.ok()) return "";
  const auto payload = status.GetPayload(kBadEventReasonUrl);
  return payload.has_value() ? std::string(*payload) : std::string();
}

// The message as std::string_view (absl::string_view differs in this abseil).
inline std::string_view StatusMessage(const absl::Status& status) {
  return std::string_view(status.message().data(), status.message().size());
}

// `status` with its message replaced, keeping the code and any reason.
inline absl::Status WithMessage(const absl::Status& status, std::string_view message) {
  absl::Status out(status.code(), absl::string_view(message.data(), message.size()));
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

}  // namespace outboxd
