// [schema_registry]: envelope values framed with a registry's schema id.
#include "config/tables.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "absl/strings/match.h"
#include "common/format.h"
#include "common/status_macros.h"
#include "config/parser.h"

namespace outboxd::config {

const std::vector<std::string_view>& SchemaRegistryKeys() {
  static const auto* keys = new std::vector<std::string_view>{
      "url",     "username", "password",         "ca_file",       "cert_file",
      "key_file", "timeout", "subject_strategy", "auto_register", "schema_id"};
  return *keys;
}

absl::Status ParseSchemaRegistry(const Parser& p, const toml::table& root, SchemaRegistryConfig* out) {
  ASSIGN_OR_RETURN(const toml::table* reg,
                   p.GetSection(root, "schema_registry", "schema_registry", "[schema_registry]"));
  if (reg == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(p.CheckKeys(*reg, "schema_registry.", SchemaRegistryKeys(), "[schema_registry]"));
  out->enabled = true;
  RETURN_IF_ERROR(p.GetString(*reg, "url", "schema_registry.url", &out->url));
  if (!absl::StartsWith(out->url, "http://") && !absl::StartsWith(out->url, "https://")) {
    return p.Error(reg->get("url") != nullptr ? reg->get("url") : reg,
                   "schema_registry.url must be http://host[:port][/path] or https://...; for Apicurio "
                   "Registry, its Confluent-compatible API: http://host:8080/apis/ccompat/v7");
  }
  RETURN_IF_ERROR(p.GetString(*reg, "username", "schema_registry.username", &out->username));
  RETURN_IF_ERROR(p.GetString(*reg, "password", "schema_registry.password", &out->password));
  if (out->password.empty() != out->username.empty()) {
    return p.Error(reg, "schema_registry: set both username and password (basic auth), or neither");
  }
  RETURN_IF_ERROR(p.GetString(*reg, "ca_file", "schema_registry.ca_file", &out->ca_file));
  RETURN_IF_ERROR(p.GetString(*reg, "cert_file", "schema_registry.cert_file", &out->cert_file));
  RETURN_IF_ERROR(p.GetString(*reg, "key_file", "schema_registry.key_file", &out->key_file));
  if (out->cert_file.empty() != out->key_file.empty()) {
    return p.Error(reg, "schema_registry: set both cert_file and key_file (client certificate), or neither");
  }
  if ((!out->ca_file.empty() || !out->cert_file.empty()) && !absl::StartsWith(out->url, "https://")) {
    return p.Error(reg, "schema_registry: ca_file, cert_file and key_file need an https:// url");
  }
  RETURN_IF_ERROR(p.GetDuration(*reg, "timeout", "schema_registry.timeout", absl::Milliseconds(100),
                                absl::Seconds(30), "\"10s\"", " (a stop waits for one request at most)",
                                &out->timeout));
  if (const toml::node* node = reg->get("subject_strategy"); node != nullptr) {
    std::string text;
    RETURN_IF_ERROR(p.GetString(*reg, "subject_strategy", "schema_registry.subject_strategy", &text));
    absl::StatusOr<registry::SubjectStrategy> strategy = registry::ParseSubjectStrategy(text);
    if (!strategy.ok()) return p.Error(node, fmt::format("schema_registry.subject_strategy: {}", strategy.status().message()));
    out->subject_strategy = *strategy;
  }
  RETURN_IF_ERROR(p.GetBool(*reg, "auto_register", "schema_registry.auto_register", &out->auto_register));
  if (const toml::node* node = reg->get("schema_id"); node != nullptr) {
    if (!node->is_integer() || node->as_integer()->get() < 0 || node->as_integer()->get() > INT32_MAX) {
      return p.Error(node, "schema_registry.schema_id must be a non-negative integer (no quotes): the id "
                           "every envelope is framed with");
    }
    if (reg->get("auto_register") != nullptr && out->auto_register) {
      return p.Error(node, "schema_registry: schema_id and auto_register = true exclude each other; remove one");
    }
    out->auto_register = false;
    out->schema_id = static_cast<int32_t>(node->as_integer()->get());
  }
  return absl::OkStatus();
}

}  // namespace outboxd::config
