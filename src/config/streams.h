// Streams: what one outboxd process serves, computed from the config and the
// databases discovery found. A stream is one replication slot: one database
// and one publication. Pure (no I/O: libpq only parses connection strings),
// so the stream supervisor, `check` and `replay` share one unit-tested answer
// to "which slot, which DSN, which tables, which state file".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "outbox/table_mapping.h"

namespace outboxd::config {

inline constexpr std::string_view kDatabasePlaceholder = "{database}";
inline constexpr std::string_view kPublicationPlaceholder = "{publication}";

// A database of the cluster as discovery saw it: its name and which of the
// configured publications it has.
struct DiscoveredDatabase {
  std::string name;
  std::vector<std::string> publications;

  friend bool operator==(const DiscoveredDatabase&, const DiscoveredDatabase&) = default;
};

// One stream: everything a pipeline needs that differs between streams.
struct StreamSpec {
  std::string database;
  std::string publication;
  std::string slot;
  // The libpq DSN of `database` (the config's DSN with dbname replaced), no
  // replication= (the replication connection adds it).
  std::string dsn;
  // The [[outbox]] entries that apply (their database and publication match
  // or are unset), topic templates with {database} filled in.
  std::vector<outbox::TableConfig> tables;
  // [messages] topic with {database} filled in.
  std::string messages_topic;
  // The gap-detection state file of this slot; empty without a state directory.
  std::string state_file;

  friend bool operator==(const StreamSpec&, const StreamSpec&) = default;
};

// A database (or database and publication) that cannot be streamed, and why:
// logged by the caller; the other streams go on.
struct RefusedStream {
  std::string database;
  std::string publication;  // empty when the whole database is refused
  std::string reason;

  friend bool operator==(const RefusedStream&, const RefusedStream&) = default;
};

struct StreamPlan {
  std::vector<StreamSpec> streams;  // sorted by database, then publication order
  std::vector<RefusedStream> refused;
};

// Expands `config` over `discovered` into streams: for each database that the
// config selects (every one listed in `databases`, or any with databases =
// "*", or, without `databases`, the single entry the caller passes for the
// DSN's own database), one stream per configured publication it has.
// - Without `databases`, the DSN is used as it is (today's single stream).
// - A database listed in `databases` but not discovered, or without one of
//   the publications, is refused (listed in `refused`, not streamed).
// - Streams whose filled-in slot names collide are all refused: which one
//   would win could change from one discovery to the next.
// - A database that no [[outbox]] entry applies to, with [messages] off, is
//   refused: it would hold a slot and publish nothing.
// `state_dir` empty: no state files. InvalidArgumentError only for a DSN
// that libpq rejects (config parsing has refused the rest), or several
// databases given for a config without `databases`.
absl::StatusOr<StreamPlan> PlanStreams(const Config& config, const std::vector<DiscoveredDatabase>& discovered,
                                       std::string_view state_dir);

// The config of one stream as a single-stream config: [source] dsn, slot and
// publication are the stream's, `databases` is gone, [[outbox]] holds the
// entries that apply, topics have {database} filled in. The code that runs
// one stream (run, the snapshot, exactly-once's checkpoint keys) reads it as
// it reads a config without `databases`.
Config StreamConfig(const Config& config, const StreamSpec& stream);

// The slot template's checks and expansion. A database name goes into
// {database} lower-cased, with every character other than a-z, 0-9 and _ as
// _ ("Billing-EU" -> "billing_eu"). InvalidArgumentError when the result is
// not a valid slot name (too long).
absl::Status CheckSlotTemplate(std::string_view slot_template);
std::string SanitizeForSlot(std::string_view name);
absl::StatusOr<std::string> FillSlotTemplate(std::string_view slot_template, std::string_view database,
                                             std::string_view publication);

// `text` with every {database} replaced by `database` (topic templates).
std::string FillDatabase(std::string_view text, std::string_view database);

}  // namespace outboxd::config
