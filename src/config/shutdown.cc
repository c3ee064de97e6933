// [shutdown]: how long a stop may take. A table of its own, not a [source] or
// [sink] key: the stop budget belongs to the process (every stream of it stops
// within it), and it is the one number a supervisor's grace period
// (TimeoutStopSec, terminationGracePeriodSeconds) must exceed.
#include "config/tables.h"

#include <string_view>
#include <vector>

#include "common/status_macros.h"
#include "config/parser.h"

namespace outboxd::config {

const std::vector<std::string_view>& ShutdownKeys() {
  static const auto* keys = new std::vector<std::string_view>{"stop_flush_timeout"};
  return *keys;
}

absl::Status ParseShutdown(const Parser& p, const toml::table& root, ShutdownConfig* out) {
  ASSIGN_OR_RETURN(const toml::table* shutdown, p.GetSection(root, "shutdown", "shutdown", "[shutdown]"));
  if (shutdown == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(p.CheckKeys(*shutdown, "shutdown.", ShutdownKeys(), "[shutdown]"));
  return p.GetDuration(*shutdown, "stop_flush_timeout", "shutdown.stop_flush_timeout", kMinStopFlushTimeout,
                       kMaxStopFlushTimeout, "\"30s\" or \"2m\"",
                       "; the supervisor's grace period (systemd TimeoutStopSec, Kubernetes "
                       "terminationGracePeriodSeconds) must exceed it by 10s (docs/deployment.md, \"Stopping\")",
                       &out->stop_flush_timeout);
}

}  // namespace outboxd::config
