// bench_consumer: the independent Kafka reader of the benchmark harness (bench/bench.sh).
// It shares no code with outboxd: it decodes only the bytes of outbox.v1.Envelope it needs
// (source.commit_time, fields 9 -> 4) with its own protobuf wire reader.
//
//   bench_consumer latency   --brokers B --topic T [--expect N] [--idle-ms MS] [--max-s S]
//                            [--cdf FILE] [--warm-s S] [--timeline FILE]
//                            [--isolation read_committed|read_uncommitted]
//       Creates T if missing (1 partition), reads it from the beginning, and for every record
//       takes receive time (CLOCK_REALTIME) minus the envelope's commit time. Prints "ready"
//       once its fetcher has reached the end of the partition, then at the end one line:
//         count=N first_recv_ns=T p50_ms=.. p99_ms=.. p999_ms=.. max_ms=..
//           warm_count=N warm_p50_ms=.. warm_p99_ms=.. warm_max_ms=..
//       Records committed within --warm-s seconds of the first record's commit are the warm-up:
//       counted and summarised apart (warm_*), left out of the steady percentiles.
//       Stops after N records, after MS of silence following the first record, or after S s.
//       --cdf writes "percentile latency_ms" rows for plotting (steady records).
//       --timeline writes one row per second of commit time, from the first commit:
//         "unix_second second count p50_ms p99_ms max_ms", to find where a tail comes from.
//       --isolation: read_committed (the default, set explicitly: librdkafka's default too) sees
//       a record of a transactional producer (outboxd's exactly-once mode) only after its Kafka
//       transaction committed, so the latency includes the wait for that commit; records of a
//       non-transactional producer are visible at once under either level.
//   bench_consumer watermark --brokers B --topic T --expect N [--max-s S]
//       Polls the topic's high watermarks (all partitions) every 20 ms until they add up to N;
//       prints "first_ns=T last_ns=T count=N" (wall clock when the first record and the Nth were
//       there). After S seconds it prints how far it got with "partial=1" and exits 3.
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "bench_consumer: %s\n", what.c_str());
  std::exit(1);
}

// Minimal protobuf wire reader: varints and length-delimited fields only need skipping.
bool ReadVarint(std::string_view& in, uint64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const uint8_t b = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *out = v;
      return true;
    }
  }
  return false;
}

// Finds length-delimited field `number` in `msg`.
bool FindField(std::string_view msg, uint32_t number, std::string_view* out) {
  while (!msg.empty()) {
    uint64_t tag;
    if (!ReadVarint(msg, &tag)) return false;
    const uint32_t field = static_cast<uint32_t>(tag >> 3);
    const int wire = static_cast<int>(tag & 7);
    uint64_t v;
    switch (wire) {
      case 0:
        if (!ReadVarint(msg, &v)) return false;
        break;
      case 1:
        if (msg.size() < 8) return false;
        msg.remove_prefix(8);
        break;
      case 5:
        if (msg.size() < 4) return false;
        msg.remove_prefix(4);
        break;
      case 2:
        if (!ReadVarint(msg, &v) || v > msg.size()) return false;
        if (field == number) {
          *out = msg.substr(0, v);
          return true;
        }
        msg.remove_prefix(v);
        break;
      default:
        return false;
    }
  }
  return false;
}

// Envelope.source (9) .commit_time (4) as Unix nanoseconds; false if absent or malformed.
bool CommitTimeNs(std::string_view envelope, int64_t* out) {
  std::string_view source, ts;
  if (!FindField(envelope, 9, &source) || !FindField(source, 4, &ts)) return false;
  uint64_t seconds = 0, nanos = 0;
  while (!ts.empty()) {
    uint64_t tag, v;
    if (!ReadVarint(ts, &tag) || (tag & 7) != 0 || !ReadVarint(ts, &v)) return false;
    if ((tag >> 3) == 1) seconds = v;
    if ((tag >> 3) == 2) nanos = v;
  }
  *out = static_cast<int64_t>(seconds) * 1000000000 + static_cast<int64_t>(nanos);
  return true;
}

struct Args {
  std::string mode, brokers, topic, cdf, timeline;
  std::string isolation = "read_committed";
  long long expect = 0;
  double warm_s = 0;
  long long idle_ms = 5000;
  double max_s = 600;
};

Args Parse(int argc, char** argv) {
  if (argc < 2) Die("usage: bench_consumer latency|watermark --brokers B --topic T ...");
  Args a;
  a.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--brokers") a.brokers = v;
    else if (k == "--topic") a.topic = v;
    else if (k == "--expect") a.expect = std::atoll(v.c_str());
    else if (k == "--idle-ms") a.idle_ms = std::atoll(v.c_str());
    else if (k == "--max-s") a.max_s = std::atof(v.c_str());
    else if (k == "--cdf") a.cdf = v;
    else if (k == "--timeline") a.timeline = v;
    else if (k == "--warm-s") a.warm_s = std::atof(v.c_str());
    else if (k == "--isolation") a.isolation = v;
    else Die("unknown option " + k);
  }
  if (a.brokers.empty() || a.topic.empty()) Die("--brokers and --topic are required");
  return a;
}

rd_kafka_t* NewClient(rd_kafka_type_t type, const Args& a) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const char* k, const char* v) {
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) Die(err);
  };
  set("bootstrap.servers", a.brokers.c_str());
  if (type == RD_KAFKA_CONSUMER) {
    set("group.id", "outboxd-bench");  // required by librdkafka; no offsets are committed
    set("enable.auto.commit", "false");
    set("fetch.wait.max.ms", "5");
    set("fetch.min.bytes", "1");
    set("fetch.error.backoff.ms", "10");
    set("allow.auto.create.topics", "true");
    set("enable.partition.eof", "true");
    set("isolation.level", a.isolation.c_str());
  }
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
  if (rk == nullptr) Die(err);
  return rk;
}

// Creates the topic with one partition; an existing topic is fine.
void CreateTopic(rd_kafka_t* rk, const std::string& topic) {
  char err[512];
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), 1, 1, err, sizeof err);
  if (nt == nullptr) Die(err);
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  if (ev == nullptr) Die("CreateTopics timed out");
  const rd_kafka_CreateTopics_result_t* res = rd_kafka_event_CreateTopics_result(ev);
  size_t n = 0;
  const rd_kafka_topic_result_t** results = rd_kafka_CreateTopics_result_topics(res, &n);
  for (size_t i = 0; i < n; ++i) {
    const rd_kafka_resp_err_t e = rd_kafka_topic_result_error(results[i]);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      Die(std::string("cannot create topic: ") + rd_kafka_err2str(e));
    }
  }
  rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
}

double Percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[std::min(i, sorted.size() - 1)]) / 1e6;
}

int Latency(const Args& a) {
  rd_kafka_t* rk = NewClient(RD_KAFKA_CONSUMER, a);
  CreateTopic(rk, a.topic);
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, a.topic.c_str(), 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
  if (rd_kafka_assign(rk, parts) != RD_KAFKA_RESP_ERR_NO_ERROR) Die("assign failed");
  rd_kafka_topic_partition_list_destroy(parts);
  // "ready" only once the fetcher runs: the first end-of-partition (or record) proves that the
  // connection, the offset lookup and a fetch are done, so that none of that is timed later.
  bool ready = false;
  auto say_ready = [&ready] {
    if (ready) return;
    ready = true;
    std::printf("ready\n");
    std::fflush(stdout);
  };

  std::vector<int64_t> lat, warm;
  lat.reserve(a.expect > 0 ? static_cast<size_t>(a.expect) : 1 << 20);
  std::vector<std::pair<int64_t, int64_t>> by_commit;  // (commit ns, latency ns) for --timeline
  long long undecodable = 0;
  int64_t first_recv = 0, last_recv = 0, first_commit = 0;
  const int64_t start = NowNs();
  const int64_t deadline = start + static_cast<int64_t>(a.max_s * 1e9);
  while (true) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 5);
    const int64_t now = NowNs();
    if (m != nullptr) {
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        say_ready();
      }
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        int64_t commit;
        if (CommitTimeNs({static_cast<const char*>(m->payload), m->len}, &commit)) {
          if (first_commit == 0) first_commit = commit;
          const bool warming = commit < first_commit + static_cast<int64_t>(a.warm_s * 1e9);
          (warming ? warm : lat).push_back(now - commit);
          if (!a.timeline.empty()) by_commit.emplace_back(commit, now - commit);
        } else {
          ++undecodable;
        }
        if (first_recv == 0) first_recv = now;
        last_recv = now;
      } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        std::fprintf(stderr, "bench_consumer: %s\n", rd_kafka_message_errstr(m));
      }
      rd_kafka_message_destroy(m);
    }
    const long long count = static_cast<long long>(lat.size() + warm.size()) + undecodable;
    if (a.expect > 0 && count >= a.expect) break;
    if (first_recv != 0 && now - last_recv > a.idle_ms * 1000000LL) break;
    if (now > deadline) break;
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);

  std::sort(lat.begin(), lat.end());
  std::sort(warm.begin(), warm.end());
  std::printf("count=%zu undecodable=%lld first_recv_ns=%lld p50_ms=%.3f p99_ms=%.3f "
              "p999_ms=%.3f max_ms=%.3f warm_count=%zu warm_p50_ms=%.3f warm_p99_ms=%.3f "
              "warm_max_ms=%.3f\n",
              lat.size() + warm.size(), undecodable, static_cast<long long>(first_recv),
              Percentile(lat, 0.5), Percentile(lat, 0.99), Percentile(lat, 0.999),
              lat.empty() ? 0.0 : static_cast<double>(lat.back()) / 1e6, warm.size(),
              Percentile(warm, 0.5), Percentile(warm, 0.99),
              warm.empty() ? 0.0 : static_cast<double>(warm.back()) / 1e6);
  if (!a.timeline.empty() && !by_commit.empty()) {
    FILE* f = std::fopen(a.timeline.c_str(), "w");
    if (f == nullptr) Die("cannot write " + a.timeline + ": " + std::strerror(errno));
    std::sort(by_commit.begin(), by_commit.end());
    const int64_t t0 = by_commit.front().first;
    size_t i = 0;
    while (i < by_commit.size()) {
      const int64_t second = (by_commit[i].first - t0) / 1000000000;
      std::vector<int64_t> bucket;
      while (i < by_commit.size() && (by_commit[i].first - t0) / 1000000000 == second) {
        bucket.push_back(by_commit[i++].second);
      }
      std::sort(bucket.begin(), bucket.end());
      std::fprintf(f, "%lld %lld %zu %.3f %.3f %.3f\n",
                   static_cast<long long>(t0 / 1000000000 + second), static_cast<long long>(second),
                   bucket.size(),
                   Percentile(bucket, 0.5), Percentile(bucket, 0.99),
                   static_cast<double>(bucket.back()) / 1e6);
    }
    std::fclose(f);
  }
  if (!a.cdf.empty()) {
    FILE* f = std::fopen(a.cdf.c_str(), "w");
    if (f == nullptr) Die("cannot write " + a.cdf + ": " + std::strerror(errno));
    for (int i = 0; i <= 1000; ++i) {
      const double p = i / 1000.0;
      std::fprintf(f, "%.4f %.3f\n", p * 100, Percentile(lat, p));
    }
    std::fclose(f);
  }
  return 0;
}

int Watermark(const Args& a) {
  if (a.expect <= 0) Die("watermark needs --expect N");
  rd_kafka_t* rk = NewClient(RD_KAFKA_PRODUCER, a);  // a producer handle only reads metadata
  int64_t first = 0;
  long long last_total = 0;
  const int64_t deadline = NowNs() + static_cast<int64_t>(a.max_s * 1e9);
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, a.topic.c_str(), nullptr);
  while (NowNs() < deadline) {
    const rd_kafka_metadata_t* md = nullptr;
    long long total = 0;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int p = 0; p < md->topics[0].partition_cnt; ++p) {
          int64_t lo = 0, hi = 0;
          if (rd_kafka_query_watermark_offsets(rk, a.topic.c_str(), md->topics[0].partitions[p].id,
                                               &lo, &hi, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            total += hi;
          }
        }
      }
      rd_kafka_metadata_destroy(md);
    }
    const int64_t now = NowNs();
    if (total > 0 && first == 0) first = now;
    if (total >= a.expect) {
      std::printf("first_ns=%lld last_ns=%lld count=%lld\n", static_cast<long long>(first),
                  static_cast<long long>(now), total);
      rd_kafka_topic_destroy(rkt);
      rd_kafka_destroy(rk);
      return 0;
    }
    last_total = total;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Out of time: say how far it got, so that the caller can report a partial rate.
  std::printf("first_ns=%lld last_ns=%lld count=%lld partial=1\n", static_cast<long long>(first),
              static_cast<long long>(NowNs()), last_total);
  rd_kafka_topic_destroy(rkt);
  rd_kafka_destroy(rk);
  return 3;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  if (a.mode == "latency") return Latency(a);
  if (a.mode == "watermark") return Watermark(a);
  Die("unknown mode " + a.mode + " (latency or watermark)");
}
