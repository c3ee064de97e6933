// The report of `outboxd check`: one finding per check (name, status,
// message, what to do, and the database it is about), printed as text as it
// is found (the output users know: "ok    <check>  <what>", then "-> <what to
// do>" under a WARN or FAIL, one block per database when the config names
// several) or as one JSON document at the end (`check --json`).
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace outboxd::commands {

enum class CheckStatus { kOk, kWarn, kFail };

struct Finding {
  std::string name;      // the check: connect, privileges, publication, slot, kafka, ...
  CheckStatus status = CheckStatus::kOk;
  std::string message;   // what was found
  std::string hint;      // what to do; empty for ok
  std::string database;  // the database it is about; empty for cluster, Kafka and registry checks
};

class CheckReport {
 public:
  // `text` non-null: each finding is printed there as it is added.
  explicit CheckReport(std::ostream* text) : text_(text) {}

  // Findings added from now on are about `database` ("" for none).
  void SetDatabase(std::string database) { database_ = std::move(database); }
  // A block header in the text output ("== <title>"); nothing in JSON.
  void Block(std::string_view title);

  void Add(CheckStatus status, std::string_view name, std::string_view message, std::string_view hint = "");
  void Ok(std::string_view name, std::string_view message) { Add(CheckStatus::kOk, name, message); }
  void Warn(std::string_view name, std::string_view message, std::string_view hint) {
    Add(CheckStatus::kWarn, name, message, hint);
  }
  void Fail(std::string_view name, std::string_view message, std::string_view hint = "") {
    Add(CheckStatus::kFail, name, message, hint);
  }

  const std::vector<Finding>& findings() const { return findings_; }
  int count(CheckStatus status) const { return counts_[static_cast<int>(status)]; }
  bool failed() const { return count(CheckStatus::kFail) > 0; }

  // The text summary line: "N ok, N warning(s), N failure(s)".
  void PrintSummary(std::ostream& out) const;
  // {"checks": [{"name", "status" (ok|warn|fail), "message", "hint",
  // "database" (where it applies)}...], "summary": {"ok", "warn", "fail"}}.
  void PrintJson(std::ostream& out) const;

 private:
  std::ostream* text_;
  std::string database_;
  std::vector<Finding> findings_;
  int counts_[3] = {0, 0, 0};
};

std::string_view StatusName(CheckStatus status);  // ok, warn, fail

}  // namespace outboxd::commands
