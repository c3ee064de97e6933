// outboxd-tail: prints the outbox envelopes arriving on Kafka topics, one JSON
// line each. A small consumer for the demo and for looking at a live system:
//   outboxd-tail --brokers 127.0.0.1:59092 [--from-beginning] [--max N] '^outbox\.event\..*'
#include <librdkafka/rdkafka.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "outbox/v1/envelope.pb.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

// The next offset to print of every partition this process has read from. A
// new topic matching the pattern makes the group rebalance: every partition is
// revoked and assigned again, and without a committed offset the consumer
// would start it over from auto.offset.reset, printing its events again. On
// each assignment, a partition read before resumes where it stopped instead.
std::map<std::pair<std::string, int32_t>, int64_t> g_next;

void OnRebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts,
                 void*) {
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    for (int i = 0; i < parts->cnt; ++i) {
      auto it = g_next.find({parts->elems[i].topic, parts->elems[i].partition});
      if (it != g_next.end()) parts->elems[i].offset = it->second;
    }
    rd_kafka_assign(rk, parts);
  } else {
    rd_kafka_assign(rk, nullptr);
  }
}

int Usage() {
  std::fprintf(stderr,
               "usage: outboxd-tail [--brokers HOST:PORT] [--from-beginning] [--max N] TOPIC|^REGEX...\n");
  return 2;
}

// The envelope as one JSON line, with the payload and header values shown as
// the JSON or text they hold rather than protobuf's base64 for bytes fields.
std::string Render(const outbox::v1::Envelope& envelope,
                   const google::protobuf::util::JsonPrintOptions& options) {
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(envelope, &json, options).ok()) return "";
  nlohmann::ordered_json doc = nlohmann::ordered_json::parse(json, nullptr, false);
  if (doc.is_discarded()) return json;
  if (envelope.content_type() == "application/json") {
    auto payload = nlohmann::ordered_json::parse(envelope.payload(), nullptr, false);
    if (!payload.is_discarded()) doc["payload"] = payload;
  } else if (envelope.content_type() == "text/plain") {
    doc["payload"] = envelope.payload();
  }
  if (doc.contains("headers")) {
    for (int i = 0; i < envelope.headers_size(); ++i) {
      doc["headers"][i]["value"] = envelope.headers(i).value();
    }
  }
  return doc.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace

int main(int argc, char** argv) {
  std::string brokers = "127.0.0.1:59092";
  bool from_beginning = false;
  long max = -1;
  std::vector<std::string> topics;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--brokers" && i + 1 < argc) {
      brokers = argv[++i];
    } else if (arg == "--from-beginning") {
      from_beginning = true;
    } else if (arg == "--max" && i + 1 < argc) {
      max = std::strtol(argv[++i], nullptr, 10);
    } else if (!arg.empty() && arg[0] != '-') {
      topics.push_back(arg);
    } else {
      return Usage();
    }
  }
  if (topics.empty()) return Usage();

  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const std::string group = "outboxd-tail-" + std::to_string(getpid());
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", brokers},
      {"group.id", group},
      {"auto.offset.reset", from_beginning ? "earliest" : "latest"},
      {"enable.auto.commit", "false"},
      {"topic.metadata.refresh.interval.ms", "1000"},
  };
  for (const auto& [key, value] : settings) {
    if (rd_kafka_conf_set(conf, key, value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
      std::fprintf(stderr, "outboxd-tail: %s: %s\n", key, errstr);
      return 2;
    }
  }
  rd_kafka_conf_set_rebalance_cb(conf, OnRebalance);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (rk == nullptr) {
    std::fprintf(stderr, "outboxd-tail: %s\n", errstr);
    return 1;
  }
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(topics.size());
  for (const std::string& topic : topics) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), RD_KAFKA_PARTITION_UA);
  }
  rd_kafka_subscribe(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);

  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  long printed = 0;
  while (!g_stop && (max < 0 || printed < max)) {
    rd_kafka_message_t* msg = rd_kafka_consumer_poll(rk, 200);
    if (msg == nullptr) continue;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      g_next[{rd_kafka_topic_name(msg->rkt), msg->partition}] = msg->offset + 1;
      outbox::v1::Envelope envelope;
      std::string json;
      if (envelope.ParseFromArray(msg->payload, static_cast<int>(msg->len)) &&
          !(json = Render(envelope, options)).empty()) {
        std::printf("%s[%d]@%lld %s\n", rd_kafka_topic_name(msg->rkt), msg->partition,
                    static_cast<long long>(msg->offset), json.c_str());
      } else {
        std::printf("%s[%d]@%lld (not an outbox envelope, %zu bytes)\n", rd_kafka_topic_name(msg->rkt),
                    msg->partition, static_cast<long long>(msg->offset), msg->len);
      }
      std::fflush(stdout);
      ++printed;
    } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF &&
               msg->err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      std::fprintf(stderr, "outboxd-tail: %s\n", rd_kafka_message_errstr(msg));
    }
    rd_kafka_message_destroy(msg);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return 0;
}
