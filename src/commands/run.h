// `outboxd run`: wires the replication stream, the Kafka sink, the pipeline, the
// HTTP endpoint and the state file together, and streams until stopped.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "pipeline/delivery_mode.h"
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

// The delivery mode of one stream, from [sink] delivery: at-least-once, or
// exactly-once with its transaction settings (and the test failpoint of
// OUTBOXD_FAILPOINT). It lives as long as the stream, across its sessions.
// InvalidArgumentError for a bad OUTBOXD_FAILPOINT.
absl::StatusOr<std::unique_ptr<pipeline::DeliveryMode>> MakeDeliveryMode(const config::Config& config);

// Exit code of a stop that left events unacknowledged by Kafka (stop_flush_timeout
// passed): nothing is lost, they are published again from the slot on the next start.
inline constexpr int kExitUnacknowledged = 3;

// Streams until `stop` becomes true or a fatal error. `stop_fd` (or -1)
// becomes readable when `stop` is set, and wakes every wait at once. Returns
// the process exit code: 0 after a stop with everything acknowledged,
// kExitUnacknowledged after a stop with events unacknowledged, 1 on a fatal
// error, 2 on a configuration error.
int RunRelay(const config::Config& config, const RunFlags& flags, const std::atomic<bool>& stop,
             int stop_fd = -1);

}  // namespace outboxd::commands
