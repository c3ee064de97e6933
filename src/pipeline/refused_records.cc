#include "pipeline/refused_records.h"

namespace outboxd::pipeline {

bool RefusedRecords::Add(const RecordPosition& at, std::string_view reason, std::string_view detail,
                         bool certain) {
  if (auto it = entries_.find(at); it != entries_.end()) {
    if (certain && !it->second.certain) it->second = Refusal{std::string(reason), std::string(detail), true};
    return true;
  }
  if (entries_.size() >= kMaxEntries) return false;
  entries_.emplace(at, Refusal{std::string(reason), std::string(detail), certain});
  return true;
}

const RefusedRecords::Refusal* RefusedRecords::Find(const RecordPosition& at) const {
  auto it = entries_.find(at);
  return it == entries_.end() ? nullptr : &it->second;
}

void RefusedRecords::ForgetConfirmed(Lsn confirmed) {
  // Ordered by commit LSN first: the confirmed ones are a prefix.
  entries_.erase(entries_.begin(), entries_.lower_bound(RecordPosition{.commit_lsn = confirmed, .event = {}}));
}

}  // namespace outboxd::pipeline
