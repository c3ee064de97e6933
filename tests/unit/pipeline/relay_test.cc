// Relay: backoff schedule, reconnect accounting, standby and gap handling,
// with an injected clock, sleep and jitter source.
#include "pipeline/relay.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/bad_event.h"
#include "fakes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "replication/state_file.h"

namespace outboxd::pipeline {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::FakeSink;
using testing::FakeStream;

TEST(BackoffTest, DoublesUpToTheCapWithJitterInTheUpperHalf) {
  double u = 0.0;
  Backoff backoff(absl::Milliseconds(200), absl::Seconds(30), [&] { return u; });
  std::vector<absl::Duration> low;
  for (int i = 0; i < 10; ++i) low.push_back(backoff.Next());
  EXPECT_THAT(low, ElementsAre(absl::Milliseconds(100), absl::Milliseconds(200), absl::Milliseconds(400),
                               absl::Milliseconds(800), absl::Milliseconds(1600), absl::Milliseconds(3200),
                               absl::Milliseconds(6400), absl::Milliseconds(12800), absl::Seconds(15),
                               absl::Seconds(15)));
  backoff.Reset();
  u = 0.999999;
  std::vector<absl::Duration> high;
  for (int i = 0; i < 10; ++i) high.push_back(absl::Floor(backoff.Next(), absl::Milliseconds(1)));
  EXPECT_EQ(high[0], absl::Milliseconds(199));
  EXPECT_EQ(high[7], absl::Milliseconds(25599));
  EXPECT_EQ(high[9], absl::Milliseconds(29999)) << "never above the cap";
  // Out-of-range randomness is clamped rather than trusted.
  u = 7.0;
  backoff.Reset();
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(200));
}

class RelayTest : public ::testing::Test {
 protected:
  RelayOptions Options() {
    RelayOptions options;
    options.clock = [this] { return now_; };
    options.sleep = [this](absl::Duration d, const std::atomic<bool>&) {
      sleeps_.push_back(d);
      now_ += d;
    };
    options.uniform01 = [] { return 0.5; };  // delay = 3/4 of the base
    options.pipeline.status_interval = absl::Seconds(10);
    return options;
  }
  // A stream whose script is empty: the session stops at once, gracefully.
  std::unique_ptr<replication::ReplicationStream> StoppingStream() {
    auto stream = std::make_unique<FakeStream>(&now_);
    stream->on_empty = [this] { stop_ = true; };
    return stream;
  }
  SinkFactory Sinks() {
    return [this]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
      ++sinks_made_;
      return std::unique_ptr<kafka::EventSink>(std::make_unique<FakeSink>());
    };
  }

  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  std::vector<absl::Duration> sleeps_;
  std::atomic<bool> stop_{false};
  telemetry::Metrics metrics_;
  int sinks_made_ = 0;
};

TEST_F(RelayTest, TransientPostgresFaultsBackOffExponentiallyAndAreCounted) {
  int attempts = 0;
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    if (++attempts <= 12) return absl::UnavailableError("connection refused");
    return StoppingStream();
  };
  Relay relay(streams, Sinks(), Options(), &metrics_);
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(relay.Run(stop_).ok());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(attempts, 13);
  EXPECT_EQ(metrics_.reconnects.Get("postgres"), 12u);
  EXPECT_EQ(metrics_.reconnects.Get("kafka"), 0u);
  ASSERT_EQ(sleeps_.size(), 12u);
  EXPECT_EQ(sleeps_[0], absl::Milliseconds(150));
  EXPECT_EQ(sleeps_[1], absl::Milliseconds(300));
  EXPECT_EQ(sleeps_[7], absl::Milliseconds(19200));
  EXPECT_EQ(sleeps_[8], absl::Milliseconds(22500)) << "capped at 30 s, times the jitter";
  EXPECT_EQ(sleeps_[11], absl::Milliseconds(22500));
  EXPECT_THAT(log, HasSubstr("connection refused; reconnecting to postgres in 150ms (reconnect 1 to postgres)"));
  EXPECT_THAT(log, HasSubstr("(reconnect 12 to postgres)"));
  EXPECT_EQ(metrics_.streaming.load(), 0);
}

TEST_F(RelayTest, ExactlyOnceOpensTheSlotBeforeEachNewProducerAndAFencedOneWaitsAsAStandby) {
  RelayOptions options = Options();
  options.stream_before_sink = true;
  std::vector<std::string> order;
  int streams_opened = 0;
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    order.push_back("stream");
    ++streams_opened;
    if (streams_opened == 1) {
      // The first session: its producer is fenced by another instance.
      auto stream = std::make_unique<FakeStream>(&now_);
      stream->on_empty = [] {};
      return std::unique_ptr<replication::ReplicationStream>(std::move(stream));
    }
    if (streams_opened <= 3) {
      return absl::UnavailableError("replication slot \"outboxd\" is active for PID 4242");
    }
    return StoppingStream();
  };
  SinkFactory sinks = [&]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
    order.push_back("sink");
    auto sink = std::make_unique<FakeSink>();
    if (order.size() == 2) sink->fatal = kafka::FencedError("another producer with transactional.id 'x' took over");
    return std::unique_ptr<kafka::EventSink>(std::move(sink));
  };
  Relay relay(streams, sinks, options, &metrics_);
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(relay.Run(stop_).ok());
  const std::string log = ::testing::internal::GetCapturedStderr();
  // Slot first, then a new producer for each session; none while the slot is busy.
  EXPECT_THAT(order, ElementsAre("stream", "sink", "stream", "stream", "stream", "sink"));
  EXPECT_EQ(metrics_.producer_fenced.load(), 1u);
  EXPECT_THAT(log, HasSubstr("fenced: another producer with transactional.id 'x' took over"));
  EXPECT_THAT(log, HasSubstr("standby"));
}

TEST_F(RelayTest, KafkaFaultsAreCountedAgainstKafka) {
  int sink_attempts = 0;
  SinkFactory sinks = [&]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
    if (++sink_attempts <= 2) return absl::UnavailableError("no broker");
    return std::unique_ptr<kafka::EventSink>(std::make_unique<FakeSink>());
  };
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    return StoppingStream();
  };
  Relay relay(streams, sinks, Options(), &metrics_);
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(relay.Run(stop_).ok());
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(metrics_.reconnects.Get("kafka"), 2u);
  EXPECT_EQ(metrics_.reconnects.Get("postgres"), 0u);
}

TEST_F(RelayTest, ThePostgresSideFailingKeepsTheProducerAKafkaFailureRebuildsIt) {
  int attempts = 0;
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    ++attempts;
    if (attempts <= 3) return absl::UnavailableError("connection refused");
    if (attempts == 4) {
      // Streams, then the stream breaks: PostgreSQL's side again.
      auto stream = std::make_unique<FakeStream>(&now_);
      stream->error_when_empty = absl::UnavailableError("server closed the connection");
      return stream;
    }
    return StoppingStream();
  };
  Relay relay(streams, Sinks(), Options(), &metrics_);
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(relay.Run(stop_).ok());
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(attempts, 5);
  EXPECT_EQ(sinks_made_, 1) << "a new producer would have to learn brokers and topics again";

  // A Kafka fault (the pipeline's Aborted) rebuilds it.
  stop_ = false;
  int sessions = 0;
  StreamFactory kafka_fails = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    if (++sessions == 1) {
      auto stream = std::make_unique<FakeStream>(&now_);
      stream->on_empty = [] {};
      return stream;
    }
    return StoppingStream();
  };
  sinks_made_ = 0;
  int made = 0;
  SinkFactory fatal_sinks = [&]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
    ++sinks_made_;
    auto sink = std::make_unique<FakeSink>();
    if (++made == 1) sink->fatal = absl::AbortedError("fenced");
    return std::unique_ptr<kafka::EventSink>(std::move(sink));
  };
  Relay relay2(kafka_fails, fatal_sinks, Options(), &metrics_);
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(relay2.Run(stop_).ok());
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(sinks_made_, 2);
  EXPECT_EQ(metrics_.reconnects.Get("kafka"), 1u);
}

TEST_F(RelayTest, AStopThatCancelledAConnectionAttemptEndsTheRelayCleanly) {
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    stop_ = true;  // the signal arrived while connecting
    return absl::CancelledError("stop requested while connecting to PostgreSQL");
  };
  Relay relay(streams, Sinks(), Options(), &metrics_);
  EXPECT_TRUE(relay.Run(stop_).ok());
  EXPECT_TRUE(sleeps_.empty()) << "no backoff after a stop";
  EXPECT_EQ(metrics_.reconnects.Get("postgres"), 0u);
  EXPECT_EQ(relay.unacknowledged_at_stop(), 0u);
}

TEST_F(RelayTest, AHealthySessionResetsTheBackoff) {
  int attempts = 0;
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    ++attempts;
    if (attempts <= 4 || (attempts >= 6 && attempts <= 7)) return absl::UnavailableError("refused");
    auto stream = std::make_unique<FakeStream>(&now_);
    if (attempts == 5) {
      // Streams for a minute, then breaks.
      stream->on_empty = [this] { now_ += absl::Minutes(1); };
      stream->error_when_empty = absl::UnavailableError("server closed the connection");
    } else {
      stream->on_empty = [this] { stop_ = true; };
    }
    return std::unique_ptr<replication::ReplicationStream>(std::move(stream));
  };
  Relay relay(streams, Sinks(), Options(), &metrics_);
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(relay.Run(stop_).ok());
  ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(sleeps_.size(), 7u);
  EXPECT_EQ(sleeps_[3], absl::Milliseconds(1200));
  EXPECT_EQ(sleeps_[4], absl::Milliseconds(150)) << "after a session that streamed for a minute";
  EXPECT_EQ(sleeps_[5], absl::Milliseconds(300));
}

TEST_F(RelayTest, StandbyWaitsLogsOnceAMinuteAndTakesOver) {
  int attempts = 0;
  std::vector<int> standby_seen;
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    standby_seen.push_back(metrics_.standby.load());
    // Ten minutes of "busy" at up to 5 s apart: well over 100 attempts.
    if (now_ < absl::FromUnixSeconds(1700000000) + absl::Minutes(10)) {
      ++attempts;
      return absl::UnavailableError(
          "replication slot \"outboxd\" is active for PID 4242 (SQLSTATE 55006)");
    }
    return StoppingStream();
  };
  Relay relay(streams, Sinks(), Options(), &metrics_);
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(relay.Run(stop_).ok());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_GT(attempts, 100);
  int standby_lines = 0;
  for (size_t at = log.find("standby:"); at != std::string::npos; at = log.find("standby:", at + 1)) {
    ++standby_lines;
  }
  EXPECT_GE(standby_lines, 10);
  EXPECT_LE(standby_lines, 11) << "once a minute, not once a retry";
  EXPECT_THAT(log, HasSubstr("takes over streaming"));
  EXPECT_EQ(metrics_.reconnects.Get("postgres"), 0u) << "waiting is not reconnecting";
  for (absl::Duration d : sleeps_) EXPECT_LE(d, absl::Seconds(5));
  EXPECT_EQ(standby_seen.front(), 0);
  EXPECT_EQ(standby_seen[5], 1) << "standby = 1 while waiting";
  EXPECT_EQ(metrics_.standby.load(), 0) << "and 0 once streaming";
}

TEST_F(RelayTest, GapUpstreamIsFatalAndAnInvalidatedSlotIsAMetric) {
  int attempts = 0;
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    ++attempts;
    return replication::MarkGap(absl::FailedPreconditionError("slot was invalidated"), /*invalidated=*/true);
  };
  Relay relay(streams, Sinks(), Options(), &metrics_);
  absl::Status status = relay.Run(stop_);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(replication::IsGapUpstream(status));
  EXPECT_EQ(attempts, 1) << "never retried, never recreated";
  EXPECT_EQ(metrics_.slot_invalidated.load(), 1);
  EXPECT_THAT(metrics_.RenderPrometheus(), HasSubstr("outboxd_slot_invalidated 1\n"));
}

TEST_F(RelayTest, VanishedSlotIsFatalWithoutTheInvalidatedMetric) {
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    return replication::MarkGap(absl::FailedPreconditionError("slot vanished"), /*invalidated=*/false);
  };
  Relay relay(streams, Sinks(), Options(), &metrics_);
  EXPECT_TRUE(replication::IsGapUpstream(relay.Run(stop_)));
  EXPECT_EQ(metrics_.slot_invalidated.load(), 0);
}

// [[outbox]] value = "payload" (Debezium's record: the payload column as the
// value, not an envelope): the broker refuses a 20 KB record in its delivery
// report (the topic's max.message.bytes). Its event is read again from the
// slot and dead-lettered from the row; the next row arrives, and the slot
// moves past both.
TEST_F(RelayTest, APayloadRecordTheBrokerRefusesIsDeadLetteredAndTheSlotMovesOn) {
  constexpr uint32_t kOid = 16400, kUuid = 2950, kText = 25, kJsonb = 3802;
  const std::string big_id = "00000000-0000-4000-8000-000000000001";
  const std::string small_id = "00000000-0000-4000-8000-000000000002";
  RelayOptions options = Options();
  options.pipeline.tables.push_back(outbox::TableConfig{});
  options.pipeline.tables.back().record.value = outbox::ValueFormat::kPayload;
  options.pipeline.feedback_delay = absl::ZeroDuration();

  // The slot: what every new session is sent again, from its confirmed position.
  struct Slot : FakeStream {
    using FakeStream::FakeStream;
    Lsn* confirmed = nullptr;
    absl::Status SendStatus(const replication::StandbyStatus& status) override {
      *confirmed = std::max(*confirmed, status.flushed);
      return FakeStream::SendStatus(status);
    }
  };
  Lsn confirmed;
  int sessions = 0;
  StreamFactory streams = [&]() -> absl::StatusOr<std::unique_ptr<replication::ReplicationStream>> {
    if (++sessions > 10 || confirmed >= Lsn(0x2050)) return StoppingStream();
    auto slot = std::make_unique<Slot>(&now_);
    slot->confirmed = &confirmed;
    slot->PushData(0x100, testing::Relation(kOid, "public", "outbox",
                                            {{"id", kUuid}, {"aggregate_type", kText}, {"aggregate_id", kText},
                                             {"event_type", kText}, {"payload", kJsonb}}));
    if (confirmed < Lsn(0x1050)) {
      slot->PushData(0x1000, testing::Begin(0x1040, 700));
      slot->PushData(0x1001, testing::Insert(kOid, {big_id, "Order", "o-1", "OrderCreated",
                                                    "{\"pad\": \"" + std::string(20000, 'x') + "\"}"}));
      slot->PushData(0x1040, testing::Commit(0x1040, 0x1050));
    }
    slot->PushData(0x2000, testing::Begin(0x2040, 701));
    slot->PushData(0x2001, testing::Insert(kOid, {small_id, "Order", "o-2", "OrderCreated", "{\"n\": 2}"}));
    slot->PushData(0x2040, testing::Commit(0x2040, 0x2050));
    int empty = 0;
    slot->on_empty = [this, &confirmed, empty]() mutable {
      if (confirmed >= Lsn(0x2050) || ++empty > 100) stop_ = true;
    };
    return std::unique_ptr<replication::ReplicationStream>(std::move(slot));
  };
  // The broker: every record acknowledged at the next poll, but one over
  // 3000 bytes is refused.
  std::vector<testing::Produced> delivered;
  SinkFactory sinks = [&]() -> absl::StatusOr<std::unique_ptr<kafka::EventSink>> {
    auto sink = std::make_unique<FakeSink>();
    FakeSink* broker = sink.get();
    broker->on_poll = [broker, &delivered] {
      while (broker->pending() > 0) {
        const testing::Produced& next = broker->produced[broker->produced.size() - broker->pending()];
        if (next.value.size() > 3000) {
          broker->DeliverAt(0, BadEventError(bad_event::kMessageTooLarge,
                                             "delivery to Kafka topic \"outbox.event.Order\" failed: Broker: "
                                             "Message size too large (MSG_SIZE_TOO_LARGE)"));
        } else {
          delivered.push_back(next);
          broker->DeliverAt(0, absl::OkStatus());
        }
      }
    };
    return std::unique_ptr<kafka::EventSink>(std::move(sink));
  };
  Relay relay(streams, sinks, options, &metrics_);
  EXPECT_TRUE(relay.Run(stop_).ok());
  EXPECT_LE(sessions, 3) << "the refused record restarted the session again and again";
  EXPECT_EQ(confirmed, Lsn(0x2050)) << "the slot did not move past the refused record";
  std::vector<std::string> topics, keys;
  for (const testing::Produced& p : delivered) {
    topics.push_back(p.topic);
    keys.push_back(p.key);
  }
  EXPECT_THAT(topics, ::testing::Contains("outboxd.dlq"));
  EXPECT_THAT(keys, ::testing::Contains(small_id));
  for (const testing::Produced& p : delivered) {
    if (p.topic != "outboxd.dlq") continue;
    EXPECT_EQ(p.key, big_id);
    std::map<std::string, std::string> headers(p.headers.begin(), p.headers.end());
    EXPECT_EQ(headers["outboxd-dlq-reason"], "message_too_large");
    EXPECT_EQ(headers["outboxd-dlq-lsn"], "0/1001");
    EXPECT_EQ(headers["outboxd-dlq-value"], "envelope-without-payload");
    EXPECT_LT(p.value.size(), 3000u);
  }
  EXPECT_EQ(metrics_.events_dead_lettered.Get("message_too_large"), 1u);
}

}  // namespace
}  // namespace outboxd::pipeline
