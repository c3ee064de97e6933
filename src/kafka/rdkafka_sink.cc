// RdKafkaSink: librdkafka's C producer API turned into absl::Status, with the
// delivery guarantees outboxd relies on forced on.
#include "kafka/rdkafka_sink.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/bad_event.h"
#include "common/format.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace outboxd::kafka {
namespace {

constexpr std::string_view kRedacted = "[redacted]";

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// librdkafka parses booleans as true/t/1 and false/f/0, case-insensitively.
bool IsTrue(std::string_view value) {
  const std::string v = Lower(value);
  return v == "true" || v == "t" || v == "1";
}

bool IsAcksAll(std::string_view value) {
  const std::string v = Lower(value);
  return v == "all" || v == "-1";
}

// Properties we set a default for, with their librdkafka aliases: the user's
// value under either name wins.
struct Default {
  std::vector<std::string_view> names;
  std::string_view value;
};

const std::vector<Default>& Defaults() {
  static const auto* defaults = new std::vector<Default>{
      // Small batches without adding visible latency to an outbox event.
      {{"linger.ms", "queue.buffering.max.ms"}, "5"},
      // Bounded memory (DESIGN invariant 4): QUEUE_FULL turns into backpressure
      // on the replication socket long before the process grows large.
      {{"queue.buffering.max.messages"}, "20000"},
      {{"queue.buffering.max.kbytes"}, "16384"},
      {{"client.id"}, "outboxd"},
  };
  return *defaults;
}

bool UserSet(const KafkaProperties& properties, const std::vector<std::string_view>& names) {
  for (const auto& [name, value] : properties) {
    if (std::find(names.begin(), names.end(), name) != names.end()) return true;
  }
  return false;
}

int ToTimeoutMs(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return -1;
  if (timeout <= absl::ZeroDuration()) return 0;
  // Round up so that a sub-millisecond wait does not become a busy poll.
  const int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1)));
  return static_cast<int>(std::min<int64_t>(ms, INT_MAX));
}

// The status a failed delivery report or client error maps to; see the table
// in rdkafka_sink.h.
absl::StatusCode CodeFor(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
      return absl::StatusCode::kOk;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return absl::StatusCode::kInvalidArgument;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
      return absl::StatusCode::kPermissionDenied;
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
      return absl::StatusCode::kUnauthenticated;
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__FATAL:
      return absl::StatusCode::kAborted;
    default:
      return absl::StatusCode::kUnavailable;
  }
}

// The bad-event reason of an error that concerns one record, or "".
std::string_view BadEventReasonFor(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
      return bad_event::kMessageTooLarge;
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return bad_event::kInvalidTopic;
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
      return bad_event::kUnknownTopic;
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
      return bad_event::kInvalidRecord;
    default:
      return "";
  }
}

// A status with `code`, tagged with the bad-event reason when there is one.
absl::Status StatusFor(rd_kafka_resp_err_t err, std::string_view message) {
  const std::string_view reason = BadEventReasonFor(err);
  if (!reason.empty() && CodeFor(err) == absl::StatusCode::kInvalidArgument) {
    return BadEventError(reason, message);
  }
  return absl::Status(CodeFor(err), absl::string_view(message.data(), message.size()));
}

std::string ErrText(rd_kafka_resp_err_t err) {
  return fmt::format("{} ({})", rd_kafka_err2str(err), rd_kafka_err2name(err));
}

}  // namespace

bool RdKafkaSink::IsSecretProperty(std::string_view name) {
  const std::string n = Lower(name);
  for (std::string_view marker : {"password", "secret", "sasl.oauthbearer.config", "ssl.key"}) {
    if (n.find(marker) != std::string::npos) return true;
  }
  return false;
}

std::vector<std::string> RdKafkaSink::OverriddenProperties(const KafkaProperties& properties) {
  std::vector<std::string> overridden;
  for (const auto& [name, value] : properties) {
    if ((name == "enable.idempotence" && !IsTrue(value)) ||
        ((name == "acks" || name == "request.required.acks") && !IsAcksAll(value))) {
      overridden.push_back(name);
    }
  }
  return overridden;
}

std::string RdKafkaSink::Redact(std::string text) const {
  for (const std::string& secret : secret_values_) {
    for (size_t pos = text.find(secret); pos != std::string::npos;
         pos = text.find(secret, pos + kRedacted.size())) {
      text.replace(pos, secret.size(), kRedacted);
    }
  }
  return text;
}

absl::StatusOr<std::unique_ptr<RdKafkaSink>> RdKafkaSink::Create(const KafkaProperties& properties,
                                                                 RdKafkaSinkOptions options) {
  std::unique_ptr<RdKafkaSink> sink(new RdKafkaSink());
  sink->options_ = std::move(options);
  for (const auto& [name, value] : properties) {
    if (IsSecretProperty(name) && !value.empty()) sink->secret_values_.push_back(value);
  }
  // Longest first, so that a secret containing another is scrubbed whole.
  std::sort(sink->secret_values_.begin(), sink->secret_values_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });

  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  auto set = [&](const std::string& name, const std::string& value) -> absl::Status {
    errstr[0] = '\0';
    const rd_kafka_conf_res_t res =
        rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr);
    if (res == RD_KAFKA_CONF_OK) return absl::OkStatus();
    const std::string shown = IsSecretProperty(name) ? std::string(kRedacted) : value;
    if (res == RD_KAFKA_CONF_UNKNOWN) {
      return absl::InvalidArgumentError(fmt::format(
          "unknown Kafka property \"{}\" in [sink.kafka]: {}; see librdkafka's CONFIGURATION.md "
          "for the supported names",
          name, sink->Redact(errstr)));
    }
    return absl::InvalidArgumentError(
        fmt::format("invalid value \"{}\" for Kafka property \"{}\" in [sink.kafka]: {}", shown,
                    name, sink->Redact(errstr)));
  };

  absl::Status status;
  for (const auto& [name, value] : properties) {
    if (name == "transactional.id") {
      status = absl::InvalidArgumentError(
          "Kafka property \"transactional.id\" is not accepted in [sink.kafka]: set [sink] "
          "delivery = \"exactly_once\" and, to choose the id, [sink] transactional_id");
      break;
    }
    status = set(name, value);
    if (!status.ok()) break;
  }
  for (const Default& d : Defaults()) {
    if (!status.ok()) break;
    if (!UserSet(properties, d.names)) status = set(std::string(d.names[0]), std::string(d.value));
  }
  if (status.ok() && !sink->options_.transactional_id.empty()) {
    status = set("transactional.id", sink->options_.transactional_id);
  }
  if (status.ok() && sink->options_.brokers_up && !UserSet(properties, {"statistics.interval.ms"})) {
    status = set("statistics.interval.ms", "2000");
  }
  // Forced last: no loss and no reordering on retries (DESIGN invariants 2, 3).
  if (status.ok()) status = set("enable.idempotence", "true");
  if (status.ok()) status = set("acks", "all");
  if (!status.ok()) {
    rd_kafka_conf_destroy(conf);
    return status;
  }

  rd_kafka_conf_set_dr_msg_cb(conf, &RdKafkaSink::OnDelivery);
  rd_kafka_conf_set_error_cb(conf, &RdKafkaSink::OnError);
  if (sink->options_.log) rd_kafka_conf_set_log_cb(conf, &RdKafkaSink::OnLog);
  if (sink->options_.brokers_up) rd_kafka_conf_set_stats_cb(conf, &RdKafkaSink::OnStats);
  rd_kafka_conf_set_opaque(conf, sink.get());

  // Kept for error messages; read back so that librdkafka's own parsing counts.
  char buf[1024];
  size_t size = sizeof buf;
  if (rd_kafka_conf_get(conf, "bootstrap.servers", buf, &size) == RD_KAFKA_CONF_OK) {
    sink->bootstrap_servers_ = buf;
  }
  size = sizeof buf;
  if (rd_kafka_conf_get(conf, "message.max.bytes", buf, &size) == RD_KAFKA_CONF_OK) {
    sink->message_max_bytes_ = std::strtoll(buf, nullptr, 10);
  }

  errstr[0] = '\0';
  sink->rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (sink->rk_ == nullptr) {
    rd_kafka_conf_destroy(conf);  // still ours when rd_kafka_new fails
    return absl::InvalidArgumentError(fmt::format(
        "cannot create the Kafka producer from [sink.kafka]: {}", sink->Redact(errstr)));
  }
  // Delivery reports wake the caller's poll() through this pipe instead of a timer.
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    return absl::ResourceExhaustedError(
        fmt::format("cannot create a pipe for Kafka delivery reports: {}", std::strerror(errno)));
  }
  sink->wake_read_ = fds[0];
  sink->wake_write_ = fds[1];
  sink->main_queue_ = rd_kafka_queue_get_main(sink->rk_);
  static const char kWakeByte = 'k';
  rd_kafka_queue_io_event_enable(sink->main_queue_, sink->wake_write_, &kWakeByte, 1);
  return sink;
}

RdKafkaSink::~RdKafkaSink() {
  if (rk_ == nullptr) return;
  // No flush here: a graceful stop flushes explicitly, and after a failure the
  // outstanding records must not be waited for. No reports reach the handler.
  handler_ = nullptr;
  // Drop what is queued or in flight so destroy never waits on a dead broker;
  // none of it was confirmed, so the next session re-reads it from the slot.
  rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  topics_.ForEach([](std::string_view, rd_kafka_topic_t* topic) { rd_kafka_topic_destroy(topic); });
  if (main_queue_ != nullptr) {
    rd_kafka_queue_io_event_enable(main_queue_, -1, nullptr, 0);
    rd_kafka_queue_destroy(main_queue_);
  }
  rd_kafka_destroy(rk_);
  if (wake_read_ >= 0) close(wake_read_);
  if (wake_write_ >= 0) close(wake_write_);
}

absl::StatusOr<rd_kafka_topic_t*> RdKafkaSink::Topic(std::string_view name) {
  if (rd_kafka_topic_t** found = topics_.Get(name); found != nullptr) return *found;
  const std::string key(name);
  rd_kafka_topic_t* topic = rd_kafka_topic_new(rk_, key.c_str(), nullptr);
  if (topic == nullptr) {
    const rd_kafka_resp_err_t err = rd_kafka_last_error();
    return StatusFor(err, fmt::format("cannot produce to topic \"{}\": {}", name, ErrText(err)));
  }
  if (std::optional<rd_kafka_topic_t*> dropped = topics_.Insert(key, topic); dropped.has_value()) {
    rd_kafka_topic_destroy(*dropped);  // the least recently used
  }
  return topic;
}

bool RdKafkaSink::HasTopicHandle(std::string_view topic) const { return topics_.Contains(topic); }

void RdKafkaSink::PrepareTopic(std::string_view topic) {
  // An invalid name fails again, with its reason, when an event is produced to it.
  (void)Topic(topic);
}

absl::Status RdKafkaSink::Produce(const ProduceRequest& request) {
  rd_kafka_headers_t* headers = nullptr;
  size_t header_bytes = 0;
  if (request.headers != nullptr && !request.headers->empty()) {
    headers = rd_kafka_headers_new(request.headers->size());
    for (const auto& [name, value] : *request.headers) {
      rd_kafka_header_add(headers, name.data(), static_cast<ssize_t>(name.size()), value.data(),
                          static_cast<ssize_t>(value.size()));
      header_bytes += name.size() + value.size();
    }
  }
  absl::StatusOr<rd_kafka_topic_t*> topic = Topic(request.topic);
  if (!topic.ok()) {
    if (headers != nullptr) rd_kafka_headers_destroy(headers);
    return topic.status();
  }

  // Counted before the call: the report cannot arrive before the next Poll on
  // this thread, and a failed call undoes it.
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  const rd_kafka_resp_err_t err = rd_kafka_producev(
      rk_, RD_KAFKA_V_RKT(*topic),
      RD_KAFKA_V_KEY(const_cast<char*>(request.key.data()), request.key.size()),
      RD_KAFKA_V_VALUE(request.null_value ? nullptr : const_cast<char*>(request.value.data()),
                       request.null_value ? 0 : request.value.size()),
      RD_KAFKA_V_PARTITION(request.partition < 0 ? RD_KAFKA_PARTITION_UA : request.partition),
      RD_KAFKA_V_TIMESTAMP(request.timestamp_ms),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
      RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(request.token))),
      RD_KAFKA_V_END);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return absl::OkStatus();  // headers now librdkafka's

  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  if (headers != nullptr) rd_kafka_headers_destroy(headers);
  switch (err) {
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
      return absl::ResourceExhaustedError(
          "Kafka producer queue full (queue.buffering.max.messages or queue.buffering.max.kbytes "
          "reached)");
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
      return BadEventError(bad_event::kMessageTooLarge, fmt::format(
          "record of {} bytes (key {}, value {}, headers {}) for topic \"{}\" exceeds the "
          "producer's message.max.bytes ({}); shrink the payload or raise message.max.bytes in "
          "[sink.kafka] together with the topic's max.message.bytes",
          request.key.size() + request.value.size() + header_bytes, request.key.size(),
          request.value.size(), header_bytes, request.topic, message_max_bytes_));
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
      return StatusFor(err,
                       fmt::format("cannot produce to topic \"{}\": {}", request.topic, ErrText(err)));
    case RD_KAFKA_RESP_ERR__FATAL: {
      const absl::Status fatal = FatalError();
      return absl::UnavailableError(
          fmt::format("cannot produce to topic \"{}\": {}", request.topic,
                      std::string(fatal.message())));
    }
    default:
      return absl::UnavailableError(
          fmt::format("cannot produce to topic \"{}\": {}", request.topic, ErrText(err)));
  }
}

void RdKafkaSink::Poll(absl::Duration timeout) {
  // Empty the pipe first: whatever librdkafka enqueues after this writes again.
  char drain[64];
  while (read(wake_read_, drain, sizeof drain) > 0) {
  }
  rd_kafka_poll(rk_, ToTimeoutMs(timeout));
}

absl::Status RdKafkaSink::Flush(absl::Duration timeout) {
  rd_kafka_flush(rk_, ToTimeoutMs(timeout));
  const size_t outstanding = InFlight();
  if (outstanding == 0) return absl::OkStatus();
  return absl::DeadlineExceededError(fmt::format(
      "{} Kafka records still have no delivery report after {}; brokers {} may be down or slow",
      outstanding, absl::FormatDuration(timeout), bootstrap_servers_));
}

absl::Status RdKafkaSink::CheckReachable(absl::Duration timeout) {
  const rd_kafka_metadata_t* metadata = nullptr;
  // Brokers only (no topics): cheap, and proves a round trip to the cluster.
  const rd_kafka_resp_err_t err = rd_kafka_metadata(rk_, 0, nullptr, &metadata, ToTimeoutMs(timeout));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(fmt::format(
        "Kafka brokers {} did not answer a metadata request within {}: {}; check "
        "bootstrap.servers in [sink.kafka] and that the brokers are up and reachable",
        bootstrap_servers_, absl::FormatDuration(timeout), ErrText(err)));
  }
  const int brokers = metadata->broker_cnt;
  rd_kafka_metadata_destroy(metadata);
  if (brokers == 0) {
    return absl::UnavailableError(fmt::format(
        "Kafka cluster at {} answered but lists no brokers; is it still starting?",
        bootstrap_servers_));
  }
  return absl::OkStatus();
}

absl::Status RdKafkaSink::FatalError() const {
  char errstr[512];
  errstr[0] = '\0';
  const rd_kafka_resp_err_t err = rd_kafka_fatal_error(rk_, errstr, sizeof errstr);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return absl::OkStatus();
  if (err == RD_KAFKA_RESP_ERR__FENCED || err == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
      err == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH) {
    return FencedError(fmt::format(
        "another producer with transactional.id '{}' took over (or the coordinator ended a transaction "
        "that outlived transaction.timeout.ms): the Kafka producer is fenced: {}: {}",
        options_.transactional_id, rd_kafka_err2name(err), Redact(errstr)));
  }
  return absl::AbortedError(fmt::format(
      "Kafka producer hit a fatal error, it must be recreated: {}: {}", rd_kafka_err2name(err),
      Redact(errstr)));
}

void RdKafkaSink::Purge() {
  rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_poll(rk_, 0);
}

absl::Status RdKafkaSink::TxnStatus(rd_kafka_error_t* error, std::string_view what) {
  const rd_kafka_resp_err_t code = rd_kafka_error_code(error);
  const std::string text = fmt::format("Kafka {} failed: {} ({})", what, Redact(rd_kafka_error_string(error)),
                                       rd_kafka_error_name(error));
  const bool fatal = rd_kafka_error_is_fatal(error);
  const bool retriable = rd_kafka_error_is_retriable(error);
  const bool abortable = rd_kafka_error_txn_requires_abort(error);
  rd_kafka_error_destroy(error);
  if (code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
      code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH) {
    return FencedError(fmt::format(
        "another producer with transactional.id '{}' took over (or the coordinator ended a transaction "
        "that outlived transaction.timeout.ms): {}",
        options_.transactional_id, text));
  }
  if (fatal) return absl::AbortedError(fmt::format("{}; the producer must be recreated", text));
  if (abortable) return absl::AbortedError(fmt::format("{}; the transaction must be aborted", text));
  if (retriable || code == RD_KAFKA_RESP_ERR__TIMED_OUT) return absl::DeadlineExceededError(text);
  if (code == RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED ||
      code == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED) {
    return absl::PermissionDeniedError(fmt::format(
        "{}; grant the principal Write and Describe on transactional id '{}' (and IdempotentWrite "
        "on the cluster)",
        text, options_.transactional_id));
  }
  return absl::UnavailableError(text);
}

absl::Status RdKafkaSink::InitTransactions(absl::Duration timeout, int stop_fd) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    // Short slices, so that a stop is seen; the call resumes where it left off.
    rd_kafka_error_t* error = rd_kafka_init_transactions(rk_, 200);
    if (error == nullptr) return absl::OkStatus();
    absl::Status status = TxnStatus(error, "init_transactions");
    if (!absl::IsDeadlineExceeded(status)) return status;
    if (stop_fd >= 0) {
      pollfd pfd{stop_fd, POLLIN, 0};
      if (poll(&pfd, 1, 0) > 0) return absl::CancelledError("stop requested during init_transactions");
    }
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(fmt::format(
          "Kafka init_transactions for transactional.id '{}' did not complete within {}: {}; check that "
          "the brokers {} are up and that the cluster allows transactions (transaction.state.log.* "
          "settings: replication factor and min.insync.replicas not above the broker count)",
          options_.transactional_id, absl::FormatDuration(timeout), status.message(), bootstrap_servers_));
    }
  }
}

absl::Status RdKafkaSink::BeginTransaction() {
  rd_kafka_error_t* error = rd_kafka_begin_transaction(rk_);
  return error == nullptr ? absl::OkStatus() : TxnStatus(error, "begin_transaction");
}

absl::Status RdKafkaSink::CommitTransaction(absl::Duration timeout) {
  rd_kafka_error_t* error = rd_kafka_commit_transaction(rk_, ToTimeoutMs(timeout));
  return error == nullptr ? absl::OkStatus() : TxnStatus(error, "commit_transaction");
}

absl::Status RdKafkaSink::AbortTransaction(absl::Duration timeout) {
  rd_kafka_error_t* error = rd_kafka_abort_transaction(rk_, ToTimeoutMs(timeout));
  return error == nullptr ? absl::OkStatus() : TxnStatus(error, "abort_transaction");
}

void RdKafkaSink::OnDelivery(rd_kafka_t* rk, const rd_kafka_message_t* msg, void* opaque) {
  auto* sink = static_cast<RdKafkaSink*>(opaque);
  sink->in_flight_.fetch_sub(1, std::memory_order_relaxed);
  if (!sink->handler_) return;
  const uint64_t token = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(msg->_private));
  if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    sink->handler_(token, absl::OkStatus());
    return;
  }
  std::string reason = ErrText(msg->err);
  if (msg->err == RD_KAFKA_RESP_ERR__FATAL) reason = std::string(sink->FatalError().message());
  const char* topic = msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : "?";
  const absl::Status status =
      StatusFor(msg->err, fmt::format("delivery to Kafka topic \"{}\" failed: {}", topic, reason));
  sink->handler_(token, status);
}

void RdKafkaSink::OnError(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
  auto* sink = static_cast<RdKafkaSink*>(opaque);
  if (!sink->options_.error) return;
  const auto code = static_cast<rd_kafka_resp_err_t>(err);
  std::string text = code == RD_KAFKA_RESP_ERR__FATAL
                         ? std::string(sink->FatalError().message())
                         : fmt::format("Kafka client error: {} ({})", sink->Redact(reason),
                                       rd_kafka_err2name(code));
  sink->options_.error(absl::Status(CodeFor(code), text));
}

void RdKafkaSink::OnLog(const rd_kafka_t* rk, int level, const char* facility,
                        const char* message) {
  auto* sink = static_cast<RdKafkaSink*>(rd_kafka_opaque(rk));
  if (sink == nullptr || !sink->options_.log) return;
  sink->options_.log(level, facility, sink->Redact(message));
}

int RdKafkaSink::OnStats(rd_kafka_t*, char* json, size_t json_len, void* opaque) {
  auto* sink = static_cast<RdKafkaSink*>(opaque);
  if (!sink->options_.brokers_up) return 0;
  const nlohmann::json stats = nlohmann::json::parse(json, json + json_len, nullptr,
                                                     /*allow_exceptions=*/false);
  if (stats.is_discarded() || !stats.contains("brokers") || !stats["brokers"].is_object()) return 0;
  int up = 0;
  for (const auto& [name, broker] : stats["brokers"].items()) {
    // "internal" and "logical" entries are librdkafka's own, not connections.
    const std::string source = broker.value("source", "");
    if (source == "internal" || source == "logical") continue;
    if (broker.value("state", "") == "UP") ++up;
  }
  sink->options_.brokers_up(up);
  return 0;  // librdkafka frees the JSON
}

}  // namespace outboxd::kafka
