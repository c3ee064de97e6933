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

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kafka/rdkafka_sink.h"

namespace outboxd::kafka {

// Creates `topic` if it does not exist (cleanup.policy=compact, one
// partition, the broker's default replication factor) through the producer
// `rk`, and returns the partition that holds `key`: the topic's only one, or
// for a topic made with more, one chosen from the key (a stable hash). Waits
// at most `timeout`; CancelledError once `stop_fd` is readable.
absl::StatusOr<int32_t> PrepareCheckpointTopic(rd_kafka_t* rk, const std::string& topic,
                                               const std::string& key, absl::Duration timeout,
                                               int stop_fd);

// The newest committed value of `key` in `topic` / `partition`, read with
// isolation.level=read_committed through a consumer made from the
// connection properties of [sink.kafka] (bootstrap, TLS, SASL); nullopt when
// the key has none. Transactions still open on the partition are waited for
// (up to `timeout`), so a checkpoint committed just before them is not
// missed. Reads backwards from the end in growing windows: the topic is
// compacted, but not at once.
absl::StatusOr<std::optional<std::string>> ReadLatestCheckpoint(const KafkaProperties& properties,
                                                                const std::string& topic,
                                                                int32_t partition,
                                                                const std::string& key,
                                                                absl::Duration timeout, int stop_fd);

// Only the properties that say how to reach and authenticate to the cluster.
KafkaProperties ConnectionProperties(const KafkaProperties& properties);

}  // namespace outboxd::kafka
