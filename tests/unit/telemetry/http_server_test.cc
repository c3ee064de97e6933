// HttpServer on a real socket on 127.0.0.1 (no other process involved).
#include "support/free_port.h"
#include "telemetry/http_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace outboxd::telemetry {
namespace {

using ::testing::HasSubstr;

using ::outboxd::test_support::FreePort;

TEST(SplitListenTest, Forms) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(SplitListen("127.0.0.1:9187", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9187);
  ASSERT_TRUE(SplitListen("[::1]:80", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 80);
  EXPECT_FALSE(SplitListen("127.0.0.1", &host, &port));
  EXPECT_FALSE(SplitListen("127.0.0.1:0", &host, &port));
  EXPECT_FALSE(SplitListen("127.0.0.1:9x", &host, &port));
  EXPECT_TRUE(HttpDisabled(""));
  EXPECT_TRUE(HttpDisabled("off"));
  EXPECT_FALSE(HttpDisabled("127.0.0.1:9187"));
}

TEST(HttpServerTest, ServesTheHandlerAndStops) {
  MetricsRegistry registry;
  std::shared_ptr<Metrics> metrics = *registry.AddStream({"app", "outboxd"});
  metrics->transactions = 7;
  std::atomic<int> calls{0};
  const int port = FreePort();
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  {
    auto server = HttpServer::Start(listen, [&](std::string_view method, std::string_view path) {
      ++calls;
      return ServeHttp(method, path, registry, false);
    });
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ((*server)->address(), listen);

    httplib::Client client("127.0.0.1", port);
    auto res = client.Get("/metrics");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_THAT(res->body, HasSubstr("outboxd_transactions_total{database=\"app\",slot=\"outboxd\"} 7\n"));
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    res = client.Get("/readyz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 503);
    EXPECT_THAT(res->body, HasSubstr("not ready"));
    res = client.Get("/nope");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 404);
    res = client.Post("/metrics", "", "text/plain");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 405);

    // A second server on the same address fails with a message saying what to do.
    auto clash = HttpServer::Start(listen, [&](std::string_view m, std::string_view p) {
      return ServeHttp(m, p, registry, false);
    });
    ASSERT_FALSE(clash.ok());
    EXPECT_EQ(clash.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(clash.status().message()), HasSubstr("cannot listen on " + listen));
    EXPECT_THAT(std::string(clash.status().message()), HasSubstr("\"off\""));
  }
  EXPECT_EQ(calls.load(), 4);
  // Stopped: the port is free again.
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(1, 0);
  EXPECT_FALSE(client.Get("/healthz"));
}

TEST(HttpServerTest, StartAndStopAtOnce) {
  MetricsRegistry registry;
  for (int i = 0; i < 20; ++i) {
    auto server = HttpServer::Start("127.0.0.1:" + std::to_string(FreePort()),
                                    [&](std::string_view m, std::string_view p) {
                                      return ServeHttp(m, p, registry, false);
                                    });
    ASSERT_TRUE(server.ok()) << server.status();
  }
}

}  // namespace
}  // namespace outboxd::telemetry
