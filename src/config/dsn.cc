#include "config/dsn.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include "absl/status/statusor.h"

#include "config/config.h"
#include "config/parser.h"

namespace outboxd::config {
namespace {
constexpr std::string_view kMask = "********";
std::string QuoteDsnValue(std::string_view value);
bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
}  // namespace

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

std::string DsnDatabase(std::string_view dsn) {
  const auto options = LibpqOptions(dsn);
  std::string user;
  if (options.has_value()) {
    for (const auto& [keyword, value] : *options) {
      if (keyword == "dbname" && !value.empty()) return value;
      if (keyword == "user") user = value;
    }
  }
  // libpq's own defaults (PGDATABASE, PGUSER, the login name), as it would connect.
  std::string default_db, default_user;
  if (PQconninfoOption* defaults = PQconndefaults(); defaults != nullptr) {
    for (const PQconninfoOption* o = defaults; o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      if (std::string_view(o->keyword) == "dbname") default_db = o->val;
      if (std::string_view(o->keyword) == "user") default_user = o->val;
    }
    PQconninfoFree(defaults);
  }
  if (!default_db.empty()) return default_db;
  return !user.empty() ? user : default_user;
}

absl::StatusOr<std::string> DsnWithDatabase(std::string_view dsn, std::string_view database) {
  auto options = LibpqOptions(dsn);
  if (!options.has_value()) {
    return absl::InvalidArgumentError("libpq cannot parse [source] dsn; run outboxd check for libpq's reason");
  }
  bool replaced = false;
  for (auto& [keyword, value] : *options) {
    if (keyword == "dbname") {
      value = std::string(database);
      replaced = true;
    }
  }
  if (!replaced) options->emplace_back("dbname", std::string(database));
  std::string out;
  for (const auto& [keyword, value] : *options) {
    if (!out.empty()) out += ' ';
    out += keyword;
    out += '=';
    out += QuoteDsnValue(value);
  }
  return out;
}

namespace {

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

}  // namespace

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

}  // namespace outboxd::config
