// fmt support for absl types. Debian 12's abseil keeps its own absl::string_view
// (ABSL_OPTION_USE_STD_STRING_VIEW 0), which fmt cannot format by itself, and
// Status::message() returns one.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "fmt/format.h"

#ifndef ABSL_USES_STD_STRING_VIEW
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<std::string_view> {
  auto format(absl::string_view s, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(std::string_view(s.data(), s.size()), ctx);
  }
};
#endif

template <>
struct fmt::formatter<absl::Status> : fmt::formatter<std::string_view> {
  auto format(const absl::Status& s, fmt::format_context& ctx) const {
    const std::string text = s.ToString();
    return fmt::formatter<std::string_view>::format(text, ctx);
  }
};
