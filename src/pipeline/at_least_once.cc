#include "pipeline/at_least_once.h"

#include "common/time.h"

namespace outboxd::pipeline {

void AtLeastOnceMode::OnAcknowledged(int64_t commit_time) {
  if (commit_time == 0) return;
  session_->metrics().publish_latency.Observe(
      absl::ToDoubleSeconds(session_->Now() - PgTimestampToTime(commit_time)));
}

}  // namespace outboxd::pipeline
