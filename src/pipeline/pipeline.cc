#include "pipeline/pipeline.h"

#include <poll.h>

#include <algorithm>
#include <utility>

#include "common/bad_event.h"
#include "common/status_macros.h"
#include "common/time.h"
#include "common/format.h"
#include "fmt/format.h"
#include "telemetry/logging.h"
#include "pgoutput/decoder.h"
#include "pipeline/sleep.h"
#include "replication/copy_frame.h"

namespace outboxd::pipeline {
namespace {

using replication::Keepalive;
using replication::ServerFrame;
using replication::StandbyStatus;
using replication::XLogData;

// Frames handled per wake before delivery reports are served again, so that
// a fast stream cannot starve Kafka's side (or the stop signal).
constexpr int kFrameBudget = 1024;
// Only for a sink that cannot signal a descriptor (test doubles): how often
// to poll it while it holds records.
constexpr absl::Duration kSinkWithoutFdPoll = absl::Milliseconds(1);

int ToPollTimeout(absl::Duration left) {
  if (left <= absl::ZeroDuration()) return 0;
  if (left >= absl::Hours(1)) return 3600 * 1000;
  return static_cast<int>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
}

std::string Describe(const outbox::OutboxEvent& event) {
  if (!event.source.table.empty()) {
    return fmt::format("{}.{} at LSN {} (xid {})", event.source.schema, event.source.table,
                       event.source.lsn.ToString(), event.source.xid);
  }
  return fmt::format("logical message '{}' at LSN {} (xid {})", event.source.message_prefix,
                     event.source.lsn.ToString(), event.source.xid);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Create(replication::ReplicationStream* stream,
                                                           kafka::EventSink* sink,
                                                           PipelineOptions options,
                                                           telemetry::Metrics* metrics, Clock clock) {
  std::vector<outbox::TopicTemplate> table_topics;
  for (const outbox::TableConfig& table : options.tables) {
    ASSIGN_OR_RETURN(outbox::TopicTemplate topic, outbox::TopicTemplate::Parse(table.topic));
    table_topics.push_back(std::move(topic));
  }
  ASSIGN_OR_RETURN(outbox::TopicTemplate message_topic,
                   outbox::TopicTemplate::Parse(options.messages_topic));
  auto pipeline = std::unique_ptr<Pipeline>(
      new Pipeline(stream, sink, std::move(options), metrics, std::move(clock)));
  pipeline->table_topics_ = std::move(table_topics);
  pipeline->message_topic_ = std::make_unique<outbox::TopicTemplate>(std::move(message_topic));
  return pipeline;
}

Pipeline::Pipeline(replication::ReplicationStream* stream, kafka::EventSink* sink,
                   PipelineOptions options, telemetry::Metrics* metrics, Clock clock)
    : stream_(stream),
      sink_(sink),
      options_(std::move(options)),
      metrics_(metrics),
      clock_(std::move(clock)),
      mapper_(options_.tables),
      eos_(options_.exactly_once) {}

Pipeline::~Pipeline() {
  // The sink may outlive this session (the relay keeps a working producer
  // across PostgreSQL reconnects): no report may reach this object again.
  sink_->SetDeliveryHandler([](uint64_t, const absl::Status&) {});
  sink_->SetFailedRecordHandler(nullptr);
  metrics_->inflight_events.store(0, std::memory_order_relaxed);
  metrics_->producer_queue_bytes.store(0, std::memory_order_relaxed);
}

absl::Status Pipeline::Run(const std::atomic<bool>& stop) {
  stop_ = &stop;
  sink_->SetDeliveryHandler(
      [this](uint64_t token, const absl::Status& status) { OnDelivery(token, status); });
  sink_->SetFailedRecordHandler([this](const kafka::ProduceRequest& record,
                                       const absl::Status& status) {
    OnFailedRecord(record, status);
  });
  // Topics known now get their handles (and metadata requests) before the
  // first event needs them.
  for (const outbox::TopicTemplate& topic : table_topics_) {
    if (topic.text().find('{') == std::string::npos) sink_->PrepareTopic(topic.text());
  }
  if (options_.messages_enabled && message_topic_->text().find('{') == std::string::npos) {
    sink_->PrepareTopic(message_topic_->text());
  }
  if (options_.on_bad_event == outbox::BadEventPolicy::kDeadLetter) {
    sink_->PrepareTopic(options_.dead_letter_topic);
  }
  // A Cancelled status is the stop signal seen inside a wait (backpressure).
  // So is a Kafka transaction the stop cut short: its events count as unacknowledged.
  auto stopped = [&](const absl::Status& status) {
    return stopping() && (absl::IsCancelled(status) || (kafka_txn_failed_ && !kafka::IsFenced(status)));
  };
  while (!stopping()) {
    // Kafka: every delivery report that arrived, once per wake.
    sink_->Poll(absl::ZeroDuration());
    if (absl::Status checked = CheckDeliveries(); !checked.ok()) {
      if (stopped(checked)) break;
      return checked;
    }
    // PostgreSQL: every complete frame, up to a budget.
    bool more = true;
    for (int n = 0; n < kFrameBudget && !stopping(); ++n) {
      std::string_view frame;
      absl::StatusOr<bool> got = stream_->ReadFrame(absl::ZeroDuration(), &frame);
      // The stream broke. The next session resumes from the slot's confirmed
      // position: whatever was acknowledged since is published again
      // (duplicates, never gaps).
      if (!got.ok()) return got.status();
      if (!*got) {
        more = false;
        break;
      }
      absl::Status handled = HandleFrame(frame);
      if (stopped(handled)) break;
      RETURN_IF_ERROR(handled);
    }
    if (stopping()) break;
    // Exactly-once: commit the Kafka transaction when one of its triggers holds.
    if (absl::Status committed = MaybeCommitKafkaTransaction(/*caught_up=*/!more); !committed.ok()) {
      if (stopped(committed)) break;
      return committed;
    }
    // The status update, decided once.
    RETURN_IF_ERROR(MaybeSendStatus(/*force=*/reply_pending_));
    if (more) continue;  // frames left over: serve Kafka, then read on
    absl::Time deadline = NextStatusDue();
    if (kafka_txn_open_) deadline = std::min(deadline, kafka_txn_opened_ + eos_->split_after);
    absl::Status waited = Wait(deadline, /*read_stream=*/true);
    if (stopped(waited)) break;
    RETURN_IF_ERROR(waited);
  }
  return GracefulStop();
}

absl::Time Pipeline::NextStatusDue() const {
  if (reply_pending_) return absl::InfinitePast();
  return FlushCandidate() > confirmed_sent_ ? last_status_sent_ + options_.feedback_delay
                                            : last_status_sent_ + options_.status_interval;
}

absl::Status Pipeline::Wait(absl::Time deadline, bool read_stream) {
  absl::Duration timeout = std::max(deadline - clock_(), absl::ZeroDuration());
  const int sink_fd = sink_->WakeFd();
  if (sink_fd < 0 && sink_->InFlight() > 0) timeout = std::min(timeout, kSinkWithoutFdPoll);
  const int stream_fd = read_stream ? stream_->socket() : -1;
  if (read_stream && stream_fd < 0) {
    std::string_view frame;
    ASSIGN_OR_RETURN(bool got, stream_->ReadFrame(timeout, &frame));
    return got ? HandleFrame(frame) : absl::OkStatus();
  }
  if (sink_fd < 0 && !read_stream) {
    // A test double under backpressure: let it serve its reports.
    sink_->Poll(std::min(timeout, kSinkWithoutFdPoll));
    return absl::OkStatus();
  }
  pollfd fds[3];
  nfds_t n = 0;
  if (stream_fd >= 0) fds[n++] = {stream_fd, POLLIN, 0};
  if (sink_fd >= 0) fds[n++] = {sink_fd, POLLIN, 0};
  if (options_.stop_fd >= 0) fds[n++] = {options_.stop_fd, POLLIN, 0};
  // EINTR (a signal) and readiness alike: the caller looks at everything again.
  poll(fds, n, ToPollTimeout(timeout));
  return absl::OkStatus();
}

absl::Status Pipeline::HandleFrame(std::string_view bytes) {
  absl::StatusOr<ServerFrame> frame = replication::DecodeServerFrame(bytes);
  if (!frame.ok()) {
    return absl::DataLossError(fmt::format(
        "cannot decode a replication frame from PostgreSQL: {}; this is a protocol error, not a "
        "bad event: report it with the server version",
        frame.status().message()));
  }
  if (const Keepalive* keepalive = std::get_if<Keepalive>(&*frame)) {
    server_wal_end_ = std::max(server_wal_end_, keepalive->wal_end);
    // The walsender has sent everything before walEnd; reporting it as written
    // keeps the server from pinging us again and again while we are behind.
    received_ = std::max(received_, keepalive->wal_end);
    metrics_->server_wal_end.store(server_wal_end_.value(), std::memory_order_relaxed);
    metrics_->received_lsn.store(received_.value(), std::memory_order_relaxed);
    UpdateLagMetric();
    // The walsender's keepalive carries the position it has sent up to.
    // Between transactions nothing before it is left to read, so it is
    // confirmed once everything before it is acknowledged (at once when
    // idle): an idle outbox does not pin other tables' WAL, and the written
    // position reported above is one outboxd goes on to confirm.
    tracker_.Received(keepalive->wal_end);
    if (!tracker_.in_transaction()) last_end_ = std::max(last_end_, keepalive->wal_end);
    if (keepalive->reply_requested) reply_pending_ = true;
    return absl::OkStatus();
  }
  const XLogData& data = std::get<XLogData>(*frame);
  received_ = std::max(received_, data.data_start);
  server_wal_end_ = std::max(server_wal_end_, data.wal_end);
  metrics_->received_lsn.store(received_.value(), std::memory_order_relaxed);
  absl::Status decoded = pgoutput::DecodeMessageInto(data.data, message_);
  if (!decoded.ok()) {
    return absl::Status(decoded.code(),
                        fmt::format("cannot decode pgoutput data at LSN {}: {}",
                                    data.data_start.ToString(), decoded.message()));
  }
  if (absl::Status valid = validator_.Check(message_, data.data_start); !valid.ok()) return valid;
  return HandleMessage(data.data_start);
}

absl::Status Pipeline::HandleMessage(Lsn lsn) {
  using namespace pgoutput;  // NOLINT: the message types read better unqualified here
  if (auto* begin = std::get_if<BeginMessage>(&message_)) {
    if (tracker_.in_transaction()) {
      return absl::DataLossError(fmt::format("pgoutput Begin at LSN {} inside an open transaction",
                                             lsn.ToString()));
    }
    begin_ = *begin;
    tracker_.Begin(begin->commit_time);
    pg_txn_events_ = 0;
    has_event_position_ = false;
    skipped_in_txn_ = false;
    split_logged_ = false;
    if (eos_ != nullptr && !skip_logged_ && skipped_events_ > 0 &&
        !eos_->committed.CoversTransaction(begin->final_lsn)) {
      skip_logged_ = true;
      telemetry::LogInfo("exactly-once: skipped {} event(s) in {} transaction(s) already committed to Kafka "
                         "(checkpoint LSN {})",
                         skipped_events_, skipped_transactions_, eos_->committed.lsn.ToString());
    }
    return absl::OkStatus();
  }
  if (auto* commit = std::get_if<CommitMessage>(&message_)) {
    if (!tracker_.in_transaction()) {
      return absl::DataLossError(fmt::format("pgoutput Commit at LSN {} without a Begin",
                                             commit->end_lsn.ToString()));
    }
    tracker_.Commit(commit->end_lsn);
    received_ = std::max(received_, commit->end_lsn);
    last_end_ = std::max(last_end_, commit->end_lsn);
    metrics_->transactions.fetch_add(1, std::memory_order_relaxed);
    if (skipped_in_txn_) ++skipped_transactions_;
    if (!kafka_txn_open_) return absl::OkStatus();
    if (pg_txn_events_ > 0) kafka_txn_commit_times_.emplace_back(begin_.commit_time, pg_txn_events_);
    kafka_txn_events_ += pg_txn_events_;
    pg_txn_events_ = 0;
    kafka_txn_last_whole_ = commit->end_lsn;
    return MaybeCommitKafkaTransaction(/*caught_up=*/false);
  }
  if (auto* insert = std::get_if<InsertMessage>(&message_)) return HandleInsert(lsn, *insert);
  if (auto* message = std::get_if<LogicalMessage>(&message_)) return HandleLogicalMessage(*message);
  if (auto* relation = std::get_if<RelationMessage>(&message_)) {
    mapper_.OnRelation(*relation);
    relations_.Put(std::move(*relation));
    return absl::OkStatus();
  }
  if (std::holds_alternative<UpdateMessage>(message_)) {
    metrics_->changes_ignored.Add("update");
  } else if (std::holds_alternative<DeleteMessage>(message_)) {
    metrics_->changes_ignored.Add("delete");
  } else if (std::holds_alternative<TruncateMessage>(message_)) {
    metrics_->changes_ignored.Add("truncate");
  }
  // Type and Origin messages carry nothing an outbox event needs.
  return absl::OkStatus();
}

absl::Status Pipeline::HandleInsert(Lsn lsn, const pgoutput::InsertMessage& insert) {
  const outbox::TableBinding* binding = mapper_.Find(insert.relation_oid);
  if (binding == nullptr) {
    absl::StatusOr<const pgoutput::RelationMessage*> relation = relations_.Get(insert.relation_oid);
    if (!relation.ok()) return relation.status();  // the server broke the protocol
    metrics_->changes_ignored.Add("insert_unmapped_table");
    if (warned_relations_.insert(insert.relation_oid).second) {
      telemetry::LogWarn(
          "table {}.{} is in publication but no [[outbox]] entry maps it: its inserts are counted "
          "(outboxd_changes_ignored_total{{kind=\"insert_unmapped_table\"}}) and not published; "
          "add an [[outbox]] entry or remove the table from the publication",
          (*relation)->schema, (*relation)->name);
    }
    return absl::OkStatus();
  }
  if (AlreadyInKafka(lsn)) return absl::OkStatus();
  absl::Status mapped = mapper_.MapInsert(*binding, insert.new_tuple, &event_);
  SetSourcePosition(lsn);
  event_.source.schema = binding->schema;
  event_.source.table = binding->table;
  if (!mapped.ok()) {
    const std::string what = fmt::format("bad outbox row in {}.{} at LSN {} (xid {})",
                                         binding->schema, binding->table, lsn.ToString(),
                                         begin_.xid);
    const std::string reason = BadEventReason(mapped);
    if (!reason.empty() && options_.on_bad_event == outbox::BadEventPolicy::kDeadLetter) {
      ASSIGN_OR_RETURN(const pgoutput::RelationMessage* relation,
                       relations_.Get(insert.relation_oid));
      outbox::DeadLetterForRow(reason, StatusMessage(mapped), event_, *relation, insert.new_tuple,
                               &dead_letter_);
    }
    return OnBadEvent(mapped, what, /*token=*/std::nullopt);
  }
  return Publish(table_topics_[binding->config_index], binding->config->key,
                 binding->config->record);
}

absl::Status Pipeline::HandleLogicalMessage(const pgoutput::LogicalMessage& message) {
  if (!message.transactional()) {
    // Not part of a transaction: it may describe work that rolled back.
    metrics_->changes_ignored.Add("message_nontransactional");
    return absl::OkStatus();
  }
  if (!options_.messages_enabled || message.prefix != options_.messages_prefix) {
    metrics_->changes_ignored.Add("message_other_prefix");
    return absl::OkStatus();
  }
  if (AlreadyInKafka(message.lsn)) return absl::OkStatus();
  absl::Status mapped = outbox::MapLogicalMessage(message.content, &event_);
  SetSourcePosition(message.lsn);
  event_.source.message_prefix = std::string(message.prefix);
  if (!mapped.ok()) {
    const std::string what =
        fmt::format("bad outbox message with prefix '{}' at LSN {} (xid {})", message.prefix,
                    message.lsn.ToString(), begin_.xid);
    const std::string reason = BadEventReason(mapped);
    if (!reason.empty()) {
      outbox::DeadLetterForMessage(reason, StatusMessage(mapped), event_, message.content,
                                   &dead_letter_);
    }
    return OnBadEvent(mapped, what, /*token=*/std::nullopt);
  }
  return Publish(*message_topic_, options_.messages_key, options_.messages_record);
}

void Pipeline::SetSourcePosition(Lsn lsn) {
  event_.source.commit_lsn = begin_.final_lsn;
  event_.source.lsn = lsn;
  event_.source.xid = begin_.xid;
  event_.source.commit_time = begin_.commit_time;
}

absl::Status Pipeline::Publish(const outbox::TopicTemplate& topic, outbox::KeySource key,
                               const outbox::RecordConfig& record) {
  if (!tracker_.in_transaction()) {
    // pgoutput sends changes and transactional messages only between Begin
    // and Commit; anything else is a stream we cannot trust.
    return absl::DataLossError(
        fmt::format("pgoutput sent {} outside a transaction", Describe(event_)));
  }
  if (absl::Status rendered = topic.Render(event_, &topic_); !rendered.ok()) {
    const std::string reason = BadEventReason(rendered);
    if (!reason.empty()) {
      outbox::DeadLetterForEvent(reason, StatusMessage(rendered), event_, "", /*keep_payload=*/true,
                                 &dead_letter_);
    }
    return OnBadEvent(rendered, fmt::format("cannot route {}", Describe(event_)), /*token=*/std::nullopt);
  }
  if (absl::Status built = outbox::BuildRecord(event_, record, outbox::RecordKey(event_, key),
                                               &record_);
      !built.ok()) {
    const std::string reason = BadEventReason(built);
    if (!reason.empty()) {
      outbox::DeadLetterForEvent(reason, StatusMessage(built), event_, topic_,
                                 /*keep_payload=*/true, &dead_letter_);
    }
    return OnBadEvent(built, fmt::format("cannot build the record of {}", Describe(event_)),
                      /*token=*/std::nullopt);
  }
  if (eos_ != nullptr && !eos_->refused.empty()) {
    // The broker refused this record in an aborted transaction: its dead letter goes in its place.
    auto refused = eos_->refused.find({begin_.final_lsn.value(), event_position_.lsn.value(), event_position_.index});
    if (refused != eos_->refused.end()) {
      const absl::Status error = BadEventError(refused->second.reason, refused->second.detail);
      outbox::DeadLetterForEvent(refused->second.reason, refused->second.detail, event_, topic_,
                                 /*keep_payload=*/refused->second.reason != bad_event::kMessageTooLarge,
                                 &dead_letter_);
      return OnBadEvent(error, fmt::format("Kafka refused {}", Describe(event_)), /*token=*/std::nullopt);
    }
  }
  kafka::ProduceRequest request{
      .topic = topic_,
      .key = record_.key,
      .value = record_.value,
      .headers = &record_.headers,
      // One token per record (the tracker's token names the transaction), so
      // that its report finds its topic and size.
      .token = next_record_token_++,
      // Payload mode writes the column as it is: never framed for a schema registry.
      .envelope = record.value == outbox::ValueFormat::kEnvelope,
      .null_value = record_.null_value,
      .timestamp_ms = record_.timestamp_ms,
      .partition = record_.partition,
  };
  TrackRecord(request, topic_, tracker_.AddEvent());
  if (eos_ != nullptr) {
    InflightRecord& tracked = inflight_records_[request.token];
    tracked.commit_lsn = begin_.final_lsn;
    tracked.position = event_position_;
  }
  absl::Status produced = ProduceWithBackpressure(request);
  if (produced.ok() || absl::IsAborted(produced) || absl::IsCancelled(produced)) return produced;
  if (absl::IsUnavailable(produced)) {
    // A Kafka fault, not the replication stream's: Aborted tells the relay so.
    return absl::AbortedError(fmt::format("Kafka refused {}: {}", Describe(event_), produced.message()));
  }
  const std::string reason = BadEventReason(produced);
  if (!reason.empty()) {
    // Refused at produce time (e.g. larger than message.max.bytes): the dead
    // letter takes this event's place and its tracker slot.
    outbox::DeadLetterForEvent(reason, StatusMessage(produced), event_, topic_,
                               /*keep_payload=*/reason != bad_event::kMessageTooLarge,
                               &dead_letter_);
    return OnBadEvent(produced, fmt::format("cannot produce {} to topic {}", Describe(event_), topic_),
                      request.token);
  }
  return absl::InvalidArgumentError(
      fmt::format("cannot produce {} to topic {}: {}", Describe(event_), topic_, produced.message()));
}

absl::Status Pipeline::OnBadEvent(const absl::Status& error, std::string_view what,
                                  std::optional<uint64_t> token) {
  const std::string reason = BadEventReason(error);
  if (reason.empty() || options_.on_bad_event == outbox::BadEventPolicy::kStop) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: {}; outboxd stopped before it and confirmed nothing at or after it; fix or delete "
        "the offending row's transaction at the source, or set [errors] on_bad_event = "
        "\"dead_letter\" to send such events to a dead-letter topic and go on (see "
        "docs/configuration.md, [errors])",
        what, error.message()));
  }
  if (!token.has_value()) {
    if (!tracker_.in_transaction()) {
      return absl::DataLossError(fmt::format("pgoutput sent {} outside a transaction", what));
    }
    // A new event of the open transaction; ProduceDeadLetter sets its topic and size.
    token = next_record_token_++;
    inflight_records_[*token].txn_token = tracker_.AddEvent();
  }
  return ProduceDeadLetter(dead_letter_, *token, what, StatusMessage(error));
}

absl::Status Pipeline::ProduceDeadLetter(const outbox::DeadLetter& letter, uint64_t token,
                                         std::string_view what, std::string_view detail) {
  // Once per event, without payload contents (errors never quote payloads).
  telemetry::LogWarn("{}: {}; sent to dead-letter topic {} instead (reason {}, counted in "
               "outboxd_events_dead_lettered_total)",
               what, detail, options_.dead_letter_topic, letter.reason);
  metrics_->events_dead_lettered.Add(letter.reason);
  dead_letter_headers_.clear();
  for (const outbox::Header& h : letter.headers) dead_letter_headers_.emplace_back(h.key, h.value);
  const kafka::ProduceRequest request{
      .topic = options_.dead_letter_topic,
      .key = letter.key,
      .value = letter.value,
      .headers = &dead_letter_headers_,
      .token = token,
      .envelope = false,  // the refused row or message, not an envelope
  };
  // The dead letter takes over its event's record: same transaction, new topic and size.
  TrackRecord(request, options_.dead_letter_topic, inflight_records_.at(token).txn_token);
  absl::Status produced = ProduceWithBackpressure(request);
  if (produced.ok() || absl::IsAborted(produced) || absl::IsCancelled(produced)) return produced;
  if (absl::IsUnavailable(produced)) {
    return absl::AbortedError(
        fmt::format("Kafka refused the dead letter for {}: {}", what, produced.message()));
  }
  return absl::FailedPreconditionError(fmt::format(
      "cannot dead-letter {} to topic {}: {}; outboxd stopped before it and confirmed nothing at "
      "or after it; check [errors] dead_letter_topic and that the broker accepts records of this "
      "size there",
      what, options_.dead_letter_topic, produced.message()));
}

absl::Status Pipeline::ProduceWithBackpressure(const kafka::ProduceRequest& request) {
  RETURN_IF_ERROR(EnsureKafkaTransaction());
  while (true) {
    absl::Status status = sink_->Produce(request);
    if (!absl::IsResourceExhausted(status)) {
      backpressure_ = false;
      return status;
    }
    // The producer queue is full: stop reading PostgreSQL (the socket is left
    // unread, so the walsender waits on its send buffer), wait for Kafka or the
    // stop signal, and keep status updates flowing: the walsender counts each
    // one as our reply, and a keepalive already read is answered at once.
    // The record stays unproduced on a stop: its transaction is never
    // confirmed, and it is published again from the slot.
    if (stopping()) {
      return absl::CancelledError("stop requested while the Kafka producer queue was full");
    }
    if (!backpressure_) {
      telemetry::LogDebug("Kafka producer queue full: PostgreSQL input paused until Kafka catches up");
      backpressure_ = true;
    }
    RETURN_IF_ERROR(Wait(NextStatusDue(), /*read_stream=*/false));
    sink_->Poll(absl::ZeroDuration());
    RETURN_IF_ERROR(CheckFailures());
    RETURN_IF_ERROR(MaybeSendStatus(/*force=*/reply_pending_));
  }
}

void Pipeline::TrackRecord(const kafka::ProduceRequest& request, const std::string& topic,
                           uint64_t txn_token) {
  auto topic_id = topic_ids_.find(topic);
  if (topic_id == topic_ids_.end()) {
    topic_id = topic_ids_.emplace(topic, static_cast<uint32_t>(topic_names_.size())).first;
    topic_names_.push_back(topic);
  }
  size_t bytes = request.key.size() + request.value.size();
  if (request.headers != nullptr) {
    for (const auto& [name, value] : *request.headers) bytes += name.size() + value.size();
  }
  InflightRecord& record = inflight_records_[request.token];
  inflight_bytes_ += static_cast<int64_t>(bytes) - record.bytes;  // a dead letter replaces its event
  record.txn_token = txn_token;
  record.topic = topic_id->second;
  record.bytes = static_cast<uint32_t>(bytes);
  metrics_->producer_queue_bytes.store(inflight_bytes_, std::memory_order_relaxed);
  metrics_->inflight_events.store(static_cast<int64_t>(tracker_.inflight_events()),
                                  std::memory_order_relaxed);
}

void Pipeline::OnFailedRecord(const kafka::ProduceRequest& record, const absl::Status& status) {
  const std::string reason = BadEventReason(status);
  if (reason.empty() || options_.on_bad_event != outbox::BadEventPolicy::kDeadLetter) return;
  if (eos_ != nullptr) {
    // Its transaction cannot commit any more: remember the record, so that
    // the next session dead-letters it inside a transaction that can.
    auto tracked = inflight_records_.find(record.token);
    if (tracked == inflight_records_.end() || !tracked->second.commit_lsn.valid() ||
        record.topic == options_.dead_letter_topic) {
      dead_letter_refused_ = record.topic == options_.dead_letter_topic;
      return;
    }
    eos_->refused[{tracked->second.commit_lsn.value(), tracked->second.position.lsn.value(),
                   tracked->second.position.index}] = {reason, std::string(status.message())};
    return;
  }
  if (record.topic == options_.dead_letter_topic) {
    dead_letter_refused_ = true;  // no dead letter for a dead letter: CheckFailures stops
    return;
  }
  outbox::OutboxEvent event;
  if (!outbox::DecodeEnvelope(record.value, &event).ok()) return;  // not ours: fails the session
  Refused& refused = refused_.emplace_back();
  refused.token = record.token;
  refused.what = fmt::format("Kafka refused {}", Describe(event));
  refused.detail = std::string(status.message());
  outbox::DeadLetterForEvent(reason, StatusMessage(status), event, record.topic,
                             /*keep_payload=*/reason != bad_event::kMessageTooLarge,
                             &refused.letter);
  refused_token_ = record.token;
}

void Pipeline::OnDelivery(uint64_t record_token, const absl::Status& status) {
  if (refused_token_ == record_token) {
    // Its dead letter, produced from CheckDeliveries, reports on this token and
    // keeps the record (and its transaction's slot in the tracker) open.
    refused_token_.reset();
    return;
  }
  auto record = inflight_records_.find(record_token);
  if (record == inflight_records_.end()) return;  // not ours (the tracker ignores those too)
  const uint64_t token = record->second.txn_token;
  if (status.ok()) metrics_->events_published.Add(topic_names_[record->second.topic]);
  inflight_bytes_ -= record->second.bytes;
  metrics_->producer_queue_bytes.store(inflight_bytes_, std::memory_order_relaxed);
  inflight_records_.erase(record);
  if (status.ok() && eos_ == nullptr) {
    // Exactly-once observes at the Kafka commit instead: what consumers wait for.
    const int64_t commit_time = tracker_.CommitTimeOf(token);
    if (commit_time != 0) {
      metrics_->publish_latency.Observe(
          absl::ToDoubleSeconds(clock_() - PgTimestampToTime(commit_time)));
    }
  } else if (delivery_error_.ok()) {
    delivery_error_ = status;
  }
  tracker_.OnDelivery(token, status.ok());
  metrics_->inflight_events.store(static_cast<int64_t>(tracker_.inflight_events()),
                                  std::memory_order_relaxed);
}

absl::Status Pipeline::CheckDeliveries() {
  RETURN_IF_ERROR(CheckFailures());
  return DeadLetterRefused();
}

absl::Status Pipeline::DeadLetterRefused() {
  while (!refused_.empty()) {
    Refused refused = std::move(refused_.front());
    refused_.pop_front();
    RETURN_IF_ERROR(ProduceDeadLetter(refused.letter, refused.token, refused.what, refused.detail));
  }
  return absl::OkStatus();
}

absl::Status Pipeline::CheckFailures() {
  if (absl::Status fatal = sink_->FatalError(); !fatal.ok()) {
    if (kafka::IsFenced(fatal)) return fatal;  // the relay goes back to the slot as a standby
    return absl::AbortedError(fmt::format("Kafka producer failed fatally: {}; restarting from the "
                                          "slot's confirmed position",
                                          fatal.message()));
  }
  if (tracker_.failed() && dead_letter_refused_) {
    return absl::FailedPreconditionError(fmt::format(
        "Kafka refused a dead letter on topic {} ({}); outboxd stopped and confirmed nothing at or "
        "after it; check [errors] dead_letter_topic and the topic's max.message.bytes",
        options_.dead_letter_topic, delivery_error_.message()));
  }
  if (tracker_.failed() && !BadEventReason(delivery_error_).empty() &&
      options_.on_bad_event == outbox::BadEventPolicy::kStop) {
    return absl::InvalidArgumentError(fmt::format(
        "Kafka refused a record as bad ({}); outboxd stopped before it and confirmed nothing at "
        "or after it (on_bad_event = \"stop\"); set [errors] on_bad_event = \"dead_letter\" to "
        "send such events to a dead-letter topic and go on",
        delivery_error_.message()));
  }
  if (tracker_.failed() && kafka_txn_open_) {
    return FailKafkaTransaction(absl::AbortedError(
        fmt::format("a Kafka delivery failed inside the transaction: {}", delivery_error_.message())));
  }
  if (tracker_.failed()) {
    return absl::AbortedError(fmt::format(
        "a Kafka delivery failed ({}); nothing at or after it is confirmed; restarting from the "
        "slot's confirmed position {}",
        delivery_error_.message(), confirmed_sent_.ToString()));
  }
  return absl::OkStatus();
}

Lsn Pipeline::FlushCandidate() const {
  Lsn safe = tracker_.safe_lsn();
  // Acknowledged is not enough inside a Kafka transaction: only its commit
  // makes its records visible (read_committed), so the slot waits for it.
  if (kafka_txn_open_) safe = std::min(safe, kafka_txn_boundary_);
  return std::max(confirmed_sent_, safe);
}

absl::Status Pipeline::MaybeSendStatus(bool force) {
  const absl::Time now = clock_();
  const Lsn flush = FlushCandidate();
  const bool due = force || now - last_status_sent_ >= options_.status_interval ||
                   (flush > confirmed_sent_ && now - last_status_sent_ >= options_.feedback_delay);
  if (!due) return absl::OkStatus();
  StandbyStatus status{
      .written = std::max(received_, flush),
      .flushed = flush,
      .applied = flush,
      .clock = TimeToPgTimestamp(now),
      .reply_requested = false,
  };
  RETURN_IF_ERROR(stream_->SendStatus(status));
  // Each update, not only those that move it: a recorder that throttles
  // its writes catches up with an idle slot's last position too.
  if (options_.on_confirmed) options_.on_confirmed(flush);
  confirmed_sent_ = flush;
  last_status_sent_ = now;
  reply_pending_ = false;
  metrics_->confirmed_flush_lsn.store(flush.value(), std::memory_order_relaxed);
  UpdateLagMetric();
  return absl::OkStatus();
}

void Pipeline::UpdateLagMetric() {
  // Until the first confirmation there is no position to measure from.
  if (confirmed_sent_.value() == 0 || server_wal_end_ < confirmed_sent_) return;
  metrics_->replication_lag_bytes.store(
      static_cast<int64_t>(server_wal_end_.value() - confirmed_sent_.value()),
      std::memory_order_relaxed);
}

absl::Status Pipeline::GracefulStop() {
  stop_seen_ = std::min(stop_seen_, clock_());
  if (kafka_txn_open_ && !kafka_txn_failed_) {
    // Whole PostgreSQL transactions are committed to Kafka. Part of one is
    // aborted: the next start publishes that transaction again, whole.
    absl::Status ended = tracker_.in_transaction() && pg_txn_events_ > 0
                             ? FailKafkaTransaction(absl::CancelledError(
                                   "stopped inside a PostgreSQL transaction"))
                             : CommitKafkaTransaction();
    if (!ended.ok()) telemetry::LogWarn("stopping: {}", ended.message());
  }
  // Stop reading; wait for what is in flight; confirm what was acknowledged.
  absl::Status flushed = sink_->Flush(options_.stop_flush_timeout);
  // Records the broker refused during the flush get their dead letters now, so
  // that their transactions can be confirmed (a few rounds at most: a dead
  // letter is never dead-lettered again).
  for (int round = 0; round < 3 && flushed.ok() && !refused_.empty(); ++round) {
    if (absl::Status dead = DeadLetterRefused(); !dead.ok()) {
      telemetry::LogWarn("stopping: {}", dead.message());
      break;
    }
    flushed = sink_->Flush(options_.stop_flush_timeout);
  }
  // Counted by the tracker: also an event that never left the full queue.
  // The caller says so in one line and exits non-zero.
  unacknowledged_at_stop_ = tracker_.inflight_events();
  if (kafka_txn_open_) unacknowledged_at_stop_ = kafka_txn_events_ + pg_txn_events_;
  if (!flushed.ok()) telemetry::LogDebug("stop flush: {}", flushed.message());
  absl::Status sent = MaybeSendStatus(/*force=*/true);
  if (!sent.ok()) {
    telemetry::LogWarn("could not send the final status update ({}); the slot stays at its last "
                 "confirmed position and the next start re-publishes from there",
                 sent.message());
  }
  return absl::OkStatus();
}

bool Pipeline::AlreadyInKafka(Lsn lsn) {
  if (eos_ == nullptr) return false;
  EventPosition position{lsn, 0};
  if (has_event_position_ && event_position_.lsn == lsn) position.index = event_position_.index + 1;
  event_position_ = position;
  has_event_position_ = true;
  if (!eos_->committed.CoversEvent(begin_.final_lsn, position)) {
    ++pg_txn_events_;
    return false;
  }
  ++skipped_events_;
  skipped_in_txn_ = true;
  metrics_->events_skipped.fetch_add(1, std::memory_order_relaxed);
  return true;
}

absl::Status Pipeline::EnsureKafkaTransaction() {
  if (eos_ == nullptr || kafka_txn_open_) return absl::OkStatus();
  // The gap after the previous commit (ExactlyOnce::transaction_gap): a few
  // milliseconds at most, cut short by a stop.
  SleepUnlessStopped(kafka_committed_at_ + eos_->transaction_gap - absl::Now(), *stop_,
                     options_.stop_fd);
  if (absl::Status begun = sink_->BeginTransaction(); !begun.ok()) {
    if (kafka::IsFenced(begun)) return begun;
    return absl::AbortedError(fmt::format("cannot begin a Kafka transaction: {}", begun.message()));
  }
  kafka_txn_open_ = true;
  kafka_txn_opened_ = clock_();
  kafka_txn_events_ = 0;
  kafka_txn_commit_times_.clear();
  kafka_txn_last_whole_ = Lsn::Invalid();
  kafka_txn_boundary_ = last_end_;
  return absl::OkStatus();
}

absl::Status Pipeline::MaybeCommitKafkaTransaction(bool caught_up) {
  if (!kafka_txn_open_) return absl::OkStatus();
  const absl::Duration age = clock_() - kafka_txn_opened_;
  if (tracker_.in_transaction() && pg_txn_events_ > 0) {
    // Inside a PostgreSQL transaction that has events in this Kafka
    // transaction: only a transaction about to outlive the producer's
    // transaction.timeout.ms is committed before its end.
    if (age < eos_->split_after) return absl::OkStatus();
    if (!split_logged_) {
      split_logged_ = true;
      metrics_->transactions_split.fetch_add(1, std::memory_order_relaxed);
      telemetry::LogWarn("exactly-once: the PostgreSQL transaction committed at LSN {} (xid {}) is still "
                         "streaming after {} in one Kafka transaction: committing it in pieces, so "
                         "read_committed consumers see it in more than one part (nothing is duplicated or "
                         "lost); raise transaction.timeout.ms in [sink.kafka] to keep such transactions whole",
                         begin_.final_lsn.ToString(), begin_.xid, absl::FormatDuration(age));
    }
    return CommitKafkaTransaction();
  }
  const bool due = age >= eos_->interval || kafka_txn_events_ >= eos_->max_events;
  if (due || (caught_up && !tracker_.in_transaction())) return CommitKafkaTransaction();
  return absl::OkStatus();
}

absl::Status Pipeline::CommitKafkaTransaction() {
  Checkpoint checkpoint = eos_->committed;
  if (kafka_txn_last_whole_.valid()) checkpoint.lsn = kafka_txn_last_whole_;
  checkpoint.partial_commit_lsn = Lsn::Invalid();
  checkpoint.partial_through = {};
  if (tracker_.in_transaction() && pg_txn_events_ > 0) {
    checkpoint.partial_commit_lsn = begin_.final_lsn;
    checkpoint.partial_through = event_position_;
    kafka_txn_commit_times_.emplace_back(begin_.commit_time, pg_txn_events_);
  }
  checkpoint_value_ = EncodeCheckpoint(checkpoint);
  const kafka::ProduceRequest request{
      .topic = eos_->checkpoint_topic,
      .key = eos_->checkpoint_key,
      .value = checkpoint_value_,
      .token = next_record_token_++,  // not tracked: the commit reports on it
      .envelope = false,
      .partition = eos_->checkpoint_partition,
  };
  if (absl::Status produced = ProduceWithBackpressure(request); !produced.ok()) {
    if (absl::IsCancelled(produced)) return produced;
    return FailKafkaTransaction(produced);
  }
  const absl::Time commit_started = clock_();
  absl::Time deadline = commit_started + eos_->commit_timeout;
  while (true) {
    // Slices, so that status updates keep flowing while the broker is slow.
    absl::Status committed = sink_->CommitTransaction(absl::Milliseconds(100));
    if (committed.ok()) break;
    if (!absl::IsDeadlineExceeded(committed)) return FailKafkaTransaction(committed);
    if (stopping()) {
      stop_seen_ = std::min(stop_seen_, clock_());
      deadline = std::min(deadline, stop_seen_ + options_.stop_flush_timeout);
    }
    if (clock_() >= deadline) {
      return FailKafkaTransaction(absl::DeadlineExceededError(
          fmt::format("the Kafka transaction did not commit within {}: {}",
                      absl::FormatDuration(eos_->commit_timeout), committed.message())));
    }
    RETURN_IF_ERROR(MaybeSendStatus(/*force=*/reply_pending_));
  }
  // Reports the commit's flush did not serve yet.
  sink_->Poll(absl::ZeroDuration());
  kafka_txn_open_ = false;
  kafka_txn_events_ = 0;
  pg_txn_events_ = 0;
  // PostgreSQL commit to Kafka commit, per event: when read_committed consumers can see it.
  const absl::Time now = clock_();
  for (const auto& [commit_time, events] : kafka_txn_commit_times_) {
    const double seconds = absl::ToDoubleSeconds(now - PgTimestampToTime(commit_time));
    metrics_->publish_latency.Observe(seconds, static_cast<uint64_t>(events));
  }
  kafka_txn_commit_times_.clear();
  eos_->committed = std::move(checkpoint);
  // Refused records of transactions now in Kafka are done with.
  std::erase_if(eos_->refused, [this](const auto& entry) {
    return std::get<0>(entry.first) < eos_->committed.lsn.value();
  });
  metrics_->kafka_transactions.Add("committed");
  kafka_committed_at_ = absl::Now();
  if (telemetry::LogEnabled(telemetry::LogLevel::kDebug)) {
    telemetry::LogDebug("exactly-once: Kafka transaction committed through LSN {} in {} ({} open)",
                        eos_->committed.lsn.ToString(), absl::FormatDuration(now - commit_started),
                        absl::FormatDuration(now - kafka_txn_opened_));
  }
  if (eos_->after_commit) eos_->after_commit();
  return CheckFailures();
}

absl::Status Pipeline::FailKafkaTransaction(const absl::Status& error) {
  metrics_->kafka_transactions.Add("aborted");
  kafka_txn_failed_ = true;  // still open for FlushCandidate: nothing of it is confirmed
  if (kafka::IsFenced(error)) return error;  // no abort: the producer is done
  if (absl::Status aborted = sink_->AbortTransaction(absl::Seconds(5)); !aborted.ok()) {
    telemetry::LogDebug("abort_transaction: {}", aborted.message());
  }
  return absl::AbortedError(fmt::format(
      "Kafka transaction aborted ({}); nothing in it is visible to read_committed consumers and the "
      "slot was not confirmed past it: restarting from the slot, skipping what the checkpoint shows "
      "committed",
      error.message()));
}

}  // namespace outboxd::pipeline
