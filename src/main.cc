// outboxd: reads the command line, installs signal handlers, and dispatches to a
// command (src/commands). Everything else lives in the libraries.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "commands/check.h"
#include "commands/replay.h"
#include "commands/run.h"
#include "config/config.h"
#include "config/log_secrets.h"
#include "fmt/format.h"

namespace {

using namespace outboxd;  // NOLINT: main wires every component together

std::atomic<bool> g_stop{false};
// Self-pipe: the write end gets a byte on SIGTERM/SIGINT, and the read end,
// never drained, stays readable, so that every poll() in the relay wakes.
int g_stop_pipe[2] = {-1, -1};

void OnSignal(int) {
  const int saved = errno;
  g_stop.store(true);
  if (g_stop_pipe[1] >= 0) {
    const char byte = 's';
    [[maybe_unused]] const ssize_t n = write(g_stop_pipe[1], &byte, 1);
  }
  errno = saved;
}

constexpr std::string_view kUsage =
    "usage: outboxd run --config FILE [--state-dir DIR] [--accept-gap]\n"
    "                                     stream outbox events from PostgreSQL to Kafka\n"
    "       outboxd check --config FILE [--json]\n"
    "                                     check the config, servers, privileges, slots (every database)\n"
    "       outboxd replay --config FILE [--database NAME] --table T\n"
    "                      (--since TIME [--until TIME] | --from-id ID [--to-id ID] | --all) [--dry-run]\n"
    "                                     re-publish outbox rows: created_at (or commit time) in\n"
    "                                     [since, until), an id range, or every row\n"
    "       outboxd --version\n";

int Usage(std::string_view error) {
  if (!error.empty()) std::cerr << "outboxd: " << error << "\n";
  std::cerr << kUsage;
  return 2;
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
  commands::RunFlags flags;
  commands::CheckOptions check_options;
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
    } else if (command == "check" && args[i] == "--json") {
      check_options.json = true;
    } else if (command == "replay") {
      replay_args.push_back(args[i]);
    } else {
      return Usage(fmt::format("unknown argument '{}'", args[i]));
    }
  }
  if (config_path.empty()) return Usage("--config FILE is required");

  absl::StatusOr<config::Config> config = config::LoadConfig(config_path);
  if (!config.ok()) {
    std::cerr << "outboxd: " << config.status().message() << "\n";
    return 2;
  }
  commands::ApplyLogConfig(config->log);
  config::RegisterLogSecrets(*config);
  if (command == "check") return commands::RunCheck(*config, std::cout, check_options);
  if (command == "replay") {
    absl::StatusOr<commands::ReplayOptions> options = commands::ParseReplayFlags(replay_args);
    if (!options.ok()) return Usage(std::string(options.status().message()));
    signal(SIGPIPE, SIG_IGN);
    return commands::RunReplay(*config, *options, std::cout);
  }

  if (pipe2(g_stop_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    std::cerr << "outboxd: cannot create the stop pipe: " << std::strerror(errno) << "\n";
    return 1;
  }
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return commands::RunRelay(*config, flags, g_stop, g_stop_pipe[0]);
}
