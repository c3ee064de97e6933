#include "config/log_secrets.h"

#include <libpq-fe.h>

#include <string_view>

#include "kafka/rdkafka_sink.h"
#include "telemetry/logging.h"

namespace outboxd::config {

std::vector<std::string> ConfigSecrets(const Config& config) {
  std::vector<std::string> secrets;
  // libpq's own parser, so key=value and URI DSNs read exactly as libpq reads them.
  for (const std::string* dsn : {&config.source.dsn, &config.source.standby_dsn, &config.source.primary_dsn}) {
    if (dsn->empty()) continue;
    char* error = nullptr;
    if (PQconninfoOption* options = PQconninfoParse(dsn->c_str(), &error)) {
      for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
        const std::string_view keyword = o->keyword;
        if ((keyword == "password" || keyword == "sslpassword") && o->val != nullptr && *o->val) {
          secrets.emplace_back(o->val);
        }
      }
      PQconninfoFree(options);
    }
    if (error != nullptr) PQfreemem(error);
  }
  for (const auto& [name, value] : config.kafka.properties) {
    if (kafka::RdKafkaSink::IsSecretProperty(name) && !value.empty()) secrets.push_back(value);
  }
  if (!config.schema_registry.password.empty()) secrets.push_back(config.schema_registry.password);
  return secrets;
}

void RegisterLogSecrets(const Config& config) {
  for (const std::string& secret : ConfigSecrets(config)) telemetry::AddLogSecret(secret);
}

}  // namespace outboxd::config
