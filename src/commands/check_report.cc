#include "commands/check_report.h"

#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace outboxd::commands {

std::string_view StatusName(CheckStatus status) {
  switch (status) {
    case CheckStatus::kWarn:
      return "warn";
    case CheckStatus::kFail:
      return "fail";
    case CheckStatus::kOk:
      break;
  }
  return "ok";
}

void CheckReport::Block(std::string_view title) {
  if (text_ != nullptr) *text_ << fmt::format("\n== {}\n", title);
}

void CheckReport::Add(CheckStatus status, std::string_view name, std::string_view message, std::string_view hint) {
  static constexpr std::string_view kLabel[] = {"ok", "WARN", "FAIL"};
  findings_.push_back(Finding{std::string(name), status, std::string(message), std::string(hint), database_});
  ++counts_[static_cast<int>(status)];
  if (text_ == nullptr) return;
  *text_ << fmt::format("{:<5} {:<12} {}\n", kLabel[static_cast<int>(status)], name, message);
  if (!hint.empty()) *text_ << fmt::format("{:<5} {:<12} -> {}\n", "", "", hint);
}

void CheckReport::PrintSummary(std::ostream& out) const {
  out << fmt::format("{} ok, {} warning(s), {} failure(s)\n", count(CheckStatus::kOk), count(CheckStatus::kWarn),
                     count(CheckStatus::kFail));
}

void CheckReport::PrintJson(std::ostream& out) const {
  nlohmann::ordered_json checks = nlohmann::ordered_json::array();
  for (const Finding& f : findings_) {
    nlohmann::ordered_json item = {{"name", f.name}, {"status", StatusName(f.status)}, {"message", f.message},
                           {"hint", f.hint}};
    if (!f.database.empty()) item["database"] = f.database;
    checks.push_back(std::move(item));
  }
  const nlohmann::ordered_json doc = {
      {"checks", std::move(checks)},
      {"summary",
       {{"ok", count(CheckStatus::kOk)}, {"warn", count(CheckStatus::kWarn)}, {"fail", count(CheckStatus::kFail)}}}};
  // Server messages are not always UTF-8: replace, never throw.
  out << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace outboxd::commands
