// [source]: the PostgreSQL side (connection, slot, publication, snapshot).
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
#include "config/dsn.h"
#include "config/streams.h"
#include "outbox/values.h"

namespace outboxd::config {

using outbox::Printable;

const std::vector<std::string_view>& SourceKeys() {
  static const auto* keys = new std::vector<std::string_view>{
      "dsn",         "databases", "discovery_interval", "slot",     "max_active_slots", "publication",
      "create_slot", "status_interval", "state_dir",    "failover", "standby_dsn",      "snapshot",
      "primary_dsn"};
  return *keys;
}

namespace {

bool IsValidSlotName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool IsValidPublicationName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (name[0] >= '0' && name[0] <= '9') return false;
  return IsValidSlotName(name);
}

// A database name as PostgreSQL accepts it: 1 to 63 bytes, no NUL.
bool IsValidDatabaseName(std::string_view name) {
  return !name.empty() && name.size() <= 63 && name.find('\0') == std::string_view::npos;
}

// [source] databases: absent, "*", or a non-empty list of distinct names.
absl::Status ParseDatabases(const Parser& p, const toml::table& source, SourceConfig* out) {
  const toml::node* node = source.get("databases");
  if (node == nullptr) return absl::OkStatus();
  constexpr std::string_view kForm =
      "write databases = [\"orders\", \"billing\"] (those databases) or databases = \"*\" (every "
      "database that allows connections and has the publication)";
  if (node->is_string()) {
    std::string value;
    RETURN_IF_ERROR(p.GetString(source, "databases", "source.databases", &value));
    if (value != "*") {
      return p.Error(node, fmt::format("source.databases = \"{}\": a single string must be \"*\"; {}",
                                       Printable(value), kForm));
    }
    out->selection = DatabaseSelection::kAll;
    return absl::OkStatus();
  }
  if (!node->is_array()) {
    return p.Error(node, fmt::format("source.databases is {}; {}", TypeName(*node), kForm));
  }
  const toml::array& list = *node->as_array();
  if (list.empty()) {
    return p.Error(node, fmt::format("source.databases is an empty list: nothing would be streamed; {}, or "
                                     "remove the key to stream the DSN's database",
                                     kForm));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const toml::node& item = list[i];
    const std::string path = fmt::format("source.databases #{}", i + 1);
    if (!item.is_string()) {
      return p.Error(&item, fmt::format("{} is {}: every entry is a database name in quotes", path, TypeName(item)));
    }
    ASSIGN_OR_RETURN(std::string name, p.Expand(item.as_string()->get(), path, item));
    if (name == "*") {
      return p.Error(&item, fmt::format("{} is \"*\" inside a list: write databases = \"*\" (without "
                                        "brackets) for every database, or list names only",
                                        path));
    }
    if (!IsValidDatabaseName(name)) {
      return p.Error(&item, fmt::format("{} = \"{}\": a database name is 1 to 63 bytes", path, Printable(name)));
    }
    if (std::find(out->databases.begin(), out->databases.end(), name) != out->databases.end()) {
      return p.Error(&item, fmt::format("{} = \"{}\" is listed twice; list each database once", path,
                                        Printable(name)));
    }
    out->databases.push_back(std::move(name));
  }
  out->selection = DatabaseSelection::kList;
  return absl::OkStatus();
}

// [source] publication: one name, or a list of distinct names (a sharded
// outbox: one stream per publication in each database).
absl::Status ParsePublications(const Parser& p, const toml::table& source, SourceConfig* out) {
  const toml::node* node = source.get("publication");
  if (node == nullptr) return absl::OkStatus();
  const auto check = [&p](const toml::node& at, std::string_view path, const std::string& name) {
    if (IsValidPublicationName(name)) return absl::OkStatus();
    return p.Error(&at, fmt::format("{} = \"{}\": use 1 to 63 lower-case letters, digits and underscores, "
                                    "not starting with a digit (the name as PostgreSQL stores an unquoted "
                                    "identifier)",
                                    path, Printable(name)));
  };
  if (node->is_string()) {
    std::string name;
    RETURN_IF_ERROR(p.GetString(source, "publication", "source.publication", &name));
    RETURN_IF_ERROR(check(*node, "source.publication", name));
    out->publications = {name};
    out->publication = std::move(name);
    return absl::OkStatus();
  }
  if (!node->is_array() || node->as_array()->empty()) {
    return p.Error(node, fmt::format("source.publication is {}: write publication = \"outboxd\", or a list "
                                     "of publications (a sharded outbox, one slot each): publication = "
                                     "[\"outboxd_0\", \"outboxd_1\"]",
                                     node->is_array() ? "an empty list" : TypeName(*node)));
  }
  out->publications.clear();
  const toml::array& list = *node->as_array();
  for (size_t i = 0; i < list.size(); ++i) {
    const toml::node& item = list[i];
    const std::string path = fmt::format("source.publication #{}", i + 1);
    if (!item.is_string()) {
      return p.Error(&item, fmt::format("{} is {}: every entry is a publication name in quotes", path,
                                        TypeName(item)));
    }
    ASSIGN_OR_RETURN(std::string name, p.Expand(item.as_string()->get(), path, item));
    RETURN_IF_ERROR(check(item, path, name));
    if (std::find(out->publications.begin(), out->publications.end(), name) != out->publications.end()) {
      return p.Error(&item, fmt::format("{} = \"{}\" is listed twice; list each publication once", path, name));
    }
    out->publications.push_back(std::move(name));
  }
  out->publication = out->publications.front();
  return absl::OkStatus();
}

// The slot template: lower-case letters, digits, underscores and the
// placeholders {database} and {publication}; at most 63 characters once filled.
absl::Status ParseSlot(const Parser& p, const toml::table& source, SourceConfig* out) {
  RETURN_IF_ERROR(p.GetString(source, "slot", "source.slot", &out->slot_template));
  const toml::node* node = source.get("slot");
  absl::Status valid = CheckSlotTemplate(out->slot_template);
  if (!valid.ok()) {
    return p.Error(node, fmt::format("source.slot = \"{}\": {}", Printable(out->slot_template), valid.message()));
  }
  const bool by_database = (out->slot_template.find(kDatabasePlaceholder) != std::string::npos);
  const bool by_publication = (out->slot_template.find(kPublicationPlaceholder) != std::string::npos);
  const bool several_databases = out->selection == DatabaseSelection::kAll ||
                                 (out->selection == DatabaseSelection::kList && out->databases.size() > 1);
  if (several_databases && !by_database) {
    return p.Error(node != nullptr ? node : source.get("databases"),
                   fmt::format("source.slot = \"{}\" is one name, but source.databases gives several "
                               "databases and a replication slot belongs to one: put {{database}} in it, e.g. "
                               "slot = \"outboxd_{{database}}\" (slot names are cluster-wide)",
                               Printable(out->slot_template)));
  }
  if (out->publications.size() > 1 && !by_publication) {
    return p.Error(node != nullptr ? node : source.get("publication"),
                   fmt::format("source.slot = \"{}\" is one name, but source.publication lists {} publications, "
                               "each streamed through its own slot: put {{publication}} in it, e.g. slot = "
                               "\"{}{{publication}}\"",
                               Printable(out->slot_template), out->publications.size(),
                               by_database ? "outboxd_{database}_" : "outboxd_"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckSlotTemplate(std::string_view slot) {
  std::string filled(slot);
  for (std::string_view placeholder : {kDatabasePlaceholder, kPublicationPlaceholder}) {
    for (size_t at = filled.find(placeholder); at != std::string::npos; at = filled.find(placeholder)) {
      filled.replace(at, placeholder.size(), "x");
    }
  }
  if (!IsValidSlotName(filled)) {
    return absl::InvalidArgumentError(
        "a replication slot name is 1 to 63 lower-case letters, digits and underscores (placeholders "
        "{database} and {publication} allowed)");
  }
  return absl::OkStatus();
}

std::string SanitizeForSlot(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    const bool keep = (lower >= 'a' && lower <= 'z') || (lower >= '0' && lower <= '9') || lower == '_';
    out += keep ? lower : '_';
  }
  return out;
}

absl::StatusOr<std::string> FillSlotTemplate(std::string_view slot_template, std::string_view database,
                                             std::string_view publication) {
  std::string out(slot_template);
  const std::pair<std::string_view, std::string> values[] = {
      {kDatabasePlaceholder, SanitizeForSlot(database)}, {kPublicationPlaceholder, std::string(publication)}};
  for (const auto& [placeholder, value] : values) {
    for (size_t at = out.find(placeholder); at != std::string::npos; at = out.find(placeholder, at + value.size())) {
      out.replace(at, placeholder.size(), value);
    }
  }
  if (!IsValidSlotName(out)) {
    return absl::InvalidArgumentError(fmt::format(
        "slot template \"{}\" gives \"{}\" for database \"{}\", publication \"{}\": a replication slot name "
        "is 1 to 63 lower-case letters, digits and underscores; shorten the template",
        slot_template, Printable(out), Printable(database), publication));
  }
  return out;
}

namespace {

// A DSN that libpq rejects passes here: connecting reports libpq's reason.
bool HasReplicationParam(std::string_view dsn) {
  const auto options = LibpqOptions(dsn);
  if (!options.has_value()) return false;
  return std::any_of(options->begin(), options->end(),
                     [](const auto& option) { return option.first == "replication"; });
}

}  // namespace

absl::Status ParseSource(const Parser& p, const toml::table& root, SourceConfig* out) {
  ASSIGN_OR_RETURN(const toml::table* source, p.GetSection(root, "source", "source", "[source]"));
  if (source == nullptr) {
    return p.Error(nullptr,
                   "[source] is missing: add it with at least dsn = \"host=... dbname=... "
                   "user=...\" (the libpq connection string of the database to relay from)");
  }
  RETURN_IF_ERROR(p.CheckKeys(*source, "source.", SourceKeys(), "[source]"));

  const toml::node* dsn = source->get("dsn");
  if (dsn == nullptr) {
    return p.Error(source, "source.dsn is missing: set it to the libpq connection string, e.g. "
                           "dsn = \"host=127.0.0.1 port=5432 dbname=app user=outboxd "
                           "password=${PGPASSWORD}\"");
  }
  RETURN_IF_ERROR(p.GetNonEmptyString(*source, "dsn", "source.dsn", &out->dsn));
  if (HasReplicationParam(out->dsn)) {
    return p.Error(dsn, "source.dsn must not set replication: outboxd opens its replication "
                        "connection itself; remove replication=... from the DSN");
  }

  RETURN_IF_ERROR(ParseDatabases(p, *source, out));
  if (out->selection != DatabaseSelection::kDsn) {
    // The DSN then names the cluster; a dbname that is itself a connection
    // string would hide options that replacing it per database would drop.
    const auto options = LibpqOptions(out->dsn);
    if (options.has_value()) {
      for (const auto& [keyword, value] : *options) {
        if (keyword == "dbname" && (absl::StrContains(value, "=") || absl::StartsWith(value, "postgres://") || absl::StartsWith(value, "postgresql://"))) {
          return p.Error(dsn, "source.dsn: its dbname is itself a connection string, which outboxd replaces per "
                              "database under source.databases; write those options in the DSN directly");
        }
      }
    }
  }
  if (const toml::node* interval = source->get("discovery_interval"); interval != nullptr) {
    if (out->selection != DatabaseSelection::kAll) {
      return p.Error(interval, "source.discovery_interval applies to databases = \"*\" only (outboxd lists the "
                               "databases again that often); remove it, or set databases = \"*\"");
    }
    RETURN_IF_ERROR(p.GetDuration(*source, "discovery_interval", "source.discovery_interval", absl::Seconds(1),
                                  absl::Hours(24), "\"30s\", \"5m\"", "", &out->discovery_interval));
  }
  RETURN_IF_ERROR(ParsePublications(p, *source, out));
  RETURN_IF_ERROR(ParseSlot(p, *source, out));
  if (out->selection == DatabaseSelection::kDsn && out->publications.size() == 1) {
    absl::StatusOr<std::string> slot =
        FillSlotTemplate(out->slot_template, DsnDatabase(out->dsn), out->publication);
    if (!slot.ok()) return p.Error(source->get("slot"), fmt::format("source.slot: {}", slot.status().message()));
    out->slot = *std::move(slot);
  } else {
    out->slot.clear();  // one per stream: config::PlanStreams
  }
  if (const toml::node* cap = source->get("max_active_slots"); cap != nullptr) {
    if (!cap->is_integer() || cap->as_integer()->get() < 0 || cap->as_integer()->get() > 10000) {
      return p.Error(cap, "source.max_active_slots must be an integer from 0 (no cap) to 10000: how many slots "
                          "one process streams at most, so that replicas spread them");
    }
    out->max_active_slots = static_cast<int>(cap->as_integer()->get());
  }
  RETURN_IF_ERROR(p.GetBool(*source, "create_slot", "source.create_slot", &out->create_slot));
  RETURN_IF_ERROR(p.GetBool(*source, "failover", "source.failover", &out->failover));
  RETURN_IF_ERROR(p.GetString(*source, "standby_dsn", "source.standby_dsn", &out->standby_dsn));
  RETURN_IF_ERROR(p.GetString(*source, "primary_dsn", "source.primary_dsn", &out->primary_dsn));
  if (HasReplicationParam(out->primary_dsn)) {
    return p.Error(source->get("primary_dsn"),
                   "source.primary_dsn must not set replication: outboxd asks the primary for a standby "
                   "snapshot over an ordinary connection; remove replication=... from it");
  }
  RETURN_IF_ERROR(p.GetString(*source, "state_dir", "source.state_dir", &out->state_dir));
  if (const toml::node* snapshot = source->get("snapshot"); snapshot != nullptr) {
    std::string mode;
    RETURN_IF_ERROR(p.GetString(*source, "snapshot", "source.snapshot", &mode));
    if (mode != "never" && mode != "initial") {
      return p.Error(snapshot, fmt::format("source.snapshot = \"{}\": expected \"never\" (stream what "
                                           "is committed after the slot exists) or \"initial\" (first "
                                           "publish the rows present when outboxd creates the slot)",
                                           mode));
    }
    out->snapshot_initial = mode == "initial";
  }

  return p.GetDuration(*source, "status_interval", "source.status_interval", absl::Milliseconds(100),
                       absl::Seconds(60), "\"500ms\", \"10s\" or \"1m\"",
                       "; keep it under half of the server's wal_sender_timeout (60s by default)",
                       &out->status_interval);
}

absl::Status CheckStatusInterval(absl::Duration status_interval, absl::Duration wal_sender_timeout,
                                 bool* tight) {
  *tight = false;
  if (wal_sender_timeout <= absl::ZeroDuration()) return absl::OkStatus();
  const int64_t interval_ms = absl::ToInt64Milliseconds(status_interval);
  const int64_t timeout_ms = absl::ToInt64Milliseconds(wal_sender_timeout);
  if (status_interval >= wal_sender_timeout) {
    return absl::FailedPreconditionError(fmt::format(
        "[source] status_interval = {} ms is not below the server's wal_sender_timeout = {} ms: the "
        "server would drop every idle replication connection before outboxd's next status update; "
        "set status_interval to less than half of wal_sender_timeout (e.g. \"{}ms\"), or raise "
        "wal_sender_timeout",
        interval_ms, timeout_ms, std::max<int64_t>(100, timeout_ms / 2 - 1)));
  }
  *tight = status_interval * 2 > wal_sender_timeout;
  return absl::OkStatus();
}

}  // namespace outboxd::config
