// A wait that a stop ends early: the relay's backoff and the pipeline's
// exactly-once transaction gap.
#pragma once

#include <atomic>

#include "absl/time/time.h"

namespace outboxd::pipeline {

// Sleeps `d` of real time, woken at once by the stop signal's descriptor
// (or, without one, within 50 ms of the stop flag).
void SleepUnlessStopped(absl::Duration d, const std::atomic<bool>& stop, int stop_fd);

}  // namespace outboxd::pipeline
