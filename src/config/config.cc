// Config loading: TOML text -> Config. toml++ does the syntax; each table has
// its own parser (config/tables.h), checked against the schema documented in
// docs/configuration.md, and each mistake becomes one InvalidArgumentError that
// names the key, its line and what to write instead.
#include "config/config.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "common/format.h"
#include "common/status_macros.h"
#include "config/parser.h"
#include "config/tables.h"

namespace outboxd::config {
namespace {

const std::vector<std::string_view>& TopKeys() {
  static const auto* keys =
      new std::vector<std::string_view>{"source", "sink", "outbox", "messages", "http", "log",
                                        "errors", "schema_registry", "shutdown"};
  return *keys;
}

absl::Status CheckTopKeys(const Parser& p, const toml::table& root) {
  for (const auto& [key, node] : InFileOrder(root)) {
    const std::string_view name = key->str();
    if (std::find(TopKeys().begin(), TopKeys().end(), name) != TopKeys().end()) continue;
    // A section key written above every [section] header lands at the top.
    const std::pair<std::string_view, const std::vector<std::string_view>*> sections[] = {
        {"source", &SourceKeys()}, {"sink", &SinkKeys()}, {"messages", &MessagesKeys()},
        {"http", &HttpKeys()},     {"log", &LogKeys()}, {"errors", &ErrorsKeys()},
        {"shutdown", &ShutdownKeys()}};
    for (const auto& [section, keys] : sections) {
      if (std::find(keys->begin(), keys->end(), name) != keys->end()) {
        return p.ErrorAt(key->source().begin.line,
                         fmt::format("unknown key {}; did you mean {}.{}? Put it under [{}]", name,
                                     section, name, section));
      }
    }
    return p.UnknownKey(*key, "", TopKeys(), "the file");
  }
  return absl::OkStatus();
}

// Keys people put in the wrong table because the docs once wrote them bare:
// the error says where they belong instead of listing the table's keys.
absl::Status CheckMisplacedKeys(const Parser& p, const toml::table& root) {
  static constexpr std::string_view kSections[] = {"source", "sink", "http", "log", "errors"};
  for (std::string_view section : kSections) {
    const toml::table* table = root[section].as_table();
    if (table == nullptr) continue;
    if (const toml::node* node = table->get("stop_flush_timeout"); node != nullptr) {
      return p.Error(node, fmt::format("{}.stop_flush_timeout: the stop budget is a key of its own table: put it "
                                       "under [shutdown] (shutdown.stop_flush_timeout = \"30s\")",
                                       section));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> Parse(const Parser& p, const toml::table& root) {
  Config config;
  RETURN_IF_ERROR(CheckTopKeys(p, root));
  RETURN_IF_ERROR(CheckMisplacedKeys(p, root));
  RETURN_IF_ERROR(ParseSource(p, root, &config.source));
  RETURN_IF_ERROR(ParseSink(p, root, &config.kafka));
  RETURN_IF_ERROR(ParseOutbox(p, root, &config.outbox));
  RETURN_IF_ERROR(ParseMessages(p, root, &config.messages));
  RETURN_IF_ERROR(ParseHttp(p, root, &config.http));
  RETURN_IF_ERROR(ParseLog(p, root, &config.log));
  RETURN_IF_ERROR(ParseErrors(p, root, &config.errors));
  RETURN_IF_ERROR(ParseSchemaRegistry(p, root, &config.schema_registry));
  RETURN_IF_ERROR(ParseShutdown(p, root, &config.shutdown));
  if (config.outbox.empty() && !config.messages.enabled) {
    return p.Error(nullptr,
                   "nothing to relay: add an [[outbox]] table, or set messages.enabled = true "
                   "to relay pg_logical_emit_message events");
  }
  RETURN_IF_ERROR(Validate(p, root, &config));
  return config;
}

absl::StatusOr<Config> ParseLabeled(std::string_view toml_text, const EnvLookup& env,
                                    std::string label) {
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    const toml::source_position& at = e.source().begin;
    return absl::InvalidArgumentError(fmt::format("{}: line {}, column {}: invalid TOML: {}", label,
                                                  at.line, at.column, e.description()));
  }
  return Parse(Parser(env, std::move(label)), root);
}

}  // namespace

absl::StatusOr<Config> ParseConfig(std::string_view toml_text, const EnvLookup& env) {
  return ParseLabeled(toml_text, env, "config");
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return absl::NotFoundError(fmt::format("config: cannot read {}: it is a directory; pass the "
                                           "TOML file to --config",
                                           path));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(fmt::format("config: cannot read {}: {}; pass an existing TOML "
                                           "file to --config",
                                           path, std::strerror(errno)));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) {
    return absl::NotFoundError(fmt::format("config: cannot read {}: {}", path, std::strerror(errno)));
  }
  const EnvLookup env = [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
  return ParseLabeled(text.str(), env, fmt::format("config {}", path));
}

}  // namespace outboxd::config
