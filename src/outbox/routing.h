// Router: the Kafka topic, key and headers of an event. Topic templates are
// compiled once from the config: "{aggregate_type}", "{destination}",
// "{event_type}", "{table}", "{schema}", "{database}" are replaced; anything
// else is literal. {database} is normally filled in per stream before the
// template is compiled (config::StreamConfig), so that the topic stays fixed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "outbox/event.h"
#include "outbox/table_mapping.h"

namespace outboxd::outbox {

class TopicTemplate {
 public:
  // InvalidArgumentError for an unknown placeholder or an unbalanced brace, or a
  // fixed topic name that is not a valid Kafka topic name.
  static absl::StatusOr<TopicTemplate> Parse(std::string_view text);

  // Renders the topic for `event`. InvalidArgumentError when a placeholder's
  // value is missing (e.g. NULL destination) or the result is not a valid Kafka
  // topic name (1..249 of [a-zA-Z0-9._-], not "." or "..").
  absl::Status Render(const OutboxEvent& event, std::string* out) const;

  const std::string& text() const { return text_; }

 private:
  enum class Part { kLiteral, kAggregateType, kDestination, kEventType, kTable, kSchema, kDatabase };
  struct Piece {
    Part part;
    std::string literal;
  };
  std::string text_;
  std::vector<Piece> pieces_;
};

// Kafka's topic name rule.
absl::Status ValidateTopicName(std::string_view topic);

// The record key: the outbox id (canonical UUID text) or the aggregate id.
std::string_view RecordKey(const OutboxEvent& event, KeySource source);

}  // namespace outboxd::outbox
