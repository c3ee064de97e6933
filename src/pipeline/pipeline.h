// Pipeline: one replication session, from the first frame to an error or a
// graceful stop. Reads frames, decodes pgoutput, maps outbox rows and messages
// to events, produces them, feeds delivery reports to the AckTracker and sends
// standby status updates with the safe flush LSN. Orchestration over the
// ReplicationStream and EventSink interfaces only; how the events reach Kafka
// (at least once, or exactly once) is the
// DeliveryMode's, called at fixed points. The Relay restarts it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/lru_map.h"
#include "common/lsn.h"
#include "kafka/event_sink.h"
#include "outbox/dead_letter.h"
#include "outbox/event.h"
#include "outbox/record.h"
#include "outbox/routing.h"
#include "outbox/table_mapping.h"
#include "pgoutput/messages.h"
#include "pgoutput/relation_cache.h"
#include "pgoutput/stream_validator.h"
#include "pipeline/ack_tracker.h"
#include "pipeline/delivery_mode.h"
#include "pipeline/refused_records.h"
#include "replication/replication_stream.h"
#include "telemetry/metrics.h"

namespace outboxd::pipeline {

struct PipelineOptions {
  std::vector<outbox::TableConfig> tables;
  // Table-less events from transactional logical decoding messages.
  bool messages_enabled = true;
  std::string messages_prefix = "outbox";
  std::string messages_topic = "outbox.event.{aggregate_type}";
  outbox::KeySource messages_key = outbox::KeySource::kId;
  outbox::RecordConfig messages_record;  // value format and id header of messages
  // [errors]: a bad event (see common/bad_event.h) is dead-lettered to
  // dead_letter_topic, or stops the pipeline.
  outbox::BadEventPolicy on_bad_event = outbox::BadEventPolicy::kDeadLetter;
  std::string dead_letter_topic = "outboxd.dlq";
  // A status update goes out at least this often, and at once when the server
  // asks for a reply.
  absl::Duration status_interval = absl::Seconds(10);
  // When the safe flush LSN moved, confirm it after at most this long.
  absl::Duration feedback_delay = absl::Milliseconds(20);
  // On graceful stop, how long to wait for outstanding delivery reports.
  absl::Duration stop_flush_timeout = absl::Seconds(30);
  // Readable once a stop was requested (the signal handler's self-pipe), so
  // that the loop's poll() wakes for it; -1: none, the stop flag is checked
  // at each wake only.
  int stop_fd = -1;
  // Called with the flush LSN after each status update reached the socket
  // (e.g. to record it in the state file). Optional.
  std::function<void(Lsn)> on_confirmed;
  // The stream's delivery mode, which outlives the session (required; the
  // Relay supplies an at-least-once one when none is given).
  DeliveryMode* delivery = nullptr;
};

using Clock = std::function<absl::Time()>;

// A session that ended so that events the broker refused in delivery reports
// are read again from the slot and dead-lettered (RefusedRecords): transient,
// and the producer is fine.
bool IsRefusedRecordRestart(const absl::Status& status);

class Pipeline : private Session {
 public:
  // InvalidArgumentError for a topic template that does not parse, or no
  // delivery mode.
  static absl::StatusOr<std::unique_ptr<Pipeline>> Create(
      replication::ReplicationStream* stream, kafka::EventSink* sink, PipelineOptions options,
      telemetry::Metrics* metrics, Clock clock = absl::Now);

  // Streams until `stop` becomes true, then flushes Kafka (at most
  // stop_flush_timeout), sends the final status update and returns OK, also
  // when some events stayed unacknowledged (unacknowledged_at_stop()). Errors:
  //  - UnavailableError: the replication stream broke; AbortedError: Kafka
  //    failed (a delivery, the producer, the delivery mode's work) or refused a
  //    record to be dead-lettered when read again (IsRefusedRecordRestart).
  //    Transient: the caller restarts from the slot.
  //  - InvalidArgumentError: a bad event with on_bad_event = stop (the message
  //    names table, LSN, reason); nothing at or after it was confirmed.
  //  - FailedPreconditionError: a dead letter itself could not be produced
  //    (bad dead_letter_topic, too large); nothing at or after it was confirmed.
  //  - DataLossError / UnimplementedError / FailedPreconditionError: the stream
  //    itself cannot be decoded; restarting would not help.
  // Every way out passes the delivery mode's EndSession once.
  absl::Status Run(const std::atomic<bool>& stop);

  // Zeroes the in-flight gauges: whatever this session held is gone with it.
  ~Pipeline();

  // The flush LSN last sent to the server.
  Lsn confirmed_lsn() const { return confirmed_sent_; }
  // After a graceful stop: events that never got a successful delivery report
  // (their transactions stay unconfirmed and are published again from the slot).
  uint64_t unacknowledged_at_stop() const { return unacknowledged_at_stop_; }

  // Distinct topics kept for the events_published_total label of records in
  // flight, beyond those still pinned by one.
  static constexpr size_t kTopicCacheSize = 1024;

 private:
  Pipeline(replication::ReplicationStream* stream, kafka::EventSink* sink, PipelineOptions options,
           telemetry::Metrics* metrics, Clock clock);

  // The loop, then the graceful stop; Run adds the mode's exit.
  absl::Status Stream();
  absl::Status HandleFrame(std::string_view frame);
  absl::Status HandleMessage(Lsn lsn);
  absl::Status HandleInsert(Lsn lsn, const pgoutput::InsertMessage& insert);
  absl::Status HandleLogicalMessage(const pgoutput::LogicalMessage& message);
  // The position of the event at `lsn` in the open transaction: its LSN and
  // its rank among the events at that LSN.
  EventPosition NextPosition(Lsn lsn);
  // Fills event_.source from the open transaction and the change's LSN.
  void SetSourcePosition(Lsn lsn);
  absl::Status Publish(const outbox::TopicTemplate& topic, outbox::KeySource key,
                       const outbox::RecordConfig& record);
  // Before the mode, then the produce, waiting out backpressure.
  absl::Status ProduceWithBackpressure(const kafka::ProduceRequest& request);
  absl::Status ProduceUntilAccepted(const kafka::ProduceRequest& request);
  // One turn of a wait on the sink instead of PostgreSQL: until the sink can
  // take more (or a stop: CancelledError), serving its reports, the failures
  // they show, and the status update.
  absl::Status WaitOnSink();
  // Until every record produced has its report.
  absl::Status WaitUntilNothingInFlight();
  // The one wait of the loop: poll() on the replication socket (unless
  // `read_stream` is false: backpressure), the sink's wake descriptor and the
  // stop descriptor, until one is ready or `deadline`. With a stream that has
  // no socket (test doubles) it waits in ReadFrame and handles the frame.
  absl::Status Wait(absl::Time deadline, bool read_stream);
  // When the next standby status update is due.
  absl::Time NextStatusDue() const;
  void OnDelivery(uint64_t token, const absl::Status& status);

  // What a failed delivery report means (Failure); the most severe one of the
  // session is kept, with its report.
  void ClassifyFailure(uint64_t token, const absl::Status& status);
  // The error that ends the session for what failed so far (producer, delivery
  // reports), or OK. Only classifies: acting on it is the caller's way out.
  absl::Status CheckFailures();
  // A bad event found while reading or producing: stops under
  // on_bad_event = stop, else produces `dead_letter_` with `token` (none: a
  // new event of the open transaction). `what` names the event and its position.
  absl::Status OnBadEvent(const absl::Status& error, std::string_view what,
                          std::optional<uint64_t> token);
  absl::Status ProduceDeadLetter(uint64_t token, std::string_view what, std::string_view detail);
  absl::Status MaybeSendStatus(bool force);
  // The tracker's safe LSN as the mode clamps it, never below what was sent.
  Lsn FlushCandidate() const;
  // outboxd_replication_lag_bytes: the server's WAL end minus the confirmed LSN.
  void UpdateLagMetric();
  absl::Status GracefulStop();

  // Session, for the delivery mode.
  kafka::EventSink& sink() override { return *sink_; }
  telemetry::Metrics& metrics() override { return *metrics_; }
  const AckTracker& tracker() const override { return tracker_; }
  absl::Time Now() const override { return clock_(); }
  bool stopping() const override { return stop_ != nullptr && stop_->load(std::memory_order_relaxed); }
  const std::atomic<bool>& stop_flag() const override { return *stop_; }
  int stop_fd() const override { return options_.stop_fd; }
  absl::Duration stop_flush_timeout() const override { return options_.stop_flush_timeout; }
  Lsn read_through() const override { return read_through_; }
  absl::Status ProduceUntracked(const kafka::ProduceRequest& request) override {
    return ProduceUntilAccepted(request);
  }
  absl::Status KeepStatusFlowing() override { return MaybeSendStatus(/*force=*/reply_pending_); }

  replication::ReplicationStream* stream_;
  kafka::EventSink* sink_;
  PipelineOptions options_;
  DeliveryMode* mode_;
  telemetry::Metrics* metrics_;
  Clock clock_;

  pgoutput::RelationCache relations_;
  outbox::TableMapper mapper_;
  std::vector<outbox::TopicTemplate> table_topics_;  // parallel to options_.tables
  std::unique_ptr<outbox::TopicTemplate> message_topic_;
  AckTracker tracker_;

  // The open transaction's Begin (AckTracker knows whether one is open), and
  // the position of its newest event.
  pgoutput::BeginMessage begin_;
  bool has_position_ = false;
  EventPosition position_;

  // Reused per event, so the hot path does not allocate once warm.
  pgoutput::Message message_;
  pgoutput::StreamValidator validator_;  // protocol order: DataLoss, never a bad event
  outbox::OutboxEvent event_;
  std::string topic_;
  outbox::Record record_;

  // Each unacknowledged record by its own token: its transaction's token in
  // the AckTracker, its event's position (should the broker refuse it), and
  // for outboxd_events_published_total{topic} and outboxd_producer_queue_bytes
  // its topic (a pinned slot of topics_) and size.
  struct InflightRecord {
    uint64_t txn_token = 0;
    RecordPosition position;
    uint32_t topic = 0;
    uint32_t bytes = 0;
    bool has_topic = false;
    bool dead_letter = false;
    // Nothing else was in flight when it was produced; with `seq` the last
    // produced when its report comes, it was alone in its batch.
    bool alone = false;
    uint64_t seq = 0;
  };
  // Records `request` (its token) as in flight for the transaction `txn_token`:
  // its topic and size, for events_published_total and producer_queue_bytes.
  InflightRecord& TrackRecord(const kafka::ProduceRequest& request, const std::string& topic,
                              uint64_t txn_token);
  uint64_t next_record_token_ = 1;  // 0 is untracked (ProduceUntracked)
  uint64_t produced_seq_ = 0;       // tracked records produced so far
  absl::flat_hash_map<uint64_t, InflightRecord> inflight_records_;
  LruMap<bool> topics_{kTopicCacheSize};
  int64_t inflight_bytes_ = 0;

  // What failed so far, most severe last: the session ends on it.
  enum class Failure {
    kNone,
    kTransient,          // a delivery failed: restart from the slot
    kRefused,            // refused as bad: restart, dead-letter it when read again
    kStop,               // refused as bad under on_bad_event = "stop"
    kDeadLetterRefused,  // a dead letter was refused: nothing more can be done
  };
  Failure failure_ = Failure::kNone;
  uint64_t failed_records_ = 0;  // tracked records whose delivery failed
  absl::Status failure_status_;
  RecordPosition failure_position_;

  outbox::DeadLetter dead_letter_;  // reused
  std::vector<std::pair<std::string_view, std::string_view>> dead_letter_headers_;
  absl::flat_hash_set<uint32_t> warned_relations_;  // inserts into non-outbox tables

  Lsn received_;        // newest WAL position received
  Lsn server_wal_end_;  // newest server WAL end seen
  Lsn read_through_;    // everything before it was read (commit end, idle keepalive)
  Lsn confirmed_sent_;
  bool reply_pending_ = false;  // the server asked for a reply
  bool backpressure_ = false;   // the producer queue is full
  const std::atomic<bool>* stop_ = nullptr;
  uint64_t unacknowledged_at_stop_ = 0;
  absl::Time last_status_sent_ = absl::InfinitePast();
};

}  // namespace outboxd::pipeline
