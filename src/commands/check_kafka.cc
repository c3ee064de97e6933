// `outboxd check`, Kafka: the brokers answer, their topic defaults, the fixed
// topics (looked up, never created), the delivery mode and its checkpoint
// topic (check_doctor.h).
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "commands/check_doctor.h"
#include "common/format.h"
#include "fmt/format.h"
#include "kafka/rdkafka_sink.h"

namespace outboxd::commands::check {
namespace {

// ---- Kafka ---------------------------------------------------------------------

// The brokers' auto.create.topics.enable and num.partitions, or nullopt when the
// principal may not describe broker configs.
struct BrokerDefaults {
  bool auto_create = false;
  std::string partitions;
  std::string replication;
  int transaction_log_replication = 1;  // transaction.state.log.replication.factor
  int transaction_log_min_isr = 1;      // transaction.state.log.min.isr
};

std::optional<BrokerDefaults> DescribeBroker(rd_kafka_t* rk, int32_t broker_id) {
  char errstr[512];
  const std::string id = std::to_string(broker_id);
  rd_kafka_ConfigResource_t* resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_BROKER, id.c_str());
  rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
  rd_kafka_AdminOptions_set_request_timeout(options, 5000, errstr, sizeof errstr);
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_DescribeConfigs(rk, &resource, 1, options, queue);
  rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 7000);
  std::optional<BrokerDefaults> out;
  if (event != nullptr && rd_kafka_event_type(event) == RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT &&
      rd_kafka_event_error(event) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    size_t count = 0;
    const rd_kafka_ConfigResource_t** results =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(event), &count);
    if (count == 1 && rd_kafka_ConfigResource_error(results[0]) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      BrokerDefaults defaults;
      size_t entries = 0;
      const rd_kafka_ConfigEntry_t** configs = rd_kafka_ConfigResource_configs(results[0], &entries);
      for (size_t i = 0; i < entries; ++i) {
        const std::string name = rd_kafka_ConfigEntry_name(configs[i]);
        const char* value = rd_kafka_ConfigEntry_value(configs[i]);
        if (value == nullptr) continue;
        if (name == "auto.create.topics.enable") defaults.auto_create = std::string(value) == "true";
        if (name == "num.partitions") defaults.partitions = value;
        if (name == "default.replication.factor") defaults.replication = value;
        if (name == "transaction.state.log.replication.factor") defaults.transaction_log_replication = std::atoi(value);
        if (name == "transaction.state.log.min.isr") defaults.transaction_log_min_isr = std::atoi(value);
      }
      out = defaults;
    }
  }
  if (event != nullptr) rd_kafka_event_destroy(event);
  rd_kafka_queue_destroy(queue);
  rd_kafka_AdminOptions_destroy(options);
  rd_kafka_ConfigResource_destroy(resource);
  return out;
}

struct TopicInfo {
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  int partitions = 0;
};

TopicInfo DescribeTopic(rd_kafka_t* rk, const std::string& topic) {
  TopicInfo info;
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  info.err = rd_kafka_metadata(rk, 0, rkt, &metadata, 5000);
  if (info.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (metadata->topic_cnt == 1) {
      info.err = metadata->topics[0].err;
      info.partitions = metadata->topics[0].partition_cnt;
    }
    rd_kafka_metadata_destroy(metadata);
  }
  rd_kafka_topic_destroy(rkt);
  return info;
}

// A connection to the brokers for the checks: a producer handle that never
// creates a topic (metadata requests must not auto-create), the broker count,
// and the brokers' defaults, asked once when a check needs them.
class KafkaSession {
 public:
  // Null, reported, when Kafka cannot be asked.
  static std::unique_ptr<KafkaSession> Connect(const config::Config& config, absl::Duration timeout,
                                               CheckReport& report) {
    kafka::KafkaProperties properties = config.kafka.properties;
    properties.emplace_back("allow.auto.create.topics", "false");
    auto sink = kafka::RdKafkaSink::Create(properties);
    if (!sink.ok()) {
      report.Fail("kafka", std::string(sink.status().message()), "fix the property in [sink.kafka]");
      return nullptr;
    }
    if (absl::Status reachable = (*sink)->CheckReachable(timeout); !reachable.ok()) {
      // The sink's message names the brokers and what to check.
      report.Fail("kafka", std::string(reachable.message()));
      return nullptr;
    }
    auto session = std::unique_ptr<KafkaSession>(new KafkaSession(std::move(*sink)));
    const rd_kafka_metadata_t* metadata = nullptr;
    if (rd_kafka_metadata(session->rk(), 0, nullptr, &metadata, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      session->brokers_ = metadata->broker_cnt;
      if (session->brokers_ > 0) session->broker_id_ = metadata->brokers[0].id;
      rd_kafka_metadata_destroy(metadata);
    }
    for (const auto& [key, value] : config.kafka.properties) {
      if (key == "bootstrap.servers") session->servers_ = value;
    }
    return session;
  }

  rd_kafka_t* rk() const { return sink_->handle(); }
  kafka::RdKafkaSink& sink() { return *sink_; }
  int brokers() const { return brokers_; }
  const std::string& servers() const { return servers_; }
  // The brokers' topic and transaction defaults; nullopt when the principal
  // may not describe broker configs.
  const std::optional<BrokerDefaults>& Broker() {
    if (!described_) {
      described_ = true;
      if (broker_id_ >= 0) broker_ = DescribeBroker(rk(), broker_id_);
    }
    return broker_;
  }
  std::string AutoCreate() {
    if (!Broker()) return "unknown (the principal may not describe broker configs)";
    return broker_->auto_create ? fmt::format("on (new topics get {} partition(s), replication factor {})",
                                              broker_->partitions, broker_->replication)
                                : "off";
  }

 private:
  explicit KafkaSession(std::unique_ptr<kafka::RdKafkaSink> sink) : sink_(std::move(sink)) {}

  std::unique_ptr<kafka::RdKafkaSink> sink_;
  int brokers_ = 0;
  int32_t broker_id_ = -1;
  std::string servers_;
  bool described_ = false;
  std::optional<BrokerDefaults> broker_;
};

// The topics the rows present route to (check_outbox.cc), but those in
// `seen`: each must exist or be created by the brokers, or delivering its
// events fails.
void CheckRoutedTopics(KafkaSession& kafka, const Observed& observed, const std::set<std::string>& seen,
                       CheckReport& report) {
  constexpr size_t kMaxLookups = 100;
  std::vector<std::string> missing, other;
  size_t looked = 0;
  for (const auto& [topic, from] : observed.topics) {
    if (seen.contains(topic)) continue;  // a fixed topic, looked up already
    if (looked == kMaxLookups) break;
    ++looked;
    const TopicInfo info = DescribeTopic(kafka.rk(), topic);
    if (info.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      missing.push_back(fmt::format("'{}' ({})", topic, from));
    } else if (info.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      other.push_back(fmt::format("'{}': {}", topic, rd_kafka_err2str(info.err)));
    }
  }
  if (looked == 0) return;
  const std::string routed = fmt::format("the rows present route to {}{} topic(s)",
                                         looked == kMaxLookups ? "at least " : "", looked);
  if (!other.empty()) {
    report.Fail("topic", fmt::format("{}; looking up {}: {}", routed, other.size(), NameList(other)),
                "grant the principal Describe and Write on them, and check the brokers' health");
  }
  if (missing.empty()) {
    if (other.empty()) report.Ok("topic", fmt::format("{}, which exist", routed));
    return;
  }
  const std::optional<BrokerDefaults>& broker = kafka.Broker();
  if (broker && !broker->auto_create) {
    report.Fail("topic",
                fmt::format("{}; {} of them do not exist, and the brokers do not auto-create topics "
                            "(auto.create.topics.enable=false): delivering their events fails, and the stream "
                            "retries and stalls there: {}",
                            routed, missing.size(), NameList(missing)),
                fmt::format("create them before starting outboxd: kafka-topics.sh --bootstrap-server {} --create "
                            "--topic <name> --partitions <n> --replication-factor <n>",
                            kafka.servers()));
  } else if (broker) {
    report.Ok("topic", fmt::format("{}; {} of them do not exist yet and are created on their first event "
                                   "(auto-create {}): {}",
                                   routed, missing.size(), kafka.AutoCreate(), NameList(missing)));
  } else {
    report.Warn("topic",
                fmt::format("{}; {} of them do not exist, and whether the brokers create them is unknown "
                            "(the principal may not describe broker configs): {}",
                            routed, missing.size(), NameList(missing)),
                "create them before starting outboxd, or grant the principal DescribeConfigs on the cluster");
  }
}

// The brokers keep transactions in __transaction_state, created on the first
// transactional producer with transaction.state.log.replication.factor
// replicas: a cluster with fewer brokers never creates it, and every
// InitTransactions times out.
void CheckTransactionLog(KafkaSession& kafka, CheckReport& report) {
  const TopicInfo state = DescribeTopic(kafka.rk(), "__transaction_state");
  if (state.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    report.Ok("delivery", fmt::format("the brokers' transaction log exists ({} partition(s))", state.partitions));
    return;
  }
  const std::optional<BrokerDefaults>& broker = kafka.Broker();
  if (!broker) return;
  const int needed = std::max(broker->transaction_log_replication, broker->transaction_log_min_isr);
  if (state.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && needed > kafka.brokers()) {
    report.Fail("delivery",
                fmt::format("the brokers cannot run transactions: transaction.state.log.replication.factor = {} "
                            "(min.isr {}) but the cluster has {} broker(s), so Kafka cannot create its transaction "
                            "log (__transaction_state); InitTransactions would time out and outboxd would retry it "
                            "without ever streaming",
                            broker->transaction_log_replication, broker->transaction_log_min_isr, kafka.brokers()),
                "set transaction.state.log.replication.factor and transaction.state.log.min.isr to at most the "
                "number of brokers in each broker's server.properties and restart them, or use [sink] delivery = "
                "\"at_least_once\"");
  } else {
    report.Ok("delivery", fmt::format("the brokers create their transaction log on the first transaction "
                                      "(replication factor {}, {} broker(s))",
                                      broker->transaction_log_replication, kafka.brokers()));
  }
}

}  // namespace

void CheckKafkaForRun(const config::Config& config, CheckReport& report, const Observed& observed) {
  const bool transactions = config.kafka.delivery == config::Delivery::kExactlyOnce;
  if (observed.topics.empty() && !transactions) return;
  std::unique_ptr<KafkaSession> kafka = KafkaSession::Connect(config, absl::Seconds(2), report);
  if (kafka == nullptr) return;
  CheckRoutedTopics(*kafka, observed, {}, report);
  if (transactions) CheckTransactionLog(*kafka, report);
}

void CheckKafka(const config::Config& config, CheckReport& report, const Observed& observed) {
  std::unique_ptr<KafkaSession> kafka = KafkaSession::Connect(config, absl::Seconds(5), report);
  if (kafka == nullptr) return;
  rd_kafka_t* rk = kafka->rk();
  const std::string& servers = kafka->servers();
  report.Ok("kafka", fmt::format("{} answers: {} broker(s)", servers, kafka->brokers()));
  const std::optional<BrokerDefaults>& broker = kafka->Broker();
  const std::string auto_create = kafka->AutoCreate();

  // Fixed topics can be looked up now; templated ones only exist once events name them.
  std::vector<std::pair<std::string, std::string>> topics;  // template, where it comes from
  for (const outbox::TableConfig& table : config.outbox) topics.emplace_back(table.topic, TableName(table));
  if (config.messages.enabled) topics.emplace_back(config.messages.topic, "[messages]");
  std::set<std::string> seen;
  for (const auto& [topic, from] : topics) {
    if (!seen.insert(topic).second) continue;
    if (topic.find('{') != std::string::npos) {
      if (broker && !broker->auto_create) {
        report.Warn("topic",
                    fmt::format("'{}' ({}) names topics per event, and the brokers' "
                                "auto.create.topics.enable is off: an event for a topic that does not "
                                "exist yet cannot be delivered",
                                topic, from),
                    "create every topic the template can produce before events arrive, or use a fixed "
                    "topic name");
      } else {
        report.Ok("topic", fmt::format("'{}' ({}) names topics per event; they are created on first use "
                                       "only if the brokers auto-create topics: auto-create {}",
                                       topic, from, auto_create));
      }
      continue;
    }
    const TopicInfo info = DescribeTopic(rk, topic);
    if (info.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      report.Ok("topic", fmt::format("'{}' ({}) exists with {} partition(s)", topic, from, info.partitions));
    } else if (info.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      const std::string create = fmt::format("create it: kafka-topics.sh --bootstrap-server {} --create "
                                             "--topic {} --partitions <n> --replication-factor <n>",
                                             servers, topic);
      if (broker && !broker->auto_create) {
        report.Fail("topic",
                    fmt::format("'{}' ({}) does not exist and the brokers do not auto-create topics: "
                                "events for it cannot be delivered",
                                topic, from),
                    create);
      } else {
        report.Warn("topic",
                    fmt::format("'{}' ({}) does not exist yet; it is created on the first event only if "
                                "the brokers auto-create topics: auto-create {}",
                                topic, from, auto_create),
                    create + ", to choose its partitions and replication yourself");
      }
    } else if (info.err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
      report.Fail("topic",
                  fmt::format("'{}' ({}): the Kafka principal is not authorized for it", topic, from),
                  "grant the principal Describe and Write on the topic (kafka-acls.sh --add "
                  "--allow-principal User:<name> --operation Write --operation Describe --topic ...)");
    } else {
      report.Fail("topic", fmt::format("'{}' ({}): metadata request failed: {}", topic, from,
                                       rd_kafka_err2str(info.err)),
                  "check the brokers' health and the topic name");
    }
  }

  // The dead-letter topic: a dead letter that cannot be delivered stops
  // progress like any other record.
  const std::string& dlq = config.errors.dead_letter_topic;
  if (!seen.contains(dlq)) {
    seen.insert(dlq);
    const TopicInfo info = DescribeTopic(rk, dlq);
    if (info.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      report.Ok("topic", fmt::format("'{}' (dead letters) exists with {} partition(s)", dlq, info.partitions));
    } else if (info.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && broker && !broker->auto_create) {
      report.Fail("topic",
                  fmt::format("'{}' ([errors] dead_letter_topic) does not exist and the brokers do not auto-create "
                              "topics: a bad event's dead letter could not be delivered, and the stream would stop "
                              "at it",
                              dlq),
                  fmt::format("create it: kafka-topics.sh --bootstrap-server {} --create --topic {} --partitions 1 "
                              "--replication-factor <n>",
                              servers, dlq));
    } else if (info.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      report.Ok("topic", fmt::format("'{}' (dead letters) does not exist yet; it is created on the first dead letter "
                                     "if the brokers auto-create topics: auto-create {}",
                                     dlq, auto_create));
    } else {
      report.Fail("topic", fmt::format("'{}' (dead letters): metadata request failed: {}", dlq,
                                       rd_kafka_err2str(info.err)),
                  "grant the principal Describe and Write on it, and check the brokers' health");
    }
  }

  CheckRoutedTopics(*kafka, observed, seen, report);

  if (config.kafka.delivery == config::Delivery::kExactlyOnce) {
    // Not init_transactions: that would fence a running instance.
    const std::string& topic = config.kafka.checkpoint_topic;
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
    const rd_kafka_metadata_t* checkpoint = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &checkpoint, 5000);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      err = checkpoint->topic_cnt == 1 ? checkpoint->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
      rd_kafka_metadata_destroy(checkpoint);
    }
    rd_kafka_topic_destroy(rkt);
    // The id run derives (commands/run.cc): the cluster's system identifier
    // and each stream's slot.
    std::vector<std::string> ids;
    if (!config.kafka.transactional_id.empty()) {
      ids.push_back("'" + config.kafka.transactional_id + "'");
    } else {
      const std::string system = observed.system_id.empty() ? "<system identifier>" : observed.system_id;
      std::vector<std::string> slots = observed.slots;
      if (slots.empty()) slots.push_back(config.source.slot.empty() ? "<slot>" : config.source.slot);
      for (const std::string& slot : slots) ids.push_back(fmt::format("'outboxd-{}-{}'", system, slot));
    }
    report.Ok("delivery", fmt::format("exactly_once: Kafka transactions with transactional.id {}; consumers must "
                                      "read with isolation.level=read_committed to see each event once",
                                      NameList(ids, 10)));
    CheckTransactionLog(*kafka, report);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      report.Ok("delivery", fmt::format("checkpoint topic '{}' exists (it must be compacted: cleanup.policy=compact)", topic));
    } else if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
      report.Ok("delivery", fmt::format("checkpoint topic '{}' does not exist yet: outboxd creates it, compacted, "
                                        "on its first start (the principal needs Create on it)",
                                        topic));
    } else {
      report.Fail("delivery", fmt::format("checkpoint topic '{}': {}", topic, rd_kafka_err2str(err)),
                  "grant the principal Describe, Read and Write on the checkpoint topic, and Write and Describe on "
                  "the transactional id");
    }
  } else {
    report.Ok("delivery", "at_least_once: after a fault an event may be published twice; consumers de-duplicate "
                          "by the outbox id");
  }

  // The idempotent producer asks for a producer id as soon as it connects; the
  // brokers refuse it to a principal that may write no topic at all.
  kafka->sink().Poll(absl::Milliseconds(500));
  absl::Status fatal = kafka->sink().FatalError();
  if (!fatal.ok()) {
    report.Fail("kafka", std::string(fatal.message()),
                "grant the principal Write on the outbox topics (and IdempotentWrite on the cluster "
                "for brokers older than 2.8)");
  }
}

// [schema_registry]: the registry answers, and each subject known before the

}  // namespace outboxd::commands::check
