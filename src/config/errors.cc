// [errors]: what a bad event does.
#include "config/tables.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "absl/strings/match.h"
#include "common/format.h"
#include "common/status_macros.h"
#include "config/parser.h"
#include "outbox/routing.h"

namespace outboxd::config {

const std::vector<std::string_view>& ErrorsKeys() {
  static const auto* keys =
      new std::vector<std::string_view>{"on_bad_event", "dead_letter_topic"};
  return *keys;
}

absl::Status ParseErrors(const Parser& p, const toml::table& root, ErrorsConfig* out) {
  ASSIGN_OR_RETURN(const toml::table* errors, p.GetSection(root, "errors", "errors", "[errors]"));
  if (errors == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(p.CheckKeys(*errors, "errors.", ErrorsKeys(), "[errors]"));
  std::string policy = "dead_letter";
  RETURN_IF_ERROR(p.GetString(*errors, "on_bad_event", "errors.on_bad_event", &policy));
  if (policy == "dead_letter") {
    out->on_bad_event = outbox::BadEventPolicy::kDeadLetter;
  } else if (policy == "stop") {
    out->on_bad_event = outbox::BadEventPolicy::kStop;
  } else {
    return p.Error(errors->get("on_bad_event"),
                   fmt::format("errors.on_bad_event = \"{}\": expected \"dead_letter\" (send bad "
                               "events to errors.dead_letter_topic and go on) or \"stop\" (halt "
                               "with the error)",
                               policy));
  }
  RETURN_IF_ERROR(p.GetNonEmptyString(*errors, "dead_letter_topic", "errors.dead_letter_topic",
                                      &out->dead_letter_topic));
  if (absl::Status valid = outbox::ValidateTopicName(out->dead_letter_topic); !valid.ok()) {
    return p.Error(errors->get("dead_letter_topic"),
                   fmt::format("errors.dead_letter_topic = \"{}\": {}", out->dead_letter_topic,
                               std::string(valid.message())));
  }
  return absl::OkStatus();
}

}  // namespace outboxd::config
