// HttpServer: the shell that serves /metrics, /healthz and /readyz over HTTP
// (cpp-httplib) on its own small thread pool, so a slow scrape never blocks the
// pipeline. The answers themselves come from a Handler (see endpoints.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"
#include "telemetry/endpoints.h"

namespace httplib {
class Server;
}

namespace outboxd::telemetry {

class HttpServer {
 public:
  // Called on a server thread for every request; must be thread-safe.
  using Handler = std::function<HttpResponse(std::string_view method, std::string_view path)>;

  // Binds `listen` ("host:port" or "[ipv6]:port", already validated by the
  // config) and serves in the background. UnavailableError naming the address
  // when it cannot bind (in use, not a local address, permission).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(std::string_view listen, Handler handler);

  // Stops accepting, finishes the requests being served, joins the threads.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  const std::string& address() const { return address_; }

 private:
  HttpServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string address_;
};

// Splits a validated listen address into host (brackets removed) and port.
bool SplitListen(std::string_view listen, std::string* host, int* port);

// True when [http] listen turns the endpoint off: "" or "off".
inline bool HttpDisabled(std::string_view listen) { return listen.empty() || listen == "off"; }

}  // namespace outboxd::telemetry
