// The checks that span tables: a key whose valid range depends on another
// table's key. Each table's own checks stay in its file (config/tables.h).
#include <string>

#include <fmt/format.h>

#include "common/format.h"
#include "config/tables.h"

namespace outboxd::config {
namespace {

// The node of `key` in [sink] (or [sink.kafka] for a librdkafka property), for
// the line number of an error.
const toml::node* SinkNode(const toml::table& root, std::string_view key, bool kafka = false) {
  const toml::table* sink = root["sink"].as_table();
  if (sink == nullptr) return nullptr;
  if (kafka) {
    const toml::table* properties = (*sink)["kafka"].as_table();
    return properties == nullptr ? nullptr : properties->get(key);
  }
  return sink->get(key);
}

// [sink] transaction_interval and transaction_gap against
// [sink.kafka] "transaction.timeout.ms".
absl::Status ValidateExactlyOnce(const Parser& p, const toml::table& root, const KafkaConfig& kafka) {
  if (kafka.delivery != Delivery::kExactlyOnce) return absl::OkStatus();
  // A PostgreSQL transaction is committed in pieces once it has been open
  // half of transaction.timeout.ms in one Kafka transaction. An interval past
  // that point leaves the loop nothing to wait for between the two.
  const absl::Duration split_after = TransactionTimeout(kafka) / 2;
  if (kafka.transaction_interval > split_after) {
    const toml::node* where = SinkNode(root, "transaction_interval");
    if (where == nullptr) where = SinkNode(root, "transaction.timeout.ms", /*kafka=*/true);
    return p.Error(where, fmt::format(
        "sink.transaction_interval = {} is more than half of [sink.kafka] \"transaction.timeout.ms\" ({}): "
        "outboxd commits a PostgreSQL transaction in pieces once it has been open that long in one Kafka "
        "transaction, so a Kafka transaction must commit sooner; lower transaction_interval to {} or less, or "
        "raise transaction.timeout.ms above twice the interval",
        absl::FormatDuration(kafka.transaction_interval), absl::FormatDuration(TransactionTimeout(kafka)),
        absl::FormatDuration(split_after)));
  }
  // The gap is a pause between Kafka transactions: as long as one, and half
  // of the time would go to waiting.
  if (kafka.transaction_gap > absl::ZeroDuration() && kafka.transaction_gap >= kafka.transaction_interval) {
    const toml::node* where = SinkNode(root, "transaction_gap");
    if (where == nullptr) where = SinkNode(root, "transaction_interval");
    return p.Error(where, fmt::format(
        "sink.transaction_gap = {} is not shorter than sink.transaction_interval = {}: the pause between "
        "Kafka transactions would be as long as a transaction; keep the gap to a few milliseconds (\"3ms\", "
        "the default) or raise transaction_interval",
        absl::FormatDuration(kafka.transaction_gap), absl::FormatDuration(kafka.transaction_interval)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Validate(const Parser& p, const toml::table& root, const Config& config) {
  return ValidateExactlyOnce(p, root, config.kafka);
}

}  // namespace outboxd::config
