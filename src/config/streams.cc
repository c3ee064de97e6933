#include "config/streams.h"

#include <algorithm>
#include <map>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "absl/strings/match.h"
#include "common/format.h"
#include "outbox/routing.h"
#include "outbox/values.h"
#include "replication/state_file.h"

namespace outboxd::config {
namespace {

using outbox::Printable;

bool Applies(const outbox::TableConfig& table, std::string_view database, std::string_view publication) {
  return (table.database.empty() || table.database == database) &&
         (table.publication.empty() || table.publication == publication);
}

// The topic template with {database} filled in, or why that is no template.
absl::StatusOr<std::string> TopicFor(std::string_view text, std::string_view database) {
  std::string topic = FillDatabase(text, database);
  if (topic == text) return topic;
  absl::StatusOr<outbox::TopicTemplate> parsed = outbox::TopicTemplate::Parse(topic);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(fmt::format(
        "topic \"{}\" with {{database}} = \"{}\" is not a valid topic template ({}); rename the database or "
        "drop {{database}} from the topic",
        text, Printable(database), parsed.status().message()));
  }
  return topic;
}

}  // namespace

std::string FillDatabase(std::string_view text, std::string_view database) {
  std::string out(text);
  for (size_t at = out.find(kDatabasePlaceholder); at != std::string::npos;
       at = out.find(kDatabasePlaceholder, at + database.size())) {
    out.replace(at, kDatabasePlaceholder.size(), database);
  }
  return out;
}

absl::StatusOr<StreamPlan> PlanStreams(const Config& config, const std::vector<DiscoveredDatabase>& discovered,
                                       std::string_view state_dir) {
  const SourceConfig& source = config.source;
  StreamPlan plan;

  // Which databases, in a stable order.
  std::vector<const DiscoveredDatabase*> chosen;
  std::map<std::string, const DiscoveredDatabase*> by_name;
  for (const DiscoveredDatabase& db : discovered) by_name.emplace(db.name, &db);
  if (source.selection == DatabaseSelection::kDsn && discovered.size() > 1) {
    return absl::InvalidArgumentError(fmt::format(
        "without [source] databases there is one database, the DSN's; {} were given (a bug of the caller)",
        discovered.size()));
  }
  switch (source.selection) {
    case DatabaseSelection::kDsn:
    case DatabaseSelection::kAll:
      for (const auto& [name, db] : by_name) chosen.push_back(db);
      break;
    case DatabaseSelection::kList:
      for (const std::string& name : source.databases) {
        auto it = by_name.find(name);
        if (it == by_name.end()) {
          plan.refused.push_back({name, "", fmt::format(
              "database \"{}\" (in [source] databases) does not exist or does not allow connections "
              "(datallowconn); create it, or remove it from databases",
              Printable(name))});
          continue;
        }
        chosen.push_back(it->second);
      }
      std::sort(chosen.begin(), chosen.end(),
                [](const DiscoveredDatabase* a, const DiscoveredDatabase* b) { return a->name < b->name; });
      break;
  }

  std::vector<StreamSpec> candidates;
  for (const DiscoveredDatabase* db : chosen) {
    const bool any_table = std::any_of(config.outbox.begin(), config.outbox.end(),
                                       [&](const outbox::TableConfig& t) { return t.database.empty() || t.database == db->name; });
    if (!any_table && !config.messages.enabled) {
      // With "*" such a database is simply not ours; a listed one is a mistake.
      if (source.selection != DatabaseSelection::kAll) {
        plan.refused.push_back({db->name, "", fmt::format(
            "no [[outbox]] entry applies to database \"{}\" and [messages] is off: it would hold a slot and "
            "publish nothing; add an [[outbox]] entry for it (database = \"{}\" or no database key)",
            Printable(db->name), Printable(db->name))});
      }
      continue;
    }
    for (const std::string& publication : source.publications) {
      if (std::find(db->publications.begin(), db->publications.end(), publication) == db->publications.end()) {
        // "*" picks the databases that have the publication; a listed one must.
        if (source.selection != DatabaseSelection::kAll) {
          plan.refused.push_back({db->name, publication, fmt::format(
              "database \"{}\" has no publication \"{}\"; create it there (sql/outbox.sql){}",
              Printable(db->name), publication,
              source.selection == DatabaseSelection::kList ? ", or remove the database from [source] databases"
                                                           : "")});
        }
        continue;
      }
      StreamSpec stream;
      stream.database = db->name;
      stream.publication = publication;
      if (!config.MultiStream()) {
        stream.slot = source.slot;  // filled in at parse time, as before
      } else {
        absl::StatusOr<std::string> slot = FillSlotTemplate(source.slot_template, db->name, publication);
        if (!slot.ok()) {
          plan.refused.push_back({db->name, publication, std::string(slot.status().message())});
          continue;
        }
        stream.slot = *std::move(slot);
      }
      if (source.selection == DatabaseSelection::kDsn) {
        stream.dsn = source.dsn;  // today's DSN, byte for byte
      } else {
        absl::StatusOr<std::string> dsn = DsnWithDatabase(source.dsn, db->name);
        if (!dsn.ok()) return dsn.status();
        stream.dsn = *std::move(dsn);
      }
      bool refused = false;
      for (const outbox::TableConfig& table : config.outbox) {
        if (!Applies(table, db->name, publication)) continue;
        outbox::TableConfig copy = table;
        absl::StatusOr<std::string> topic = TopicFor(table.topic, db->name);
        if (!topic.ok()) {
          plan.refused.push_back({db->name, publication, std::string(topic.status().message())});
          refused = true;
          break;
        }
        copy.topic = *std::move(topic);
        stream.tables.push_back(std::move(copy));
      }
      if (refused) continue;
      if (stream.tables.empty() && !config.messages.enabled) {
        plan.refused.push_back({db->name, publication, fmt::format(
            "no [[outbox]] entry applies to publication \"{}\" of database \"{}\" and [messages] is off; add "
            "one with publication = \"{}\" (or without a publication key)",
            publication, Printable(db->name), publication)});
        continue;
      }
      absl::StatusOr<std::string> messages_topic = TopicFor(config.messages.topic, db->name);
      if (!messages_topic.ok()) {
        plan.refused.push_back({db->name, publication, std::string(messages_topic.status().message())});
        continue;
      }
      stream.messages_topic = *std::move(messages_topic);
      if (!state_dir.empty()) stream.state_file = replication::StateFilePath(std::string(state_dir), stream.slot);
      candidates.push_back(std::move(stream));
    }
  }

  // Slot names are cluster-wide: two streams on one slot would take turns
  // holding it and each skip what the other confirmed.
  std::map<std::string, int> uses;
  for (const StreamSpec& stream : candidates) ++uses[stream.slot];
  for (StreamSpec& stream : candidates) {
    if (uses[stream.slot] == 1) {
      plan.streams.push_back(std::move(stream));
      continue;
    }
    std::vector<std::string> others;
    for (const StreamSpec& other : candidates) {
      if (other.slot == stream.slot && other.database != stream.database) others.push_back(Printable(other.database));
    }
    plan.refused.push_back({stream.database, stream.publication, fmt::format(
        "slot template \"{}\" gives database \"{}\" the slot \"{}\", which {} get too; a slot serves one "
        "stream: rename a database, or make the template tell them apart",
        source.slot_template, Printable(stream.database), stream.slot,
        others.empty() ? std::string("another stream would") : fmt::format("{} would", fmt::join(others, ", ")))});
  }
  return plan;
}

Config StreamConfig(const Config& config, const StreamSpec& stream) {
  Config out = config;
  out.source.dsn = stream.dsn;
  out.source.selection = DatabaseSelection::kDsn;
  out.source.databases.clear();
  out.source.slot_template = stream.slot;
  out.source.slot = stream.slot;
  out.source.publications = {stream.publication};
  out.source.publication = stream.publication;
  out.outbox = stream.tables;
  out.messages.topic = stream.messages_topic;
  return out;
}

}  // namespace outboxd::config
