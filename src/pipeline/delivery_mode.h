// DeliveryMode: how a stream's events reach Kafka, as a layer the pipeline
// calls at fixed points: before a produce, at a PostgreSQL Begin and Commit,
// after each batch of frames, when it computes the flush position and the
// loop's next deadline, at a graceful stop, and once at the end of every
// session. At-least-once (at_least_once.h) is the plain layer; exactly-once
// (exactly_once.h) holds everything about Kafka transactions and checkpoints.
// The pipeline knows neither.
//
// A mode lives as long as its stream, across the sessions (one Pipeline each)
// that the Relay runs back to back: what must survive a session lives here
// (the records the broker refused, exactly-once's committed checkpoint).
// Nothing in it assumes one stream per process.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/lsn.h"
#include "kafka/event_sink.h"
#include "pgoutput/messages.h"
#include "pipeline/ack_tracker.h"
#include "pipeline/checkpoint.h"
#include "pipeline/refused_records.h"
#include "telemetry/metrics.h"

namespace outboxd::pipeline {

// What a mode may use of the session that calls it (the Pipeline), valid
// between BeginSession and EndSession.
class Session {
 public:
  virtual kafka::EventSink& sink() = 0;
  virtual telemetry::Metrics& metrics() = 0;
  virtual const AckTracker& tracker() const = 0;
  // The session's clock (injected in tests).
  virtual absl::Time Now() const = 0;
  virtual bool stopping() const = 0;
  // The stop flag and its descriptor (-1: none), for waits a stop must end.
  virtual const std::atomic<bool>& stop_flag() const = 0;
  virtual int stop_fd() const = 0;
  virtual absl::Duration stop_flush_timeout() const = 0;
  // Everything before this position was read: a commit's end, or a
  // keepalive's walEnd between transactions.
  virtual Lsn read_through() const = 0;
  // Produces a record that no tracker counts (the checkpoint), waiting out
  // backpressure as events do (status updates keep flowing, a stop ends it:
  // CancelledError).
  virtual absl::Status ProduceUntracked(const kafka::ProduceRequest& request) = 0;
  // Sends the status update if one is due or was asked for: for a mode that
  // waits on Kafka, so that the walsender does not time out meanwhile.
  virtual absl::Status KeepStatusFlowing() = 0;

 protected:
  ~Session() = default;
};

class DeliveryMode {
 public:
  virtual ~DeliveryMode() = default;

  // "at_least_once" or "exactly_once", for logs.
  virtual std::string_view name() const = 0;

  // A session starts; `session` stays valid until EndSession.
  virtual void BeginSession(Session* session) = 0;

  // pgoutput Begin, after the tracker opened the transaction.
  virtual void OnBegin(const pgoutput::BeginMessage& begin) = 0;
  // Whether the event at `position` of the open transaction (commit LSN
  // `commit_lsn`) is in Kafka already, so that it is not published again;
  // otherwise it is this session's to deliver (exactly-once counts it).
  virtual bool AlreadyInKafka(Lsn commit_lsn, EventPosition position) = 0;
  // Before each produce of an event or a dead letter.
  virtual absl::Status BeforeProduce() = 0;
  // An event's record (or its dead letter) was acknowledged; `commit_time`:
  // its PostgreSQL transaction's (pgoutput microseconds), 0 when unknown.
  virtual void OnAcknowledged(int64_t commit_time) = 0;
  // pgoutput Commit, after the tracker closed the transaction.
  virtual absl::Status OnCommit(const pgoutput::CommitMessage& commit) = 0;
  // After each batch of frames; `caught_up`: nothing was left to read.
  virtual absl::Status AfterBatch(bool caught_up) = 0;

  // The flush position to confirm, given the tracker's safe LSN: at most
  // `safe`, less while acknowledged records are not yet visible to consumers.
  virtual Lsn ClampFlush(Lsn safe) const = 0;
  // When the mode next has something to do without new input (InfiniteFuture:
  // nothing). Never in the past once AfterBatch ran: the loop waits until it.
  virtual absl::Time NextDeadline() const = 0;

  // A graceful stop, before the final flush: finishes or drops the work in
  // progress. An error is logged, and the stop goes on.
  virtual absl::Status Stop() = 0;
  // After Stop and the flush: this session's events that stayed unconfirmed,
  // given the tracker's count of unacknowledged ones.
  virtual uint64_t UnacknowledgedAtStop(uint64_t unacknowledged) const = 0;
  // The one exit of every session, whatever ended it (a stop, a Kafka or
  // PostgreSQL error, a bad event under on_bad_event = "stop"). Exactly-once
  // aborts a Kafka transaction still open unless the producer was fenced, so
  // that read_committed consumers never wait for transaction.timeout.ms
  // (DESIGN invariant 12). Returns the status the session ends with.
  virtual absl::Status EndSession(absl::Status status) = 0;

  // The records the broker refused, by position: the same mechanism in both
  // modes (refused_records.h), kept for the stream.
  RefusedRecords& refused() { return refused_; }

 private:
  RefusedRecords refused_;
};

}  // namespace outboxd::pipeline
