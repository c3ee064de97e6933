// [sink] and [sink.kafka]: the Kafka side and the delivery mode.
#include "config/tables.h"

#include <algorithm>
#include <cstdlib>
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

const std::vector<std::string_view>& SinkKeys() {
  static const auto* keys = new std::vector<std::string_view>{
      "kafka", "delivery", "transactional_id", "checkpoint_topic", "transaction_interval",
      "transaction_max_events", "transaction_gap"};
  return *keys;
}

namespace {

// [sink] delivery and the exactly-once keys.
absl::Status ParseDelivery(const Parser& p, const toml::table& sink, KafkaConfig* out) {
  if (const toml::node* node = sink.get("delivery"); node != nullptr) {
    std::string mode;
    RETURN_IF_ERROR(p.GetString(sink, "delivery", "sink.delivery", &mode));
    if (mode != "at_least_once" && mode != "exactly_once") {
      return p.Error(node, fmt::format("sink.delivery = \"{}\": expected \"at_least_once\" (the "
                                       "default: a fault may publish an event twice) or "
                                       "\"exactly_once\" (Kafka transactions; consumers read with "
                                       "isolation.level=read_committed)",
                                       mode));
    }
    out->delivery = mode == "exactly_once" ? Delivery::kExactlyOnce : Delivery::kAtLeastOnce;
  }
  const bool exactly_once = out->delivery == Delivery::kExactlyOnce;
  for (std::string_view key : {"transactional_id", "checkpoint_topic", "transaction_interval",
                               "transaction_max_events", "transaction_gap"}) {
    if (!exactly_once && sink.get(key) != nullptr) {
      return p.Error(sink.get(key), fmt::format("sink.{} applies to delivery = \"exactly_once\" only: "
                                                "set [sink] delivery = \"exactly_once\" or remove it",
                                                key));
    }
  }
  RETURN_IF_ERROR(p.GetString(sink, "transactional_id", "sink.transactional_id", &out->transactional_id));
  if (sink.get("transactional_id") != nullptr && out->transactional_id.empty()) {
    return p.Error(sink.get("transactional_id"),
                   "sink.transactional_id must not be empty: remove it for the default "
                   "\"outboxd-<system identifier>-<slot>\"");
  }
  RETURN_IF_ERROR(p.GetString(sink, "checkpoint_topic", "sink.checkpoint_topic", &out->checkpoint_topic));
  if (absl::Status valid = outbox::ValidateTopicName(out->checkpoint_topic); !valid.ok()) {
    return p.Error(sink.get("checkpoint_topic"),
                   fmt::format("sink.checkpoint_topic = \"{}\": {}", out->checkpoint_topic,
                               valid.message()));
  }
  RETURN_IF_ERROR(p.GetDuration(sink, "transaction_interval", "sink.transaction_interval",
                                absl::Milliseconds(10), absl::Seconds(60), "\"100ms\"", "",
                                &out->transaction_interval));
  if (const toml::node* node = sink.get("transaction_max_events"); node != nullptr) {
    if (!node->is_integer() || node->as_integer()->get() < 1 ||
        node->as_integer()->get() > 1000000) {
      return p.Error(node, "sink.transaction_max_events must be an integer from 1 to 1000000");
    }
    out->transaction_max_events = node->as_integer()->get();
  }
  return p.GetDuration(sink, "transaction_gap", "sink.transaction_gap", absl::ZeroDuration(),
                       absl::Milliseconds(100), "\"3ms\" or \"0ms\"", "",
                       &out->transaction_gap);
}

}  // namespace

absl::Duration TransactionTimeout(const KafkaConfig& kafka) {
  for (const auto& [name, value] : kafka.properties) {
    if (name == "transaction.timeout.ms") {
      const long long ms = std::atoll(value.c_str());
      if (ms > 0) return absl::Milliseconds(ms);
    }
  }
  return absl::Seconds(60);
}

absl::Status ParseSink(const Parser& p, const toml::table& root, KafkaConfig* out) {
  static constexpr std::string_view kMissing =
      "[sink.kafka] is missing: add it with at least \"bootstrap.servers\" = \"host:port\" "
      "(librdkafka properties, quoted because they contain dots)";
  ASSIGN_OR_RETURN(const toml::table* sink, p.GetSection(root, "sink", "sink", "[sink.kafka]"));
  if (sink == nullptr) return p.Error(nullptr, kMissing);
  RETURN_IF_ERROR(p.CheckKeys(*sink, "sink.", SinkKeys(), "[sink]"));
  ASSIGN_OR_RETURN(const toml::table* kafka, p.GetSection(*sink, "kafka", "sink.kafka", "[sink.kafka]"));
  if (kafka == nullptr) return p.Error(nullptr, kMissing);
  RETURN_IF_ERROR(ParseDelivery(p, *sink, out));

  for (const auto& [key, node] : InFileOrder(*kafka)) {
    const std::string name(key->str());
    const std::string path = fmt::format("sink.kafka.\"{}\"", name);
    if (name.empty()) return p.ErrorAt(key->source().begin.line, "sink.kafka: empty property name");
    std::string value;
    switch (node->type()) {
      case toml::node_type::string: {
        ASSIGN_OR_RETURN(value, p.Expand(node->as_string()->get(), path, *node));
        break;
      }
      case toml::node_type::integer:
        value = fmt::format("{}", node->as_integer()->get());
        break;
      case toml::node_type::floating_point:
        value = fmt::format("{}", node->as_floating_point()->get());
        break;
      case toml::node_type::boolean:
        value = node->as_boolean()->get() ? "true" : "false";
        break;
      case toml::node_type::table:
        // `bootstrap.servers = "..."` without quotes is a dotted key: TOML
        // makes a table "bootstrap" holding "servers".
        return p.ErrorAt(key->source().begin.line,
                         fmt::format("sink.kafka.{} is a table: quote librdkafka property names "
                                     "that contain dots, e.g. \"{}.servers\" = \"host:port\"",
                                     name, name));
      default:
        return p.Error(node, fmt::format("{} must be a string, an integer or a boolean, not {}",
                                         path, TypeName(*node)));
    }
    out->properties.emplace_back(name, std::move(value));
  }

  const auto bootstrap = std::find_if(out->properties.begin(), out->properties.end(),
                                      [](const auto& p) { return p.first == "bootstrap.servers"; });
  if (bootstrap == out->properties.end()) {
    return p.Error(kafka, "sink.kafka.\"bootstrap.servers\" is missing: set it to the Kafka "
                          "brokers, e.g. \"bootstrap.servers\" = \"kafka1:9092,kafka2:9092\"");
  }
  if (bootstrap->second.empty()) {
    return p.Error(kafka->get("bootstrap.servers"),
                   "sink.kafka.\"bootstrap.servers\" must not be empty: list the Kafka brokers "
                   "as host:port, separated by commas");
  }
  // 0 means "retry forever": a stop while Kafka is down could then never
  // complete, and the events stay unacknowledged anyway (the slot replays them).
  for (const auto& [name, value] : out->properties) {
    if ((name == "message.timeout.ms" || name == "delivery.timeout.ms") && value == "0") {
      return p.Error(kafka->get(name),
                     fmt::format("sink.kafka.\"{}\" = 0 (no delivery deadline) is refused: with "
                                 "Kafka down a stop could never complete, and outboxd needs a "
                                 "failed delivery report to reconnect; leave it unset (300000, "
                                 "five minutes) or give a positive number of milliseconds",
                                 name));
    }
  }
  return absl::OkStatus();
}

}  // namespace outboxd::config
