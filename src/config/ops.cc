// [http] and [log]: how outboxd is watched.
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

const std::vector<std::string_view>& HttpKeys() {
  static const auto* keys = new std::vector<std::string_view>{"listen"};
  return *keys;
}
const std::vector<std::string_view>& LogKeys() {
  static const auto* keys = new std::vector<std::string_view>{"level", "format"};
  return *keys;
}

namespace {

bool IsValidHost(std::string_view host) {
  if (host.empty()) return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

bool IsValidIpv6(std::string_view host) {
  if (host.empty()) return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
  });
}

// "host:port" or "[ipv6]:port" with a port in 1..65535. Returns "" when valid,
// else what is wrong.
std::string CheckListen(std::string_view listen) {
  std::string_view host, port;
  if (!listen.empty() && listen[0] == '[') {
    const size_t close = listen.find(']');
    if (close == std::string_view::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return "expected \"[ipv6]:port\", e.g. \"[::1]:9187\"";
    }
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
    if (!IsValidIpv6(host)) return "the address in brackets is not an IPv6 address";
  } else {
    const size_t colon = listen.rfind(':');
    if (colon == std::string_view::npos) {
      return "expected \"host:port\", e.g. \"127.0.0.1:9187\" (\"0.0.0.0:9187\" for every interface)";
    }
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return "write an IPv6 address in brackets, e.g. \"[::1]:9187\"";
    }
    if (host.empty()) {
      return "the host is missing: write \"0.0.0.0:9187\" to listen on every interface, "
             "\"127.0.0.1:9187\" for this machine only";
    }
    if (!IsValidHost(host)) return "the host is not an IP address or host name";
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return "the port must be a number from 1 to 65535";
  }
  const int number = std::atoi(std::string(port).c_str());
  if (number < 1 || number > 65535) return "the port must be a number from 1 to 65535";
  return "";
}

}  // namespace

absl::Status ParseHttp(const Parser& p, const toml::table& root, HttpConfig* out) {
  ASSIGN_OR_RETURN(const toml::table* http, p.GetSection(root, "http", "http", "[http]"));
  if (http == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(p.CheckKeys(*http, "http.", HttpKeys(), "[http]"));
  RETURN_IF_ERROR(p.GetString(*http, "listen", "http.listen", &out->listen));
  // "" or "off" turns the endpoint off.
  if (out->listen.empty() || out->listen == "off") return absl::OkStatus();
  if (const std::string problem = CheckListen(out->listen); !problem.empty()) {
    return p.Error(http->get("listen"),
                   fmt::format("http.listen = \"{}\": {}", out->listen, problem));
  }
  return absl::OkStatus();
}

absl::Status ParseLog(const Parser& p, const toml::table& root, LogConfig* out) {
  ASSIGN_OR_RETURN(const toml::table* log, p.GetSection(root, "log", "log", "[log]"));
  if (log == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(p.CheckKeys(*log, "log.", LogKeys(), "[log]"));
  RETURN_IF_ERROR(p.GetString(*log, "level", "log.level", &out->level));
  if (out->level != "debug" && out->level != "info" && out->level != "warn" &&
      out->level != "error") {
    return p.Error(log->get("level"),
                   fmt::format("log.level = \"{}\": expected \"debug\", \"info\", \"warn\" or "
                               "\"error\"",
                               out->level));
  }
  RETURN_IF_ERROR(p.GetString(*log, "format", "log.format", &out->format));
  if (out->format != "text" && out->format != "json") {
    return p.Error(log->get("format"),
                   fmt::format("log.format = \"{}\": expected \"text\" or \"json\"", out->format));
  }
  return absl::OkStatus();
}

}  // namespace outboxd::config
