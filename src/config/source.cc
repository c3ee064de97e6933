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

namespace outboxd::config {

const std::vector<std::string_view>& SourceKeys() {
  static const auto* keys = new std::vector<std::string_view>{"dsn", "slot", "publication",
                                                              "create_slot", "status_interval", "state_dir",
                                                              "failover",    "standby_dsn", "snapshot",
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

  RETURN_IF_ERROR(p.GetString(*source, "slot", "source.slot", &out->slot));
  if (!IsValidSlotName(out->slot)) {
    return p.Error(source->get("slot"),
                   fmt::format("source.slot = \"{}\": a replication slot name is 1 to 63 lower-case "
                               "letters, digits and underscores",
                               out->slot));
  }
  RETURN_IF_ERROR(p.GetString(*source, "publication", "source.publication", &out->publication));
  if (!IsValidPublicationName(out->publication)) {
    return p.Error(source->get("publication"),
                   fmt::format("source.publication = \"{}\": use 1 to 63 lower-case letters, "
                               "digits and underscores, not starting with a digit (the name as "
                               "PostgreSQL stores an unquoted identifier)",
                               out->publication));
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
