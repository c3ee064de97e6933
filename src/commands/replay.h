// `outboxd replay`: re-publishes rows still in an outbox table, with their
// original ids, through the live path's mapper, router and envelope: a time
// window of created_at (or, for a table without one such as Debezium's, of
// the inserting transaction's commit time where track_commit_timestamp is
// on), an id range, or every row. It reads with an ordinary connection in one
// read-only REPEATABLE READ snapshot and never touches the replication slot.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kafka/event_sink.h"
#include "config/config.h"
#include "outbox/routing.h"
#include "outbox/table_mapping.h"
#include "pgoutput/messages.h"

namespace outboxd::commands {

// Which rows: --since/--until (a time window), --from-id/--to-id, or --all.
enum class ReplaySelection { kTime, kIdRange, kAll };

struct ReplayOptions {
  std::string table;                // as in [[outbox]] table: "schema.table" or "table"
  std::string database;             // --database: required when the config names several
  ReplaySelection selection = ReplaySelection::kTime;
  // kTime: created_at (or the commit time, for a table without created_at) in [since, until).
  absl::Time since;
  std::optional<absl::Time> until;  // none: up to the snapshot
  // kIdRange: from_id <= id <= to_id, in the id column's own order (time
  // order for UUIDv7); either may be empty for an open end.
  std::string from_id, to_id;
  bool dry_run = false;             // count the rows, produce nothing
  size_t batch_rows = 1000;         // rows per FETCH: bounds memory
  absl::Duration flush_timeout = absl::Minutes(5);
};

struct ReplayResult {
  uint64_t rows = 0;    // rows in the window
  uint64_t sent = 0;    // acknowledged by Kafka (acks=all)
  uint64_t failed = 0;  // rows that could not be mapped or routed, or whose delivery failed
};

// Parses the arguments of `outboxd replay` other than --config: --table T,
// --since TIME, --until TIME, --from-id ID, --to-id ID, --database NAME (each
// also as --flag=value), --all and --dry-run. Exactly one selection: a time
// window, an id range, or --all.
// InvalidArgumentError saying what to write for a missing, malformed or
// unknown argument.
absl::StatusOr<ReplayOptions> ParseReplayFlags(const std::vector<std::string_view>& args);

// Parses an RFC 3339 timestamp ("2026-11-27T03:00:00Z", "...+01:00",
// fractions allowed). InvalidArgumentError naming `flag` otherwise.
absl::StatusOr<absl::Time> ParseReplayTime(std::string_view flag, std::string_view text);

// Maps, routes, encodes and produces rows of one outbox table, given as
// pgoutput values so that the live path's TableMapper reads them exactly as it
// reads an Insert. Core logic over the EventSink interface; no I/O of its own.
class ReplayPublisher {
 public:
  // `sink` may be null for a dry run (rows are mapped and routed, not produced).
  ReplayPublisher(const outbox::TableConfig& table, kafka::EventSink* sink);

  // The result columns (names and type OIDs, as a Relation message carries
  // them). InvalidArgumentError when a required column is missing.
  absl::Status Bind(const std::vector<pgoutput::RelationColumn>& columns);
  // One row, in Bind's column order. A row that cannot be mapped or routed is
  // counted as failed and its reason kept (first_error); the others go on. A
  // Produce error other than backpressure fails the replay.
  absl::Status Publish(const pgoutput::TupleData& row);
  // Waits for every delivery report.
  absl::Status Finish(absl::Duration timeout);

  const ReplayResult& result() const { return result_; }
  const absl::Status& first_error() const { return first_error_; }

 private:
  void Fail(absl::Status status);

  outbox::TableMapper mapper_;
  kafka::EventSink* sink_;
  outbox::TopicTemplate topic_;
  const outbox::TableBinding* binding_ = nullptr;
  outbox::OutboxEvent event_;
  std::string topic_name_;
  outbox::Record record_;
  ReplayResult result_;
  absl::Status first_error_;
};

// The single-stream config replay reads `database` with (config::StreamConfig:
// its DSN, and the [[outbox]] entries of every publication that apply to it).
// `database` may be empty only when the config names one database.
// InvalidArgumentError saying what to pass otherwise.
absl::StatusOr<config::Config> ReplayConfig(const config::Config& config, std::string_view database);

// Runs the replay against the config's database (--database's, with
// [source] databases) and Kafka; writes progress
// and the summary to `out`. Exit code: 0 when every row was sent (or counted,
// with dry_run), 1 when any failed, 2 for a usage error (unknown table).
int RunReplay(const config::Config& config, const ReplayOptions& options, std::ostream& out);

// [source] snapshot = "initial": publishes every row of every [[outbox]] table
// as of the exported snapshot `snapshot_name` (SET TRANSACTION SNAPSHOT on an
// ordinary connection), or as of a fresh REPEATABLE READ snapshot when it is
// empty (redoing an interrupted snapshot), with the live path's mapper,
// router and record options, and waits for every delivery. OK only when every
// row was acknowledged; UnavailableError for a transient fault or a stop,
// FailedPreconditionError for rows that cannot be published.
absl::Status PublishSnapshot(const config::Config& config, std::string_view snapshot_name,
                             const std::atomic<bool>& stop);

}  // namespace outboxd::commands
