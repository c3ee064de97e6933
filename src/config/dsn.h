// Connection strings as libpq reads them (PQconninfoParse), and their
// redaction for logs (RedactDsn, in config.h).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outboxd::config {

// The options a DSN sets explicitly (no defaults, no environment), as libpq
// reads them; nullopt when libpq rejects the string.
std::optional<std::vector<std::pair<std::string, std::string>>> LibpqOptions(std::string_view dsn);

}  // namespace outboxd::config
