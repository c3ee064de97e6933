#include "telemetry/logging.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>
#include <algorithm>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace outboxd::telemetry {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};
std::mutex g_mu;
std::mutex g_secrets_mu;
std::vector<std::string>* g_secrets = new std::vector<std::string>();  // never freed: used until exit
std::atomic<bool> g_have_secrets{false};

void MaskSecrets(std::string* text) {
  if (!g_have_secrets.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(g_secrets_mu);
  for (const std::string& secret : *g_secrets) {
    for (size_t at = text->find(secret); at != std::string::npos; at = text->find(secret, at + 8)) {
      text->replace(at, secret.size(), "********");
    }
  }
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
size_t Utf8Length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
    return 0;
  }
  return n;
}

// A JSON string literal; invalid UTF-8 becomes U+FFFD so every line parses.
void AppendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out->append(fmt::format("\\u{:04x}", c));
        } else if (c < 0x80) {
          out->push_back(static_cast<char>(c));
        } else if (const size_t n = Utf8Length(s, i); n > 0) {
          out->append(s.substr(i, n));
          i += n - 1;
        } else {
          out->append("\\ufffd");
        }
    }
  }
  out->push_back('"');
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }
bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

bool ParseLogLevel(std::string_view name, LogLevel* level) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (name == LevelName(l)) {
      *level = l;
      return true;
    }
  }
  return false;
}

void AddLogSecret(std::string_view secret) {
  if (secret.size() < 4) return;
  std::lock_guard<std::mutex> lock(g_secrets_mu);
  for (const std::string& known : *g_secrets) {
    if (known == secret) return;
  }
  g_secrets->emplace_back(secret);
  // Longest first, so that a secret containing another is masked whole.
  std::sort(g_secrets->begin(), g_secrets->end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  g_have_secrets.store(true, std::memory_order_release);
}

std::string FormatLogLine(LogLevel level, std::string_view message, LogFormat format) {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  std::string text(message);
  MaskSecrets(&text);
  std::string line;
  if (format == LogFormat::kJson) {
    line = "{\"ts\":\"" + ts + "\",\"level\":\"" + LevelName(level) + "\",\"msg\":";
    AppendJsonString(&line, text);
    line += "}";
  } else {
    // Multi-line messages (a server's DETAIL/HINT) stay one log line.
    for (char& c : text) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    line = ts + ' ' + LevelName(level) + ' ' + text;
  }
  return line;
}

void LogLine(LogLevel level, std::string_view message) {
  std::string line = FormatLogLine(level, message, static_cast<LogFormat>(g_format.load()));
  line += '\n';
  std::lock_guard<std::mutex> lock(g_mu);
  fwrite(line.data(), 1, line.size(), stderr);
  fflush(stderr);
}

}  // namespace outboxd::telemetry
