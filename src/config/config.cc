// Config loading: TOML text -> Config. toml++ does the syntax; this file checks
// every key against the schema documented in docs/configuration.md, expands
// ${NAME}, and turns each mistake into one InvalidArgumentError that names the
// key, its line and what to write instead.
#include "config/config.h"

#include <algorithm>
#include <cctype>
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
#include <libpq-fe.h>
#include <toml++/toml.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "common/format.h"
#include "common/status_macros.h"
#include "outbox/routing.h"

namespace outboxd::config {
namespace {

constexpr std::string_view kMask = "********";
constexpr std::string_view kFilePrefix = "file:";  // ${file:PATH} reads a secret file

// ---------------------------------------------------------------------------
// Small string helpers.

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) { return Lower(a) == Lower(b); }

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Optimal string alignment distance: a swapped pair of letters ("dns" for
// "dsn") counts as one edit, which is the typo people actually make.
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

// The known name closest to `key`, or "" when none is close enough to be a typo.
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

// ---------------------------------------------------------------------------
// Connection strings. What libpq will read from a DSN is libpq's to say:
// PQconninfoParse reads both forms (key=value, postgresql:// URI) with libpq's
// own quoting, escapes and percent-decoding. Only redaction scans the text by
// hand, because it must mask secrets in place (keeping the rest as the user
// wrote it) and also in strings that libpq rejects.

// The options a DSN sets explicitly (no defaults, no environment), as libpq
// reads them; nullopt when libpq rejects the string.
std::optional<std::vector<std::pair<std::string, std::string>>> LibpqOptions(std::string_view dsn) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(std::string(dsn).c_str(), &error);
  // The message may quote the DSN back, password included: never shown from here.
  if (error != nullptr) PQfreemem(error);
  if (options == nullptr) return std::nullopt;
  std::vector<std::pair<std::string, std::string>> set;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) set.emplace_back(o->keyword, o->val);
  }
  PQconninfoFree(options);
  return set;
}

bool IsUriDsn(std::string_view dsn) {
  const std::string lowered = Lower(dsn.substr(0, 13));
  return lowered.rfind("postgresql://", 0) == 0 || lowered.rfind("postgres://", 0) == 0;
}

bool IsSecretKeyword(std::string_view keyword) {
  return EqualsIgnoreCase(keyword, "password") || EqualsIgnoreCase(keyword, "sslpassword");
}

// One `keyword = value` of a libpq key/value connection string, with the span
// of the value in the original text (quotes included).
struct DsnParam {
  std::string keyword;
  size_t value_begin = 0;
  size_t value_end = 0;
  bool has_value = false;
};

// Follows libpq's conninfo_parse: whitespace-separated keyword = value pairs;
// a value is either bare (ends at whitespace) or single-quoted, and a
// backslash escapes the next character in both. Tolerant of malformed text:
// it never fails, so that redaction works on anything a user may type.
std::vector<DsnParam> ScanKeywordValueDsn(std::string_view dsn) {
  std::vector<DsnParam> params;
  const size_t n = dsn.size();
  size_t i = 0;
  while (true) {
    while (i < n && IsSpace(dsn[i])) ++i;
    if (i >= n) break;
    DsnParam param;
    const size_t keyword_begin = i;
    while (i < n && !IsSpace(dsn[i]) && dsn[i] != '=') ++i;
    param.keyword = std::string(dsn.substr(keyword_begin, i - keyword_begin));
    size_t j = i;
    while (j < n && IsSpace(dsn[j])) ++j;
    const bool has_equals = j < n && dsn[j] == '=';
    // Without "=" libpq rejects the string; a secret keyword still takes the
    // next word as its value so that "password secret" never leaks.
    if (!has_equals && !IsSecretKeyword(param.keyword)) {
      params.push_back(std::move(param));
      continue;
    }
    i = has_equals ? j + 1 : j;
    while (i < n && IsSpace(dsn[i])) ++i;
    param.value_begin = i;
    if (i < n && dsn[i] == '\'') {
      ++i;
      while (i < n && dsn[i] != '\'') i += (dsn[i] == '\\' && i + 1 < n) ? 2 : 1;
      if (i < n) ++i;  // the closing quote
    } else {
      while (i < n && !IsSpace(dsn[i])) i += (dsn[i] == '\\' && i + 1 < n) ? 2 : 1;
    }
    param.value_end = std::min(i, n);
    param.has_value = true;
    params.push_back(std::move(param));
  }
  return params;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Text to put in place of dsn[begin, end).
struct Replacement {
  size_t begin;
  size_t end;
  std::string text;
};

// The value of a key/value DSN parameter as libpq reads it: quotes removed,
// backslash escapes resolved.
std::string UnescapeDsnValue(std::string_view raw) {
  const bool quoted = !raw.empty() && raw[0] == '\'';
  std::string out;
  for (size_t i = quoted ? 1 : 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size()) {
      out += raw[++i];
    } else if (quoted && raw[i] == '\'') {
      break;
    } else {
      out += raw[i];
    }
  }
  return out;
}

std::string QuoteDsnValue(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

// postgresql://[user[:password]@][host][:port][/dbname][?keyword=value&...]
// The userinfo ends at the LAST '@' before the query: a password with a raw
// '@' is then masked whole (libpq would reject it anyway).
void FindUriSecrets(std::string_view dsn, std::vector<Replacement>* out) {
  const size_t authority = dsn.find("://") + 3;
  size_t query = dsn.find('?', authority);
  if (query == std::string_view::npos) query = dsn.size();
  const std::string_view before_query = dsn.substr(0, query);
  const size_t at = before_query.rfind('@');
  if (at != std::string_view::npos && at >= authority) {
    const size_t colon = before_query.find(':', authority);
    if (colon != std::string_view::npos && colon < at) {
      out->push_back({colon + 1, at, std::string(kMask)});
    }
  }
  size_t i = query + 1;
  while (query < dsn.size() && i <= dsn.size()) {
    size_t end = dsn.find('&', i);
    if (end == std::string_view::npos) end = dsn.size();
    const std::string_view pair = dsn.substr(i, end - i);
    const size_t eq = pair.find('=');
    if (eq != std::string_view::npos) {
      const std::string keyword = PercentDecode(pair.substr(0, eq));
      if (IsSecretKeyword(keyword)) {
        out->push_back({i + eq + 1, end, std::string(kMask)});
      } else if (keyword == "dbname") {
        const std::string value = PercentDecode(pair.substr(eq + 1));
        if (std::string redacted = RedactDsn(value); redacted != value) {
          out->push_back({i + eq + 1, end, std::move(redacted)});
        }
      }
    }
    i = end + 1;
  }
}

// ---------------------------------------------------------------------------
// Schema validation.

const std::vector<std::string_view>& TopKeys() {
  static const auto* keys =
      new std::vector<std::string_view>{"source", "sink", "outbox", "messages", "http", "log",
                                        "errors", "schema_registry"};
  return *keys;
}
const std::vector<std::string_view>& SourceKeys() {
  static const auto* keys = new std::vector<std::string_view>{"dsn", "slot", "publication",
                                                              "create_slot", "status_interval", "state_dir",
                                                              "failover",    "standby_dsn", "snapshot"};
  return *keys;
}
const std::vector<std::string_view>& SinkKeys() {
  static const auto* keys = new std::vector<std::string_view>{
      "kafka", "delivery", "transactional_id", "checkpoint_topic", "transaction_interval",
      "transaction_max_events", "transaction_gap"};
  return *keys;
}
const std::vector<std::string_view>& OutboxKeys() {
  static const auto* keys =
      new std::vector<std::string_view>{"table", "topic", "key", "columns", "value", "id_header",
                                        "key_column", "timestamp_column", "partition_column",
                                        "tracing_column", "tombstone_on_empty_payload", "fields"};
  return *keys;
}
const std::vector<std::string_view>& FieldKeys() {
  static const auto* keys = new std::vector<std::string_view>{"column", "placement", "alias"};
  return *keys;
}
const std::vector<std::string_view>& ColumnKeys() {
  static const auto* keys = new std::vector<std::string_view>{
      "id", "aggregate_type", "aggregate_id", "event_type",
      "payload", "headers", "destination", "created_at"};
  return *keys;
}
const std::vector<std::string_view>& MessagesKeys() {
  static const auto* keys = new std::vector<std::string_view>{"enabled", "prefix", "topic", "key",
                                                              "value", "id_header"};
  return *keys;
}
const std::vector<std::string_view>& ErrorsKeys() {
  static const auto* keys =
      new std::vector<std::string_view>{"on_bad_event", "dead_letter_topic"};
  return *keys;
}
const std::vector<std::string_view>& SchemaRegistryKeys() {
  static const auto* keys = new std::vector<std::string_view>{
      "url",     "username", "password",         "ca_file",       "cert_file",
      "key_file", "timeout", "subject_strategy", "auto_register", "schema_id"};
  return *keys;
}
const std::vector<std::string_view>& HttpKeys() {
  static const auto* keys = new std::vector<std::string_view>{"listen"};
  return *keys;
}
const std::vector<std::string_view>& LogKeys() {
  static const auto* keys = new std::vector<std::string_view>{"level", "format"};
  return *keys;
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

bool Before(const toml::source_position& a, const toml::source_position& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

// toml++ keeps a table's keys sorted by name; errors and librdkafka
// properties follow the file's order instead.
std::vector<std::pair<const toml::key*, const toml::node*>> InFileOrder(const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (const auto& [key, node] : table) entries.emplace_back(&key, &node);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return Before(a.first->source().begin, b.first->source().begin);
  });
  return entries;
}

bool IsValidSlotName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool IsValidPublicationName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (name[0] >= '0' && name[0] <= '9') return false;
  return IsValidSlotName(name);
}

bool IsValidHost(std::string_view host) {
  if (host.empty()) return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

bool IsValidIpv6(std::string_view host) {
  if (host.empty()) return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
  });
}

// "host:port" or "[ipv6]:port" with a port in 1..65535. Returns "" when valid,
// else what is wrong.
std::string CheckListen(std::string_view listen) {
  std::string_view host, port;
  if (!listen.empty() && listen[0] == '[') {
    const size_t close = listen.find(']');
    if (close == std::string_view::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return "expected \"[ipv6]:port\", e.g. \"[::1]:9187\"";
    }
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
    if (!IsValidIpv6(host)) return "the address in brackets is not an IPv6 address";
  } else {
    const size_t colon = listen.rfind(':');
    if (colon == std::string_view::npos) {
      return "expected \"host:port\", e.g. \"127.0.0.1:9187\" (\"0.0.0.0:9187\" for every interface)";
    }
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return "write an IPv6 address in brackets, e.g. \"[::1]:9187\"";
    }
    if (host.empty()) {
      return "the host is missing: write \"0.0.0.0:9187\" to listen on every interface, "
             "\"127.0.0.1:9187\" for this machine only";
    }
    if (!IsValidHost(host)) return "the host is not an IP address or host name";
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return "the port must be a number from 1 to 65535";
  }
  const int number = std::atoi(std::string(port).c_str());
  if (number < 1 || number > 65535) return "the port must be a number from 1 to 65535";
  return "";
}

class ConfigParser {
 public:
  ConfigParser(const EnvLookup& env, std::string label) : env_(env), label_(std::move(label)) {}

  absl::StatusOr<Config> Parse(const toml::table& root) {
    Config config;
    RETURN_IF_ERROR(CheckTopKeys(root));
    RETURN_IF_ERROR(ParseSource(root, &config.source));
    RETURN_IF_ERROR(ParseSink(root, &config.kafka));
    RETURN_IF_ERROR(ParseOutbox(root, &config.outbox));
    RETURN_IF_ERROR(ParseMessages(root, &config.messages));
    RETURN_IF_ERROR(ParseHttp(root, &config.http));
    RETURN_IF_ERROR(ParseLog(root, &config.log));
    RETURN_IF_ERROR(ParseErrors(root, &config.errors));
    RETURN_IF_ERROR(ParseSchemaRegistry(root, &config.schema_registry));
    if (config.outbox.empty() && !config.messages.enabled) {
      return Error(nullptr,
                   "nothing to relay: add an [[outbox]] table, or set messages.enabled = true "
                   "to relay pg_logical_emit_message events");
    }
    return config;
  }

 private:
  // "LABEL: line N: WHAT"; the line is left out where toml++ has none (a table
  // that was only created implicitly, or a key that is missing).
  absl::Status Error(const toml::node* where, std::string_view what) const {
    return ErrorAt(where != nullptr ? where->source().begin.line : 0, what);
  }
  absl::Status ErrorAt(uint32_t line, std::string_view what) const {
    if (line == 0) return absl::InvalidArgumentError(fmt::format("{}: {}", label_, what));
    return absl::InvalidArgumentError(fmt::format("{}: line {}: {}", label_, line, what));
  }

  absl::Status UnknownKey(const toml::key& key, std::string_view path,
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

  absl::Status CheckKeys(const toml::table& table, std::string_view path,
                         const std::vector<std::string_view>& known, std::string_view section) const {
    for (const auto& [key, node] : InFileOrder(table)) {
      if (std::find(known.begin(), known.end(), key->str()) == known.end()) {
        return UnknownKey(*key, path, known, section);
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckTopKeys(const toml::table& root) const {
    for (const auto& [key, node] : InFileOrder(root)) {
      const std::string_view name = key->str();
      if (std::find(TopKeys().begin(), TopKeys().end(), name) != TopKeys().end()) continue;
      // A section key written above every [section] header lands at the top.
      const std::pair<std::string_view, const std::vector<std::string_view>*> sections[] = {
          {"source", &SourceKeys()}, {"sink", &SinkKeys()}, {"messages", &MessagesKeys()},
          {"http", &HttpKeys()},     {"log", &LogKeys()}, {"errors", &ErrorsKeys()}};
      for (const auto& [section, keys] : sections) {
        if (std::find(keys->begin(), keys->end(), name) != keys->end()) {
          return ErrorAt(key->source().begin.line,
                         fmt::format("unknown key {}; did you mean {}.{}? Put it under [{}]", name,
                                     section, name, section));
        }
      }
      return UnknownKey(*key, "", TopKeys(), "the file");
    }
    return absl::OkStatus();
  }

  // Replaces ${NAME} by the environment variable NAME, ${file:PATH} by the
  // content of the file PATH, and "$$" by "$". `path`
  // names the key in errors; the value itself is never quoted, it may be secret.
  absl::StatusOr<std::string> Expand(std::string_view text, std::string_view path,
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
  absl::StatusOr<std::string> ReadSecretFile(std::string_view file_path, std::string_view path,
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

  // Typed getters. An absent key leaves `*out` unchanged (its default).
  absl::Status GetString(const toml::table& table, std::string_view key, std::string_view path,
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
  absl::Status GetDuration(const toml::table& table, std::string_view key, std::string_view path,
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
  static std::string ShortDuration(absl::Duration d) {
    if (d % absl::Seconds(1) == absl::ZeroDuration()) return fmt::format("{}s", d / absl::Seconds(1));
    return fmt::format("{}ms", absl::ToInt64Milliseconds(d));
  }

  absl::Status GetNonEmptyString(const toml::table& table, std::string_view key,
                                 std::string_view path, std::string* out) const {
    RETURN_IF_ERROR(GetString(table, key, path, out));
    if (out->empty()) {
      return Error(table.get(key), fmt::format("{} must not be empty", path));
    }
    return absl::OkStatus();
  }

  absl::Status GetBool(const toml::table& table, std::string_view key, std::string_view path,
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
  absl::StatusOr<const toml::table*> GetSection(const toml::table& parent, std::string_view key,
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

  absl::Status GetKeySource(const toml::table& table, std::string_view path,
                            outbox::KeySource* out) const {
    const toml::node* node = table.get("key");
    if (node == nullptr) return absl::OkStatus();
    std::string value;
    RETURN_IF_ERROR(GetString(table, "key", path, &value));
    if (value == "id") {
      *out = outbox::KeySource::kId;
    } else if (value == "aggregate_id") {
      *out = outbox::KeySource::kAggregateId;
    } else {
      return Error(node, fmt::format("{} = \"{}\": expected \"id\" (the outbox UUID) or "
                                     "\"aggregate_id\" (per-aggregate partition order)",
                                     path, value));
    }
    return absl::OkStatus();
  }

  absl::Status GetValueFormat(const toml::table& table, std::string_view path,
                              outbox::ValueFormat* out) const {
    const toml::node* node = table.get("value");
    if (node == nullptr) return absl::OkStatus();
    std::string value;
    RETURN_IF_ERROR(GetString(table, "value", path, &value));
    if (value == "envelope") {
      *out = outbox::ValueFormat::kEnvelope;
    } else if (value == "payload") {
      *out = outbox::ValueFormat::kPayload;
    } else {
      return Error(node, fmt::format("{} = \"{}\": expected \"envelope\" (outbox.v1.Envelope) or "
                                     "\"payload\" (the payload column as is, as Debezium writes it)",
                                     path, value));
    }
    return absl::OkStatus();
  }

  // The Debezium-compatible record options of one [[outbox]] entry.
  absl::Status ParseRecord(const toml::table& entry, const std::string& prefix,
                           outbox::RecordConfig* out) const {
    RETURN_IF_ERROR(GetValueFormat(entry, prefix + " value", &out->value));
    RETURN_IF_ERROR(GetString(entry, "id_header", prefix + " id_header", &out->id_header));
    RETURN_IF_ERROR(GetString(entry, "key_column", prefix + " key_column", &out->key_column));
    RETURN_IF_ERROR(
        GetString(entry, "timestamp_column", prefix + " timestamp_column", &out->timestamp_column));
    RETURN_IF_ERROR(
        GetString(entry, "partition_column", prefix + " partition_column", &out->partition_column));
    RETURN_IF_ERROR(
        GetString(entry, "tracing_column", prefix + " tracing_column", &out->tracing_column));
    RETURN_IF_ERROR(GetBool(entry, "tombstone_on_empty_payload",
                            prefix + " tombstone_on_empty_payload",
                            &out->tombstone_on_empty_payload));
    if (!out->key_column.empty() && entry.get("key") != nullptr) {
      return Error(entry.get("key_column"),
                   fmt::format("{} sets both key and key_column; keep one (key_column names any "
                               "column, key chooses \"id\" or \"aggregate_id\")",
                               prefix));
    }
    const toml::node* fields = entry.get("fields");
    if (fields == nullptr) return absl::OkStatus();
    if (!fields->is_array_of_tables()) {
      return Error(fields, fmt::format("{} fields must be an array of tables: write "
                                       "[[outbox.fields]] once per column; it is {} here",
                                       prefix, TypeName(*fields)));
    }
    const toml::array& list = *fields->as_array();
    for (size_t i = 0; i < list.size(); ++i) {
      const toml::table& item = *list[i].as_table();
      const std::string path = fmt::format("{} fields #{}", prefix, i + 1);
      RETURN_IF_ERROR(CheckKeys(item, path + " ", FieldKeys(), "[[outbox.fields]]"));
      outbox::AdditionalField field;
      if (item.get("column") == nullptr) {
        return Error(&item, fmt::format("{} column is missing: name the outbox column to place, "
                                        "e.g. column = \"tenant\"",
                                        path));
      }
      RETURN_IF_ERROR(GetNonEmptyString(item, "column", path + " column", &field.column));
      RETURN_IF_ERROR(GetString(item, "alias", path + " alias", &field.alias));
      std::string placement = "header";
      RETURN_IF_ERROR(GetString(item, "placement", path + " placement", &placement));
      if (placement == "header") {
        field.placement = outbox::Placement::kHeader;
      } else if (placement == "envelope") {
        field.placement = outbox::Placement::kEnvelope;
        if (out->value == outbox::ValueFormat::kPayload) {
          return Error(item.get("placement"),
                       fmt::format("{} placement = \"envelope\" needs value = \"envelope\": a "
                                   "payload value has no envelope; use placement = \"header\"",
                                   path));
        }
      } else {
        return Error(item.get("placement"),
                     fmt::format("{} placement = \"{}\": expected \"header\" (a record header) or "
                                 "\"envelope\" (the envelope's attributes); for the partition use "
                                 "partition_column",
                                 path, placement));
      }
      out->fields.push_back(std::move(field));
    }
    return absl::OkStatus();
  }

  absl::Status GetTopic(const toml::table& table, std::string_view path, std::string* out) const {
    RETURN_IF_ERROR(GetNonEmptyString(table, "topic", path, out));
    absl::StatusOr<outbox::TopicTemplate> parsed = outbox::TopicTemplate::Parse(*out);
    if (!parsed.ok()) {
      return Error(table.get("topic"), fmt::format("{} = \"{}\": {}", path, *out,
                                                   std::string(parsed.status().message())));
    }
    return absl::OkStatus();
  }

  absl::Status ParseSource(const toml::table& root, SourceConfig* out) const {
    ASSIGN_OR_RETURN(const toml::table* source, GetSection(root, "source", "source", "[source]"));
    if (source == nullptr) {
      return Error(nullptr,
                   "[source] is missing: add it with at least dsn = \"host=... dbname=... "
                   "user=...\" (the libpq connection string of the database to relay from)");
    }
    RETURN_IF_ERROR(CheckKeys(*source, "source.", SourceKeys(), "[source]"));

    const toml::node* dsn = source->get("dsn");
    if (dsn == nullptr) {
      return Error(source, "source.dsn is missing: set it to the libpq connection string, e.g. "
                           "dsn = \"host=127.0.0.1 port=5432 dbname=app user=outboxd "
                           "password=${PGPASSWORD}\"");
    }
    RETURN_IF_ERROR(GetNonEmptyString(*source, "dsn", "source.dsn", &out->dsn));
    if (HasReplicationParam(out->dsn)) {
      return Error(dsn, "source.dsn must not set replication: outboxd opens its replication "
                        "connection itself; remove replication=... from the DSN");
    }

    RETURN_IF_ERROR(GetString(*source, "slot", "source.slot", &out->slot));
    if (!IsValidSlotName(out->slot)) {
      return Error(source->get("slot"),
                   fmt::format("source.slot = \"{}\": a replication slot name is 1 to 63 lower-case "
                               "letters, digits and underscores",
                               out->slot));
    }
    RETURN_IF_ERROR(GetString(*source, "publication", "source.publication", &out->publication));
    if (!IsValidPublicationName(out->publication)) {
      return Error(source->get("publication"),
                   fmt::format("source.publication = \"{}\": use 1 to 63 lower-case letters, "
                               "digits and underscores, not starting with a digit (the name as "
                               "PostgreSQL stores an unquoted identifier)",
                               out->publication));
    }
    RETURN_IF_ERROR(GetBool(*source, "create_slot", "source.create_slot", &out->create_slot));
    RETURN_IF_ERROR(GetBool(*source, "failover", "source.failover", &out->failover));
    RETURN_IF_ERROR(GetString(*source, "standby_dsn", "source.standby_dsn", &out->standby_dsn));
    RETURN_IF_ERROR(GetString(*source, "state_dir", "source.state_dir", &out->state_dir));
    if (const toml::node* snapshot = source->get("snapshot"); snapshot != nullptr) {
      std::string mode;
      RETURN_IF_ERROR(GetString(*source, "snapshot", "source.snapshot", &mode));
      if (mode != "never" && mode != "initial") {
        return Error(snapshot, fmt::format("source.snapshot = \"{}\": expected \"never\" (stream what "
                                           "is committed after the slot exists) or \"initial\" (first "
                                           "publish the rows present when outboxd creates the slot)",
                                           mode));
      }
      out->snapshot_initial = mode == "initial";
    }

    return GetDuration(*source, "status_interval", "source.status_interval", absl::Milliseconds(100),
                       absl::Seconds(60), "\"500ms\", \"10s\" or \"1m\"",
                       "; keep it under half of the server's wal_sender_timeout (60s by default)",
                       &out->status_interval);
  }

  // A DSN that libpq rejects passes here: connecting reports libpq's reason.
  static bool HasReplicationParam(std::string_view dsn) {
    const auto options = LibpqOptions(dsn);
    if (!options.has_value()) return false;
    return std::any_of(options->begin(), options->end(),
                       [](const auto& option) { return option.first == "replication"; });
  }

  absl::Status ParseSink(const toml::table& root, KafkaConfig* out) const {
    static constexpr std::string_view kMissing =
        "[sink.kafka] is missing: add it with at least \"bootstrap.servers\" = \"host:port\" "
        "(librdkafka properties, quoted because they contain dots)";
    ASSIGN_OR_RETURN(const toml::table* sink, GetSection(root, "sink", "sink", "[sink.kafka]"));
    if (sink == nullptr) return Error(nullptr, kMissing);
    RETURN_IF_ERROR(CheckKeys(*sink, "sink.", SinkKeys(), "[sink]"));
    ASSIGN_OR_RETURN(const toml::table* kafka, GetSection(*sink, "kafka", "sink.kafka", "[sink.kafka]"));
    if (kafka == nullptr) return Error(nullptr, kMissing);
    RETURN_IF_ERROR(ParseDelivery(*sink, out));

    for (const auto& [key, node] : InFileOrder(*kafka)) {
      const std::string name(key->str());
      const std::string path = fmt::format("sink.kafka.\"{}\"", name);
      if (name.empty()) return ErrorAt(key->source().begin.line, "sink.kafka: empty property name");
      std::string value;
      switch (node->type()) {
        case toml::node_type::string: {
          ASSIGN_OR_RETURN(value, Expand(node->as_string()->get(), path, *node));
          break;
        }
        case toml::node_type::integer:
          value = fmt::format("{}", node->as_integer()->get());
          break;
        case toml::node_type::floating_point:
          value = fmt::format("{}", node->as_floating_point()->get());
          break;
        case toml::node_type::boolean:
          value = node->as_boolean()->get() ? "true" : "false";
          break;
        case toml::node_type::table:
          // `bootstrap.servers = "..."` without quotes is a dotted key: TOML
          // makes a table "bootstrap" holding "servers".
          return ErrorAt(key->source().begin.line,
                         fmt::format("sink.kafka.{} is a table: quote librdkafka property names "
                                     "that contain dots, e.g. \"{}.servers\" = \"host:port\"",
                                     name, name));
        default:
          return Error(node, fmt::format("{} must be a string, an integer or a boolean, not {}",
                                         path, TypeName(*node)));
      }
      out->properties.emplace_back(name, std::move(value));
    }

    const auto bootstrap = std::find_if(out->properties.begin(), out->properties.end(),
                                        [](const auto& p) { return p.first == "bootstrap.servers"; });
    if (bootstrap == out->properties.end()) {
      return Error(kafka, "sink.kafka.\"bootstrap.servers\" is missing: set it to the Kafka "
                          "brokers, e.g. \"bootstrap.servers\" = \"kafka1:9092,kafka2:9092\"");
    }
    if (bootstrap->second.empty()) {
      return Error(kafka->get("bootstrap.servers"),
                   "sink.kafka.\"bootstrap.servers\" must not be empty: list the Kafka brokers "
                   "as host:port, separated by commas");
    }
    // 0 means "retry forever": a stop while Kafka is down could then never
    // complete, and the events stay unacknowledged anyway (the slot replays them).
    for (const auto& [name, value] : out->properties) {
      if ((name == "message.timeout.ms" || name == "delivery.timeout.ms") && value == "0") {
        return Error(kafka->get(name),
                     fmt::format("sink.kafka.\"{}\" = 0 (no delivery deadline) is refused: with "
                                 "Kafka down a stop could never complete, and outboxd needs a "
                                 "failed delivery report to reconnect; leave it unset (300000, "
                                 "five minutes) or give a positive number of milliseconds",
                                 name));
      }
    }
    return absl::OkStatus();
  }

  // [sink] delivery and the exactly-once keys.
  absl::Status ParseDelivery(const toml::table& sink, KafkaConfig* out) const {
    if (const toml::node* node = sink.get("delivery"); node != nullptr) {
      std::string mode;
      RETURN_IF_ERROR(GetString(sink, "delivery", "sink.delivery", &mode));
      if (mode != "at_least_once" && mode != "exactly_once") {
        return Error(node, fmt::format("sink.delivery = \"{}\": expected \"at_least_once\" (the "
                                       "default: a fault may publish an event twice) or "
                                       "\"exactly_once\" (Kafka transactions; consumers read with "
                                       "isolation.level=read_committed)",
                                       mode));
      }
      out->delivery = mode == "exactly_once" ? Delivery::kExactlyOnce : Delivery::kAtLeastOnce;
    }
    const bool exactly_once = out->delivery == Delivery::kExactlyOnce;
    for (std::string_view key : {"transactional_id", "checkpoint_topic", "transaction_interval",
                                 "transaction_max_events", "transaction_gap"}) {
      if (!exactly_once && sink.get(key) != nullptr) {
        return Error(sink.get(key), fmt::format("sink.{} applies to delivery = \"exactly_once\" only: "
                                                "set [sink] delivery = \"exactly_once\" or remove it",
                                                key));
      }
    }
    RETURN_IF_ERROR(GetString(sink, "transactional_id", "sink.transactional_id", &out->transactional_id));
    if (sink.get("transactional_id") != nullptr && out->transactional_id.empty()) {
      return Error(sink.get("transactional_id"),
                   "sink.transactional_id must not be empty: remove it for the default "
                   "\"outboxd-<system identifier>-<slot>\"");
    }
    RETURN_IF_ERROR(GetString(sink, "checkpoint_topic", "sink.checkpoint_topic", &out->checkpoint_topic));
    if (absl::Status valid = outbox::ValidateTopicName(out->checkpoint_topic); !valid.ok()) {
      return Error(sink.get("checkpoint_topic"),
                   fmt::format("sink.checkpoint_topic = \"{}\": {}", out->checkpoint_topic,
                               valid.message()));
    }
    RETURN_IF_ERROR(GetDuration(sink, "transaction_interval", "sink.transaction_interval",
                                absl::Milliseconds(10), absl::Seconds(60), "\"100ms\"", "",
                                &out->transaction_interval));
    if (const toml::node* node = sink.get("transaction_max_events"); node != nullptr) {
      if (!node->is_integer() || node->as_integer()->get() < 1 ||
          node->as_integer()->get() > 1000000) {
        return Error(node, "sink.transaction_max_events must be an integer from 1 to 1000000");
      }
      out->transaction_max_events = node->as_integer()->get();
    }
    return GetDuration(sink, "transaction_gap", "sink.transaction_gap", absl::ZeroDuration(),
                       absl::Milliseconds(100), "\"3ms\" or \"0ms\"", "",
                       &out->transaction_gap);
  }

  absl::Status ParseOutbox(const toml::table& root, std::vector<outbox::TableConfig>* out) const {
    const toml::node* node = root.get("outbox");
    if (node == nullptr) return absl::OkStatus();
    if (!node->is_array_of_tables()) {
      return Error(node, fmt::format("outbox must be an array of tables: write [[outbox]] (double "
                                     "brackets) once per outbox table; it is {} here",
                                     TypeName(*node)));
    }
    const toml::array& entries = *node->as_array();
    for (size_t i = 0; i < entries.size(); ++i) {
      const toml::table& entry = *entries[i].as_table();
      const std::string prefix = fmt::format("[[outbox]] #{}", i + 1);
      outbox::TableConfig table;
      RETURN_IF_ERROR(ParseOutboxEntry(entry, prefix, &table));
      for (size_t j = 0; j < out->size(); ++j) {
        if ((*out)[j].schema == table.schema && (*out)[j].table == table.table) {
          return Error(entry.get("table"),
                       fmt::format("{} table = \"{}.{}\" is already configured by [[outbox]] #{}; "
                                   "list each table once",
                                   prefix, table.schema, table.table, j + 1));
        }
      }
      out->push_back(std::move(table));
    }
    return absl::OkStatus();
  }

  absl::Status ParseOutboxEntry(const toml::table& entry, const std::string& prefix,
                                outbox::TableConfig* out) const {
    RETURN_IF_ERROR(CheckKeys(entry, prefix + " ", OutboxKeys(), "[[outbox]]"));
    const toml::node* table_node = entry.get("table");
    if (table_node == nullptr) {
      return Error(&entry, fmt::format("{} table is missing: name the outbox table, e.g. "
                                       "table = \"public.outbox\"",
                                       prefix));
    }
    std::string name;
    RETURN_IF_ERROR(GetNonEmptyString(entry, "table", prefix + " table", &name));
    const size_t dot = name.find('.');
    if (dot == std::string::npos) {
      out->schema = "public";
      out->table = name;
    } else {
      out->schema = name.substr(0, dot);
      out->table = name.substr(dot + 1);
    }
    const bool bad = out->schema.empty() || out->table.empty() ||
                     out->table.find('.') != std::string::npos ||
                     name.find_first_of("\"' \t") != std::string::npos;
    if (bad) {
      return Error(table_node, fmt::format("{} table = \"{}\": expected \"schema.table\" or "
                                           "\"table\" (schema public), without quotes, spelled as "
                                           "PostgreSQL stores the name",
                                           prefix, name));
    }

    RETURN_IF_ERROR(GetTopic(entry, prefix + " topic", &out->topic));
    RETURN_IF_ERROR(GetKeySource(entry, prefix + " key", &out->key));
    RETURN_IF_ERROR(ParseRecord(entry, prefix, &out->record));

    ASSIGN_OR_RETURN(const toml::table* columns, GetSection(entry, "columns", prefix + " columns", "[outbox.columns]"));
    if (columns != nullptr) {
      const std::string column_prefix = prefix + " columns.";
      RETURN_IF_ERROR(CheckKeys(*columns, column_prefix, ColumnKeys(), "[outbox.columns]"));
      outbox::ColumnNames& names = out->columns;
      const std::pair<std::string_view, std::string*> fields[] = {
          {"id", &names.id},
          {"aggregate_type", &names.aggregate_type},
          {"aggregate_id", &names.aggregate_id},
          {"event_type", &names.event_type},
          {"payload", &names.payload},
          {"headers", &names.headers},
          {"destination", &names.destination},
          {"created_at", &names.created_at}};
      for (const auto& [key, field] : fields) {
        RETURN_IF_ERROR(
            GetNonEmptyString(*columns, key, fmt::format("{}{}", column_prefix, key), field));
      }
    }
    return absl::OkStatus();
  }

  absl::Status ParseMessages(const toml::table& root, MessagesConfig* out) const {
    ASSIGN_OR_RETURN(const toml::table* messages, GetSection(root, "messages", "messages", "[messages]"));
    if (messages == nullptr) return absl::OkStatus();
    RETURN_IF_ERROR(CheckKeys(*messages, "messages.", MessagesKeys(), "[messages]"));
    RETURN_IF_ERROR(GetBool(*messages, "enabled", "messages.enabled", &out->enabled));
    RETURN_IF_ERROR(GetNonEmptyString(*messages, "prefix", "messages.prefix", &out->prefix));
    RETURN_IF_ERROR(GetTopic(*messages, "messages.topic", &out->topic));
    RETURN_IF_ERROR(GetKeySource(*messages, "messages.key", &out->key));
    RETURN_IF_ERROR(GetValueFormat(*messages, "messages.value", &out->record.value));
    RETURN_IF_ERROR(GetString(*messages, "id_header", "messages.id_header", &out->record.id_header));
    // A message has no other columns: no key/timestamp/partition/tracing columns.
    out->record.tracing_column.clear();
    return absl::OkStatus();
  }

  absl::Status ParseHttp(const toml::table& root, HttpConfig* out) const {
    ASSIGN_OR_RETURN(const toml::table* http, GetSection(root, "http", "http", "[http]"));
    if (http == nullptr) return absl::OkStatus();
    RETURN_IF_ERROR(CheckKeys(*http, "http.", HttpKeys(), "[http]"));
    RETURN_IF_ERROR(GetString(*http, "listen", "http.listen", &out->listen));
    // "" or "off" turns the endpoint off.
    if (out->listen.empty() || out->listen == "off") return absl::OkStatus();
    if (const std::string problem = CheckListen(out->listen); !problem.empty()) {
      return Error(http->get("listen"),
                   fmt::format("http.listen = \"{}\": {}", out->listen, problem));
    }
    return absl::OkStatus();
  }

  absl::Status ParseSchemaRegistry(const toml::table& root, SchemaRegistryConfig* out) const {
    ASSIGN_OR_RETURN(const toml::table* reg,
                     GetSection(root, "schema_registry", "schema_registry", "[schema_registry]"));
    if (reg == nullptr) return absl::OkStatus();
    RETURN_IF_ERROR(CheckKeys(*reg, "schema_registry.", SchemaRegistryKeys(), "[schema_registry]"));
    out->enabled = true;
    RETURN_IF_ERROR(GetString(*reg, "url", "schema_registry.url", &out->url));
    if (!absl::StartsWith(out->url, "http://") && !absl::StartsWith(out->url, "https://")) {
      return Error(reg->get("url") != nullptr ? reg->get("url") : reg,
                   "schema_registry.url must be http://host[:port][/path] or https://...; for Apicurio "
                   "Registry, its Confluent-compatible API: http://host:8080/apis/ccompat/v7");
    }
    RETURN_IF_ERROR(GetString(*reg, "username", "schema_registry.username", &out->username));
    RETURN_IF_ERROR(GetString(*reg, "password", "schema_registry.password", &out->password));
    if (out->password.empty() != out->username.empty()) {
      return Error(reg, "schema_registry: set both username and password (basic auth), or neither");
    }
    RETURN_IF_ERROR(GetString(*reg, "ca_file", "schema_registry.ca_file", &out->ca_file));
    RETURN_IF_ERROR(GetString(*reg, "cert_file", "schema_registry.cert_file", &out->cert_file));
    RETURN_IF_ERROR(GetString(*reg, "key_file", "schema_registry.key_file", &out->key_file));
    if (out->cert_file.empty() != out->key_file.empty()) {
      return Error(reg, "schema_registry: set both cert_file and key_file (client certificate), or neither");
    }
    if ((!out->ca_file.empty() || !out->cert_file.empty()) && !absl::StartsWith(out->url, "https://")) {
      return Error(reg, "schema_registry: ca_file, cert_file and key_file need an https:// url");
    }
    RETURN_IF_ERROR(GetDuration(*reg, "timeout", "schema_registry.timeout", absl::Milliseconds(100),
                                absl::Seconds(30), "\"10s\"", " (a stop waits for one request at most)",
                                &out->timeout));
    if (const toml::node* node = reg->get("subject_strategy"); node != nullptr) {
      std::string text;
      RETURN_IF_ERROR(GetString(*reg, "subject_strategy", "schema_registry.subject_strategy", &text));
      absl::StatusOr<registry::SubjectStrategy> strategy = registry::ParseSubjectStrategy(text);
      if (!strategy.ok()) return Error(node, fmt::format("schema_registry.subject_strategy: {}", strategy.status().message()));
      out->subject_strategy = *strategy;
    }
    RETURN_IF_ERROR(GetBool(*reg, "auto_register", "schema_registry.auto_register", &out->auto_register));
    if (const toml::node* node = reg->get("schema_id"); node != nullptr) {
      if (!node->is_integer() || node->as_integer()->get() < 0 || node->as_integer()->get() > INT32_MAX) {
        return Error(node, "schema_registry.schema_id must be a non-negative integer (no quotes): the id "
                           "every envelope is framed with");
      }
      if (reg->get("auto_register") != nullptr && out->auto_register) {
        return Error(node, "schema_registry: schema_id and auto_register = true exclude each other; remove one");
      }
      out->auto_register = false;
      out->schema_id = static_cast<int32_t>(node->as_integer()->get());
    }
    return absl::OkStatus();
  }

  absl::Status ParseErrors(const toml::table& root, ErrorsConfig* out) const {
    ASSIGN_OR_RETURN(const toml::table* errors, GetSection(root, "errors", "errors", "[errors]"));
    if (errors == nullptr) return absl::OkStatus();
    RETURN_IF_ERROR(CheckKeys(*errors, "errors.", ErrorsKeys(), "[errors]"));
    std::string policy = "dead_letter";
    RETURN_IF_ERROR(GetString(*errors, "on_bad_event", "errors.on_bad_event", &policy));
    if (policy == "dead_letter") {
      out->on_bad_event = outbox::BadEventPolicy::kDeadLetter;
    } else if (policy == "stop") {
      out->on_bad_event = outbox::BadEventPolicy::kStop;
    } else {
      return Error(errors->get("on_bad_event"),
                   fmt::format("errors.on_bad_event = \"{}\": expected \"dead_letter\" (send bad "
                               "events to errors.dead_letter_topic and go on) or \"stop\" (halt "
                               "with the error)",
                               policy));
    }
    RETURN_IF_ERROR(GetNonEmptyString(*errors, "dead_letter_topic", "errors.dead_letter_topic",
                                      &out->dead_letter_topic));
    if (absl::Status valid = outbox::ValidateTopicName(out->dead_letter_topic); !valid.ok()) {
      return Error(errors->get("dead_letter_topic"),
                   fmt::format("errors.dead_letter_topic = \"{}\": {}", out->dead_letter_topic,
                               std::string(valid.message())));
    }
    return absl::OkStatus();
  }

  absl::Status ParseLog(const toml::table& root, LogConfig* out) const {
    ASSIGN_OR_RETURN(const toml::table* log, GetSection(root, "log", "log", "[log]"));
    if (log == nullptr) return absl::OkStatus();
    RETURN_IF_ERROR(CheckKeys(*log, "log.", LogKeys(), "[log]"));
    RETURN_IF_ERROR(GetString(*log, "level", "log.level", &out->level));
    if (out->level != "debug" && out->level != "info" && out->level != "warn" &&
        out->level != "error") {
      return Error(log->get("level"),
                   fmt::format("log.level = \"{}\": expected \"debug\", \"info\", \"warn\" or "
                               "\"error\"",
                               out->level));
    }
    RETURN_IF_ERROR(GetString(*log, "format", "log.format", &out->format));
    if (out->format != "text" && out->format != "json") {
      return Error(log->get("format"),
                   fmt::format("log.format = \"{}\": expected \"text\" or \"json\"", out->format));
    }
    return absl::OkStatus();
  }

  const EnvLookup& env_;
  const std::string label_;
};

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
  return ConfigParser(env, std::move(label)).Parse(root);
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

std::string RedactDsn(std::string_view dsn) {
  std::vector<Replacement> replacements;
  if (IsUriDsn(dsn)) {
    FindUriSecrets(dsn, &replacements);
  } else {
    for (const DsnParam& param : ScanKeywordValueDsn(dsn)) {
      if (!param.has_value) continue;
      const std::string_view raw = dsn.substr(param.value_begin, param.value_end - param.value_begin);
      if (IsSecretKeyword(param.keyword)) {
        replacements.push_back({param.value_begin, param.value_end, std::string(kMask)});
      } else if (param.keyword == "dbname") {
        // dbname may itself hold a whole connection string, password included.
        const std::string value = UnescapeDsnValue(raw);
        if (std::string redacted = RedactDsn(value); redacted != value) {
          replacements.push_back({param.value_begin, param.value_end, QuoteDsnValue(redacted)});
        }
      }
    }
  }
  std::sort(replacements.begin(), replacements.end(),
            [](const Replacement& a, const Replacement& b) { return a.begin < b.begin; });
  std::string out;
  size_t copied = 0;
  for (const Replacement& r : replacements) {
    if (r.begin < copied) continue;
    out.append(dsn.substr(copied, r.begin - copied));
    out.append(r.text);
    copied = r.end;
  }
  out.append(dsn.substr(copied));
  return out;
}

absl::Status CheckStatusInterval(absl::Duration status_interval, absl::Duration wal_sender_timeout,
                                 bool* tight) {
  *tight = false;
  if (wal_sender_timeout <= absl::ZeroDuration()) return absl::OkStatus();
  const int64_t interval_ms = absl::ToInt64Milliseconds(status_interval);
  const int64_t timeout_ms = absl::ToInt64Milliseconds(wal_sender_timeout);
  if (status_interval >= wal_sender_timeout) {
    return absl::FailedPreconditionError(fmt::format(
        "[source] status_interval = {} ms is not below the server's wal_sender_timeout = {} ms: the "
        "server would drop every idle replication connection before outboxd's next status update; "
        "set status_interval to less than half of wal_sender_timeout (e.g. \"{}ms\"), or raise "
        "wal_sender_timeout",
        interval_ms, timeout_ms, std::max<int64_t>(100, timeout_ms / 2 - 1)));
  }
  *tight = status_interval * 2 > wal_sender_timeout;
  return absl::OkStatus();
}

}  // namespace outboxd::config
