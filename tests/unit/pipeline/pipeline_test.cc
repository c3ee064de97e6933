#include "pipeline/pipeline.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

#include "common/time.h"
#include "pipeline_fixture.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "outbox/v1/envelope.pb.h"
#include "pipeline/at_least_once.h"
#include "registry/registry_sink.h"

namespace outboxd::pipeline {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

TEST_F(PipelineTest, PublishesInsertsAsEnvelopesKeyedByUuid) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 2);
  sink_.auto_ack = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());

  ASSERT_EQ(sink_.produced.size(), 2u);
  const auto& first = sink_.produced[0];
  EXPECT_EQ(first.topic, "outbox.event.Order");
  EXPECT_EQ(first.key, Id(1));
  EXPECT_THAT(first.headers, ElementsAre(Pair("outbox-id", Id(1)), Pair("event-type", "OrderCreated"),
                                         Pair("content-type", "application/json")));
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(first.value));
  EXPECT_EQ(envelope.id(), Id(1));
  EXPECT_EQ(envelope.aggregate_id(), "order-1");
  EXPECT_EQ(envelope.payload(), "{\"n\": 1}");
  EXPECT_EQ(envelope.source().commit_lsn(), 0x1040u);
  EXPECT_EQ(envelope.source().xid(), 700u);
  EXPECT_EQ(envelope.source().table(), "outbox");
  EXPECT_EQ(sink_.produced[1].key, Id(2));
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, ConfirmsOnlyAfterEveryEventOfTheTransactionIsAcknowledged) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 2);
  stream_.PushAction([this] { sink_.DeliverAt(1, absl::OkStatus()); });
  stream_.PushKeepalive(0x1050, /*reply=*/true);
  stream_.PushAction([this] {
    EXPECT_LT(stream_.max_flushed(), Lsn(0x1050)) << "one event of the transaction is unacknowledged";
    sink_.DeliverAt(0, absl::OkStatus());
  });
  stream_.PushKeepalive(0x1060, /*reply=*/true);
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  EXPECT_GE(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, FailedDeliveryStopsProgressAndAbortsTheSession) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);
  PushTxn(0x2000, 701, 2, 1);
  stream_.PushAction([this] {
    sink_.DeliverAt(1, absl::OkStatus());
    sink_.DeliverAt(0, absl::UnavailableError("Local: Message timed out"));
  });
  PushTxn(0x3000, 702, 3, 1);
  absl::Status status = RunUntilScriptEnds();
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(status.message(), HasSubstr("Message timed out"));
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, AnswersKeepaliveReplyRequestsAtOnce) {
  stream_.PushKeepalive(0x500, /*reply=*/false);
  stream_.PushAction([this] { now_ += absl::Seconds(1); });
  stream_.PushKeepalive(0x600, /*reply=*/true);
  stream_.PushAction([this] {
    ASSERT_FALSE(stream_.statuses.empty());
    EXPECT_EQ(stream_.statuses.back().clock, TimeToPgTimestamp(now_));
  });
  ASSERT_TRUE(RunUntilScriptEnds().ok());
}

TEST_F(PipelineTest, IdleOutboxConfirmsKeepaliveWalEnd) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);
  sink_.auto_ack = true;
  stream_.PushKeepalive(0x9000, /*reply=*/true);  // unrelated WAL written since
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  EXPECT_EQ(stream_.max_flushed(), Lsn(0x9000));
}

TEST_F(PipelineTest, KeepaliveWalEndWhileEventsAreInFlightIsConfirmedOnceTheyAreAcknowledged) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushKeepalive(0x9000, /*reply=*/true);
  stream_.PushAction([this] {
    EXPECT_LT(stream_.max_flushed(), Lsn(0x1050)) << "the event is not acknowledged yet";
    // Reported as written: a position outboxd goes on to confirm.
    ASSERT_FALSE(stream_.statuses.empty());
    EXPECT_EQ(stream_.statuses.back().written, Lsn(0x9000));
    sink_.DeliverAll(absl::OkStatus());
  });
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  // No further keepalive needed: the walsender sends none once written = walEnd.
  EXPECT_EQ(stream_.max_flushed(), Lsn(0x9000));
}

TEST_F(PipelineTest, KeepaliveInsideAnOpenTransactionIsNotConfirmed) {
  PushRelation();
  stream_.PushData(0x1000, Begin(0x1040, 700));
  PushInsert(0x1001, 1);
  stream_.PushAction([this] { sink_.DeliverAll(absl::OkStatus()); });
  stream_.PushKeepalive(0x1020, /*reply=*/true);
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1020));
}

TEST_F(PipelineTest, BackpressureStopsReadingButKeepsSendingStatus) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 5);
  sink_.queue_limit = 2;
  // Kafka stalls for 30 simulated seconds: each poll takes one second.
  int reads_at_first_full = -1;
  int refusals_at_release = 0;
  int stalled_polls = 0;
  sink_.on_poll = [&] {
    // Backpressure: a Produce was refused and the queue is still full.
    if (sink_.pending() < sink_.queue_limit || sink_.queue_full_answers == refusals_at_release) return;
    if (reads_at_first_full < 0) reads_at_first_full = stream_.reads_;
    EXPECT_EQ(stream_.reads_, reads_at_first_full) << "the socket must not be read while full";
    now_ += absl::Seconds(1);
    if (++stalled_polls % 30 == 0) {
      sink_.DeliverAll(absl::OkStatus());
      reads_at_first_full = -1;
      refusals_at_release = sink_.queue_full_answers;
    }
  };
  sink_.ack_on_flush = true;  // the broker answers the rest at shutdown
  const size_t statuses_before = stream_.statuses.size();
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  EXPECT_GT(sink_.queue_full_answers, 0);
  EXPECT_EQ(sink_.produced.size(), 5u);
  EXPECT_GE(stream_.statuses.size() - statuses_before, 3u)
      << "status updates must keep flowing while the producer queue is full";
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, StopWhileTheProducerQueueIsFullEndsTheSessionAndCountsTheUnacknowledged) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 5);
  sink_.queue_limit = 2;
  int polls_while_full = 0;
  sink_.on_poll = [&] {
    // Kafka never answers; the stop signal arrives during the wait.
    if (sink_.queue_full_answers > 0 && ++polls_while_full == 3) stop_ = true;
  };
  auto pipeline = Pipeline::Create(&stream_, &sink_, options_, &metrics_, [this] { return now_; });
  ASSERT_TRUE(pipeline.ok());
  // Without the stop check this would wait for Kafka forever.
  EXPECT_TRUE((*pipeline)->Run(stop_).ok());
  EXPECT_EQ(sink_.produced.size(), 2u);
  EXPECT_EQ((*pipeline)->unacknowledged_at_stop(), 3u) << "two queued, one never produced";
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, UpdatesDeletesAndOtherTablesAreCountedNotPublished) {
  PushRelation();
  stream_.PushData(0x200, Relation(kOtherOid, "public", "orders", {{"id", kText}}));
  stream_.PushData(0x1000, Begin(0x1040, 700));
  stream_.PushData(0x1001, Insert(kOtherOid, {"x"}));
  stream_.PushData(0x1002, Delete(kOutboxOid, {Id(1)}));
  stream_.PushData(0x1040, Commit(0x1040, 0x1050));
  sink_.auto_ack = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  EXPECT_TRUE(sink_.produced.empty());
  EXPECT_EQ(metrics_.changes_ignored.Get("delete"), 1u);
  EXPECT_EQ(metrics_.changes_ignored.Get("insert_unmapped_table"), 1u);
  EXPECT_EQ(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, BadRowStopsWithoutConfirmingItWhenOnBadEventIsStop) {
  options_.on_bad_event = outbox::BadEventPolicy::kStop;
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushData(0x2000, Begin(0x2040, 701));
  stream_.PushData(0x2001, Insert(kOutboxOid, {Id(2), "Order", std::nullopt, "OrderCreated", "{}",
                                               std::nullopt}));
  sink_.auto_ack = true;
  absl::Status status = RunUntilScriptEnds();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("aggregate_id"));
  EXPECT_THAT(status.message(), HasSubstr("public.outbox"));
  EXPECT_THAT(status.message(), HasSubstr("on_bad_event"));
  EXPECT_LE(stream_.max_flushed(), Lsn(0x1050));
  EXPECT_TRUE(std::none_of(sink_.produced.begin(), sink_.produced.end(),
                           [](const auto& p) { return p.topic == "outboxd.dlq"; }));
  EXPECT_EQ(metrics_.events_dead_lettered.Get("null_column"), 0u);
}

TEST_F(PipelineTest, TransactionalLogicalMessagesArePublishedOthersIgnored) {
  const std::string content = fmt::format(
      R"({{"id":"{}","aggregate_type":"Invoice","aggregate_id":"i-1","event_type":"InvoiceSent","payload":{{"a":1}}}})",
      Id(9));
  stream_.PushData(0x50, Message(false, 0x50, "outbox", content));
  stream_.PushData(0x1000, Begin(0x1040, 700));
  stream_.PushData(0x1001, Message(true, 0x1001, "outbox", content));
  stream_.PushData(0x1002, Message(true, 0x1002, "audit", "{}"));
  stream_.PushData(0x1040, Commit(0x1040, 0x1050));
  sink_.auto_ack = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  ASSERT_EQ(sink_.produced.size(), 1u);
  EXPECT_EQ(sink_.produced[0].topic, "outbox.event.Invoice");
  EXPECT_EQ(sink_.produced[0].key, Id(9));
  EXPECT_EQ(metrics_.changes_ignored.Get("message_nontransactional"), 1u);
  EXPECT_EQ(metrics_.changes_ignored.Get("message_other_prefix"), 1u);
}

TEST_F(PipelineTest, GracefulStopFlushesAndSendsFinalStatus) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 3);
  sink_.ack_on_flush = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  EXPECT_EQ(sink_.flushes, 1);
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, GracefulStopNeverConfirmsUnacknowledgedEvents) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 3);
  ASSERT_TRUE(RunUntilScriptEnds().ok());  // Kafka never answers
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, StatusUpdatesGoOutAtLeastEveryInterval) {
  // 35 simulated seconds of silence: at least 3 updates.
  int timeouts = 0;
  stream_.on_empty = [&] {
    if (++timeouts > 1000 || now_ > absl::FromUnixSeconds(1800000035)) stop_ = true;
  };
  auto pipeline = Pipeline::Create(&stream_, &sink_, options_, &metrics_, [this] { return now_; });
  ASSERT_TRUE(pipeline.ok());
  ASSERT_TRUE((*pipeline)->Run(stop_).ok());
  EXPECT_GE(stream_.statuses.size(), 4u);  // 0 s, 10 s, 20 s, 30 s, final
}

TEST_F(PipelineTest, ChangesOutsideATransactionAreAProtocolError) {
  PushRelation();
  PushInsert(0x1001, 1);  // no Begin
  sink_.auto_ack = true;
  absl::Status status = RunUntilScriptEnds();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("outside a transaction"));
  EXPECT_TRUE(sink_.produced.empty());
}

TEST_F(PipelineTest, CommitWithoutBeginIsAProtocolError) {
  stream_.PushData(0x1040, Commit(0x1040, 0x1050));
  EXPECT_EQ(RunUntilScriptEnds().code(), absl::StatusCode::kDataLoss);
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(PipelineTest, StreamErrorsEndTheSessionAsTransient) {
  stream_.error_when_empty = absl::UnavailableError("server closed the connection");
  auto pipeline = Pipeline::Create(&stream_, &sink_, options_, &metrics_, [this] { return now_; });
  ASSERT_TRUE(pipeline.ok());
  EXPECT_EQ((*pipeline)->Run(stop_).code(), absl::StatusCode::kUnavailable);
}

// [schema_registry] in front of the producer: a refused report that the
// producer serves after the session ended (the stream broke with the record
// still queued, and the producer is kept for the next session) reaches
// nothing that throws.
TEST_F(PipelineTest, ARefusedReportServedAfterTheSessionEndedIsHarmlessWithASchemaRegistry) {
  auto inner = std::make_unique<FakeSink>();
  FakeSink* producer = inner.get();
  registry::RegistrySink sink(std::move(inner), registry::SubjectStrategy::kTopicName,
                              [](const std::string&) -> absl::StatusOr<int32_t> { return 7; }, "outboxd.dlq");
  ASSERT_TRUE(sink.Prepare({"outbox.event.Order"}).ok());
  PushRelation();
  stream_.PushData(0x1000, Begin(0x1040, 700));
  PushInsert(0x1001, 1);
  stream_.error_when_empty = absl::UnavailableError("server closed the connection");
  {
    auto pipeline = Pipeline::Create(&stream_, &sink, options_, &metrics_, [this] { return now_; });
    ASSERT_TRUE(pipeline.ok());
    EXPECT_EQ((*pipeline)->Run(stop_).code(), absl::StatusCode::kUnavailable);
    ASSERT_EQ(producer->pending(), 1u);
  }
  producer->DeliverAll(BadEventError(bad_event::kMessageTooLarge, "Broker: Message size too large"));
  EXPECT_EQ(producer->pending(), 0u);
}

// A registry slower than the status interval: the lookup of a new topic's
// schema id runs off the loop, which keeps confirming to PostgreSQL
// meanwhile (the walsender drops a connection that stays silent for
// wal_sender_timeout), and then produces the framed record.
TEST_F(PipelineTest, StatusUpdatesKeepFlowingWhileTheSchemaRegistryIsSlow) {
  options_.status_interval = absl::Milliseconds(100);
  // The lookup's start and end, as the statuses' clock field counts time.
  std::atomic<int64_t> asked{0}, answered{0};
  auto inner = std::make_unique<FakeSink>();
  FakeSink* producer = inner.get();
  registry::RegistrySink sink(std::move(inner), registry::SubjectStrategy::kTopicName,
                              [&](const std::string&) -> absl::StatusOr<int32_t> {
                                asked = TimeToPgTimestamp(absl::Now());
                                absl::SleepFor(absl::Milliseconds(700));
                                answered = TimeToPgTimestamp(absl::Now());
                                return 7;
                              },
                              "outboxd.dlq");
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);
  stream_.on_empty = [this] { stop_ = true; };
  producer->ack_on_flush = true;
  auto pipeline = Pipeline::Create(&stream_, &sink, options_, &metrics_);  // the real clock
  ASSERT_TRUE(pipeline.ok());
  ASSERT_TRUE((*pipeline)->Run(stop_).ok());
  const int64_t during = std::count_if(stream_.statuses.begin(), stream_.statuses.end(), [&](const auto& st) {
    return st.clock >= asked.load() && st.clock <= answered.load();
  });
  EXPECT_GE(during, 3) << "too few status updates while the registry was asked";
  ASSERT_EQ(producer->produced.size(), 1u);
  EXPECT_EQ(producer->produced[0].value.substr(0, 5), std::string("\x00\x00\x00\x00\x07", 5)) << "framed";
  EXPECT_EQ(stream_.last_flushed(), Lsn(0x1050));
}

// A stop while the registry does not answer ends the session at once; the
// lookup is cancelled when the sink goes.
TEST_F(PipelineTest, AStopDuringASchemaRegistryLookupEndsTheSessionPromptly) {
  int stop_pipe[2];
  ASSERT_EQ(pipe(stop_pipe), 0);
  options_.stop_fd = stop_pipe[0];
  absl::Mutex mu;
  bool cancelled = false;
  std::atomic<bool> asked{false};
  auto sink = std::make_unique<registry::RegistrySink>(
      std::make_unique<FakeSink>(), registry::SubjectStrategy::kTopicName,
      [&](const std::string&) -> absl::StatusOr<int32_t> {
        asked = true;
        absl::MutexLock lock(&mu);
        // A registry that answers after 10 s, unless cancelled.
        mu.AwaitWithTimeout(absl::Condition(&cancelled), absl::Seconds(10));
        return absl::UnavailableError("no answer");
      },
      "outboxd.dlq", [&] {
        absl::MutexLock lock(&mu);
        cancelled = true;
      });
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);
  stream_.on_empty = [] {};
  std::thread stopper([&] {
    while (!asked) absl::SleepFor(absl::Milliseconds(5));
    absl::SleepFor(absl::Milliseconds(200));
    stop_ = true;
    EXPECT_EQ(write(stop_pipe[1], "x", 1), 1);
  });
  auto pipeline = Pipeline::Create(&stream_, sink.get(), options_, &metrics_);
  ASSERT_TRUE(pipeline.ok());
  const absl::Time start = absl::Now();
  EXPECT_TRUE((*pipeline)->Run(stop_).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(3)) << "the stop waited for the registry";
  EXPECT_EQ((*pipeline)->unacknowledged_at_stop(), 1u);
  stopper.join();
  pipeline->reset();
  const absl::Time dropping = absl::Now();
  sink.reset();
  EXPECT_LT(absl::Now() - dropping, absl::Seconds(3)) << "dropping the sink waited for the registry";
  close(stop_pipe[0]);
  close(stop_pipe[1]);
}


}  // namespace
}  // namespace outboxd::pipeline
