// From an event to its Kafka record, and back: mapping rows and messages,
// producing with backpressure, delivery reports, what a failure means, and
// dead letters (a bad event's, or one for a record the broker refused, by
// position, when its event is read again: refused_records.h). The loop itself
// is in pipeline.cc.
#include <algorithm>
#include <utility>

#include "common/bad_event.h"
#include "common/format.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "pipeline/pipeline.h"
#include "telemetry/logging.h"

namespace outboxd::pipeline {
namespace {

constexpr char kRefusedRestartUrl[] = "type.outboxd/refused_record_restart";

std::string Describe(const outbox::OutboxEvent& event) {
  if (!event.source.table.empty()) {
    return fmt::format("{}.{} at LSN {} (xid {})", event.source.schema, event.source.table,
                       event.source.lsn.ToString(), event.source.xid);
  }
  return fmt::format("logical message '{}' at LSN {} (xid {})", event.source.message_prefix,
                     event.source.lsn.ToString(), event.source.xid);
}

// A refused record too large for the broker keeps no payload in its dead letter.
bool KeepPayload(std::string_view reason) { return reason != bad_event::kMessageTooLarge; }

}  // namespace

bool IsRefusedRecordRestart(const absl::Status& status) {
  return status.GetPayload(kRefusedRestartUrl).has_value();
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
  if (!tracker_.in_transaction()) {
    // pgoutput sends changes only between Begin and Commit; anything else is
    // a stream we cannot trust.
    return absl::DataLossError(fmt::format("pgoutput sent an insert into {}.{} at LSN {} outside a transaction",
                                           binding->schema, binding->table, lsn.ToString()));
  }
  if (mode_->AlreadyInKafka(begin_.final_lsn, NextPosition(lsn))) return absl::OkStatus();
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
  if (!tracker_.in_transaction()) {
    return absl::DataLossError(fmt::format("pgoutput sent a transactional message at LSN {} outside a transaction",
                                           message.lsn.ToString()));
  }
  if (mode_->AlreadyInKafka(begin_.final_lsn, NextPosition(message.lsn))) return absl::OkStatus();
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
  const RecordPosition position{begin_.final_lsn, position_};
  const RefusedRecords::Refusal* refused = mode_->refused().empty() ? nullptr : mode_->refused().Find(position);
  if (refused != nullptr && refused->certain) {
    // The broker refused this event's record, alone, in an earlier session:
    // its dead letter, built from the event read again, goes in its place.
    outbox::DeadLetterForEvent(refused->reason, refused->detail, event_, topic_, KeepPayload(refused->reason),
                               &dead_letter_);
    return OnBadEvent(BadEventError(refused->reason, refused->detail),
                      fmt::format("Kafka refused {}", Describe(event_)), /*token=*/std::nullopt);
  }
  if (refused != nullptr) {
    // Refused with its batch, maybe for a neighbour's size: produced again
    // alone, so that its own report says. Nothing before it shares its batch,
    // nothing after it either.
    telemetry::LogInfo("Kafka refused {} together with the records batched with it ({}); producing it alone "
                       "to tell whether it is too large itself",
                       Describe(event_), refused->detail);
    RETURN_IF_ERROR(WaitUntilNothingInFlight());
  }
  kafka::ProduceRequest request{
      .topic = topic_,
      .key = record_.key,
      .value = record_.value,
      .headers = &record_.headers,
      // One token per record (the tracker's token names the transaction), so
      // that its report finds its topic, size and position.
      .token = next_record_token_++,
      // Payload mode writes the column as it is: never framed for a schema registry.
      .envelope = record.value == outbox::ValueFormat::kEnvelope,
      .null_value = record_.null_value,
      .timestamp_ms = record_.timestamp_ms,
      .partition = record_.partition,
  };
  TrackRecord(request, topic_, tracker_.AddEvent()).position = position;
  absl::Status produced = ProduceWithBackpressure(request);
  if (produced.ok() && refused != nullptr) return WaitUntilNothingInFlight();
  if (produced.ok() || absl::IsAborted(produced) || absl::IsCancelled(produced)) return produced;
  if (absl::IsUnavailable(produced)) {
    // A Kafka fault, not the replication stream's: Aborted tells the relay so.
    return absl::AbortedError(fmt::format("Kafka refused {}: {}", Describe(event_), produced.message()));
  }
  const std::string reason = BadEventReason(produced);
  if (!reason.empty()) {
    // Refused at produce time (e.g. larger than message.max.bytes): the dead
    // letter, from the event in hand, takes this event's place and its
    // tracker slot.
    outbox::DeadLetterForEvent(reason, StatusMessage(produced), event_, topic_, KeepPayload(reason),
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
    // A new event of the open transaction; ProduceDeadLetter sets its topic and size.
    token = next_record_token_++;
    InflightRecord& record = inflight_records_[*token];
    record.txn_token = tracker_.AddEvent();
    record.position = {begin_.final_lsn, position_};
  }
  return ProduceDeadLetter(*token, what, StatusMessage(error));
}

absl::Status Pipeline::ProduceDeadLetter(uint64_t token, std::string_view what, std::string_view detail) {
  const outbox::DeadLetter& letter = dead_letter_;
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
  // The dead letter takes over its event's record: same transaction and
  // position, new topic and size.
  InflightRecord& record = inflight_records_.at(token);
  record.dead_letter = true;
  TrackRecord(request, options_.dead_letter_topic, record.txn_token);
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
  RETURN_IF_ERROR(mode_->BeforeProduce());
  return ProduceUntilAccepted(request);
}

absl::Status Pipeline::ProduceUntilAccepted(const kafka::ProduceRequest& request) {
  while (true) {
    absl::Status status = sink_->Produce(request);
    if (!absl::IsResourceExhausted(status)) {
      backpressure_ = false;
      return status;
    }
    // The producer queue is full (or the sink waits for something else, such
    // as a schema id). The record stays unproduced on a stop: its transaction
    // is never confirmed, and it is published again from the slot.
    if (!backpressure_) {
      telemetry::LogDebug("{}: PostgreSQL input paused until the Kafka sink catches up", status.message());
      backpressure_ = true;
    }
    RETURN_IF_ERROR(WaitOnSink());
  }
}

absl::Status Pipeline::WaitOnSink() {
  // Stop reading PostgreSQL (the socket is left unread, so the walsender
  // waits on its send buffer), wait for the sink or the stop signal, and keep
  // status updates flowing: the walsender counts each one as our reply, and a
  // keepalive already read is answered at once.
  if (stopping()) return absl::CancelledError("stop requested while waiting on the Kafka sink");
  RETURN_IF_ERROR(Wait(NextStatusDue(), /*read_stream=*/false));
  sink_->Poll(absl::ZeroDuration());
  RETURN_IF_ERROR(CheckFailures());
  return MaybeSendStatus(/*force=*/reply_pending_);
}

absl::Status Pipeline::WaitUntilNothingInFlight() {
  while (sink_->InFlight() > 0) RETURN_IF_ERROR(WaitOnSink());
  return CheckFailures();
}

Pipeline::InflightRecord& Pipeline::TrackRecord(const kafka::ProduceRequest& request,
                                               const std::string& topic, uint64_t txn_token) {
  InflightRecord& record = inflight_records_[request.token];
  record.alone = sink_->InFlight() == 0;
  record.seq = ++produced_seq_;
  // A dead letter replaces its event's record: its topic and size.
  if (record.has_topic) topics_.Unpin(record.topic);
  std::optional<LruMap<bool>::Slot> slot = topics_.Find(topic);
  if (!slot.has_value()) {
    slot.emplace();
    topics_.Insert(topic, true, &*slot);
  }
  topics_.Pin(*slot);
  record.topic = *slot;
  record.has_topic = true;
  size_t bytes = request.key.size() + request.value.size();
  if (request.headers != nullptr) {
    for (const auto& [name, value] : *request.headers) bytes += name.size() + value.size();
  }
  inflight_bytes_ += static_cast<int64_t>(bytes) - record.bytes;
  record.txn_token = txn_token;
  record.bytes = static_cast<uint32_t>(bytes);
  metrics_->producer_queue_bytes.store(inflight_bytes_, std::memory_order_relaxed);
  metrics_->inflight_events.store(static_cast<int64_t>(tracker_.inflight_events()),
                                  std::memory_order_relaxed);
  return record;
}

void Pipeline::OnDelivery(uint64_t record_token, const absl::Status& status) {
  auto it = inflight_records_.find(record_token);
  if (it == inflight_records_.end()) {
    // Untracked: a record the delivery mode produced for itself.
    if (!status.ok()) ClassifyFailure(record_token, status);
    return;
  }
  InflightRecord& record = it->second;
  const uint64_t token = record.txn_token;
  if (status.ok()) {
    metrics_->events_published.Add(topics_.key(record.topic));
    mode_->OnAcknowledged(tracker_.CommitTimeOf(token));
  } else {
    ++failed_records_;
    ClassifyFailure(record_token, status);
  }
  inflight_bytes_ -= record.bytes;
  metrics_->producer_queue_bytes.store(inflight_bytes_, std::memory_order_relaxed);
  if (record.has_topic) topics_.Unpin(record.topic);
  inflight_records_.erase(it);
  tracker_.OnDelivery(token, status.ok());
  metrics_->inflight_events.store(static_cast<int64_t>(tracker_.inflight_events()),
                                  std::memory_order_relaxed);
}

void Pipeline::ClassifyFailure(uint64_t record_token, const absl::Status& status) {
  const std::string reason = BadEventReason(status);
  auto it = inflight_records_.find(record_token);
  Failure kind = Failure::kTransient;
  if (!reason.empty() && it != inflight_records_.end()) {
    const InflightRecord& record = it->second;
    if (record.dead_letter) {
      kind = Failure::kDeadLetterRefused;  // no dead letter for a dead letter
    } else if (options_.on_bad_event == outbox::BadEventPolicy::kStop) {
      kind = Failure::kStop;
    } else if (mode_->refused().Add(record.position, reason, StatusMessage(status),
                                    /*certain=*/record.alone && record.seq == produced_seq_)) {
      kind = Failure::kRefused;
    }
  }
  // The most severe failure decides how the session ends; a later, milder
  // one never hides it.
  if (kind <= failure_) return;
  failure_ = kind;
  failure_status_ = status;
  if (it != inflight_records_.end()) failure_position_ = it->second.position;
}

absl::Status Pipeline::CheckFailures() {
  if (absl::Status fatal = sink_->FatalError(); !fatal.ok()) {
    if (kafka::IsFenced(fatal)) return fatal;  // the relay goes back to the slot as a standby
    return absl::AbortedError(fmt::format("Kafka producer failed fatally: {}; restarting from the "
                                          "slot's confirmed position",
                                          fatal.message()));
  }
  if (failure_ == Failure::kNone) return absl::OkStatus();
  const std::string where =
      fmt::format("the event at LSN {} of the transaction committed at {}",
                  failure_position_.event.lsn.ToString(), failure_position_.commit_lsn.ToString());
  switch (failure_) {
    case Failure::kNone:
    case Failure::kTransient:
      break;
    case Failure::kDeadLetterRefused:
      return absl::FailedPreconditionError(fmt::format(
          "Kafka refused a dead letter on topic {} ({}); outboxd stopped and confirmed nothing at or "
          "after it; check [errors] dead_letter_topic and the topic's max.message.bytes",
          options_.dead_letter_topic, failure_status_.message()));
    case Failure::kStop:
      return absl::InvalidArgumentError(fmt::format(
          "Kafka refused the record of {} as bad ({}); outboxd stopped before it and confirmed "
          "nothing at or after it (on_bad_event = \"stop\"); set [errors] on_bad_event = "
          "\"dead_letter\" to send such events to a dead-letter topic and go on",
          where, failure_status_.message()));
    case Failure::kRefused: {
      absl::Status restart = absl::AbortedError(fmt::format(
          "Kafka refused the record of {} ({}); restarting from the slot's confirmed position, where "
          "that event is read again and goes to the dead-letter topic {} in its place",
          where, failure_status_.message(), options_.dead_letter_topic));
      restart.SetPayload(kRefusedRestartUrl, absl::Cord("1"));
      return restart;
    }
  }
  return absl::AbortedError(fmt::format(
      "a Kafka delivery failed ({}); nothing at or after it is confirmed; restarting from the "
      "slot's confirmed position{}",
      failure_status_.message(),
      confirmed_sent_.valid() ? fmt::format(" ({})", confirmed_sent_.ToString()) : ""));
}

}  // namespace outboxd::pipeline
