#include "registry/schema_registry_client.h"

#include <utility>

#include "absl/strings/match.h"
#include "common/format.h"
#include "fmt/format.h"
#include "httplib.h"

namespace outboxd::registry {

namespace {

constexpr const char* kContentType = "application/vnd.schemaregistry.v1+json";

absl::Status StatusForAnswer(int status, std::string_view what, std::string_view body) {
  const std::string text = fmt::format("{}: {}", what, RegistryErrorText(status, body));
  if (status == 401 || status == 403) return absl::PermissionDeniedError(text);
  if (status == 404) return absl::NotFoundError(text);
  if (status == 409) return absl::FailedPreconditionError(text);
  if (status >= 500 || status == 408 || status == 429) return absl::UnavailableError(text);
  return absl::InvalidArgumentError(text);
}

}  // namespace

absl::StatusOr<std::unique_ptr<SchemaRegistryClient>> SchemaRegistryClient::Create(ClientOptions options,
                                                                                   telemetry::ProcessMetrics* metrics) {
  const std::string& url = options.url;
  const bool https = absl::StartsWith(url, "https://");
  if (!https && !absl::StartsWith(url, "http://")) {
    return absl::InvalidArgumentError(
        fmt::format("schema registry url \"{}\": expected http://host[:port][/path] or https://...", url));
  }
  const size_t authority_start = https ? 8 : 7;
  size_t path_start = url.find('/', authority_start);
  if (path_start == std::string::npos) path_start = url.size();
  const std::string authority = url.substr(authority_start, path_start - authority_start);
  if (authority.empty() || authority.find('@') != std::string::npos) {
    return absl::InvalidArgumentError(fmt::format(
        "schema registry url \"{}\": expected a host (credentials go in username and password, not the url)", url));
  }
  std::string prefix = url.substr(path_start);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  const std::string scheme_host_port = url.substr(0, path_start);
  std::unique_ptr<httplib::Client> http;
  if (!options.cert_file.empty()) {
    http = std::make_unique<httplib::Client>(scheme_host_port, options.cert_file, options.key_file);
  } else {
    http = std::make_unique<httplib::Client>(scheme_host_port);
  }
  if (!http->is_valid()) {
    return absl::InvalidArgumentError(fmt::format(
        "schema registry url \"{}\": cannot set up the client (a client certificate or key that does not load?)",
        url));
  }
  const auto seconds = absl::ToInt64Seconds(options.timeout);
  const auto micros = absl::ToInt64Microseconds(options.timeout) % 1000000;
  http->set_connection_timeout(seconds, micros);
  http->set_read_timeout(seconds, micros);
  http->set_write_timeout(seconds, micros);
  http->set_keep_alive(true);
  if (!options.username.empty()) http->set_basic_auth(options.username.c_str(), options.password.c_str());
  if (https) {
    http->enable_server_certificate_verification(true);
    if (!options.ca_file.empty()) http->set_ca_cert_path(options.ca_file.c_str());
  }
  return std::unique_ptr<SchemaRegistryClient>(
      new SchemaRegistryClient(std::move(options), std::move(prefix), std::move(http), metrics));
}

SchemaRegistryClient::SchemaRegistryClient(ClientOptions options, std::string prefix,
                                           std::unique_ptr<httplib::Client> http, telemetry::ProcessMetrics* metrics)
    : options_(std::move(options)), prefix_(std::move(prefix)), http_(std::move(http)), metrics_(metrics) {}

SchemaRegistryClient::~SchemaRegistryClient() = default;

void SchemaRegistryClient::Cancel() { http_->stop(); }

absl::StatusOr<SchemaRegistryClient::Answer> SchemaRegistryClient::Send(std::string_view method,
                                                                        const std::string& path,
                                                                        const std::string* body) {
  const std::string full = prefix_ + path;
  const httplib::Headers headers = {{"Accept", kContentType}};
  httplib::Result result = body != nullptr ? http_->Post(full, headers, *body, kContentType)
                                           : http_->Get(full, headers);
  const std::string what = fmt::format("schema registry {} {}{}", method, options_.url, path);
  if (!result) {
    metrics_->schema_registry_requests.Add("unreachable");
    std::string detail = httplib::to_string(result.error());
    if (result.error() == httplib::Error::SSLServerVerification) {
      detail += " (check [schema_registry] ca_file)";
    }
    return absl::UnavailableError(fmt::format("{}: no answer: {}", what, detail));
  }
  Answer answer{result->status, result->body};
  if (answer.status >= 200 && answer.status < 300) {
    metrics_->schema_registry_requests.Add("ok");
    return answer;
  }
  absl::Status status = StatusForAnswer(answer.status, what, answer.body);
  metrics_->schema_registry_requests.Add(absl::IsUnavailable(status) ? "unreachable" : "refused");
  return status;
}

absl::StatusOr<int32_t> SchemaRegistryClient::Register(std::string_view subject, std::string_view proto_text,
                                                       const std::vector<SchemaReference>& references) {
  const std::string body = RegisterSchemaBody(proto_text, references);
  absl::StatusOr<Answer> answer =
      Send("POST", fmt::format("/subjects/{}/versions", EncodePathSegment(subject)), &body);
  if (!answer.ok()) return answer.status();
  return ParseSchemaId(answer->body);
}

absl::StatusOr<int32_t> SchemaRegistryClient::LookUpVersion(std::string_view subject, std::string_view proto_text,
                                                            const std::vector<SchemaReference>& references) {
  const std::string body = RegisterSchemaBody(proto_text, references);
  absl::StatusOr<Answer> answer = Send("POST", fmt::format("/subjects/{}", EncodePathSegment(subject)), &body);
  if (!answer.ok()) return answer.status();
  return ParseSchemaVersion(answer->body);
}

absl::StatusOr<Compatibility> SchemaRegistryClient::TestCompatibility(
    std::string_view subject, std::string_view proto_text, const std::vector<SchemaReference>& references) {
  const std::string body = RegisterSchemaBody(proto_text, references);
  absl::StatusOr<Answer> answer = Send(
      "POST", fmt::format("/compatibility/subjects/{}/versions/latest?verbose=true", EncodePathSegment(subject)),
      &body);
  if (!answer.ok()) return answer.status();
  return ParseCompatibility(answer->body);
}

absl::StatusOr<int32_t> SchemaRegistryClient::LatestId(std::string_view subject) {
  absl::StatusOr<Answer> answer =
      Send("GET", fmt::format("/subjects/{}/versions/latest", EncodePathSegment(subject)), nullptr);
  if (!answer.ok()) return answer.status();
  return ParseSchemaId(answer->body);
}

absl::StatusOr<std::string> SchemaRegistryClient::CompatibilityLevel(std::string_view subject) {
  absl::StatusOr<Answer> answer = Send("GET", fmt::format("/config/{}", EncodePathSegment(subject)), nullptr);
  if (absl::IsNotFound(answer.status())) return GlobalCompatibilityLevel();
  if (!answer.ok()) return answer.status();
  return ParseCompatibilityLevel(answer->body);
}

absl::StatusOr<std::string> SchemaRegistryClient::GlobalCompatibilityLevel() {
  absl::StatusOr<Answer> answer = Send("GET", "/config", nullptr);
  if (!answer.ok()) return answer.status();
  return ParseCompatibilityLevel(answer->body);
}

}  // namespace outboxd::registry
