#include "pipeline/sleep.h"

#include <poll.h>

#include <algorithm>

#include "absl/time/clock.h"

namespace outboxd::pipeline {

void SleepUnlessStopped(absl::Duration d, const std::atomic<bool>& stop, int stop_fd) {
  const absl::Time until = absl::Now() + d;
  while (!stop.load() && absl::Now() < until) {
    const absl::Duration left = until - absl::Now();
    if (stop_fd >= 0) {
      pollfd pfd{stop_fd, POLLIN, 0};
      poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)))));
    } else {
      absl::SleepFor(std::min(absl::Milliseconds(50), left));
    }
  }
}

}  // namespace outboxd::pipeline
