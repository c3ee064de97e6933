// Lsn: a PostgreSQL write-ahead-log position. Never a string, never a bare
// uint64_t: parse and format only through this type ("16/B374D848").
#pragma once

#include <compare>
#include <ostream>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace outboxd {

class Lsn {
 public:
  constexpr Lsn() = default;
  constexpr explicit Lsn(uint64_t value) : value_(value) {}

  static constexpr Lsn Invalid() { return Lsn(); }
  // Parses PostgreSQL's "X/X" text form (hex high word / hex low word).
  static absl::StatusOr<Lsn> Parse(std::string_view text);

  constexpr uint64_t value() const { return value_; }
  constexpr bool valid() const { return value_ != 0; }
  // "X/X", as PostgreSQL prints pg_lsn.
  std::string ToString() const;

  friend constexpr auto operator<=>(Lsn, Lsn) = default;

  friend std::ostream& operator<<(std::ostream& os, Lsn lsn) { return os << lsn.ToString(); }

  template <typename Sink>
  friend void AbslStringify(Sink& sink, Lsn lsn) {
    sink.Append(lsn.ToString());
  }

 private:
  uint64_t value_ = 0;
};

}  // namespace outboxd
