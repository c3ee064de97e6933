// Parser: what every table's parser shares (config/tables.h): errors that name
// the key and its line, unknown-key checks with a suggestion, ${NAME} and
// ${file:PATH} expansion, and typed getters. Internal to src/config.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "config/config.h"

namespace outboxd::config {

class Parser {
 public:
  // `label` starts every error ("config", "config /etc/outboxd/outboxd.toml").
  Parser(const EnvLookup& env, std::string label) : env_(env), label_(std::move(label)) {}

  // "LABEL: line N: WHAT"; the line is left out where toml++ has none (a table
  // that was only created implicitly, or a key that is missing).
  absl::Status Error(const toml::node* where, std::string_view what) const;
  absl::Status ErrorAt(uint32_t line, std::string_view what) const;

  // An unknown key: "did you mean ...?" when a known one is close, else the list.
  absl::Status UnknownKey(const toml::key& key, std::string_view path,
                          const std::vector<std::string_view>& known, std::string_view section) const;
  // Every key of `table` is one of `known`; `path` prefixes the key in errors.
  absl::Status CheckKeys(const toml::table& table, std::string_view path,
                         const std::vector<std::string_view>& known, std::string_view section) const;

  // Replaces ${NAME} by the environment variable NAME, ${file:PATH} by the
  // content of the file PATH, and "$$" by "$". `path` names the key in errors;
  // the value itself is never quoted, it may be secret.
  absl::StatusOr<std::string> Expand(std::string_view text, std::string_view path,
                                     const toml::node& node) const;

  // Typed getters. An absent key leaves `*out` unchanged (its default).
  absl::Status GetString(const toml::table& table, std::string_view key, std::string_view path,
                         std::string* out) const;
  absl::Status GetNonEmptyString(const toml::table& table, std::string_view key,
                                 std::string_view path, std::string* out) const;
  absl::Status GetBool(const toml::table& table, std::string_view key, std::string_view path,
                       bool* out) const;
  // A duration with a unit ("500ms", "10s", "1m") from `min` to `max`. An
  // error names `example`s of the form; `advice` (may be empty) follows the
  // range in a range error.
  absl::Status GetDuration(const toml::table& table, std::string_view key, std::string_view path,
                           absl::Duration min, absl::Duration max, std::string_view example,
                           std::string_view advice, absl::Duration* out) const;
  // A [section] that is optional: nullptr when absent. `header` is how the
  // section is opened in the file, for the error.
  absl::StatusOr<const toml::table*> GetSection(const toml::table& parent, std::string_view key,
                                                std::string_view path,
                                                std::string_view header) const;

  // "100ms", "60s": how duration bounds are written in errors.
  static std::string ShortDuration(absl::Duration d);

 private:
  // ${file:PATH}: the content of PATH, one trailing newline removed (what
  // `echo secret > file` and Kubernetes/Docker secrets leave behind). Errors
  // name the key and the path, never the content.
  absl::StatusOr<std::string> ReadSecretFile(std::string_view file_path, std::string_view path,
                                             const toml::node& node) const;

  const EnvLookup& env_;
  const std::string label_;
};

// "a string", "an integer", ...: a node's type as errors name it.
std::string_view TypeName(const toml::node& node);
// toml++ keeps a table's keys sorted by name; errors and librdkafka
// properties follow the file's order instead.
std::vector<std::pair<const toml::key*, const toml::node*>> InFileOrder(const toml::table& table);
// The known name closest to `key`, or "" when none is close enough to be a typo.
std::string_view Suggest(std::string_view key, const std::vector<std::string_view>& known);
// Optimal string alignment distance: a swapped pair of letters ("dns" for
// "dsn") counts as one edit, which is the typo people actually make.
size_t EditDistance(std::string_view a, std::string_view b);
std::string JoinNames(const std::vector<std::string_view>& names);
std::string Lower(std::string_view s);
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace outboxd::config
