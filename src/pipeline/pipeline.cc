// The session's loop: frames in, status updates out, the one wait, the
// graceful stop. From an event to its record, delivery reports and dead
// letters: pipeline_records.cc.
#include "pipeline/pipeline.h"

#include <poll.h>

#include <algorithm>
#include <utility>

#include "common/format.h"
#include "common/status_macros.h"
#include "common/time.h"
#include "fmt/format.h"
#include "pgoutput/decoder.h"
#include "replication/copy_frame.h"
#include "telemetry/logging.h"

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

}  // namespace

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Create(replication::ReplicationStream* stream,
                                                           kafka::EventSink* sink,
                                                           PipelineOptions options,
                                                           telemetry::Metrics* metrics, Clock clock) {
  if (options.delivery == nullptr) {
    return absl::InvalidArgumentError("a pipeline needs its stream's delivery mode");
  }
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
      mode_(options_.delivery),
      metrics_(metrics),
      clock_(std::move(clock)),
      mapper_(options_.tables) {}

Pipeline::~Pipeline() {
  // The sink may outlive this session (the relay keeps a working producer
  // across PostgreSQL reconnects): no report may reach this object again.
  sink_->SetDeliveryHandler([](uint64_t, const absl::Status&) {});
  metrics_->inflight_events.store(0, std::memory_order_relaxed);
  metrics_->producer_queue_bytes.store(0, std::memory_order_relaxed);
}

absl::Status Pipeline::Run(const std::atomic<bool>& stop) {
  stop_ = &stop;
  sink_->SetDeliveryHandler(
      [this](uint64_t token, const absl::Status& status) { OnDelivery(token, status); });
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
  mode_->BeginSession(this);
  // The one way out, whatever ended the session.
  return mode_->EndSession(Stream());
}

absl::Status Pipeline::Stream() {
  // A Cancelled status is the stop signal seen inside a wait (backpressure);
  // an Aborted one that arrives while stopping (work of the delivery mode the
  // stop cut short, a delivery that failed meanwhile) ends the session as a stop
  // too: its events count as unacknowledged, and nothing of them is confirmed.
  auto stopped = [&](const absl::Status& status) {
    return stopping() && (absl::IsCancelled(status) || (absl::IsAborted(status) && !kafka::IsFenced(status)));
  };
  while (!stopping()) {
    // Kafka: every delivery report that arrived, once per wake.
    sink_->Poll(absl::ZeroDuration());
    if (absl::Status checked = CheckFailures(); !checked.ok()) {
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
    if (absl::Status done = mode_->AfterBatch(/*caught_up=*/!more); !done.ok()) {
      if (stopped(done)) break;
      return done;
    }
    // The status update, decided once.
    RETURN_IF_ERROR(MaybeSendStatus(/*force=*/reply_pending_));
    if (more) continue;  // frames left over: serve Kafka, then read on
    absl::Status waited = Wait(std::min(NextStatusDue(), mode_->NextDeadline()), /*read_stream=*/true);
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
    if (!tracker_.in_transaction()) read_through_ = std::max(read_through_, keepalive->wal_end);
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
    has_position_ = false;
    tracker_.Begin(begin->commit_time);
    mode_->OnBegin(*begin);
    return absl::OkStatus();
  }
  if (auto* commit = std::get_if<CommitMessage>(&message_)) {
    if (!tracker_.in_transaction()) {
      return absl::DataLossError(fmt::format("pgoutput Commit at LSN {} without a Begin",
                                             commit->end_lsn.ToString()));
    }
    tracker_.Commit(commit->end_lsn);
    received_ = std::max(received_, commit->end_lsn);
    read_through_ = std::max(read_through_, commit->end_lsn);
    metrics_->transactions.fetch_add(1, std::memory_order_relaxed);
    return mode_->OnCommit(*commit);
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

EventPosition Pipeline::NextPosition(Lsn lsn) {
  EventPosition position{lsn, 0};
  if (has_position_ && position_.lsn == lsn) position.index = position_.index + 1;
  position_ = position;
  has_position_ = true;
  return position;
}

Lsn Pipeline::FlushCandidate() const {
  return std::max(confirmed_sent_, mode_->ClampFlush(tracker_.safe_lsn()));
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
  // Refusals of transactions the slot passed are done with.
  if (!mode_->refused().empty()) mode_->refused().ForgetConfirmed(flush);
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
  // The mode first (it finishes or drops its work in progress), then: stop
  // reading; wait for what is in flight; confirm what was acknowledged.
  if (absl::Status stopped = mode_->Stop(); !stopped.ok()) {
    telemetry::LogWarn("stopping: {}", stopped.message());
  }
  absl::Status flushed = sink_->Flush(options_.stop_flush_timeout);
  // Counted by the tracker: also an event that never left the full queue.
  // The caller says so in one line and exits non-zero. A record the broker
  // refused meanwhile stays unconfirmed: the next start dead-letters it.
  unacknowledged_at_stop_ = mode_->UnacknowledgedAtStop(tracker_.inflight_events() + failed_records_);
  if (!flushed.ok()) telemetry::LogDebug("stop flush: {}", flushed.message());
  absl::Status sent = MaybeSendStatus(/*force=*/true);
  if (!sent.ok()) {
    telemetry::LogWarn("could not send the final status update ({}); the slot stays at its last "
                 "confirmed position and the next start re-publishes from there",
                 sent.message());
  }
  return absl::OkStatus();
}

}  // namespace outboxd::pipeline
