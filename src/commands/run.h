// `outboxd run`: wires the replication stream, the Kafka sink, the pipeline, the
// HTTP endpoint and the state file together, and streams until stopped.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "config/config.h"
#include "registry/schema_registry_client.h"

namespace outboxd::commands {

struct RunFlags {
  std::string state_dir;  // --state-dir
  bool accept_gap = false;
};

// Applies [log] level and format to the process's logger.
void ApplyLogConfig(const config::LogConfig& log);

// [schema_registry] as the client's options.
registry::ClientOptions RegistryClientOptions(const config::SchemaRegistryConfig& config);
// The topics known before any event: the fixed (non-template) topics of the
// tables and of messages. Their schema ids are resolved before streaming.
std::vector<std::string> FixedTopics(const config::Config& config);

// Streams until `stop` becomes true or a fatal error. Returns the process exit code.
int RunRelay(const config::Config& config, const RunFlags& flags, const std::atomic<bool>& stop);

}  // namespace outboxd::commands
