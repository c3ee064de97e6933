// Logging: one line per event, human-readable on a terminal ("text") or JSON
// lines ("json"). Thread-safe. Callers never pass a secret: DSNs go through
// RedactDsn first.
#pragma once

#include <string_view>
#include <utility>

#include "common/format.h"
#include "fmt/format.h"

namespace outboxd::ops {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class LogFormat { kText, kJson };

void SetLogLevel(LogLevel level);
void SetLogFormat(LogFormat format);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, std::string_view message);

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

}  // namespace outboxd::ops
