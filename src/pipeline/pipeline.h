// Pipeline: one replication session, from the first frame to an error or a
// graceful stop. Reads frames, decodes pgoutput, maps outbox rows and messages
// to events, produces them, feeds delivery reports to the AckTracker and sends
// standby status updates with the safe flush LSN. Orchestration over the
// ReplicationStream and EventSink interfaces only; the Relay restarts it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <tuple>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include <deque>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/lsn.h"
#include "kafka/event_sink.h"
#include "telemetry/metrics.h"
#include "outbox/dead_letter.h"
#include "outbox/envelope.h"
#include "outbox/event.h"
#include "outbox/routing.h"
#include "outbox/table_mapping.h"
#include "pgoutput/messages.h"
#include "pgoutput/relation_cache.h"
#include "pgoutput/stream_validator.h"
#include "pipeline/ack_tracker.h"
#include "pipeline/checkpoint.h"
#include "replication/replication_stream.h"

namespace outboxd::pipeline {

// [sink] delivery = "exactly_once": whole PostgreSQL transactions in Kafka
// transactions, each ending with a checkpoint record. Shared with whoever
// prepares each session's transactional producer (commands/run.cc), which sets
// the checkpoint fields and `committed` from the checkpoint topic first.
struct ExactlyOnce {
  // A Kafka transaction commits at a PostgreSQL commit once outboxd has read
  // everything the server sent, or once it is open `interval`, or holds
  // `max_events` events.
  absl::Duration interval = absl::Milliseconds(100);
  int64_t max_events = 10000;
  // A new Kafka transaction begins no earlier than this after the previous
  // commit returned. The coordinator answers a commit before it has written
  // the commit markers, and until it has, it refuses to add partitions to the
  // producer's next transaction (CONCURRENT_TRANSACTIONS), which librdkafka
  // retries only after 20 ms: without the gap, a steady stream pays those
  // 20 ms on a good share of its Kafka transactions (147 refusals in 846
  // at 1,000 events/s, docs/operations.md "Latency"). Real time, not the
  // clock option; a stop ends it.
  absl::Duration transaction_gap = absl::ZeroDuration();
  // A PostgreSQL transaction still open after this long in one Kafka
  // transaction is committed in pieces (half of transaction.timeout.ms).
  absl::Duration split_after = absl::Seconds(30);
  // Longest wait for one commit (a stop shortens it to stop_flush_timeout).
  absl::Duration commit_timeout = absl::Seconds(60);
  std::string checkpoint_topic;
  int32_t checkpoint_partition = 0;
  std::string checkpoint_key;
  // The newest committed checkpoint: what a session does not publish again.
  // Its identity fields (system, timeline, slot, id) go into the next ones.
  Checkpoint committed;
  // After each Kafka commit, before the slot is told: the test failpoint.
  std::function<void()> after_commit;
  // Records the broker refused inside a Kafka transaction (too large for the
  // topic, ...): that transaction is aborted, and the next session produces
  // their dead letters in their place. By (commit LSN, position in it).
  struct Refused {
    std::string reason, detail;
  };
  std::map<std::tuple<uint64_t, uint64_t, uint32_t>, Refused> refused;
};

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
  // Non-null: exactly-once delivery; the sink must be transactional.
  ExactlyOnce* exactly_once = nullptr;
};

using Clock = std::function<absl::Time()>;


class Pipeline {
 public:
  // InvalidArgumentError for a topic template that does not parse.
  static absl::StatusOr<std::unique_ptr<Pipeline>> Create(
      replication::ReplicationStream* stream, kafka::EventSink* sink, PipelineOptions options,
      telemetry::Metrics* metrics, Clock clock = absl::Now);

  // Streams until `stop` becomes true, then flushes Kafka (at most
  // stop_flush_timeout), sends the final status update and returns OK, also
  // when some events stayed unacknowledged (unacknowledged_at_stop()). Errors:
  //  - UnavailableError: the replication stream broke; AbortedError: Kafka
  //    failed (a delivery, the producer). Both transient: the caller restarts
  //    from the slot.
  //  - InvalidArgumentError: a bad event with on_bad_event = stop (the message
  //    names table, LSN, reason); nothing at or after it was confirmed.
  //  - FailedPreconditionError: a dead letter itself could not be produced
  //    (bad dead_letter_topic, too large); nothing at or after it was confirmed.
  //  - DataLossError / UnimplementedError / FailedPreconditionError: the stream
  //    itself cannot be decoded; restarting would not help.
  absl::Status Run(const std::atomic<bool>& stop);

  // Zeroes the in-flight gauges: whatever this session held is gone with it.
  ~Pipeline();

  // The flush LSN last sent to the server.
  Lsn confirmed_lsn() const { return confirmed_sent_; }
  // After a graceful stop: events that never got a successful delivery report
  // (their transactions stay unconfirmed and are published again from the slot).
  uint64_t unacknowledged_at_stop() const { return unacknowledged_at_stop_; }

 private:
  Pipeline(replication::ReplicationStream* stream, kafka::EventSink* sink, PipelineOptions options,
           telemetry::Metrics* metrics, Clock clock);

  absl::Status HandleFrame(std::string_view frame);
  absl::Status HandleMessage(Lsn lsn);
  absl::Status HandleInsert(Lsn lsn, const pgoutput::InsertMessage& insert);
  absl::Status HandleLogicalMessage(const pgoutput::LogicalMessage& message);
  // Fills event_.source from the open transaction and the change's LSN.
  void SetSourcePosition(Lsn lsn);
  absl::Status Publish(const outbox::TopicTemplate& topic, outbox::KeySource key,
                       const outbox::RecordConfig& record);
  absl::Status ProduceWithBackpressure(const kafka::ProduceRequest& request);
  // The one wait of the loop: poll() on the replication socket (unless
  // `read_stream` is false: backpressure), the sink's wake descriptor and the
  // stop descriptor, until one is ready or `deadline`. With a stream that has
  // no socket (test doubles) it waits in ReadFrame and handles the frame.
  absl::Status Wait(absl::Time deadline, bool read_stream);
  // When the next standby status update is due.
  absl::Time NextStatusDue() const;
  bool stopping() const { return stop_ != nullptr && stop_->load(std::memory_order_relaxed); }
  void OnDelivery(uint64_t token, const absl::Status& status);
  // Records `request` (its token) as in flight for the transaction `txn_token`:
  // its topic and size, for events_published_total and producer_queue_bytes.
  void TrackRecord(const kafka::ProduceRequest& request, const std::string& topic,
                   uint64_t txn_token);
  void OnFailedRecord(const kafka::ProduceRequest& record, const absl::Status& status);
  // Failed deliveries and producer errors, then dead letters for the records
  // the broker refused.
  absl::Status CheckDeliveries();
  absl::Status CheckFailures();
  absl::Status DeadLetterRefused();
  // A bad event found while reading (not a delivery report): stops under
  // on_bad_event = stop, else produces `dead_letter_` with `token` (none: a
  // new event of the open transaction). `what` names the event and its position.
  absl::Status OnBadEvent(const absl::Status& error, std::string_view what,
                          std::optional<uint64_t> token);
  absl::Status ProduceDeadLetter(const outbox::DeadLetter& letter, uint64_t token,
                                 std::string_view what, std::string_view detail);
  absl::Status MaybeSendStatus(bool force);
  Lsn FlushCandidate() const;
  // outboxd_replication_lag_bytes: the server's WAL end minus the confirmed LSN.
  void UpdateLagMetric();
  absl::Status GracefulStop();

  // Exactly-once. Whether the event at `lsn` of the open transaction is in
  // Kafka already (the checkpoint covers it): then it is not published again.
  // Also counts the transaction's events and their positions.
  bool AlreadyInKafka(Lsn lsn);
  // Opens a Kafka transaction for the record about to be produced, if none is.
  absl::Status EnsureKafkaTransaction();
  // Writes the checkpoint and commits the open Kafka transaction: whole
  // PostgreSQL transactions, and, inside one (a split), its events so far.
  absl::Status CommitKafkaTransaction();
  // Commits when one of the triggers holds (ExactlyOnce); `caught_up`: no frame
  // is waiting to be read.
  absl::Status MaybeCommitKafkaTransaction(bool caught_up);
  // A Kafka transaction that cannot commit: aborts it (unless the producer was
  // fenced) and returns the error that ends the session.
  absl::Status FailKafkaTransaction(const absl::Status& error);

  replication::ReplicationStream* stream_;
  kafka::EventSink* sink_;
  PipelineOptions options_;
  telemetry::Metrics* metrics_;
  Clock clock_;

  pgoutput::RelationCache relations_;
  outbox::TableMapper mapper_;
  std::vector<outbox::TopicTemplate> table_topics_;  // parallel to options_.tables
  std::unique_ptr<outbox::TopicTemplate> message_topic_;
  AckTracker tracker_;

  // The open transaction's Begin (AckTracker knows whether one is open).
  pgoutput::BeginMessage begin_;

  // Reused per event, so the hot path does not allocate once warm.
  pgoutput::Message message_;
  pgoutput::StreamValidator validator_;  // protocol order: DataLoss, never a bad event
  outbox::OutboxEvent event_;
  std::string topic_;
  outbox::Record record_;

  absl::Status delivery_error_;        // the first failed delivery report

  // Each unacknowledged record by its own token: its transaction's token in
  // the AckTracker, and for outboxd_events_published_total{topic} and
  // outboxd_producer_queue_bytes its topic (an index into topic_names_) and size.
  struct InflightRecord {
    uint64_t txn_token;
    uint32_t topic = 0;
    uint32_t bytes = 0;
    // Exactly-once: the event's transaction and position, should the broker refuse it.
    Lsn commit_lsn;
    EventPosition position;
  };
  uint64_t next_record_token_ = 1;
  absl::flat_hash_map<uint64_t, InflightRecord> inflight_records_;
  absl::flat_hash_map<std::string, uint32_t> topic_ids_;
  std::vector<std::string> topic_names_;
  int64_t inflight_bytes_ = 0;
  // Records the broker refused as bad (e.g. MSG_SIZE_TOO_LARGE): their tracker
  // slot stays open until their dead letter is acknowledged.
  struct Refused {
    uint64_t token;
    outbox::DeadLetter letter;
    std::string what, detail;
  };
  std::deque<Refused> refused_;
  std::optional<uint64_t> refused_token_;  // set by OnFailedRecord for OnDelivery
  bool dead_letter_refused_ = false;       // a dead letter itself was refused
  outbox::DeadLetter dead_letter_;         // reused
  std::vector<std::pair<std::string_view, std::string_view>> dead_letter_headers_;
  absl::flat_hash_set<uint32_t> warned_relations_;  // inserts into non-outbox tables

  Lsn received_;        // newest WAL position received
  Lsn server_wal_end_;  // newest server WAL end seen
  Lsn confirmed_sent_;
  bool reply_pending_ = false;  // the server asked for a reply
  bool backpressure_ = false;   // the producer queue is full
  const std::atomic<bool>* stop_ = nullptr;
  uint64_t unacknowledged_at_stop_ = 0;
  absl::Time last_status_sent_ = absl::InfinitePast();

  // Exactly-once state (options_.exactly_once).
  ExactlyOnce* eos_ = nullptr;
  bool kafka_txn_open_ = false;
  bool kafka_txn_failed_ = false;  // aborted (or fenced): the session is ending
  absl::Time kafka_txn_opened_;
  absl::Time kafka_committed_at_ = absl::InfinitePast();  // real time the last commit returned
  int64_t kafka_txn_events_ = 0;  // events of whole PostgreSQL transactions in it
  // Its PostgreSQL transactions' commit times and event counts, for publish_latency.
  std::vector<std::pair<int64_t, int64_t>> kafka_txn_commit_times_;
  Lsn kafka_txn_boundary_;        // nothing at or after it is confirmed while it is open
  Lsn kafka_txn_last_whole_;      // commit end LSN of its newest whole PostgreSQL transaction
  Lsn last_end_;                  // everything before it was read (commit end, idle keepalive)
  bool split_logged_ = false;     // the open PostgreSQL transaction was split (logged)
  // The open PostgreSQL transaction: its events not already in Kafka, the
  // position of its newest event.
  int64_t pg_txn_events_ = 0;
  bool has_event_position_ = false;
  EventPosition event_position_;
  uint64_t skipped_events_ = 0;
  uint64_t skipped_transactions_ = 0;
  bool skipped_in_txn_ = false;
  bool skip_logged_ = false;
  std::string checkpoint_value_;
  absl::Time stop_seen_ = absl::InfiniteFuture();
};

}  // namespace outboxd::pipeline
