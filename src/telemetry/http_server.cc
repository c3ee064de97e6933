#include "telemetry/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>

#include "fmt/format.h"

namespace outboxd::telemetry {
namespace {

// Scrapes and probes are tiny and rare; two workers are plenty and keep the
// process lean (cpp-httplib defaults to one per core, at least eight).
constexpr int kWorkerThreads = 2;

}  // namespace

bool SplitListen(std::string_view listen, std::string* host, int* port) {
  size_t colon;
  if (!listen.empty() && listen.front() == '[') {
    const size_t close = listen.find(']');
    if (close == std::string_view::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return false;
    }
    *host = std::string(listen.substr(1, close - 1));
    colon = close + 1;
  } else {
    colon = listen.rfind(':');
    if (colon == std::string_view::npos) return false;
    *host = std::string(listen.substr(0, colon));
  }
  const std::string_view digits = listen.substr(colon + 1);
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *port);
  return ec == std::errc() && end == digits.data() + digits.size() && *port > 0 && *port < 65536;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(std::string_view listen,
                                                              Handler handler) {
  std::string host;
  int port = 0;
  if (!SplitListen(listen, &host, &port)) {
    return absl::InvalidArgumentError(
        fmt::format("http.listen = \"{}\": expected \"host:port\" or \"[ipv6]:port\"", listen));
  }
  auto server = std::unique_ptr<HttpServer>(new HttpServer());
  server->address_ = std::string(listen);
  server->server_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *server->server_;
  http.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  // cpp-httplib's default also sets SO_REUSEPORT, which would let a second
  // outboxd on this host bind the same port and take half the scrapes. Only
  // SO_REUSEADDR: a restart can rebind at once, a clash fails loudly.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http.set_read_timeout(5, 0);
  http.set_write_timeout(5, 0);
  http.set_keep_alive_timeout(5);
  http.set_payload_max_length(64 * 1024);
  // One catch-all route: the Handler decides, so routing stays testable.
  // cpp-httplib answers HEAD with the GET handler and drops the body.
  auto serve = [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    HttpResponse out = handler(req.method, req.path);
    res.status = out.status;
    res.set_content(std::move(out.body), out.content_type.c_str());
  };
  http.Get(".*", serve);
  http.Post(".*", serve);
  http.Put(".*", serve);
  http.Delete(".*", serve);
  errno = 0;
  if (!http.bind_to_port(host, port)) {
    const int error = errno;
    return absl::UnavailableError(fmt::format(
        "cannot listen on {} for /metrics, /healthz and /readyz{}: another process may use the "
        "port, or the address is not local; set [http] listen to a free address, or \"off\"",
        listen, error != 0 ? fmt::format(" ({})", std::strerror(error)) : ""));
  }
  server->thread_ = std::thread([&http] { http.listen_after_bind(); });
  return server;
}

HttpServer::~HttpServer() {
  // stop() is a no-op until the listen loop runs; wait for it (it starts at once).
  if (server_ && thread_.joinable()) {
    for (int i = 0; i < 5000 && !server_->is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace outboxd::telemetry
