#include "pipeline/refused_records.h"

namespace outboxd::pipeline {

bool RefusedRecords::Add(const RecordPosition& at, std::string_view reason, std::string_view detail) {
  if (entries_.contains(at)) return true;
  if (entries_.size() >= kMaxEntries) return false;
  entries_.emplace(at, Refusal{std::string(reason), std::string(detail)});
  return true;
}

const RefusedRecords::Refusal* RefusedRecords::Find(const RecordPosition& at) const {
  auto it = entries_.find(at);
  return it == entries_.end() ? nullptr : &it->second;
}

void RefusedRecords::ForgetConfirmed(Lsn confirmed) {
  // Ordered by commit LSN first: the confirmed ones are a prefix.
  entries_.erase(entries_.begin(), entries_.lower_bound(RecordPosition{.commit_lsn = confirmed}));
}

}  // namespace outboxd::pipeline
