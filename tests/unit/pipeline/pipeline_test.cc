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
#include "fakes.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "outbox/v1/envelope.pb.h"
#include "pipeline/at_least_once.h"
#include "registry/registry_sink.h"

namespace outboxd::pipeline {
namespace {

using ::outboxd::testing::Begin;
using ::outboxd::testing::Commit;
using ::outboxd::testing::Delete;
using ::outboxd::testing::FakeSink;
using ::outboxd::testing::FakeStream;
using ::outboxd::testing::Insert;
using ::outboxd::testing::Message;
using ::outboxd::testing::Relation;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

constexpr uint32_t kOutboxOid = 16400;
constexpr uint32_t kOtherOid = 16500;
constexpr uint32_t kUuid = 2950, kText = 25, kJsonb = 3802, kTimestamptz = 1184;

std::string Header(const testing::Produced& p, std::string_view name) {
  for (const auto& [k, v] : p.headers) {
    if (k == name) return v;
  }
  return "<absent>";
}

std::string Id(int n) { return fmt::format("00000000-0000-4000-8000-{:012d}", n); }

class PipelineTest : public ::testing::Test {
 protected:
  PipelineTest() : stream_(&now_) {
    options_.tables.push_back(outbox::TableConfig{});
    options_.status_interval = absl::Seconds(10);
    options_.feedback_delay = absl::ZeroDuration();
    options_.delivery = &mode_;
  }

  void PushRelation() {
    stream_.PushData(0x100, Relation(kOutboxOid, "public", "outbox",
                                     {{"id", kUuid},
                                      {"aggregate_type", kText},
                                      {"aggregate_id", kText},
                                      {"event_type", kText},
                                      {"payload", kJsonb},
                                      {"created_at", kTimestamptz}}));
  }
  void PushInsert(uint64_t lsn, int n, const std::string& type = "Order") {
    stream_.PushData(lsn, Insert(kOutboxOid, {Id(n), type, fmt::format("order-{}", n), "OrderCreated",
                                              fmt::format("{{\"n\": {}}}", n),
                                              "2026-11-27 03:09:58.5+00"}));
  }
  // One transaction: Begin at `lsn`, `events` inserts, Commit ending at lsn+0x50.
  void PushTxn(uint64_t lsn, uint32_t xid, int first, int events) {
    stream_.PushData(lsn, Begin(lsn + 0x40, xid));
    for (int i = 0; i < events; ++i) PushInsert(lsn + 1 + i, first + i);
    stream_.PushData(lsn + 0x40, Commit(lsn + 0x40, lsn + 0x50));
  }

  absl::Status RunUntilScriptEnds() {
    stream_.on_empty = [this] { stop_ = true; };
    auto pipeline = Pipeline::Create(&stream_, &sink_, options_, &metrics_, [this] { return now_; });
    if (!pipeline.ok()) return pipeline.status();
    return (*pipeline)->Run(stop_);
  }

  absl::Time now_ = absl::FromUnixSeconds(1800000000);
  FakeStream stream_;
  FakeSink sink_;
  telemetry::Metrics metrics_;
  AtLeastOnceMode mode_;  // the stream's: it outlives each session
  PipelineOptions options_;
  std::atomic<bool> stop_{false};
};

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

namespace dead_letters {

constexpr uint64_t kEnd = 0x2050;

class DeadLetterTest : public PipelineTest {
 protected:
  // Transaction 701 at 0x2000: Id(1) good, `bad` row, Id(3) good; ends at kEnd.
  void PushTxnWithBadRow(const std::vector<std::optional<std::string>>& bad) {
    PushRelation();
    stream_.PushData(0x2000, Begin(0x2040, 701));
    PushInsert(0x2001, 1);
    stream_.PushData(0x2002, Insert(kOutboxOid, bad));
    PushInsert(0x2003, 3);
    stream_.PushData(0x2040, Commit(0x2040, kEnd));
  }
  // A replay session: PostgreSQL sends `transactions` again (Begin at lsn,
  // one insert per id at lsn+1.., Commit ending at lsn+0x50) to a new
  // pipeline of the same stream (same mode); `sink` is the broker. Returns
  // how the session ended; `*flushed` the highest flush LSN.
  absl::Status ReplaySession(FakeSink& sink,
                             const std::vector<std::tuple<uint64_t, uint32_t, std::vector<int>>>& transactions,
                             Lsn* flushed) {
    FakeStream replay(&now_);
    replay.PushData(0x100, Relation(kOutboxOid, "public", "outbox",
                                    {{"id", kUuid}, {"aggregate_type", kText}, {"aggregate_id", kText},
                                     {"event_type", kText}, {"payload", kJsonb}, {"created_at", kTimestamptz}}));
    for (const auto& [lsn, xid, ids] : transactions) {
      replay.PushData(lsn, Begin(lsn + 0x40, xid));
      for (size_t i = 0; i < ids.size(); ++i) {
        const int n = ids[i];
        replay.PushData(lsn + 1 + i, Insert(kOutboxOid, {Id(n), "Order", fmt::format("order-{}", n), "OrderCreated",
                                                         fmt::format("{{\"n\": {}}}", n), "2026-11-27 03:09:58.5+00"}));
      }
      replay.PushData(lsn + 0x40, Commit(lsn + 0x40, lsn + 0x50));
    }
    // Until the broker answered everything (the loop keeps serving it).
    replay.PushGate([&sink] { return sink.pending() == 0; }, absl::Seconds(10));
    replay.PushKeepalive(std::get<0>(transactions.back()) + 0x50, /*reply=*/true);
    replay.on_empty = [this] { stop_ = true; };
    stop_ = false;
    auto pipeline = Pipeline::Create(&replay, &sink, options_, &metrics_, [this] { return now_; });
    if (!pipeline.ok()) return pipeline.status();
    absl::Status status = (*pipeline)->Run(stop_);
    *flushed = replay.max_flushed();
    return status;
  }
  const testing::Produced* DeadLetter() const {
    for (const auto& p : sink_.produced) {
      if (p.topic == "outboxd.dlq") return &p;
    }
    return nullptr;
  }
};

TEST_F(DeadLetterTest, NullRequiredColumnIsDeadLetteredAndTheStreamGoesOn) {
  PushTxnWithBadRow({Id(2), "Order", std::nullopt, "OrderCreated", "{\"n\": 2}", std::nullopt});
  // The good rows are acknowledged first: the slot must still wait for the
  // dead letter, which holds the bad row's place in the transaction.
  stream_.PushAction([this] {
    ASSERT_EQ(sink_.produced.size(), 3u);
    sink_.DeliverAt(2, absl::OkStatus());
    sink_.DeliverAt(0, absl::OkStatus());
  });
  stream_.PushKeepalive(kEnd, /*reply=*/true);
  stream_.PushAction([this] {
    EXPECT_LT(stream_.max_flushed(), Lsn(kEnd)) << "the dead letter is not acknowledged yet";
    sink_.DeliverAll(absl::OkStatus());
  });
  stream_.PushKeepalive(kEnd, /*reply=*/true);
  ASSERT_TRUE(RunUntilScriptEnds().ok());

  ASSERT_EQ(sink_.produced.size(), 3u);
  EXPECT_EQ(sink_.produced[0].key, Id(1));
  EXPECT_EQ(sink_.produced[2].key, Id(3));
  const testing::Produced& dl = sink_.produced[1];
  EXPECT_EQ(dl.topic, "outboxd.dlq");
  EXPECT_EQ(dl.key, Id(2));
  EXPECT_EQ(Header(dl, "outboxd-dlq-reason"), "null_column");
  EXPECT_THAT(Header(dl, "outboxd-dlq-error"), HasSubstr("\"aggregate_id\" is NULL"));
  EXPECT_EQ(Header(dl, "outboxd-dlq-source"), "public.outbox");
  EXPECT_EQ(Header(dl, "outboxd-dlq-commit-lsn"), "0/2040");
  EXPECT_EQ(Header(dl, "outboxd-dlq-lsn"), "0/2002");
  EXPECT_EQ(Header(dl, "outboxd-dlq-xid"), "701");
  EXPECT_EQ(Header(dl, "outbox-id"), Id(2));
  EXPECT_EQ(Header(dl, "outboxd-dlq-value"), "row");
  EXPECT_EQ(dl.value, fmt::format(R"({{"id":"{}","aggregate_type":"Order","aggregate_id":null,)"
                                  R"("event_type":"OrderCreated","payload":"{{\"n\": 2}}",)"
                                  R"("created_at":null}})",
                                  Id(2)));
  EXPECT_EQ(metrics_.events_dead_lettered.Get("null_column"), 1u);
  EXPECT_EQ(stream_.max_flushed(), Lsn(kEnd));
}

TEST_F(DeadLetterTest, IdThatIsNotAUuidIsDeadLetteredWithoutAnOutboxId) {
  PushTxnWithBadRow({"order-2", "Order", "o-2", "OrderCreated", "{}", std::nullopt});
  sink_.auto_ack = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  const testing::Produced* dl = DeadLetter();
  ASSERT_NE(dl, nullptr);
  EXPECT_EQ(Header(*dl, "outboxd-dlq-reason"), "invalid_uuid");
  EXPECT_EQ(Header(*dl, "outbox-id"), "<absent>");
  EXPECT_EQ(dl->key, "");
  EXPECT_THAT(dl->value, HasSubstr(R"("id":"order-2")"));
  EXPECT_EQ(metrics_.events_dead_lettered.Get("invalid_uuid"), 1u);
  EXPECT_EQ(stream_.max_flushed(), Lsn(kEnd));
}

TEST_F(DeadLetterTest, MissingRequiredColumnIsDeadLettered) {
  stream_.PushData(0x100, Relation(kOutboxOid, "public", "outbox",
                                   {{"id", kUuid}, {"aggregate_type", kText}, {"payload", kJsonb}}));
  stream_.PushData(0x2000, Begin(0x2040, 701));
  stream_.PushData(0x2001, Insert(kOutboxOid, {Id(1), "Order", "{}"}));
  stream_.PushData(0x2040, Commit(0x2040, kEnd));
  sink_.auto_ack = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  ASSERT_EQ(sink_.produced.size(), 1u);
  EXPECT_EQ(Header(sink_.produced[0], "outboxd-dlq-reason"), "missing_column");
  EXPECT_THAT(Header(sink_.produced[0], "outboxd-dlq-error"), HasSubstr("does not exist"));
  EXPECT_EQ(stream_.max_flushed(), Lsn(kEnd));
}

TEST_F(DeadLetterTest, TopicTemplateYieldingAnInvalidNameIsDeadLetteredWithTheEnvelope) {
  PushTxnWithBadRow({Id(2), "Order Created", "o-2", "OrderCreated", "{\"n\": 2}", std::nullopt});
  sink_.auto_ack = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  const testing::Produced* dl = DeadLetter();
  ASSERT_NE(dl, nullptr);
  EXPECT_EQ(Header(*dl, "outboxd-dlq-reason"), "invalid_topic");
  EXPECT_THAT(Header(*dl, "outboxd-dlq-error"), HasSubstr("not a valid Kafka topic name"));
  EXPECT_EQ(Header(*dl, "outboxd-dlq-value"), "envelope");
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(dl->value));
  EXPECT_EQ(envelope.id(), Id(2));
  EXPECT_EQ(envelope.payload(), "{\"n\": 2}");
  EXPECT_EQ(envelope.source().lsn(), 0x2002u);
  EXPECT_EQ(stream_.max_flushed(), Lsn(kEnd));
}

TEST_F(DeadLetterTest, RecordRefusedAtProduceTimeIsReplacedByItsDeadLetter) {
  sink_.produce_hook = [](const kafka::ProduceRequest& r) {
    if (r.topic != "outboxd.dlq" && r.key == Id(2)) {
      return BadEventError(bad_event::kMessageTooLarge, "record of 2000000 bytes exceeds 1000000");
    }
    return absl::OkStatus();
  };
  PushTxnWithBadRow({Id(2), "Order", "o-2", "OrderCreated", "{\"big\": true}", std::nullopt});
  stream_.PushAction([this] {
    ASSERT_EQ(sink_.produced.size(), 3u);
    sink_.DeliverAt(0, absl::OkStatus());
    sink_.DeliverAt(1, absl::OkStatus());  // Id(3)
  });
  stream_.PushKeepalive(kEnd, /*reply=*/true);
  stream_.PushAction([this] {
    EXPECT_LT(stream_.max_flushed(), Lsn(kEnd)) << "the dead letter is not acknowledged yet";
    sink_.DeliverAll(absl::OkStatus());
  });
  stream_.PushKeepalive(kEnd, /*reply=*/true);
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  const testing::Produced* dl = DeadLetter();
  ASSERT_NE(dl, nullptr);
  EXPECT_EQ(Header(*dl, "outboxd-dlq-reason"), "message_too_large");
  EXPECT_EQ(Header(*dl, "outboxd-dlq-value"), "envelope-without-payload");
  EXPECT_EQ(Header(*dl, "outboxd-dlq-topic"), "outbox.event.Order");
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(dl->value));
  EXPECT_EQ(envelope.id(), Id(2));
  EXPECT_EQ(envelope.payload(), "");
  EXPECT_EQ(envelope.event_type(), "OrderCreated");
  EXPECT_EQ(metrics_.events_dead_lettered.Get("message_too_large"), 1u);
  EXPECT_EQ(stream_.max_flushed(), Lsn(kEnd));
}

// A replay session: PostgreSQL sends `transactions` again (Begin at lsn, one
// insert per id at lsn+1.., Commit ending at lsn+0x50); `sink` is the
// broker. Returns how the session ended; `*flushed` the highest flush LSN.
// The broker: acknowledges every record at the next poll, except those whose
// key is in `refuse`, which it refuses as too large.
void RefuseKeys(FakeSink& sink, std::set<std::string> refuse) {
  sink.on_poll = [&sink, refuse = std::move(refuse)] {
    while (sink.pending() > 0) {
      const testing::Produced& next = sink.produced[sink.produced.size() - sink.pending()];
      sink.DeliverAt(0, refuse.contains(next.key) && next.topic != "outboxd.dlq"
                            ? BadEventError(bad_event::kMessageTooLarge,
                                            "delivery to Kafka topic \"outbox.event.Order\" failed: Broker: "
                                            "Message size too large (MSG_SIZE_TOO_LARGE)")
                            : absl::OkStatus());
    }
  };
}

// The broker refuses a record that was alone in flight: the session ends
// without confirming it, and the next one, reading its event again from the
// slot, produces the event's dead letter (built from the row read again) in
// its place. Then the slot moves past it.
TEST_F(DeadLetterTest, ARecordRefusedAloneIsDeadLetteredWhenItsEventIsReadAgain) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);  // ends at 0x1050
  stream_.PushAction([this] {
    ASSERT_EQ(sink_.produced.size(), 1u);
    sink_.DeliverAt(0, BadEventError(bad_event::kMessageTooLarge,
                                     "delivery to Kafka topic \"outbox.event.Order\" failed: "
                                     "Broker: Message size too large (MSG_SIZE_TOO_LARGE)"));
  });
  PushTxn(0x2000, 701, 2, 1);  // ends at 0x2050
  stream_.PushKeepalive(0x2050, /*reply=*/true);
  const absl::Status first = RunUntilScriptEnds();
  EXPECT_EQ(first.code(), absl::StatusCode::kAborted) << first;
  EXPECT_TRUE(IsRefusedRecordRestart(first)) << first;
  EXPECT_THAT(first.message(), HasSubstr("LSN 0/1001"));
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050)) << "confirmed past the refused record";
  ASSERT_EQ(mode_.refused().size(), 1u);

  FakeSink next;
  next.auto_ack = true;
  Lsn flushed;
  ASSERT_TRUE(ReplaySession(next, {{0x1000, 700, {1}}, {0x2000, 701, {2}}}, &flushed).ok());
  ASSERT_EQ(next.produced.size(), 2u);
  EXPECT_EQ(next.produced[1].key, Id(2));
  const testing::Produced& dl = next.produced[0];
  EXPECT_EQ(dl.topic, "outboxd.dlq");
  EXPECT_EQ(dl.key, Id(1));
  EXPECT_EQ(Header(dl, "outboxd-dlq-reason"), "message_too_large");
  EXPECT_THAT(Header(dl, "outboxd-dlq-error"), HasSubstr("MSG_SIZE_TOO_LARGE"));
  EXPECT_EQ(Header(dl, "outboxd-dlq-lsn"), "0/1001");
  EXPECT_EQ(Header(dl, "outboxd-dlq-commit-lsn"), "0/1040");
  EXPECT_EQ(Header(dl, "outboxd-dlq-xid"), "700");
  EXPECT_EQ(Header(dl, "outboxd-dlq-topic"), "outbox.event.Order");
  ::outbox::v1::Envelope envelope;
  ASSERT_TRUE(envelope.ParseFromString(dl.value));
  EXPECT_EQ(envelope.payload(), "");
  EXPECT_EQ(envelope.aggregate_id(), "order-1");
  EXPECT_EQ(metrics_.events_dead_lettered.Get("message_too_large"), 1u);
  EXPECT_EQ(flushed, Lsn(0x2050));
  EXPECT_TRUE(mode_.refused().empty()) << "kept after the slot passed its transaction";
}

// The broker refuses a whole batch that is too large: the small record in it
// is refused with the large one. Read again, each is produced alone: the
// small one is published, the large one refused again, now for certain, and
// dead-lettered by the session after.
TEST_F(DeadLetterTest, ARecordRefusedWithItsBatchIsProducedAloneAndOnlyTheGuiltyOneIsDeadLettered) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 2);  // ends at 0x1050
  stream_.PushAction([this] {
    ASSERT_EQ(sink_.produced.size(), 2u);
    sink_.DeliverAll(BadEventError(bad_event::kMessageTooLarge, "Broker: Message size too large"));
  });
  stream_.PushKeepalive(0x1050, /*reply=*/true);
  EXPECT_TRUE(IsRefusedRecordRestart(RunUntilScriptEnds()));
  ASSERT_EQ(mode_.refused().size(), 2u);

  FakeSink second;
  RefuseKeys(second, {Id(2)});
  Lsn flushed;
  const absl::Status again = ReplaySession(second, {{0x1000, 700, {1, 2}}}, &flushed);
  EXPECT_TRUE(IsRefusedRecordRestart(again)) << again;
  ASSERT_EQ(second.produced.size(), 2u);
  EXPECT_EQ(second.produced[0].key, Id(1));
  EXPECT_EQ(second.produced[1].key, Id(2));
  EXPECT_LT(flushed, Lsn(0x1050));

  FakeSink third;
  RefuseKeys(third, {Id(2)});
  ASSERT_TRUE(ReplaySession(third, {{0x1000, 700, {1, 2}}}, &flushed).ok());
  ASSERT_EQ(third.produced.size(), 2u);
  EXPECT_EQ(third.produced[0].topic, "outbox.event.Order");
  EXPECT_EQ(third.produced[0].key, Id(1));
  EXPECT_EQ(third.produced[1].topic, "outboxd.dlq");
  EXPECT_EQ(third.produced[1].key, Id(2));
  EXPECT_EQ(metrics_.events_dead_lettered.Get("message_too_large"), 1u) << "the small record was dead-lettered";
  EXPECT_EQ(flushed, Lsn(0x1050));
}

TEST_F(DeadLetterTest, RefusedDeadLetterStopsForGood) {
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushAction([this] {
    sink_.DeliverAt(0, BadEventError(bad_event::kMessageTooLarge, "too large"));
  });
  stream_.PushKeepalive(0x1050, /*reply=*/true);
  EXPECT_TRUE(IsRefusedRecordRestart(RunUntilScriptEnds()));

  // Read again: its dead letter goes out, and the broker refuses that too.
  FakeSink next;
  next.on_poll = [&next] {
    if (next.pending() > 0) next.DeliverAt(0, BadEventError(bad_event::kMessageTooLarge, "dead letter too large"));
  };
  Lsn flushed;
  absl::Status status = ReplaySession(next, {{0x1000, 700, {1}}}, &flushed);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("dead_letter_topic"));
  EXPECT_LT(flushed, Lsn(0x1050));
  ASSERT_EQ(next.produced.size(), 1u) << "a dead letter is never dead-lettered";
  EXPECT_EQ(next.produced[0].topic, "outboxd.dlq");
}

TEST_F(DeadLetterTest, RefusedRecordStopsWhenOnBadEventIsStop) {
  options_.on_bad_event = outbox::BadEventPolicy::kStop;
  PushRelation();
  PushTxn(0x1000, 700, 1, 1);
  stream_.PushAction([this] {
    sink_.DeliverAt(0, BadEventError(bad_event::kMessageTooLarge, "too large"));
  });
  stream_.PushKeepalive(0x1050, /*reply=*/true);
  absl::Status status = RunUntilScriptEnds();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(sink_.produced.size(), 1u);
  EXPECT_LT(stream_.max_flushed(), Lsn(0x1050));
}

TEST_F(DeadLetterTest, BadLogicalMessageIsDeadLetteredWithItsContent) {
  stream_.PushData(0x2000, Begin(0x2040, 701));
  stream_.PushData(0x2001, Message(true, 0x2001, "outbox", "{not json"));
  stream_.PushData(0x2040, Commit(0x2040, kEnd));
  sink_.auto_ack = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  ASSERT_EQ(sink_.produced.size(), 1u);
  const testing::Produced& dl = sink_.produced[0];
  EXPECT_EQ(dl.topic, "outboxd.dlq");
  EXPECT_EQ(Header(dl, "outboxd-dlq-reason"), "bad_payload");
  EXPECT_EQ(Header(dl, "outboxd-dlq-source"), "message:outbox");
  EXPECT_THAT(Header(dl, "outboxd-dlq-error"), Not(HasSubstr("not json")))
      << "payload contents stay out of error texts (and logs)";
  EXPECT_EQ(dl.value, "{not json");
  EXPECT_EQ(stream_.max_flushed(), Lsn(kEnd));
}

TEST_F(DeadLetterTest, ConfiguredDeadLetterTopicIsUsed) {
  options_.dead_letter_topic = "app.dead";
  PushTxnWithBadRow({Id(2), std::nullopt, "o-2", "OrderCreated", "{}", std::nullopt});
  sink_.auto_ack = true;
  ASSERT_TRUE(RunUntilScriptEnds().ok());
  ASSERT_EQ(sink_.produced.size(), 3u);
  EXPECT_EQ(sink_.produced[1].topic, "app.dead");
}

}  // namespace dead_letters

}  // namespace
}  // namespace outboxd::pipeline
