// Logging: one line per event, human-readable on a terminal ("text") or JSON
// lines ("json": {"ts","level","msg"}). Thread-safe. Callers never pass a
// secret (DSNs go through RedactDsn first); as a second line of defence, every
// value registered with AddLogSecret is masked in every line.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "common/format.h"
#include "fmt/format.h"

namespace outboxd::telemetry {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class LogFormat { kText, kJson };

void SetLogLevel(LogLevel level);
void SetLogFormat(LogFormat format);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, std::string_view message);
// "debug", "info", "warn", "error" (lower case); false for anything else.
bool ParseLogLevel(std::string_view name, LogLevel* level);
// Masks `secret` as "********" in every later line. Values shorter than 4
// characters are ignored (masking them would garble ordinary words).
void AddLogSecret(std::string_view secret);
// The line LogLine writes (without the newline), for tests.
std::string FormatLogLine(LogLevel level, std::string_view message, LogFormat format);

template <typename... Args>
void Log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (!LogEnabled(level)) return;
  LogLine(level, fmt::format(format, std::forward<Args>(args)...));
}

template <typename... Args>
void LogDebug(fmt::format_string<Args...> f, Args&&... a) { Log(LogLevel::kDebug, f, std::forward<Args>(a)...); }
template <typename... Args>
void LogInfo(fmt::format_string<Args...> f, Args&&... a) { Log(LogLevel::kInfo, f, std::forward<Args>(a)...); }
template <typename... Args>
void LogWarn(fmt::format_string<Args...> f, Args&&... a) { Log(LogLevel::kWarn, f, std::forward<Args>(a)...); }
template <typename... Args>
void LogError(fmt::format_string<Args...> f, Args&&... a) { Log(LogLevel::kError, f, std::forward<Args>(a)...); }

}  // namespace outboxd::telemetry
