#include "commands/run.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "commands/preflight.h"
#include "commands/replay.h"
#include "common/format.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "kafka/checkpoint_topic.h"
#include "kafka/rdkafka_sink.h"
#include "pipeline/at_least_once.h"
#include "pipeline/checkpoint.h"
#include "pipeline/exactly_once.h"
#include "pipeline/relay.h"
#include "replication/pg_connection.h"
#include "registry/envelope_schema.h"
#include "registry/registry_sink.h"
#include "replication/pg_replication_stream.h"
#include "replication/slot_monitor.h"
#include "replication/state_file.h"
#include "replication/timeline.h"
#include "telemetry/endpoints.h"
#include "telemetry/http_server.h"
#include "telemetry/logging.h"
#include "telemetry/metrics.h"

namespace outboxd::commands {

void ApplyLogConfig(const config::LogConfig& log) {
  static const std::pair<std::string_view, telemetry::LogLevel> kLevels[] = {
      {"debug", telemetry::LogLevel::kDebug},
      {"info", telemetry::LogLevel::kInfo},
      {"warn", telemetry::LogLevel::kWarn},
      {"error", telemetry::LogLevel::kError}};
  for (const auto& [name, level] : kLevels) {
    if (log.level == name) telemetry::SetLogLevel(level);
  }
  telemetry::SetLogFormat(log.format == "json" ? telemetry::LogFormat::kJson : telemetry::LogFormat::kText);
}

registry::ClientOptions RegistryClientOptions(const config::SchemaRegistryConfig& config) {
  return registry::ClientOptions{
      .url = config.url,
      .username = config.username,
      .password = config.password,
      .ca_file = config.ca_file,
      .cert_file = config.cert_file,
      .key_file = config.key_file,
      .timeout = config.timeout,
  };
}

std::vector<std::string> FixedTopics(const config::Config& config) {
  std::vector<std::string> topics;
  auto add = [&topics](const std::string& topic) {
    if (topic.find('{') != std::string::npos) return;
    if (std::find(topics.begin(), topics.end(), topic) == topics.end()) topics.push_back(topic);
  };
  for (const outbox::TableConfig& table : config.outbox) add(table.topic);
  if (config.messages.enabled) add(config.messages.topic);
  return topics;
}

namespace {

// An invalidated slot needs a human, and the alert on outboxd_slot_invalidated
// is how one hears of it: a process that exited at once would never be scraped
// with the gauge at 1. So /metrics stays up for longer than a scrape interval
// (Prometheus's default is 1 min), unless SIGTERM comes first; the slot monitor
// reports wal_status "lost" meanwhile too.
constexpr absl::Duration kInvalidatedLinger = absl::Seconds(75);

void LingerForScrape(const std::atomic<bool>& stop) {
  telemetry::LogInfo("serving /metrics (outboxd_slot_invalidated 1) for {} before exiting; SIGTERM exits now",
                     absl::FormatDuration(kInvalidatedLinger));
  const absl::Time until = absl::Now() + kInvalidatedLinger;
  while (!stop.load() && absl::Now() < until) {
    absl::SleepFor(std::min(absl::Milliseconds(100), until - absl::Now()));
  }
}

pipeline::RelayOptions RelayOptionsFrom(const config::Config& config) {
  pipeline::RelayOptions options;
  options.pipeline.tables = config.outbox;
  options.pipeline.messages_enabled = config.messages.enabled;
  options.pipeline.messages_prefix = config.messages.prefix;
  options.pipeline.messages_topic = config.messages.topic;
  options.pipeline.messages_key = config.messages.key;
  options.pipeline.messages_record = config.messages.record;
  options.pipeline.status_interval = config.source.status_interval;
  options.pipeline.stop_flush_timeout = config.shutdown.stop_flush_timeout;
  options.pipeline.on_bad_event = config.errors.on_bad_event;
  options.pipeline.dead_letter_topic = config.errors.dead_letter_topic;
  return options;
}

// Where gap detection keeps its state file: --state-dir, else [source]
// state_dir, else /var/lib/outboxd when it exists and is writable; empty: off.
constexpr std::string_view kDefaultStateDir = "/var/lib/outboxd";

absl::StatusOr<std::string> ResolveStateDir(const config::Config& config, const RunFlags& flags) {
  const std::string chosen = !flags.state_dir.empty() ? flags.state_dir : config.source.state_dir;
  if (chosen.empty()) {
    if (access(std::string(kDefaultStateDir).c_str(), W_OK | X_OK) == 0) return std::string(kDefaultStateDir);
    return std::string();
  }
  if (mkdir(chosen.c_str(), 0750) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(fmt::format(
        "cannot create the state directory {}: {}; create it, writable by outboxd, or fix --state-dir / "
        "[source] state_dir",
        chosen, std::strerror(errno)));
  }
  if (access(chosen.c_str(), W_OK | X_OK) != 0) {
    return absl::FailedPreconditionError(fmt::format(
        "the state directory {} is not writable: {}; make it writable by outboxd, or fix --state-dir / "
        "[source] state_dir",
        chosen, std::strerror(errno)));
  }
  return chosen;
}

// Decoding on a hot standby: what the standby's settings mean for the slot,
// said at every session start (outboxd check says it with more detail).
void LogStandbySource(const config::SourceConfig& source, const replication::SystemInfo& info) {
  if (!info.in_recovery) {
    if (!source.primary_dsn.empty()) {
      telemetry::LogInfo("[source] primary_dsn is set but [source] dsn reaches a primary (promoted, or never a "
                         "standby): primary_dsn is not needed while it stays one");
    }
    return;
  }
  if (info.hot_standby_feedback != "on") {
    telemetry::LogWarn("decoding on a hot standby with hot_standby_feedback = {}: when the primary vacuums catalog "
                       "rows this slot still needs, PostgreSQL invalidates the slot (rows_removed) and events are "
                       "lost upstream. On the standby, set hot_standby_feedback = on (see docs/operations.md, "
                       "\"Decoding on a standby\")",
                       info.hot_standby_feedback.empty() ? "unknown" : info.hot_standby_feedback);
  }
  if (info.primary_slot_name.empty()) {
    telemetry::LogWarn("decoding on a hot standby without primary_slot_name: while the standby is disconnected "
                       "the primary keeps neither the WAL nor the catalog rows its slot needs, so a vacuum "
                       "there can invalidate the slot (rows_removed). Give the standby a physical slot on the "
                       "primary (primary_slot_name)");
  }
}

// Refuses a status_interval that the server's wal_sender_timeout makes unworkable
// (every idle stream would be dropped). Asked once at start on a plain
// connection; if PostgreSQL cannot be reached yet the relay's own retries take
// over and `outboxd check` reports the setting.
absl::Status CheckSenderTimeout(const config::Config& config, int stop_fd) {
  // A stop ends the attempt at once: a server that does not answer must not
  // hold a SIGTERM for connect_timeout.
  auto conn = replication::PgConnection::Connect(config.source.dsn, /*replication=*/false, stop_fd);
  if (!conn.ok()) return absl::OkStatus();
  auto rows = (*conn)->Query("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'");
  if (!rows.ok() || rows->empty() || (*rows)[0].empty() || !(*rows)[0][0]) return absl::OkStatus();
  bool tight = false;
  RETURN_IF_ERROR(config::CheckStatusInterval(config.source.status_interval,
                                              absl::Milliseconds(std::atoll((*rows)[0][0]->c_str())),
                                              &tight));
  if (tight) {
    telemetry::LogWarn("[source] status_interval is over half of the server's wal_sender_timeout ({} ms): "
                       "one late status update and the server drops the stream; set it below half",
                       (*rows)[0][0]->c_str());
  }
  return absl::OkStatus();
}

// The "snapshot pending" mark of [source] snapshot = "initial": written (and
// synced) before the slot is created, removed once every snapshot row was
// acknowledged. A mark found with the slot present means the snapshot was
// interrupted after the slot was made, so it is redone.
absl::Status WriteSnapshotMark(const std::string& path) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0640);
  if (fd < 0) {
    return absl::FailedPreconditionError(fmt::format(
        "cannot write the snapshot mark {}: {}; fix the state directory", path, std::strerror(errno)));
  }
  static constexpr char kText[] = "initial snapshot pending\n";
  const bool ok = write(fd, kText, sizeof kText - 1) == static_cast<ssize_t>(sizeof kText - 1) && fsync(fd) == 0;
  const int saved_errno = errno;
  close(fd);
  if (!ok) {
    return absl::FailedPreconditionError(fmt::format(
        "cannot write the snapshot mark {}: {}; fix the state directory", path, std::strerror(saved_errno)));
  }
  return absl::OkStatus();
}

absl::Status RemoveSnapshotMark(const std::string& path) {
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(fmt::format(
        "cannot remove the snapshot mark {}: {}; fix the state directory", path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

// OUTBOXD_FAILPOINT=kill_after_kafka_commit:N, for tests only: SIGKILL right
// after the N-th Kafka commit returned, before the slot hears of it (the crash
// window exactly-once must survive). Anything else there is refused.
absl::StatusOr<std::function<void()>> Failpoint() {
  const char* value = std::getenv("OUTBOXD_FAILPOINT");
  if (value == nullptr || *value == '\0') return std::function<void()>();
  constexpr std::string_view kKill = "kill_after_kafka_commit:";
  const std::string_view text(value);
  const long long n = text.substr(0, kKill.size()) == kKill ? std::atoll(value + kKill.size()) : 0;
  if (n <= 0) {
    return absl::InvalidArgumentError(fmt::format(
        "OUTBOXD_FAILPOINT=\"{}\": the only failpoint is kill_after_kafka_commit:N (N >= 1), for tests; "
        "unset it",
        text));
  }
  telemetry::LogWarn("OUTBOXD_FAILPOINT: this process kills itself after its Kafka commit number {} (a test)", n);
  return std::function<void()>([n, commits = 0LL]() mutable {
    if (++commits == n) raise(SIGKILL);
  });
}

// The history of the server's timeline, for a checkpoint of an earlier one:
// read on a replication connection of its own, which must reach the system
// and timeline the session streams from (a multi-host DSN may lead elsewhere:
// then UnavailableError).
absl::StatusOr<std::vector<replication::TimelineSwitch>> ReadServerHistory(const config::Config& config,
                                                                          const replication::SystemInfo& streamed,
                                                                          int stop_fd) {
  ASSIGN_OR_RETURN(std::unique_ptr<replication::PgConnection> conn,
                   replication::PgConnection::Connect(config.source.dsn, /*replication=*/true, stop_fd));
  ASSIGN_OR_RETURN(const replication::SystemIdentity identity, replication::IdentifySystem(*conn));
  if (identity.system_id != streamed.system_id || static_cast<int>(identity.timeline) != streamed.timeline) {
    return absl::UnavailableError(fmt::format(
        "reading the timeline history, {} answered as system {} timeline {}, but the session streams from system "
        "{} timeline {} (a switchover under way?); outboxd retries",
        conn->Describe(), identity.system_id, identity.timeline, streamed.system_id, streamed.timeline));
  }
  return replication::ReadTimelineHistory(*conn, identity.timeline);
}

// Bounds `checkpoint` to the WAL history of the server the session streams
// from (pipeline::TrustCheckpoint): its timeline and WAL position as
// IDENTIFY_SYSTEM gave them when the session started, and the timeline's
// history when the checkpoint is of an earlier timeline. Each bound is logged
// and counted; true when there was one.
absl::StatusOr<bool> BoundToServerHistory(const config::Config& config, const replication::SystemInfo& streamed,
                                          const std::string& key, int stop_fd, telemetry::Metrics* metrics,
                                          pipeline::Checkpoint* checkpoint) {
  pipeline::ServerWal server{.timeline = static_cast<uint32_t>(streamed.timeline), .position = streamed.xlog_pos};
  if (pipeline::NeedsTimelineHistory(*checkpoint, server.timeline)) {
    server.history = ReadServerHistory(config, streamed, stop_fd);
    // Retried: no connection, a stop, another server answering. Any other
    // failure leaves the history unknown, and the checkpoint untrusted.
    if (absl::IsUnavailable(server.history.status()) || absl::IsCancelled(server.history.status())) {
      return server.history.status();
    }
  }
  const std::vector<pipeline::CheckpointBound> bounds = pipeline::TrustCheckpoint(checkpoint, server);
  for (const pipeline::CheckpointBound& bound : bounds) {
    metrics->checkpoint_bounded.Add(bound.reason);
    telemetry::LogWarn(
        "exactly-once: the checkpoint of key \"{}\" is {}: {}. What it no longer covers is published again from "
        "the slot (read_committed consumers may see some events twice, and miss none); counted in "
        "outboxd_checkpoint_bounded_total{{reason=\"{}\"}}, see docs/operations.md (\"Exactly-once after a "
        "promotion or a restore\")",
        key, bound.bound.valid() ? fmt::format("trusted only before {}", bound.bound.ToString()) : "not trusted",
        bound.why, bound.reason);
  }
  return !bounds.empty();
}
}  // namespace

absl::StatusOr<std::unique_ptr<pipeline::DeliveryMode>> MakeDeliveryMode(const config::Config& config) {
  if (config.kafka.delivery != config::Delivery::kExactlyOnce) {
    return std::unique_ptr<pipeline::DeliveryMode>(std::make_unique<pipeline::AtLeastOnceMode>());
  }
  ASSIGN_OR_RETURN(std::function<void()> failpoint, Failpoint());
  const absl::Duration transaction_timeout = config::TransactionTimeout(config.kafka);
  return std::unique_ptr<pipeline::DeliveryMode>(std::make_unique<pipeline::ExactlyOnceMode>(
      pipeline::ExactlyOnceOptions{
          .interval = config.kafka.transaction_interval,
          .max_events = config.kafka.transaction_max_events,
          .transaction_gap = config.kafka.transaction_gap,
          .split_after = transaction_timeout / 2,
          .commit_timeout = transaction_timeout,
          .after_commit = std::move(failpoint),
      },
      config.kafka.checkpoint_topic));
}

namespace {

// Exactly-once, for each new producer: registers its transactional.id (which
// fences an older producer and aborts what it left open), makes sure the
// checkpoint topic exists, reads the newest checkpoint of this system and
// slot (in whichever partition it is), and bounds it to what the server's WAL
// history holds: what the session must not publish again.
absl::Status PrepareExactlyOnce(kafka::RdKafkaSink& sink, const config::Config& config,
                                const replication::SystemInfo& streamed, absl::Duration transaction_timeout,
                                int stop_fd, telemetry::Metrics* metrics, pipeline::CheckpointState* exactly_once) {
  const std::string& id = sink.transactional_id();
  const std::string& topic = config.kafka.checkpoint_topic;
  RETURN_IF_ERROR(sink.InitTransactions(transaction_timeout, stop_fd));
  const std::string key = pipeline::CheckpointKey(streamed.system_id, config.source.slot);
  ASSIGN_OR_RETURN(const int32_t partitions,
                   kafka::PrepareCheckpointTopic(sink.handle(), topic, absl::Seconds(30), stop_fd));
  ASSIGN_OR_RETURN(kafka::LatestCheckpoint latest,
                   kafka::ReadLatestCheckpoint(config.kafka.properties, topic, partitions, key,
                                               transaction_timeout + absl::Seconds(10), stop_fd));
  if (!latest.older_in.empty()) {
    telemetry::LogWarn("exactly-once: the checkpoint topic {} holds older records of key \"{}\" in partition(s) "
                       "{} besides partition {}, which holds the newest (the topic was given more partitions while "
                       "an outboxd older than this one ran, or a record was written to another partition by hand); "
                       "outboxd goes on in partition {}",
                       topic, key, fmt::join(latest.older_in, ", "), latest.partition, latest.partition);
  }
  pipeline::Checkpoint checkpoint;
  if (latest.value.has_value()) {
    absl::StatusOr<pipeline::Checkpoint> decoded = pipeline::DecodeCheckpoint(*latest.value);
    if (decoded.ok() && (decoded->system_id != streamed.system_id || decoded->slot != config.source.slot)) {
      decoded = absl::InvalidArgumentError("its system_id or slot does not match its key");
    }
    if (!decoded.ok()) {
      return absl::FailedPreconditionError(fmt::format(
          "the newest record for key \"{}\" on the checkpoint topic {} (partition {}) is not a valid checkpoint "
          "({}); outboxd cannot tell what Kafka already holds. Only outboxd should write that topic: find who wrote "
          "it, then write a tombstone for the key to that partition (the next start publishes again from the "
          "slot's confirmed position, a few duplicates at most) or set [sink] checkpoint_topic to a new topic",
          key, topic, latest.partition, decoded.status().message()));
    }
    checkpoint = std::move(*decoded);
  }
  ASSIGN_OR_RETURN(const bool bounded, BoundToServerHistory(config, streamed, key, stop_fd, metrics, &checkpoint));
  checkpoint.system_id = streamed.system_id;
  checkpoint.timeline = static_cast<uint32_t>(streamed.timeline);
  checkpoint.slot = config.source.slot;
  checkpoint.transactional_id = id;
  exactly_once->checkpoint_key = key;
  exactly_once->checkpoint_partition = latest.partition;
  exactly_once->committed = std::move(checkpoint);
  const pipeline::Checkpoint& c = exactly_once->committed;
  std::string skips = bounded ? "nothing to skip (the checkpoint is not trusted, see above)"
                              : "no checkpoint yet, nothing to skip";
  if (!c.empty()) {
    skips = fmt::format("transactions committed before LSN {} are in Kafka", c.lsn.ToString());
    if (c.partial_commit_lsn.valid()) {
      skips += fmt::format(", and the one committed at {} through {}", c.partial_commit_lsn.ToString(),
                           c.partial_through.lsn.ToString());
    }
  }
  telemetry::LogInfo("exactly-once: transactional.id '{}', checkpoint topic {} partition {}: {}", id, topic,
                     latest.partition, skips);
  return absl::OkStatus();
}

}  // namespace

int RunRelay(const config::Config& config, const RunFlags& flags, const std::atomic<bool>& stop,
             int stop_fd) {
  if (config.MultiStream()) {
    // The stream supervisor (one pipeline per slot in this process) is the
    // second half of issue 21; `check` and `replay` already serve such configs.
    telemetry::LogError("[source] databases or several publications: this outboxd streams one slot per process; "
                        "until the stream supervisor lands, run one outboxd per database and publication (without "
                        "databases, one publication each). `outboxd check` and `outboxd replay --database` already "
                        "take this config");
    return 2;
  }
  // One stream, labelled with the DSN's database and the slot.
  telemetry::MetricsRegistry metrics_registry(OUTBOXD_VERSION);
  metrics_registry.process().streams_known.store(1);
  const std::shared_ptr<telemetry::Metrics> stream_metrics =
      *metrics_registry.AddStream({config::DsnDatabase(config.source.dsn), config.source.slot});
  telemetry::Metrics& metrics = *stream_metrics;
  if (absl::Status interval = CheckSenderTimeout(config, stop_fd); !interval.ok()) {
    telemetry::LogError("{}", interval.message());
    return 2;
  }
  if (absl::Status ready = Preflight(config, stop, stop_fd); !ready.ok()) {
    telemetry::LogError("{}", ready.message());
    return 2;
  }
  absl::StatusOr<std::string> state_dir = ResolveStateDir(config, flags);
  if (!state_dir.ok()) {
    telemetry::LogError("{}", state_dir.status().message());
    return 2;
  }
  std::optional<replication::StateRecorder> recorder;
  if (state_dir->empty()) {
    telemetry::LogWarn("no state directory (--state-dir, [source] state_dir, or a writable {}): gap detection is off, "
                 "so a replication slot dropped while outboxd was away would be recreated without notice",
                 kDefaultStateDir);
  } else {
    recorder.emplace(replication::StateFilePath(*state_dir, config.source.slot), absl::Seconds(1), absl::Now);
    telemetry::LogInfo("state file {}", recorder->path());
  }
  // One start's worth: once a session streams, a later gap is news again.
  bool accept_gap = flags.accept_gap;
  replication::StreamOptions stream_options{
      .dsn = config.source.dsn,
      .slot = config.source.slot,
      .publication = config.source.publication,
      .create_slot = config.source.create_slot,
      .failover = config.source.failover,
      .primary_dsn = config.source.primary_dsn,
      .messages = config.messages.enabled,
      .tables = {},  // filled below
      .saved = std::nullopt,  // each session reads the state file
      .accept_gap = false,
      .stop_fd = stop_fd,
      .before_create = nullptr,  // set below for [source] snapshot = "initial"
      .snapshot = nullptr,
  };
  for (const outbox::TableConfig& table : config.outbox) {
    stream_options.tables.push_back(table.schema + "." + table.table);
  }
  std::string snapshot_mark;
  if (config.source.snapshot_initial) {
    if (state_dir->empty()) {
      telemetry::LogError("[source] snapshot = \"initial\" needs a state directory (--state-dir or [source] "
                          "state_dir): outboxd records there whether the snapshot completed, so that one "
                          "interrupted by a crash is redone instead of lost");
      return 2;
    }
    snapshot_mark = replication::StateFilePath(*state_dir, config.source.slot) + ".snapshot-pending";
    stream_options.before_create = [&]() { return WriteSnapshotMark(snapshot_mark); };
    stream_options.snapshot = [&](std::string_view name) -> absl::Status {
      telemetry::LogInfo("slot '{}' created: publishing the initial snapshot {}", config.source.slot, name);
      RETURN_IF_ERROR(PublishSnapshot(config, name, stop));
      return RemoveSnapshotMark(snapshot_mark);
    };
  }

  // The stream's delivery mode, for all its sessions. In exactly-once mode
  // each session's producer setup fills in its checkpoint state; the stream
  // factory records which system and timeline the session streams (the
  // checkpoint's key and contents).
  absl::StatusOr<std::unique_ptr<pipeline::DeliveryMode>> delivery = MakeDeliveryMode(config);
  if (!delivery.ok()) {
    telemetry::LogError("{}", delivery.status().message());
    return 2;
  }
  auto* exactly_once = dynamic_cast<pipeline::ExactlyOnceMode*>(delivery->get());
  replication::SystemInfo streamed;
  const absl::Duration transaction_timeout = config::TransactionTimeout(config.kafka);

  pipeline::StreamFactory streams =
      [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    stream_options.accept_gap = accept_gap;
    stream_options.saved.reset();
    if (recorder.has_value()) {
      // Read on every attempt: a standby's partner may have written it.
      auto saved = replication::ReadStateFile(recorder->path());
      if (!saved.ok()) return absl::FailedPreconditionError(saved.status().message());
      stream_options.saved = *saved;
    }
    if (!snapshot_mark.empty() && access(snapshot_mark.c_str(), F_OK) == 0) {
      // Interrupted after the slot was created (or before: then Start creates it and
      // exports a snapshot). The slot holds every change since its creation, so a
      // fresh snapshot taken now misses nothing; rows committed in between go twice.
      ASSIGN_OR_RETURN(std::unique_ptr<replication::PgConnection> conn,
                       replication::PgConnection::Connect(config.source.dsn, false, stop_fd));
      ASSIGN_OR_RETURN(std::vector<replication::Row> slots,
                       conn->Query(fmt::format("SELECT 1 FROM pg_replication_slots WHERE slot_name = {}",
                                               replication::QuoteLiteral(config.source.slot))));
      if (!slots.empty()) {
        telemetry::LogWarn("the initial snapshot of slot '{}' was interrupted ({} exists): publishing the outbox "
                           "tables again from a new snapshot; rows committed since the slot was created may be "
                           "published twice",
                           config.source.slot, snapshot_mark);
        RETURN_IF_ERROR(PublishSnapshot(config, "", stop));
        RETURN_IF_ERROR(RemoveSnapshotMark(snapshot_mark));
      }
    }
    auto stream = replication::PgReplicationStream::Start(stream_options);
    if (!stream.ok()) return stream.status();
    const replication::SystemInfo& info = (*stream)->info();
    streamed = info;
    // Recorded before anything says "streaming": whoever reads the state file
    // after that line (an operator, a test) sees this session's system.
    if (recorder.has_value()) {
      absl::Status recorded = recorder->Begin(replication::SavedState{
          .system_id = info.system_id,
          .timeline = info.timeline,
          .slot = stream_options.slot,
          .confirmed_lsn = info.slot_confirmed_flush,
          .on_standby = info.in_recovery,
      });
      if (!recorded.ok()) {
        return absl::FailedPreconditionError(fmt::format(
            "cannot write the state file: {}; without it a lost slot would go unnoticed: fix the state directory",
            recorded.message()));
      }
    }
    if (info.slot_recreated) {
      telemetry::LogWarn("--accept-gap: dropped the invalidated slot '{}' and created it again; events committed "
                   "before {} and not yet published are not streamed",
                   stream_options.slot, info.slot_confirmed_flush.ToString());
    } else if (accept_gap && stream_options.saved.has_value() &&
               stream_options.saved->system_id != info.system_id) {
      telemetry::LogWarn("--accept-gap: streaming slot '{}' of system {}, although outboxd last streamed it from "
                   "system {} up to {}; events not published from there are not streamed",
                   stream_options.slot, info.system_id, stream_options.saved->system_id,
                   stream_options.saved->confirmed_lsn.ToString());
    } else if (accept_gap && stream_options.saved.has_value() && info.slot_created) {
      telemetry::LogWarn("--accept-gap: created slot '{}' anew at {}; outboxd had confirmed up to {} on the old one, "
                   "and events committed in between are not streamed",
                   stream_options.slot, info.slot_confirmed_flush.ToString(),
                   stream_options.saved->confirmed_lsn.ToString());
    }
    accept_gap = false;
    LogStandbySource(config.source, info);
    telemetry::LogInfo("streaming slot '{}' of system {} timeline {} from {} (server {}, pgoutput proto_version {}{}{}{}{})",
                 stream_options.slot, info.system_id, info.timeline, info.slot_confirmed_flush.ToString(),
                 info.server_version, info.proto_version, info.slot_created ? ", slot created" : "",
                 info.slot_failover ? ", failover slot" : "",
                 info.slot_synced ? ", synchronized from the old primary" : "",
                 info.in_recovery ? ", on a hot standby" : "");
    return std::unique_ptr<replication::ReplicationStream>(std::move(*stream));
  };
  for (const std::string& key : kafka::RdKafkaSink::OverriddenProperties(config.kafka.properties)) {
    telemetry::LogWarn("[sink.kafka] {} is overridden: outboxd always produces with "
                 "enable.idempotence=true and acks=all, or an acknowledged event could be lost",
                 key);
  }
  kafka::RdKafkaSinkOptions sink_options{
      .log =
          [](int level, std::string_view facility, std::string_view message) {
            telemetry::LogLevel ours = level <= 3   ? telemetry::LogLevel::kError
                                       : level == 4 ? telemetry::LogLevel::kWarn
                                       : level <= 6 ? telemetry::LogLevel::kInfo
                                                    : telemetry::LogLevel::kDebug;
            // A broker failure comes twice: as this FAIL line and as an error
            // event (the .error callback, which logs it once with its code). And
            // the producer's "still in queue or transit: use flush()" at exit is
            // advice to the application: outboxd did flush, for the stop flush
            // timeout, and its own exit line says what stayed unacknowledged.
            if (facility == "FAIL" ||
                (facility == "TERMINATE" && message.find("use flush()") != std::string_view::npos)) {
              ours = telemetry::LogLevel::kDebug;
            }
            telemetry::Log(ours, "kafka {}: {}", facility, message);
          },
      .error = [](const absl::Status& error) { telemetry::LogWarn("kafka: {}", error.message()); },
      .brokers_up = [&metrics_registry](int up) { metrics_registry.process().kafka_brokers_up.store(up); },
      .transactional_id = "",  // set per producer in exactly-once mode
  };
  // [schema_registry]: envelopes framed in Confluent's wire format. Ids are
  // cached for the life of the process (EnvelopeSchemas, bounded), so a
  // reconnect asks the registry nothing; a sink looks a new topic's id up on
  // its own thread.
  std::unique_ptr<registry::SchemaRegistryClient> registry_client;
  std::optional<registry::EnvelopeSchemas> schemas;
  const std::vector<std::string> fixed_topics = FixedTopics(config);
  if (config.schema_registry.enabled) {
    auto client = registry::SchemaRegistryClient::Create(RegistryClientOptions(config.schema_registry),
                                                         &metrics_registry.process());
    if (!client.ok()) {
      telemetry::LogError("{}", client.status().message());
      return 2;
    }
    registry_client = std::move(*client);
    schemas.emplace(registry_client.get(), registry::LookupPolicy{.auto_register = config.schema_registry.auto_register,
                                                                  .schema_id = config.schema_registry.schema_id});
    telemetry::LogInfo("schema registry {}: envelope values in Confluent's wire format, subject strategy {}",
                       registry_client->url(), registry::SubjectStrategyName(config.schema_registry.subject_strategy));
  }
  pipeline::SinkFactory sinks = [&]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
    metrics_registry.process().kafka_brokers_up.store(-1);  // unknown until the new producer's first statistics
    kafka::RdKafkaSinkOptions options = sink_options;
    if (exactly_once != nullptr) {
      // The stream is open (the relay opens it first): the system is known.
      options.transactional_id = !config.kafka.transactional_id.empty()
                                     ? config.kafka.transactional_id
                                     : fmt::format("outboxd-{}-{}", streamed.system_id, config.source.slot);
    }
    auto sink = kafka::RdKafkaSink::Create(config.kafka.properties, options);
    if (!sink.ok()) return sink.status();
    if (exactly_once != nullptr) {
      RETURN_IF_ERROR(PrepareExactlyOnce(**sink, config, streamed, transaction_timeout, stop_fd, &metrics,
                                         &exactly_once->checkpoint()));
    }
    if (!schemas.has_value()) return std::unique_ptr<kafka::EventSink>(std::move(*sink));
    auto framed = std::make_unique<registry::RegistrySink>(
        std::move(*sink), config.schema_registry.subject_strategy,
        [&schemas](const std::string& subject) { return schemas->IdFor(subject); },
        config.errors.dead_letter_topic, [&registry_client] { registry_client->Cancel(); });
    // Before streaming: a registry that is down keeps /readyz at 503 with the
    // reason (the relay retries with backoff); one that refuses the schema stops.
    if (absl::Status prepared = framed->Prepare(fixed_topics); !prepared.ok()) return prepared;
    return std::unique_ptr<kafka::EventSink>(std::move(framed));
  };

  std::unique_ptr<telemetry::HttpServer> http;
  if (!telemetry::HttpDisabled(config.http.listen)) {
    auto server = telemetry::HttpServer::Start(
        config.http.listen, [&metrics_registry, &stop](std::string_view method, std::string_view path) {
          return telemetry::ServeHttp(method, path, metrics_registry, stop.load());
        });
    if (!server.ok()) {
      telemetry::LogError("{}", server.status().message());
      return 1;
    }
    http = std::move(*server);
    telemetry::LogInfo("serving /metrics, /healthz, /readyz and /active on http://{}", http->address());
  }
  // Retained WAL and wal_status, on its own connection, every 15 s.
  replication::SlotMonitor slot_monitor(config.source.dsn, config.source.slot, absl::Seconds(15), &metrics);

  pipeline::RelayOptions relay_options = RelayOptionsFrom(config);
  relay_options.pipeline.stop_fd = stop_fd;
  relay_options.pipeline.delivery = delivery->get();
  // Exactly-once: the slot decides which instance may fence the others, and
  // a transactional producer is never kept for the next session.
  relay_options.stream_before_sink = exactly_once != nullptr;
  if (recorder.has_value()) {
    relay_options.pipeline.on_confirmed = [&recorder](Lsn lsn) {
      if (absl::Status s = recorder->OnConfirmed(lsn); !s.ok()) telemetry::LogWarn("state file: {}", s.message());
    };
  }
  pipeline::Relay relay(streams, sinks, relay_options, &metrics);
  telemetry::LogInfo("outboxd {} starting: {} outbox table(s), messages {}", OUTBOXD_VERSION,
               config.outbox.size(),
               config.messages.enabled ? "'" + config.messages.prefix + "'" : std::string("off"));
  absl::Status status = relay.Run(stop);
  if (recorder.has_value()) {
    if (absl::Status s = recorder->Flush(); !s.ok()) telemetry::LogWarn("state file: {}", s.message());
  }
  if (!status.ok()) {
    telemetry::LogError("{}", status.message());
    if (http != nullptr && metrics.slot_invalidated.load() != 0) LingerForScrape(stop);
    return 1;
  }
  if (const uint64_t unacknowledged = relay.unacknowledged_at_stop(); unacknowledged > 0) {
    telemetry::LogWarn("stopped at confirmed LSN {} with {} events not acknowledged by Kafka within the "
                       "stop flush timeout; nothing after that LSN was confirmed, so they will be published "
                       "again from the slot on the next start (exit code {})",
                       Lsn(metrics.confirmed_flush_lsn.load()).ToString(), unacknowledged,
                       kExitUnacknowledged);
    return kExitUnacknowledged;
  }
  telemetry::LogInfo("stopped cleanly at confirmed LSN {}",
               Lsn(metrics.confirmed_flush_lsn.load()).ToString());
  return 0;
}

}  // namespace outboxd::commands
