#include "outbox/routing.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "common/bad_event.h"
#include "fmt/format.h"
#include "outbox/values.h"

namespace outboxd::outbox {
namespace {

// Kafka's topic names: at most 249 characters (the log directory name adds a
// partition suffix under the filesystem's 255).
constexpr size_t kMaxTopicLength = 249;

constexpr size_t kTopicPreview = 300;  // long enough for any valid topic name

bool IsTopicChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// Why `topic` is not a valid name, or "" when it is.
std::string TopicProblem(std::string_view topic) {
  if (topic.empty()) return "it is empty";
  if (topic == "." || topic == "..") return "\".\" and \"..\" are reserved";
  if (topic.size() > kMaxTopicLength) {
    return fmt::format("it has {} characters, at most {} are allowed", topic.size(),
                       kMaxTopicLength);
  }
  for (size_t i = 0; i < topic.size(); ++i) {
    if (!IsTopicChar(topic[i])) {
      return fmt::format(
          "character \"{}\" at offset {} is not allowed (only a-z, A-Z, 0-9, '.', '_' and '-')",
          Printable(topic.substr(i, 1)), i);
    }
  }
  return "";
}

}  // namespace

absl::Status ValidateTopicName(std::string_view topic) {
  std::string problem = TopicProblem(topic);
  if (problem.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("\"{}\" is not a valid Kafka topic name: {}", Printable(topic, kTopicPreview), problem));
}

absl::StatusOr<TopicTemplate> TopicTemplate::Parse(std::string_view text) {
  static constexpr std::pair<std::string_view, Part> kPlaceholders[] = {
      {"aggregate_type", Part::kAggregateType}, {"destination", Part::kDestination},
      {"event_type", Part::kEventType},         {"table", Part::kTable},
      {"schema", Part::kSchema},                {"database", Part::kDatabase},
  };
  const auto error = [text](std::string_view what) {
    return absl::InvalidArgumentError(fmt::format(
        "topic template \"{}\": {}; placeholders are {{aggregate_type}}, {{destination}}, "
        "{{event_type}}, {{table}}, {{schema}} and {{database}}, anything else is literal (see "
        "docs/configuration.md, [[outbox]] topic)",
        Printable(text, kTopicPreview), what));
  };

  TopicTemplate result;
  result.text_ = std::string(text);
  std::string literal;
  size_t literal_length = 0;  // all literal characters, which every topic contains
  bool has_placeholder = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '}') return error(fmt::format("unbalanced '}}' at offset {}", i));
    if (c != '{') {
      if (!IsTopicChar(c)) {
        return error(fmt::format(
            "character \"{}\" at offset {} can never be part of a Kafka topic name (only a-z, "
            "A-Z, 0-9, '.', '_' and '-')",
            Printable(text.substr(i, 1)), i));
      }
      literal += c;
      ++literal_length;
      continue;
    }
    const size_t close = text.find_first_of("{}", i + 1);
    if (close == std::string_view::npos || text[close] != '}') {
      return error(fmt::format("unbalanced '{{' at offset {}", i));
    }
    const std::string_view name = text.substr(i + 1, close - i - 1);
    const auto* found = std::find_if(std::begin(kPlaceholders), std::end(kPlaceholders),
                                     [name](const auto& p) { return p.first == name; });
    if (found == std::end(kPlaceholders)) {
      return error(fmt::format("unknown placeholder \"{{{}}}\"", Printable(name, kTopicPreview)));
    }
    if (!literal.empty()) {
      result.pieces_.push_back(Piece{Part::kLiteral, std::move(literal)});
      literal.clear();
    }
    result.pieces_.push_back(Piece{found->second, ""});
    has_placeholder = true;
    i = close;
  }
  if (!literal.empty()) result.pieces_.push_back(Piece{Part::kLiteral, std::move(literal)});

  if (!has_placeholder) {
    std::string problem = TopicProblem(text);
    if (!problem.empty()) return error(problem);
  } else if (literal_length > kMaxTopicLength) {
    return error(fmt::format("its literal text alone has {} characters, more than the {} a "
                             "Kafka topic name may have",
                             literal_length, kMaxTopicLength));
  }
  return result;
}

absl::Status TopicTemplate::Render(const OutboxEvent& event, std::string* out) const {
  out->clear();
  for (const Piece& piece : pieces_) {
    switch (piece.part) {
      case Part::kLiteral:
        out->append(piece.literal);
        break;
      case Part::kAggregateType:
        out->append(event.aggregate_type);
        break;
      case Part::kDestination:
        if (!event.destination.has_value()) {
          return BadEventError(bad_event::kInvalidTopic, fmt::format(
              "topic template \"{}\" needs a destination, and this event has none (NULL or "
              "absent destination); set the destination column of the outbox row, or use a "
              "topic template without {{destination}}",
              Printable(text_, kTopicPreview)));
        }
        out->append(*event.destination);
        break;
      case Part::kEventType:
        out->append(event.event_type);
        break;
      case Part::kTable:
        out->append(event.source.table);
        break;
      case Part::kSchema:
        out->append(event.source.schema);
        break;
      case Part::kDatabase:
        if (event.source.database.empty()) {
          return BadEventError(bad_event::kInvalidTopic, fmt::format(
              "topic template \"{}\" needs the event's database, and this stream does not name one; "
              "this is a bug of outboxd: {{database}} is filled in per stream",
              Printable(text_, kTopicPreview)));
        }
        out->append(event.source.database);
        break;
    }
  }
  std::string problem = TopicProblem(*out);
  if (problem.empty()) return absl::OkStatus();
  return BadEventError(bad_event::kInvalidTopic, fmt::format(
      "topic template \"{}\" produced \"{}\", which is not a valid Kafka topic name: {}",
      Printable(text_, kTopicPreview), Printable(*out, kTopicPreview), problem));
}

std::string_view RecordKey(const OutboxEvent& event, KeySource source) {
  switch (source) {
    case KeySource::kAggregateId:
      return event.aggregate_id;
    case KeySource::kId:
      break;
  }
  return event.id;
}

}  // namespace outboxd::outbox
