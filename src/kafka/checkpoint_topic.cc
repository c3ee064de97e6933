#include "kafka/checkpoint_topic.h"

#include <poll.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <string_view>

#include "absl/strings/match.h"
#include "common/format.h"
#include "fmt/format.h"

namespace outboxd::kafka {
namespace {

bool Stopped(int stop_fd) {
  if (stop_fd < 0) return false;
  pollfd pfd{stop_fd, POLLIN, 0};
  return poll(&pfd, 1, 0) > 0;
}

int Millis(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1))), INT_MAX));
}

std::string ErrText(rd_kafka_resp_err_t err) {
  return fmt::format("{} ({})", rd_kafka_err2str(err), rd_kafka_err2name(err));
}

// FNV-1a: stable across versions and platforms, unlike librdkafka's partitioners' seeds.
uint32_t StableHash(std::string_view key) {
  uint32_t h = 2166136261u;
  for (unsigned char c : key) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

struct HandleDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using Handle = std::unique_ptr<rd_kafka_t, HandleDeleter>;

absl::StatusOr<Handle> NewConsumer(const KafkaProperties& properties, bool read_committed) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  KafkaProperties all = ConnectionProperties(properties);
  all.emplace_back("group.id", "outboxd-checkpoint-reader");  // never joined: partitions are assigned
  all.emplace_back("enable.auto.commit", "false");
  all.emplace_back("enable.auto.offset.store", "false");
  all.emplace_back("enable.partition.eof", "true");
  all.emplace_back("auto.offset.reset", "earliest");
  all.emplace_back("isolation.level", read_committed ? "read_committed" : "read_uncommitted");
  for (const auto& [name, value] : all) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return absl::InvalidArgumentError(
          fmt::format("checkpoint reader: Kafka property \"{}\": {}", name,
                      RdKafkaSink::IsSecretProperty(name) ? "invalid value" : errstr));
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(fmt::format("cannot create the checkpoint reader: {}", errstr));
  }
  return Handle(rk);
}

}  // namespace

KafkaProperties ConnectionProperties(const KafkaProperties& properties) {
  static constexpr std::string_view kPrefixes[] = {
      "bootstrap.servers", "metadata.broker.list", "security.protocol", "ssl.", "sasl.", "socket.",
      "broker.address.", "client.id", "client.rack", "api.version.", "enable.ssl.", "connections.",
      "reconnect.backoff", "resolve.canonical.bootstrap.servers.only", "client.dns.lookup", "debug"};
  KafkaProperties out;
  for (const auto& [name, value] : properties) {
    for (std::string_view prefix : kPrefixes) {
      if (absl::StartsWith(name, absl::string_view(prefix.data(), prefix.size()))) {
        out.emplace_back(name, value);
        break;
      }
    }
  }
  return out;
}

absl::StatusOr<int32_t> PrepareCheckpointTopic(rd_kafka_t* rk, const std::string& topic,
                                               const std::string& key, absl::Duration timeout,
                                               int stop_fd) {
  const absl::Time deadline = absl::Now() + timeout;
  // Create it first: asking for the metadata of a missing topic may have the
  // broker auto-create it, without compaction.
  char errstr[512];
  rd_kafka_NewTopic_t* new_topic = rd_kafka_NewTopic_new(topic.c_str(), 1, -1, errstr, sizeof errstr);
  if (new_topic == nullptr) {
    return absl::InvalidArgumentError(fmt::format("checkpoint topic \"{}\": {}", topic, errstr));
  }
  rd_kafka_NewTopic_set_config(new_topic, "cleanup.policy", "compact");
  // Small segments, so that compaction keeps the topic small.
  rd_kafka_NewTopic_set_config(new_topic, "segment.ms", "3600000");
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_request_timeout(options, Millis(timeout), errstr, sizeof errstr);
  rd_kafka_CreateTopics(rk, &new_topic, 1, options, queue);
  rd_kafka_AdminOptions_destroy(options);
  rd_kafka_NewTopic_destroy(new_topic);
  rd_kafka_resp_err_t create_err = RD_KAFKA_RESP_ERR__TIMED_OUT;
  std::string create_text = "no answer";
  while (absl::Now() < deadline && !Stopped(stop_fd)) {
    rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 100);
    if (event == nullptr) continue;
    if (rd_kafka_event_type(event) == RD_KAFKA_EVENT_CREATETOPICS_RESULT) {
      create_err = rd_kafka_event_error(event);
      create_text = create_err != RD_KAFKA_RESP_ERR_NO_ERROR ? rd_kafka_event_error_string(event) : "";
      size_t n = 0;
      const rd_kafka_topic_result_t** results =
          rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &n);
      if (create_err == RD_KAFKA_RESP_ERR_NO_ERROR && n == 1) {
        create_err = rd_kafka_topic_result_error(results[0]);
        if (const char* text = rd_kafka_topic_result_error_string(results[0]); text != nullptr) create_text = text;
      }
      rd_kafka_event_destroy(event);
      break;
    }
    rd_kafka_event_destroy(event);
  }
  rd_kafka_queue_destroy(queue);
  if (Stopped(stop_fd)) return absl::CancelledError("stop requested while preparing the checkpoint topic");
  // Already there, or not ours to create (no CREATE permission): the metadata decides.
  const bool created = create_err == RD_KAFKA_RESP_ERR_NO_ERROR;

  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  if (rkt == nullptr) {
    return absl::InvalidArgumentError(fmt::format("checkpoint topic \"{}\": {}", topic, ErrText(rd_kafka_last_error())));
  }
  absl::Status status = absl::UnavailableError("no metadata");
  int32_t partitions = 0;
  while (absl::Now() < deadline && !Stopped(stop_fd)) {
    const rd_kafka_metadata_t* metadata = nullptr;
    const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &metadata, std::min(1000, Millis(deadline - absl::Now())));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      status = absl::UnavailableError(ErrText(err));
      continue;
    }
    if (metadata->topic_cnt == 1 && metadata->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
        metadata->topics[0].partition_cnt > 0) {
      partitions = metadata->topics[0].partition_cnt;
    } else if (metadata->topic_cnt == 1) {
      status = absl::UnavailableError(ErrText(metadata->topics[0].err));
    }
    rd_kafka_metadata_destroy(metadata);
    if (partitions > 0) break;
    // A topic created a moment ago may take a moment to show.
    absl::SleepFor(absl::Milliseconds(100));
  }
  rd_kafka_topic_destroy(rkt);
  if (partitions > 0) return static_cast<int32_t>(StableHash(key) % static_cast<uint32_t>(partitions));
  if (Stopped(stop_fd)) return absl::CancelledError("stop requested while preparing the checkpoint topic");
  if (!created && create_err != RD_KAFKA_RESP_ERR__TIMED_OUT && create_err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
    return absl::UnavailableError(fmt::format(
        "cannot create the checkpoint topic \"{}\" ({}: {}) and it does not exist; create it compacted "
        "(cleanup.policy=compact), or let outboxd's principal create topics, or set [sink] checkpoint_topic",
        topic, rd_kafka_err2name(create_err), create_text));
  }
  return absl::UnavailableError(fmt::format("checkpoint topic \"{}\" has no metadata within {}: {}", topic,
                                            absl::FormatDuration(timeout), status.message()));
}

absl::StatusOr<std::optional<std::string>> ReadLatestCheckpoint(const KafkaProperties& properties,
                                                                const std::string& topic,
                                                                int32_t partition,
                                                                const std::string& key,
                                                                absl::Duration timeout, int stop_fd) {
  const absl::Time deadline = absl::Now() + timeout;
  auto left = [&] { return std::max(0, std::min(1000, Millis(deadline - absl::Now()))); };
  auto unavailable = [&](std::string_view what, rd_kafka_resp_err_t err) {
    return absl::UnavailableError(fmt::format("cannot read the checkpoint topic \"{}\" partition {}: {}: {}",
                                              topic, partition, what, ErrText(err)));
  };
  absl::StatusOr<Handle> uncommitted = NewConsumer(properties, /*read_committed=*/false);
  if (!uncommitted.ok()) return uncommitted.status();
  absl::StatusOr<Handle> committed = NewConsumer(properties, /*read_committed=*/true);
  if (!committed.ok()) return committed.status();

  // Everything written before now, committed or not: the committed view must
  // reach past it (open transactions resolved) before it is read.
  int64_t low = 0, high = 0;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
  while (absl::Now() < deadline && !Stopped(stop_fd)) {
    err = rd_kafka_query_watermark_offsets(uncommitted->get(), topic.c_str(), partition, &low, &high, left());
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
  }
  if (Stopped(stop_fd)) return absl::CancelledError("stop requested while reading the checkpoint");
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return unavailable("high watermark", err);
  if (high <= low) return std::optional<std::string>();
  while (true) {
    int64_t committed_low = 0, stable = 0;
    err = rd_kafka_query_watermark_offsets(committed->get(), topic.c_str(), partition, &committed_low, &stable, left());
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && stable >= high) break;
    if (Stopped(stop_fd)) return absl::CancelledError("stop requested while reading the checkpoint");
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(fmt::format(
          "the checkpoint topic \"{}\" partition {} still has a transaction open below offset {} after {} "
          "(last stable offset {}): another producer's transaction; it ends at its transaction.timeout.ms",
          topic, partition, high, absl::FormatDuration(timeout), stable));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }

  rd_kafka_t* rk = committed->get();
  int64_t window = 256;
  int64_t start = std::max(low, high - window);
  while (true) {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset = start;
    err = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return unavailable("assign", err);
    std::optional<std::string> latest;
    bool eof = false;
    while (!eof) {
      if (Stopped(stop_fd)) return absl::CancelledError("stop requested while reading the checkpoint");
      if (absl::Now() >= deadline) {
        return absl::UnavailableError(fmt::format("cannot read the checkpoint topic \"{}\" partition {} within {}",
                                                  topic, partition, absl::FormatDuration(timeout)));
      }
      rd_kafka_message_t* message = rd_kafka_consumer_poll(rk, 100);
      if (message == nullptr) continue;
      if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        eof = true;
      } else if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        const rd_kafka_resp_err_t message_err = message->err;
        rd_kafka_message_destroy(message);
        // Transient ones (a broker restarting) are retried by librdkafka and repeat here.
        if (message_err == RD_KAFKA_RESP_ERR__TRANSPORT || message_err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) continue;
        return unavailable("fetch", message_err);
      } else if (message->key_len == key.size() &&
                 std::string_view(static_cast<const char*>(message->key), message->key_len) == key) {
        if (message->payload == nullptr) {
          latest = std::string();  // a tombstone: the checkpoint was deleted on purpose
        } else {
          latest = std::string(static_cast<const char*>(message->payload), message->len);
        }
      }
      rd_kafka_message_destroy(message);
    }
    rd_kafka_assign(rk, nullptr);
    if (latest.has_value() || start == low) {
      if (latest.has_value() && latest->empty()) return std::optional<std::string>();
      return latest;
    }
    window *= 16;
    start = std::max(low, high - window);
  }
}

}  // namespace outboxd::kafka
