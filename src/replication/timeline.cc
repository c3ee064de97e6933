#include "replication/timeline.h"

#include <charconv>
#include <cstdint>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace outboxd::replication {
namespace {

// What of a hostile value goes into a message.
constexpr size_t kQuoted = 40;

std::string Quote(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, kQuoted)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (text.size() > kQuoted) out += "...";
  return out;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view NextToken(std::string_view* rest) {
  size_t start = 0;
  while (start < rest->size() && IsSpace((*rest)[start])) ++start;
  size_t end = start;
  while (end < rest->size() && !IsSpace((*rest)[end])) ++end;
  const std::string_view token = rest->substr(start, end - start);
  rest->remove_prefix(end);
  return token;
}

// A positive decimal 32-bit number, nothing else.
std::optional<uint32_t> ParseTimelineId(std::string_view text) {
  uint32_t value = 0;
  if (text.empty() || text.size() > 10) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0) return std::nullopt;
  return value;
}

}  // namespace

absl::StatusOr<SystemIdentity> ParseIdentifySystem(const std::vector<std::optional<std::string>>& row) {
  auto bad = [](std::string_view column, std::string_view value) {
    return absl::DataLossError(
        fmt::format("IDENTIFY_SYSTEM returned an unreadable {}: \"{}\"", column, Quote(value)));
  };
  if (row.size() < 4) {
    return absl::DataLossError(fmt::format("IDENTIFY_SYSTEM returned {} columns, expected 4", row.size()));
  }
  SystemIdentity identity;
  const std::string_view system_id = row[0].has_value() ? std::string_view(*row[0]) : std::string_view();
  // A uint64 in decimal: at most 20 digits.
  if (system_id.empty() || system_id.size() > 20 ||
      system_id.find_first_not_of("0123456789") != std::string_view::npos) {
    return bad("systemid", system_id);
  }
  identity.system_id = std::string(system_id);
  const std::optional<uint32_t> timeline =
      row[1].has_value() ? ParseTimelineId(*row[1]) : std::nullopt;
  // The rest of outboxd (state file, slot decisions) holds a timeline in an
  // int; no real server gets anywhere near 2^31 promotions.
  if (!timeline.has_value() || *timeline > static_cast<uint32_t>(INT32_MAX)) {
    return bad("timeline", row[1].value_or(""));
  }
  identity.timeline = *timeline;
  if (!row[2].has_value()) return bad("xlogpos", "NULL");
  absl::StatusOr<Lsn> xlog_pos = Lsn::Parse(*row[2]);
  if (!xlog_pos.ok()) return bad("xlogpos", *row[2]);
  identity.xlog_pos = *xlog_pos;
  identity.database = row[3].value_or("");
  return identity;
}

absl::StatusOr<std::vector<TimelineSwitch>> ParseTimelineHistory(std::string_view content, uint32_t current) {
  if (content.size() > kMaxTimelineHistoryBytes) {
    return absl::DataLossError(fmt::format("the history file of timeline {} is {} bytes, over {}: not a history file",
                                           current, content.size(), kMaxTimelineHistoryBytes));
  }
  if (content.find('\0') != std::string_view::npos) {
    return absl::DataLossError(fmt::format("the history file of timeline {} holds a NUL byte at offset {}", current,
                                           content.find('\0')));
  }
  std::vector<TimelineSwitch> history;
  size_t line_number = 0;
  while (!content.empty()) {
    const size_t newline = content.find('\n');
    std::string_view line = content.substr(0, newline);
    content.remove_prefix(newline == std::string_view::npos ? content.size() : newline + 1);
    ++line_number;
    auto bad = [&](std::string_view why) {
      return absl::DataLossError(fmt::format("the history file of timeline {}, line {} (\"{}\"): {}", current,
                                             line_number, Quote(line), why));
    };
    std::string_view rest = line;
    const std::string_view first = NextToken(&rest);
    if (first.empty() || first[0] == '#') continue;
    const std::optional<uint32_t> timeline = ParseTimelineId(first);
    if (!timeline.has_value()) return bad("expected a timeline ID");
    const std::string_view point = NextToken(&rest);
    absl::StatusOr<Lsn> switch_point = Lsn::Parse(point);
    if (point.empty() || !switch_point.ok()) return bad("expected a switch point X/X after the timeline ID");
    // The reason that may follow is free text.
    if (*timeline >= current) return bad(fmt::format("timeline {} is not an ancestor of timeline {}", *timeline, current));
    if (!history.empty() && *timeline <= history.back().timeline) return bad("timeline IDs must increase");
    if (!history.empty() && *switch_point < history.back().switch_point) {
      return bad("a switch point before the previous one");
    }
    if (history.size() == kMaxTimelineHistoryEntries) {
      return bad(fmt::format("more than {} timelines", kMaxTimelineHistoryEntries));
    }
    history.push_back({*timeline, *switch_point});
  }
  return history;
}

}  // namespace outboxd::replication
