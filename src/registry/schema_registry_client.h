// SchemaRegistryClient: the HTTP shell around a Confluent-compatible schema
// registry REST API (Confluent Schema Registry, Apicurio's /apis/ccompat/v7,
// Redpanda). Blocking calls, each bounded by the request timeout; the JSON
// bodies and the wire format are in registry/wire_format.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "registry/wire_format.h"
#include "telemetry/metrics.h"

namespace httplib { class Client; }

namespace outboxd::registry {

struct ClientOptions {
  std::string url;  // http(s)://host[:port][/path prefix]
  std::string username;
  std::string password;
  std::string ca_file;    // PEM CA bundle; empty: the system's
  std::string cert_file;  // PEM client certificate (mutual TLS), with key_file
  std::string key_file;
  absl::Duration timeout = absl::Seconds(10);
};

// Errors of every call: UnavailableError when the registry does not answer in
// time, the connection fails, or it answers 5xx (transient: retry later);
// PermissionDeniedError for 401/403; NotFoundError for 404;
// FailedPreconditionError for 409 (incompatible schema); InvalidArgumentError
// for 422 (invalid schema) and other 4xx. Messages carry the registry's words.
class SchemaRegistryClient {
 public:
  // InvalidArgumentError for a URL that is not http(s)://host[:port][/path].
  static absl::StatusOr<std::unique_ptr<SchemaRegistryClient>> Create(ClientOptions options,
                                                                      telemetry::ProcessMetrics* metrics);
  ~SchemaRegistryClient();

  // POST /subjects/{subject}/versions: registers (or finds) the schema; its id.
  absl::StatusOr<int32_t> Register(std::string_view subject, std::string_view proto_text,
                                   const std::vector<SchemaReference>& references);
  // POST /subjects/{subject}: the version of this schema under the subject.
  absl::StatusOr<int32_t> LookUpVersion(std::string_view subject, std::string_view proto_text,
                                        const std::vector<SchemaReference>& references);
  // POST /compatibility/subjects/{subject}/versions/latest?verbose=true:
  // whether the subject's compatibility level lets this schema follow its
  // latest version. NotFoundError when the subject has no version.
  absl::StatusOr<Compatibility> TestCompatibility(std::string_view subject, std::string_view proto_text,
                                                  const std::vector<SchemaReference>& references);
  // GET /subjects/{subject}/versions/latest: the id of the latest version.
  absl::StatusOr<int32_t> LatestId(std::string_view subject);
  // GET /config/{subject}, falling back to the global GET /config when the
  // subject has no level of its own.
  absl::StatusOr<std::string> CompatibilityLevel(std::string_view subject);
  // GET /config: the registry's default level.
  absl::StatusOr<std::string> GlobalCompatibilityLevel();

  const std::string& url() const { return options_.url; }

  // Ends the request in progress, from another thread: it fails at once as
  // unreachable (for a sink dropped while its lookup waits on the registry).
  // Later requests go out as usual.
  void Cancel();

 private:
  SchemaRegistryClient(ClientOptions options, std::string prefix, std::unique_ptr<httplib::Client> http,
                       telemetry::ProcessMetrics* metrics);
  struct Answer {
    int status = 0;
    std::string body;
  };
  absl::StatusOr<Answer> Send(std::string_view method, const std::string& path, const std::string* body);

  ClientOptions options_;
  std::string prefix_;  // the URL's path, without a trailing slash
  std::unique_ptr<httplib::Client> http_;
  telemetry::ProcessMetrics* metrics_;
};

}  // namespace outboxd::registry
