// outboxd: flags, signals and wiring. Everything else lives in the libraries.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/format.h"
#include "fmt/format.h"
#include "kafka/rdkafka_sink.h"
#include "ops/check.h"
#include "ops/config.h"
#include "ops/endpoints.h"
#include "ops/http_server.h"
#include "ops/log_secrets.h"
#include "ops/logging.h"
#include "ops/slot_monitor.h"
#include "ops/metrics.h"
#include "ops/replay.h"
#include "pipeline/relay.h"
#include "replication/pg_replication_stream.h"
#include "replication/state_file.h"

namespace {

using namespace outboxd;  // NOLINT: main wires every component together

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

constexpr std::string_view kUsage =
    "usage: outboxd run --config FILE [--state-dir DIR] [--accept-gap]\n"
    "                                     stream outbox events from PostgreSQL to Kafka\n"
    "       outboxd check --config FILE   check the config, servers, privileges, slot\n"
    "       outboxd replay --config FILE --table T --since TIME [--until TIME] [--dry-run]\n"
    "                                     re-publish outbox rows with created_at in [since, until)\n"
    "       outboxd --version\n";

int Usage(std::string_view error) {
  if (!error.empty()) std::cerr << "outboxd: " << error << "\n";
  std::cerr << kUsage;
  return 2;
}

void ApplyLogConfig(const ops::LogConfig& log) {
  static const std::pair<std::string_view, ops::LogLevel> kLevels[] = {
      {"debug", ops::LogLevel::kDebug},
      {"info", ops::LogLevel::kInfo},
      {"warn", ops::LogLevel::kWarn},
      {"error", ops::LogLevel::kError}};
  for (const auto& [name, level] : kLevels) {
    if (log.level == name) ops::SetLogLevel(level);
  }
  ops::SetLogFormat(log.format == "json" ? ops::LogFormat::kJson : ops::LogFormat::kText);
}

pipeline::RelayOptions RelayOptionsFrom(const ops::Config& config) {
  pipeline::RelayOptions options;
  options.pipeline.tables = config.outbox;
  options.pipeline.messages_enabled = config.messages.enabled;
  options.pipeline.messages_prefix = config.messages.prefix;
  options.pipeline.messages_topic = config.messages.topic;
  options.pipeline.messages_key = config.messages.key;
  options.pipeline.status_interval = config.source.status_interval;
  options.pipeline.on_bad_event = config.errors.on_bad_event;
  options.pipeline.dead_letter_topic = config.errors.dead_letter_topic;
  return options;
}

// Where gap detection keeps its state file: --state-dir, else [source]
// state_dir, else /var/lib/outboxd when it exists and is writable; empty: off.
constexpr std::string_view kDefaultStateDir = "/var/lib/outboxd";

struct RunFlags {
  std::string state_dir;  // --state-dir
  bool accept_gap = false;
};

absl::StatusOr<std::string> ResolveStateDir(const ops::Config& config, const RunFlags& flags) {
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

int Run(const ops::Config& config, const RunFlags& flags) {
  ops::Metrics metrics;
  absl::StatusOr<std::string> state_dir = ResolveStateDir(config, flags);
  if (!state_dir.ok()) {
    ops::LogError("{}", state_dir.status().message());
    return 2;
  }
  std::optional<replication::StateRecorder> recorder;
  if (state_dir->empty()) {
    ops::LogWarn("no state directory (--state-dir, [source] state_dir, or a writable {}): gap detection is off, "
                 "so a replication slot dropped while outboxd was away would be recreated without notice",
                 kDefaultStateDir);
  } else {
    recorder.emplace(replication::StateFilePath(*state_dir, config.source.slot), absl::Seconds(1), absl::Now);
    ops::LogInfo("state file {}", recorder->path());
  }
  // One start's worth: once a session streams, a later gap is news again.
  bool accept_gap = flags.accept_gap;
  replication::StreamOptions stream_options{
      .dsn = config.source.dsn,
      .slot = config.source.slot,
      .publication = config.source.publication,
      .create_slot = config.source.create_slot,
      .messages = config.messages.enabled,
  };
  for (const outbox::TableConfig& table : config.outbox) {
    stream_options.tables.push_back(table.schema + "." + table.table);
  }

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
    auto stream = replication::PgReplicationStream::Start(stream_options);
    if (!stream.ok()) return stream.status();
    const replication::SystemInfo& info = (*stream)->info();
    if (info.slot_recreated) {
      ops::LogWarn("--accept-gap: dropped the invalidated slot '{}' and created it again; events committed "
                   "before {} and not yet published are not streamed",
                   stream_options.slot, info.slot_confirmed_flush.ToString());
    } else if (accept_gap && stream_options.saved.has_value() &&
               stream_options.saved->system_id != info.system_id) {
      ops::LogWarn("--accept-gap: streaming slot '{}' of system {}, although outboxd last streamed it from "
                   "system {} up to {}; events not published from there are not streamed",
                   stream_options.slot, info.system_id, stream_options.saved->system_id,
                   stream_options.saved->confirmed_lsn.ToString());
    } else if (accept_gap && stream_options.saved.has_value() && info.slot_created) {
      ops::LogWarn("--accept-gap: created slot '{}' anew at {}; outboxd had confirmed up to {} on the old one, "
                   "and events committed in between are not streamed",
                   stream_options.slot, info.slot_confirmed_flush.ToString(),
                   stream_options.saved->confirmed_lsn.ToString());
    }
    accept_gap = false;
    if (recorder.has_value()) {
      absl::Status recorded = recorder->Begin(replication::SavedState{
          .system_id = info.system_id,
          .timeline = info.timeline,
          .slot = stream_options.slot,
          .confirmed_lsn = info.slot_confirmed_flush,
      });
      if (!recorded.ok()) {
        return absl::FailedPreconditionError(fmt::format(
            "cannot write the state file: {}; without it a lost slot would go unnoticed: fix the state directory",
            recorded.message()));
      }
    }
    ops::LogInfo("streaming slot '{}' of system {} from {} (server {}, pgoutput proto_version {}{})",
                 stream_options.slot, info.system_id, info.slot_confirmed_flush.ToString(),
                 info.server_version, info.proto_version, info.slot_created ? ", slot created" : "");
    return std::unique_ptr<replication::ReplicationStream>(std::move(*stream));
  };
  for (const std::string& key : kafka::RdKafkaSink::OverriddenProperties(config.kafka.properties)) {
    ops::LogWarn("[sink.kafka] {} is overridden: outboxd always produces with "
                 "enable.idempotence=true and acks=all, or an acknowledged event could be lost",
                 key);
  }
  kafka::RdKafkaSinkOptions sink_options{
      .log =
          [](int level, std::string_view facility, std::string_view message) {
            const ops::LogLevel ours = level <= 3   ? ops::LogLevel::kError
                                       : level == 4 ? ops::LogLevel::kWarn
                                       : level <= 6 ? ops::LogLevel::kInfo
                                                    : ops::LogLevel::kDebug;
            ops::Log(ours, "kafka {}: {}", facility, message);
          },
      .error = [](const absl::Status& error) { ops::LogWarn("kafka: {}", error.message()); },
      .brokers_up = [&metrics](int up) { metrics.kafka_brokers_up.store(up); },
  };
  pipeline::SinkFactory sinks = [&]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
    metrics.kafka_brokers_up.store(-1);  // unknown until the new producer's first statistics
    auto sink = kafka::RdKafkaSink::Create(config.kafka.properties, sink_options);
    if (!sink.ok()) return sink.status();
    return std::unique_ptr<kafka::EventSink>(std::move(*sink));
  };

  std::unique_ptr<ops::HttpServer> http;
  if (!ops::HttpDisabled(config.http.listen)) {
    auto server = ops::HttpServer::Start(
        config.http.listen, [&metrics](std::string_view method, std::string_view path) {
          return ops::ServeHttp(method, path, metrics, g_stop.load());
        });
    if (!server.ok()) {
      ops::LogError("{}", server.status().message());
      return 1;
    }
    http = std::move(*server);
    ops::LogInfo("serving /metrics, /healthz and /readyz on http://{}", http->address());
  }
  // Retained WAL and wal_status, on its own connection, every 15 s.
  ops::SlotMonitor slot_monitor(config.source.dsn, config.source.slot, absl::Seconds(15), &metrics);

  pipeline::RelayOptions relay_options = RelayOptionsFrom(config);
  if (recorder.has_value()) {
    relay_options.pipeline.on_confirmed = [&recorder](Lsn lsn) {
      if (absl::Status s = recorder->OnConfirmed(lsn); !s.ok()) ops::LogWarn("state file: {}", s.message());
    };
  }
  pipeline::Relay relay(streams, sinks, relay_options, &metrics);
  ops::LogInfo("outboxd {} starting: {} outbox table(s), messages {}", OUTBOXD_VERSION,
               config.outbox.size(),
               config.messages.enabled ? "'" + config.messages.prefix + "'" : std::string("off"));
  absl::Status status = relay.Run(g_stop);
  if (recorder.has_value()) {
    if (absl::Status s = recorder->Flush(); !s.ok()) ops::LogWarn("state file: {}", s.message());
  }
  if (!status.ok()) {
    ops::LogError("{}", status.message());
    return 1;
  }
  ops::LogInfo("stopped cleanly at confirmed LSN {}",
               Lsn(metrics.confirmed_flush_lsn.load()).ToString());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.empty()) return Usage("");
  if (args[0] == "--version" || args[0] == "version") {
    std::cout << "outboxd " << OUTBOXD_VERSION << "\n";
    return 0;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return 0;
  }
  const std::string_view command = args[0];
  if (command != "run" && command != "check" && command != "replay") {
    return Usage(fmt::format("unknown command '{}'", command));
  }
  std::string config_path;
  std::vector<std::string_view> replay_args;
  RunFlags flags;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      config_path = std::string(args[++i]);
    } else if (args[i].starts_with("--config=")) {
      config_path = std::string(args[i].substr(strlen("--config=")));
    } else if (command == "run" && args[i] == "--state-dir" && i + 1 < args.size()) {
      flags.state_dir = std::string(args[++i]);
      if (flags.state_dir.empty()) return Usage("--state-dir needs a directory");
    } else if (command == "run" && args[i].starts_with("--state-dir=")) {
      flags.state_dir = std::string(args[i].substr(strlen("--state-dir=")));
      if (flags.state_dir.empty()) return Usage("--state-dir needs a directory");
    } else if (command == "run" && args[i] == "--accept-gap") {
      flags.accept_gap = true;
    } else if (command == "replay") {
      replay_args.push_back(args[i]);
    } else {
      return Usage(fmt::format("unknown argument '{}'", args[i]));
    }
  }
  if (config_path.empty()) return Usage("--config FILE is required");

  absl::StatusOr<ops::Config> config = ops::LoadConfig(config_path);
  if (!config.ok()) {
    std::cerr << "outboxd: " << config.status().message() << "\n";
    return 2;
  }
  ApplyLogConfig(config->log);
  ops::RegisterLogSecrets(*config);
  if (command == "check") return ops::RunCheck(*config, std::cout);
  if (command == "replay") {
    absl::StatusOr<ops::ReplayOptions> options = ops::ParseReplayFlags(replay_args);
    if (!options.ok()) return Usage(std::string(options.status().message()));
    signal(SIGPIPE, SIG_IGN);
    return ops::RunReplay(*config, *options, std::cout);
  }

  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return Run(*config, flags);
}
