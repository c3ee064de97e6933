#include "kafka/checkpoint_topic.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <memory>
#include <string_view>

#include "absl/strings/match.h"
#include "common/format.h"
#include "common/status_macros.h"
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

// Waits until `until`, or less once `stop_fd` is readable; true when stopped.
bool WaitUnlessStopped(absl::Time until, int stop_fd) {
  for (absl::Duration left = until - absl::Now(); left > absl::ZeroDuration(); left = until - absl::Now()) {
    pollfd pfd{stop_fd, POLLIN, 0};
    const int rc = poll(stop_fd >= 0 ? &pfd : nullptr, stop_fd >= 0 ? 1 : 0, Millis(left));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) break;
  }
  return Stopped(stop_fd);
}

// Between failed requests: an error that repeats (a missing ACL, a broker
// refusing) must not become a tight request loop until the deadline.
class Backoff {
 public:
  explicit Backoff(absl::Time deadline) : deadline_(deadline) {}
  // Waits the next delay (100 ms, doubling to 2 s), never past the deadline;
  // false when stopped or when the deadline has come.
  bool Wait(int stop_fd) {
    const absl::Time until = std::min(deadline_, absl::Now() + delay_);
    delay_ = std::min(delay_ * 2, kMax);
    if (WaitUnlessStopped(until, stop_fd)) return false;
    return absl::Now() < deadline_;
  }

 private:
  static constexpr absl::Duration kMax = absl::Seconds(2);
  absl::Time deadline_;
  absl::Duration delay_ = absl::Milliseconds(100);
};

std::string ErrText(rd_kafka_resp_err_t err) {
  return fmt::format("{} ({})", rd_kafka_err2str(err), rd_kafka_err2name(err));
}

// What to do about an error that outlived the retries, when it says.
std::string Advice(rd_kafka_resp_err_t err, std::string_view topic) {
  if (err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED || err == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED) {
    return fmt::format("; grant outboxd's principal Describe and Read on the topic \"{}\" (and Write, to commit "
                       "checkpoints), or set [sink] checkpoint_topic to a topic it may use",
                       topic);
  }
  return "";
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
  // The end of the partition is what each read waits for: without this every
  // fetch at the end waits 500 ms for data that is not coming.
  all.emplace_back("fetch.wait.max.ms", "10");
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

int32_t DefaultCheckpointPartition(std::string_view key, int32_t partitions) {
  if (partitions <= 1) return 0;
  return static_cast<int32_t>(StableHash(key) % static_cast<uint32_t>(partitions));
}

absl::StatusOr<int32_t> PrepareCheckpointTopic(rd_kafka_t* rk, const std::string& topic, absl::Duration timeout,
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

  absl::StatusOr<int32_t> partitions = CheckpointTopicPartitions(rk, topic, deadline - absl::Now(), stop_fd);
  if (partitions.ok() || absl::IsCancelled(partitions.status())) return partitions;
  if (!created && create_err != RD_KAFKA_RESP_ERR__TIMED_OUT && create_err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
    return absl::UnavailableError(fmt::format(
        "cannot create the checkpoint topic \"{}\" ({}: {}) and it does not exist; create it compacted "
        "(cleanup.policy=compact), or let outboxd's principal create topics, or set [sink] checkpoint_topic",
        topic, rd_kafka_err2name(create_err), create_text));
  }
  return partitions;
}

absl::StatusOr<int32_t> CheckpointTopicPartitions(rd_kafka_t* rk, const std::string& topic, absl::Duration timeout,
                                                  int stop_fd) {
  const absl::Time deadline = absl::Now() + timeout;
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  if (rkt == nullptr) {
    return absl::InvalidArgumentError(fmt::format("checkpoint topic \"{}\": {}", topic, ErrText(rd_kafka_last_error())));
  }
  rd_kafka_resp_err_t metadata_err = RD_KAFKA_RESP_ERR__TIMED_OUT;
  int32_t partitions = 0;
  // Also when the topic has no metadata yet: one created a moment ago may
  // take a moment to show.
  Backoff backoff(deadline);
  while (absl::Now() < deadline && !Stopped(stop_fd)) {
    const rd_kafka_metadata_t* metadata = nullptr;
    const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &metadata, std::min(1000, Millis(deadline - absl::Now())));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      metadata_err = err;
    } else {
      if (metadata->topic_cnt == 1 && metadata->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
          metadata->topics[0].partition_cnt > 0) {
        partitions = metadata->topics[0].partition_cnt;
      } else if (metadata->topic_cnt == 1) {
        metadata_err = metadata->topics[0].err;
      }
      rd_kafka_metadata_destroy(metadata);
    }
    if (partitions > 0 || !backoff.Wait(stop_fd)) break;
  }
  rd_kafka_topic_destroy(rkt);
  if (partitions > 0) return partitions;
  if (Stopped(stop_fd)) return absl::CancelledError("stop requested while preparing the checkpoint topic");
  return absl::UnavailableError(fmt::format("checkpoint topic \"{}\" has no metadata within {}: {}{}", topic,
                                            absl::FormatDuration(timeout), ErrText(metadata_err),
                                            Advice(metadata_err, topic)));
}

namespace {

// The newest record of a key in one partition.
struct Found {
  std::optional<std::string> value;  // nullopt: a tombstone
  int64_t timestamp = -1;            // the record's timestamp (ms); -1: none
};

// Reads one partition of the checkpoint topic: `uncommitted` and `committed`
// are the reader's two consumers (read_uncommitted, read_committed).
class PartitionReader {
 public:
  PartitionReader(rd_kafka_t* uncommitted, rd_kafka_t* committed, const std::string& topic, const std::string& key,
                  absl::Time deadline, absl::Duration timeout, int stop_fd)
      : uncommitted_(uncommitted), committed_(committed), topic_(topic), key_(key), deadline_(deadline),
        timeout_(timeout), stop_fd_(stop_fd) {}

  // The newest committed record of the key in `partition`; nullopt when it has none.
  absl::StatusOr<std::optional<Found>> Newest(int32_t partition) {
    int64_t low = 0, high = 0;
    // Everything written before now, committed or not: the committed view
    // must reach past it (open transactions resolved) before it is read.
    RETURN_IF_ERROR(Watermarks(uncommitted_, partition, "high watermark", &low, &high));
    if (high <= low) return std::optional<Found>();
    while (true) {
      int64_t committed_low = 0, stable = 0;
      RETURN_IF_ERROR(Watermarks(committed_, partition, "last stable offset", &committed_low, &stable));
      if (stable >= high) break;
      if (absl::Now() >= deadline_) {
        return absl::UnavailableError(fmt::format(
            "the checkpoint topic \"{}\" partition {} still has a transaction open below offset {} after {} "
            "(last stable offset {}): another producer's transaction; it ends at its transaction.timeout.ms",
            topic_, partition, high, absl::FormatDuration(timeout_), stable));
      }
      if (WaitUnlessStopped(std::min(deadline_, absl::Now() + absl::Milliseconds(50)), stop_fd_)) return Cancelled();
    }
    int64_t window = 256;
    int64_t start = std::max(low, high - window);
    while (true) {
      ASSIGN_OR_RETURN(std::optional<Found> found, Read(partition, start));
      if (found.has_value() || start == low) return found;
      window *= 16;
      start = std::max(low, high - window);
    }
  }

 private:
  absl::Status Cancelled() const { return absl::CancelledError("stop requested while reading the checkpoint"); }

  // Retried with a backoff until the deadline: an error that repeats (a
  // missing ACL) must not become a tight request loop.
  absl::Status Watermarks(rd_kafka_t* rk, int32_t partition, std::string_view what, int64_t* low, int64_t* high) {
    Backoff backoff(deadline_);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
    while (absl::Now() < deadline_ && !Stopped(stop_fd_)) {
      err = rd_kafka_query_watermark_offsets(rk, topic_.c_str(), partition, low, high,
                                             std::max(0, std::min(1000, Millis(deadline_ - absl::Now()))));
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR || !backoff.Wait(stop_fd_)) break;
    }
    if (Stopped(stop_fd_)) return Cancelled();
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return absl::OkStatus();
    return absl::UnavailableError(fmt::format("cannot read the checkpoint topic \"{}\" partition {}: {}: {}{}",
                                              topic_, partition, what, ErrText(err), Advice(err, topic_)));
  }

  // The newest record of the key from `start` to the end of `partition`.
  absl::StatusOr<std::optional<Found>> Read(int32_t partition, int64_t start) {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic_.c_str(), partition)->offset = start;
    const rd_kafka_resp_err_t assigned = rd_kafka_assign(committed_, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (assigned != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return absl::UnavailableError(fmt::format("cannot read the checkpoint topic \"{}\" partition {}: assign: {}",
                                                topic_, partition, ErrText(assigned)));
    }
    absl::StatusOr<std::optional<Found>> result = ReadAssigned(partition);
    rd_kafka_assign(committed_, nullptr);
    return result;
  }

  absl::StatusOr<std::optional<Found>> ReadAssigned(int32_t partition) {
    std::optional<Found> newest;
    while (true) {
      if (Stopped(stop_fd_)) return Cancelled();
      if (absl::Now() >= deadline_) {
        return absl::UnavailableError(fmt::format("cannot read the checkpoint topic \"{}\" partition {} within {}",
                                                  topic_, partition, absl::FormatDuration(timeout_)));
      }
      rd_kafka_message_t* message = rd_kafka_consumer_poll(committed_, 100);
      if (message == nullptr) continue;
      const rd_kafka_resp_err_t err = message->err;
      if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        rd_kafka_message_destroy(message);
        return newest;
      }
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR && message->key_len == key_.size() &&
          std::string_view(static_cast<const char*>(message->key), message->key_len) == key_) {
        Found found;
        if (message->payload != nullptr) {
          found.value = std::string(static_cast<const char*>(message->payload), message->len);
        }
        found.timestamp = rd_kafka_message_timestamp(message, nullptr);
        newest = std::move(found);
      }
      rd_kafka_message_destroy(message);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) continue;
      // Transient ones (a broker restarting) are retried by librdkafka and
      // repeat here, each after the poll's wait.
      if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) continue;
      return absl::UnavailableError(fmt::format("cannot read the checkpoint topic \"{}\" partition {}: fetch: {}{}",
                                                topic_, partition, ErrText(err), Advice(err, topic_)));
    }
  }

  rd_kafka_t* uncommitted_;
  rd_kafka_t* committed_;
  const std::string& topic_;
  const std::string& key_;
  absl::Time deadline_;
  absl::Duration timeout_;
  int stop_fd_;
};

}  // namespace

absl::StatusOr<LatestCheckpoint> ReadLatestCheckpoint(const KafkaProperties& properties, const std::string& topic,
                                                      int32_t partitions, const std::string& key,
                                                      absl::Duration timeout, int stop_fd) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<Handle> uncommitted = NewConsumer(properties, /*read_committed=*/false);
  if (!uncommitted.ok()) return uncommitted.status();
  absl::StatusOr<Handle> committed = NewConsumer(properties, /*read_committed=*/true);
  if (!committed.ok()) return committed.status();
  PartitionReader reader(uncommitted->get(), committed->get(), topic, key, deadline, timeout, stop_fd);

  // Every partition, whatever the count: one added since the key's
  // checkpoints were placed must not hide them.
  LatestCheckpoint latest;
  latest.partition = DefaultCheckpointPartition(key, partitions);
  std::optional<Found> newest;
  for (int32_t partition = 0; partition < std::max(partitions, 1); ++partition) {
    ASSIGN_OR_RETURN(std::optional<Found> found, reader.Newest(partition));
    if (!found.has_value()) continue;
    if (!newest.has_value() || found->timestamp > newest->timestamp) {
      if (newest.has_value()) latest.older_in.push_back(latest.partition);
      newest = std::move(found);
      latest.partition = partition;
    } else {
      latest.older_in.push_back(partition);
    }
  }
  std::sort(latest.older_in.begin(), latest.older_in.end());
  if (newest.has_value()) latest.value = std::move(newest->value);
  return latest;
}

}  // namespace outboxd::kafka
