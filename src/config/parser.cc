// The machinery every table's parser shares (config/parser.h).
#include "config/parser.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fmt/format.h>

#include "common/format.h"
#include "common/status_macros.h"

namespace outboxd::config {
namespace {
constexpr std::string_view kFilePrefix = "file:";  // ${file:PATH} reads a secret file
}  // namespace

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) { return Lower(a) == Lower(b); }

size_t EditDistance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

std::string_view Suggest(std::string_view key, const std::vector<std::string_view>& known) {
  const std::string lowered = Lower(key);
  const size_t limit = lowered.size() <= 4 ? 1 : 2;
  std::string_view best;
  size_t best_distance = limit + 1;
  for (std::string_view candidate : known) {
    const size_t distance = EditDistance(lowered, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::string JoinNames(const std::vector<std::string_view>& names) {
  std::string out;
  for (std::string_view name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

std::string_view TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "nothing";
  }
}

namespace {
bool Before(const toml::source_position& a, const toml::source_position& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}
}  // namespace

std::vector<std::pair<const toml::key*, const toml::node*>> InFileOrder(const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (const auto& [key, node] : table) entries.emplace_back(&key, &node);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return Before(a.first->source().begin, b.first->source().begin);
  });
  return entries;
}

// "LABEL: line N: WHAT"; the line is left out where toml++ has none (a table
// that was only created implicitly, or a key that is missing).
absl::Status Parser::Error(const toml::node* where, std::string_view what) const {
  return ErrorAt(where != nullptr ? where->source().begin.line : 0, what);
}
absl::Status Parser::ErrorAt(uint32_t line, std::string_view what) const {
  if (line == 0) return absl::InvalidArgumentError(fmt::format("{}: {}", label_, what));
  return absl::InvalidArgumentError(fmt::format("{}: line {}: {}", label_, line, what));
}

absl::Status Parser::UnknownKey(const toml::key& key, std::string_view path,
                                const std::vector<std::string_view>& known, std::string_view section) const {
  const std::string_view suggestion = Suggest(key.str(), known);
  if (!suggestion.empty()) {
    return ErrorAt(key.source().begin.line,
                   fmt::format("unknown key {}{}; did you mean {}?", path, key.str(), suggestion));
  }
  return ErrorAt(key.source().begin.line,
                 fmt::format("unknown key {}{}; the keys of {} are: {}", path, key.str(), section,
                             JoinNames(known)));
}

absl::Status Parser::CheckKeys(const toml::table& table, std::string_view path,
                               const std::vector<std::string_view>& known, std::string_view section) const {
  for (const auto& [key, node] : InFileOrder(table)) {
    if (std::find(known.begin(), known.end(), key->str()) == known.end()) {
      return UnknownKey(*key, path, known, section);
    }
  }
  return absl::OkStatus();
}

// Replaces ${NAME} by the environment variable NAME, ${file:PATH} by the
// content of the file PATH, and "$$" by "$". `path`
// names the key in errors; the value itself is never quoted, it may be secret.
absl::StatusOr<std::string> Parser::Expand(std::string_view text, std::string_view path,
                                           const toml::node& node) const {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '$' || i + 1 >= text.size()) {
      out += text[i];
      continue;
    }
    if (text[i + 1] == '$') {
      out += '$';
      ++i;
      continue;
    }
    if (text[i + 1] != '{') {
      out += '$';
      continue;
    }
    const size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      return Error(&node, fmt::format("{}: \"${{\" without a closing \"}}\"; write ${{NAME}} to "
                                      "use an environment variable, or \"$${{\" for a literal \"${{\"",
                                      path));
    }
    const std::string_view name = text.substr(i + 2, close - i - 2);
    if (name.rfind(kFilePrefix, 0) == 0) {
      ASSIGN_OR_RETURN(std::string secret,
                       ReadSecretFile(name.substr(kFilePrefix.size()), path, node));
      out += secret;
      i = close;
      continue;
    }
    const bool valid_name =
        !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
        std::all_of(name.begin(), name.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
        });
    if (!valid_name) {
      return Error(&node, fmt::format("{}: \"${{{}}}\" is not a valid environment variable "
                                      "reference: use letters, digits and underscores, e.g. "
                                      "${{PGPASSWORD}}; write \"$${{\" for a literal \"${{\"",
                                      path, name));
    }
    const std::optional<std::string> value = env_ ? env_(name) : std::nullopt;
    if (!value.has_value()) {
      return Error(&node, fmt::format("{}: environment variable {} is not set; set it in "
                                      "outboxd's environment (or write \"$${{\" for a literal \"${{\")",
                                      path, name));
    }
    out += *value;
    i = close;
  }
  return out;
}

// ${file:PATH}: the content of PATH, one trailing newline removed (what
// `echo secret > file` and Kubernetes/Docker secrets leave behind). Errors
// name the key and the path, never the content.
absl::StatusOr<std::string> Parser::ReadSecretFile(std::string_view file_path, std::string_view path,
                                                   const toml::node& node) const {
  if (file_path.empty()) {
    return Error(&node, fmt::format("{}: \"${{file:}}\" names no file; write "
                                    "${{file:/run/secrets/NAME}}",
                                    path));
  }
  const std::string file(file_path);
  std::error_code error;
  if (std::filesystem::is_directory(file, error)) {
    return Error(&node, fmt::format("{}: cannot read secret file {}: it is a directory; name "
                                    "the file that holds the secret",
                                    path, file));
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return Error(&node, fmt::format("{}: cannot read secret file {}: {}; check the path and "
                                    "that outboxd's user may read it",
                                    path, file, std::strerror(errno)));
  }
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) {
    return Error(&node, fmt::format("{}: cannot read secret file {}: {}", path, file,
                                    std::strerror(errno)));
  }
  std::string secret = std::move(content).str();
  if (!secret.empty() && secret.back() == '\n') secret.pop_back();
  if (!secret.empty() && secret.back() == '\r') secret.pop_back();
  return secret;
}

absl::Status Parser::GetString(const toml::table& table, std::string_view key, std::string_view path,
                               std::string* out) const {
  const toml::node* node = table.get(key);
  if (node == nullptr) return absl::OkStatus();
  if (!node->is_string()) {
    return Error(node, fmt::format("{} must be a string (in double quotes), not {}", path,
                                   TypeName(*node)));
  }
  ASSIGN_OR_RETURN(*out, Expand(node->as_string()->get(), path, *node));
  return absl::OkStatus();
}

// A duration with a unit ("500ms", "10s", "1m") from `min` to `max`. An
// error names `example`s of the form; `advice` (may be empty) follows the
// range in a range error.
absl::Status Parser::GetDuration(const toml::table& table, std::string_view key, std::string_view path,
                                 absl::Duration min, absl::Duration max, std::string_view example,
                                 std::string_view advice, absl::Duration* out) const {
  const toml::node* node = table.get(key);
  if (node == nullptr) return absl::OkStatus();
  std::string text;
  RETURN_IF_ERROR(GetString(table, key, path, &text));
  absl::Duration value;
  if (!absl::ParseDuration(text, &value) || text == "0") {
    return Error(node, fmt::format("{} = \"{}\": expected a duration with a unit, e.g. {}", path,
                                   text, example));
  }
  if (value < min || value > max) {
    return Error(node, fmt::format("{} = \"{}\": must be from {} to {}{}", path, text,
                                   ShortDuration(min), ShortDuration(max), advice));
  }
  *out = value;
  return absl::OkStatus();
}

// "100ms", "60s": how the bounds above are written in this file's errors.
std::string Parser::ShortDuration(absl::Duration d) {
  if (d % absl::Seconds(1) == absl::ZeroDuration()) return fmt::format("{}s", d / absl::Seconds(1));
  return fmt::format("{}ms", absl::ToInt64Milliseconds(d));
}

absl::Status Parser::GetNonEmptyString(const toml::table& table, std::string_view key,
                                       std::string_view path, std::string* out) const {
  RETURN_IF_ERROR(GetString(table, key, path, out));
  if (out->empty()) {
    return Error(table.get(key), fmt::format("{} must not be empty", path));
  }
  return absl::OkStatus();
}

absl::Status Parser::GetBool(const toml::table& table, std::string_view key, std::string_view path,
                             bool* out) const {
  const toml::node* node = table.get(key);
  if (node == nullptr) return absl::OkStatus();
  if (!node->is_boolean()) {
    return Error(node, fmt::format("{} must be true or false (no quotes), not {}", path,
                                   TypeName(*node)));
  }
  *out = node->as_boolean()->get();
  return absl::OkStatus();
}

// A [section] that is optional: nullptr when absent.
// `header` is how the section is opened in the file, for the error.
absl::StatusOr<const toml::table*> Parser::GetSection(const toml::table& parent, std::string_view key,
                                                      std::string_view path,
                                                      std::string_view header) const {
  const toml::node* node = parent.get(key);
  if (node == nullptr) return nullptr;
  if (!node->is_table()) {
    return Error(node, fmt::format("{} must be a table: write {} on a line of its own, then "
                                   "its keys, one per line; it is {} here",
                                   path, header, TypeName(*node)));
  }
  return node->as_table();
}

}  // namespace outboxd::config
