// The checks that span tables: a key whose valid range depends on another
// table's key. Each table's own checks stay in its file (config/tables.h).
#include "config/tables.h"

namespace outboxd::config {

absl::Status Validate(const Parser& p, const toml::table& root, const Config& config) {
  return absl::OkStatus();
}

}  // namespace outboxd::config
