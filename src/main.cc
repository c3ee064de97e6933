// outboxd: flags, signals and wiring. Everything else lives in the libraries.
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
#include "ops/logging.h"
#include "ops/metrics.h"
#include "ops/replay.h"
#include "pipeline/relay.h"
#include "replication/pg_replication_stream.h"

namespace {

using namespace outboxd;  // NOLINT: main wires every component together

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

constexpr std::string_view kUsage =
    "usage: outboxd run --config FILE     stream outbox events from PostgreSQL to Kafka\n"
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
  return options;
}

int Run(const ops::Config& config) {
  ops::Metrics metrics;
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
    auto stream = replication::PgReplicationStream::Start(stream_options);
    if (!stream.ok()) return stream.status();
    const replication::SystemInfo& info = (*stream)->info();
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
  };
  pipeline::SinkFactory sinks = [&]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
    auto sink = kafka::RdKafkaSink::Create(config.kafka.properties, sink_options);
    if (!sink.ok()) return sink.status();
    return std::unique_ptr<kafka::EventSink>(std::move(*sink));
  };

  pipeline::Relay relay(streams, sinks, RelayOptionsFrom(config), &metrics);
  ops::LogInfo("outboxd {} starting: {} outbox table(s), messages {}", OUTBOXD_VERSION,
               config.outbox.size(),
               config.messages.enabled ? "'" + config.messages.prefix + "'" : std::string("off"));
  absl::Status status = relay.Run(g_stop);
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
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      config_path = std::string(args[++i]);
    } else if (args[i].starts_with("--config=")) {
      config_path = std::string(args[i].substr(strlen("--config=")));
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
  return Run(*config);
}
