// The secret values of a config (the DSN's password and sslpassword, secret
// librdkafka properties, the schema registry's password), registered with
// AddLogSecret so that no log line can show them, whatever a library puts in
// its messages.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace outboxd::config {

std::vector<std::string> ConfigSecrets(const Config& config);
void RegisterLogSecrets(const Config& config);

}  // namespace outboxd::config
