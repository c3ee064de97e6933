// Figures for the exposition choice of issue 21 (hand-written text over
// atomics vs prometheus-cpp 1.0's core library): the cost per event of what
// the pipeline does per acknowledged event (a labelled counter by topic, a
// gauge, a histogram observation), and the cost of one scrape of 20 streams.
// Prints figures; asserts nothing. Built only as `metrics_bench`, with the
// prometheus-cpp part when Debian's prometheus-cpp-dev is installed.
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "telemetry/metrics.h"

#ifdef OUTBOXD_HAVE_PROMETHEUS_CPP
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kEvents = 5'000'000;
constexpr int kStreams = 20;
constexpr int kScrapes = 200;
const char* const kTopics[] = {"outbox.event.Order", "outbox.event.Invoice", "outbox.event.Shipment"};

double NsPer(Clock::duration d, int n) { return std::chrono::duration<double, std::nano>(d).count() / n; }
size_t HeapInUse() { return mallinfo2().uordblks; }

void Ours() {
  using namespace outboxd::telemetry;
  MetricsRegistry registry("bench");
  const size_t heap_before = HeapInUse();
  std::vector<std::shared_ptr<Metrics>> streams;
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(*registry.AddStream({"db" + std::to_string(i), "outboxd_db" + std::to_string(i)}));
    for (const char* topic : kTopics) streams.back()->events_published.Add(topic, 1);
  }
  const size_t heap = HeapInUse() - heap_before;
  Metrics& m = *streams[0];
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kEvents; ++i) {
    m.events_published.Add(kTopics[i % 3]);
    m.inflight_events.store(i & 1023, std::memory_order_relaxed);
    m.publish_latency.Observe(0.003);
  }
  const double per_event = NsPer(Clock::now() - start, kEvents);
  size_t bytes = 0;
  const Clock::time_point scrape_start = Clock::now();
  for (int i = 0; i < kScrapes; ++i) bytes = registry.RenderPrometheus().size();
  const double per_scrape_us = NsPer(Clock::now() - scrape_start, kScrapes) / 1000;
  std::printf("hand-written (atomics, LabeledCounter): %.1f ns per event; scrape of %d streams %.1f us (%zu bytes); "
              "heap for %d streams %zu bytes\n",
              per_event, kStreams, per_scrape_us, bytes, kStreams, heap);
}

#ifdef OUTBOXD_HAVE_PROMETHEUS_CPP
void PrometheusCpp() {
  auto registry = std::make_shared<prometheus::Registry>();
  const size_t heap_before = HeapInUse();
  auto& published = prometheus::BuildCounter().Name("outboxd_events_published_total").Help("x").Register(*registry);
  auto& inflight = prometheus::BuildGauge().Name("outboxd_inflight_events").Help("x").Register(*registry);
  auto& latency = prometheus::BuildHistogram().Name("outboxd_publish_latency_seconds").Help("x").Register(*registry);
  const prometheus::Histogram::BucketBoundaries bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                       0.25,  0.5,    1,     2.5,  5,     10,   30};
  struct Stream {
    prometheus::Gauge* inflight;
    prometheus::Histogram* latency;
    absl::flat_hash_map<std::string, prometheus::Counter*> by_topic;
  };
  std::vector<Stream> streams;
  for (int i = 0; i < kStreams; ++i) {
    const std::string db = "db" + std::to_string(i), slot = "outboxd_db" + std::to_string(i);
    Stream s{&inflight.Add({{"database", db}, {"slot", slot}}),
             &latency.Add({{"database", db}, {"slot", slot}}, bounds), {}};
    for (const char* topic : kTopics) {
      s.by_topic[topic] = &published.Add({{"database", db}, {"slot", slot}, {"topic", topic}});
      s.by_topic[topic]->Increment();
    }
    streams.push_back(std::move(s));
  }
  const size_t heap = HeapInUse() - heap_before;

  // As a pipeline would use it without a cache of its own: Family::Add per event.
  Clock::time_point start = Clock::now();
  for (int i = 0; i < kEvents; ++i) {
    published.Add({{"database", "db0"}, {"slot", "outboxd_db0"}, {"topic", kTopics[i % 3]}}).Increment();
    streams[0].inflight->Set(i & 1023);
    streams[0].latency->Observe(0.003);
  }
  const double uncached = NsPer(Clock::now() - start, kEvents);
  // With the counter per topic cached by the caller (what LabeledCounter does inside).
  start = Clock::now();
  for (int i = 0; i < kEvents; ++i) {
    streams[0].by_topic.find(kTopics[i % 3])->second->Increment();
    streams[0].inflight->Set(i & 1023);
    streams[0].latency->Observe(0.003);
  }
  const double cached = NsPer(Clock::now() - start, kEvents);
  size_t bytes = 0;
  const prometheus::TextSerializer serializer;
  const Clock::time_point scrape_start = Clock::now();
  for (int i = 0; i < kScrapes; ++i) bytes = serializer.Serialize(registry->Collect()).size();
  const double per_scrape_us = NsPer(Clock::now() - scrape_start, kScrapes) / 1000;
  std::printf("prometheus-cpp 1.0 core: %.1f ns per event (Family::Add per event), %.1f ns (counter cached per "
              "topic); scrape of %d streams (3 families only) %.1f us (%zu bytes); heap %zu bytes\n",
              uncached, cached, kStreams, per_scrape_us, bytes, heap);
}
#endif

}  // namespace

int main() {
  Ours();
#ifdef OUTBOXD_HAVE_PROMETHEUS_CPP
  PrometheusCpp();
#else
  std::printf("prometheus-cpp: not installed (apt-get install prometheus-cpp-dev, then reconfigure)\n");
#endif
  return 0;
}
