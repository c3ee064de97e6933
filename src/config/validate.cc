// The checks that span tables: a key whose valid range depends on another
// table's key. Each table's own checks stay in its file (config/tables.h).
#include "config/tables.h"

#include <algorithm>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "absl/strings/match.h"
#include "common/format.h"
#include "common/status_macros.h"
#include "config/streams.h"
#include "outbox/routing.h"
#include "outbox/values.h"

namespace outboxd::config {
namespace {

using outbox::Printable;

// The [[outbox]] entry #i as a TOML node, for the error's line.
const toml::node* OutboxEntry(const toml::table& root, size_t i, std::string_view key) {
  const toml::node* list = root.get("outbox");
  if (list == nullptr || !list->is_array() || list->as_array()->size() <= i) return nullptr;
  const toml::table* entry = (*list->as_array())[i].as_table();
  if (entry == nullptr) return nullptr;
  const toml::node* node = entry->get(key);
  return node != nullptr ? node : entry;
}

const toml::node* SourceKey(const toml::table& root, std::string_view key) {
  const toml::table* source = root.get_as<toml::table>("source");
  return source != nullptr ? source->get(key) : nullptr;
}

absl::Status CheckOutboxScopes(const Parser& p, const toml::table& root, const Config& config) {
  const SourceConfig& source = config.source;
  for (size_t i = 0; i < config.outbox.size(); ++i) {
    const outbox::TableConfig& table = config.outbox[i];
    const std::string prefix = fmt::format("[[outbox]] #{}", i + 1);
    if (!table.database.empty()) {
      switch (source.selection) {
        case DatabaseSelection::kAll:
          break;
        case DatabaseSelection::kList:
          if (std::find(source.databases.begin(), source.databases.end(), table.database) == source.databases.end()) {
            return p.Error(OutboxEntry(root, i, "database"),
                           fmt::format("{} database = \"{}\" is not in [source] databases; add it there, or fix "
                                       "the name",
                                       prefix, Printable(table.database)));
          }
          break;
        case DatabaseSelection::kDsn:
          if (table.database != DsnDatabase(source.dsn)) {
            return p.Error(OutboxEntry(root, i, "database"),
                           fmt::format("{} database = \"{}\", but without [source] databases outboxd streams "
                                       "the DSN's database \"{}\" only; set databases, or remove the key",
                                       prefix, Printable(table.database), Printable(DsnDatabase(source.dsn))));
          }
          break;
      }
    }
    if (!table.publication.empty() &&
        std::find(source.publications.begin(), source.publications.end(), table.publication) ==
            source.publications.end()) {
      return p.Error(OutboxEntry(root, i, "publication"),
                     fmt::format("{} publication = \"{}\" is not one of [source] publication ({}); add it "
                                 "there, or fix the name",
                                 prefix, table.publication, fmt::join(source.publications, ", ")));
    }
  }
  // An explicit list is known now: every listed database needs something to publish.
  if (source.selection == DatabaseSelection::kList && !config.messages.enabled) {
    for (const std::string& database : source.databases) {
      const bool any = std::any_of(config.outbox.begin(), config.outbox.end(), [&](const outbox::TableConfig& t) {
        return t.database.empty() || t.database == database;
      });
      if (!any) {
        return p.Error(SourceKey(root, "databases"),
                       fmt::format("[source] databases lists \"{}\", but no [[outbox]] entry applies to it and "
                                   "[messages] is off: its slot would publish nothing; add an [[outbox]] entry "
                                   "with database = \"{}\" (or one without database)",
                                   Printable(database), Printable(database)));
      }
    }
  }
  return absl::OkStatus();
}

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

// Two streams on one slot name would take turns holding it. Known now for an
// explicit list; with "*", config::PlanStreams refuses such streams as found.
absl::Status CheckSlotNames(const Parser& p, const toml::table& root, const Config& config) {
  const SourceConfig& source = config.source;
  if (source.selection != DatabaseSelection::kList) return absl::OkStatus();
  std::vector<std::pair<std::string, std::string>> seen;  // slot, "database/publication"
  for (const std::string& database : source.databases) {
    for (const std::string& publication : source.publications) {
      absl::StatusOr<std::string> slot = FillSlotTemplate(source.slot_template, database, publication);
      if (!slot.ok()) return p.Error(SourceKey(root, "slot"), fmt::format("source.slot: {}", slot.status().message()));
      for (const auto& [other_slot, other] : seen) {
        if (other_slot == *slot) {
          return p.Error(SourceKey(root, "slot"),
                         fmt::format("source.slot = \"{}\" gives the slot \"{}\" to both {} and database \"{}\" "
                                     "publication \"{}\"; a slot serves one stream: change the template or the "
                                     "names ({{database}} is lower-cased, other characters than a-z, 0-9 and _ "
                                     "become _)",
                                     source.slot_template, *slot, other, Printable(database), publication));
        }
      }
      seen.emplace_back(*slot, fmt::format("database \"{}\" publication \"{}\"", Printable(database), publication));
    }
  }
  return absl::OkStatus();
}

// One transactional.id per slot: a fixed one shared by several streams would
// let each stream's producer fence the others'.
absl::Status CheckTransactionalId(const Parser& p, const toml::table& root, const Config& config) {
  if (config.kafka.delivery != Delivery::kExactlyOnce || config.kafka.transactional_id.empty() ||
      !config.MultiStream()) {
    return absl::OkStatus();
  }
  const toml::table* sink = root.get_as<toml::table>("sink");
  return p.Error(sink != nullptr ? sink->get("transactional_id") : nullptr,
                 "sink.transactional_id is one id, but this config can give several streams, and each needs its "
                 "own (a second producer with the same id fences the first); remove it: each stream then uses "
                 "\"outboxd-<system identifier>-<slot>\"");
}

// A single-stream config knows its database now: {database} in a topic is
// filled in at once (as config::StreamConfig does per stream), so that the
// topic stays fixed and no event has to carry the name.
absl::Status FillSingleStreamTopics(const Parser& p, const toml::table& root, Config* config) {
  if (config->MultiStream()) return absl::OkStatus();
  const std::string database = DsnDatabase(config->source.dsn);
  const auto fill = [&](std::string* topic, const toml::node* where, std::string_view path) -> absl::Status {
    const std::string filled = FillDatabase(*topic, database);
    if (filled == *topic) return absl::OkStatus();
    absl::StatusOr<outbox::TopicTemplate> parsed = outbox::TopicTemplate::Parse(filled);
    if (!parsed.ok()) {
      return p.Error(where, fmt::format("{} = \"{}\" with {{database}} = \"{}\" (the DSN's database): {}", path,
                                        *topic, Printable(database), parsed.status().message()));
    }
    *topic = filled;
    return absl::OkStatus();
  };
  for (size_t i = 0; i < config->outbox.size(); ++i) {
    RETURN_IF_ERROR(fill(&config->outbox[i].topic, OutboxEntry(root, i, "topic"),
                         fmt::format("[[outbox]] #{} topic", i + 1)));
  }
  const toml::table* messages = root.get_as<toml::table>("messages");
  return fill(&config->messages.topic, messages != nullptr ? messages->get("topic") : nullptr, "messages.topic");
}

}  // namespace

absl::Status Validate(const Parser& p, const toml::table& root, Config* config) {
  RETURN_IF_ERROR(ValidateExactlyOnce(p, root, config->kafka));
  RETURN_IF_ERROR(CheckOutboxScopes(p, root, *config));
  RETURN_IF_ERROR(CheckSlotNames(p, root, *config));
  RETURN_IF_ERROR(CheckTransactionalId(p, root, *config));
  return FillSingleStreamTopics(p, root, config);
}

}  // namespace outboxd::config
