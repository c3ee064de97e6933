// PostgreSQL timestamps: microseconds since 2000-01-01 00:00:00 UTC, as sent in
// pgoutput and replication frames. Conversion to and from absl::Time.
#pragma once

#include <cstdint>

#include "absl/time/time.h"

namespace outboxd {

// Seconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
inline constexpr int64_t kPgEpochOffsetSeconds = 946684800;

inline absl::Time PgTimestampToTime(int64_t pg_micros) {
  return absl::FromUnixMicros(pg_micros + kPgEpochOffsetSeconds * 1000000);
}

inline int64_t TimeToPgTimestamp(absl::Time t) {
  return absl::ToUnixMicros(t) - kPgEpochOffsetSeconds * 1000000;
}

}  // namespace outboxd
