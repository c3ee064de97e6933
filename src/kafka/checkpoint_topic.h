// The checkpoint topic of [sink] delivery = "exactly_once": a compacted topic
// where each Kafka transaction's last record says how far into the WAL that
// transaction reaches. This file holds the Kafka side only (create, locate,
// read back with read_committed); what a checkpoint says is
// pipeline/checkpoint.h.
#pragma once

#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kafka/rdkafka_sink.h"

namespace outboxd::kafka {

// Creates `topic` if it does not exist (cleanup.policy=compact, one
// partition, the broker's default replication factor) through the producer
// `rk`, and returns its number of partitions (CheckpointTopicPartitions).
// Waits at most `timeout`; CancelledError once `stop_fd` is readable.
absl::StatusOr<int32_t> PrepareCheckpointTopic(rd_kafka_t* rk, const std::string& topic, absl::Duration timeout,
                                               int stop_fd);

// The number of partitions of `topic`, from its metadata. A failed request,
// or a topic without metadata yet, is retried with a backoff (100 ms doubling
// to 2 s) until `timeout`, then UnavailableError naming the last error;
// CancelledError once `stop_fd` is readable, also in the middle of a wait.
absl::StatusOr<int32_t> CheckpointTopicPartitions(rd_kafka_t* rk, const std::string& topic, absl::Duration timeout,
                                                  int stop_fd);

// The partition where a key that has no checkpoint yet gets its first one:
// a stable hash of the key modulo `partitions` (the topic's only partition
// when it has one, as outboxd creates it).
int32_t DefaultCheckpointPartition(std::string_view key, int32_t partitions);

struct LatestCheckpoint {
  // The newest committed value of the key; nullopt when it has none, or when
  // its newest record is a tombstone (the checkpoint deleted on purpose).
  std::optional<std::string> value;
  // Where the key's next checkpoints go: the partition of its newest record,
  // so that a topic given more partitions keeps each key where it was; for a
  // key with no record, DefaultCheckpointPartition.
  int32_t partition = 0;
  // Other partitions that hold older records of the key: the topic was given
  // more partitions while an older outboxd (which placed checkpoints by
  // DefaultCheckpointPartition of the partition count of the day) ran, or a
  // tombstone was written to another partition. For the log.
  std::vector<int32_t> older_in;
};

// The newest committed record of `key` in any of the `partitions` partitions
// of `topic`, read with isolation.level=read_committed through consumers made
// from the connection properties of [sink.kafka] (bootstrap, TLS, SASL).
// Records of the key in several partitions are told apart by their
// timestamps (the newest wins). Transactions still open on a partition are
// waited for (up to `timeout`), so that a checkpoint committed just before
// them is not missed. Each partition is read backwards from its end in
// growing windows: the topic is compacted, but not at once. Failed requests
// are retried with a backoff until `timeout`; CancelledError once `stop_fd`
// is readable.
absl::StatusOr<LatestCheckpoint> ReadLatestCheckpoint(const KafkaProperties& properties, const std::string& topic,
                                                      int32_t partitions, const std::string& key,
                                                      absl::Duration timeout, int stop_fd);

// Only the properties that say how to reach and authenticate to the cluster.
KafkaProperties ConnectionProperties(const KafkaProperties& properties);

}  // namespace outboxd::kafka
