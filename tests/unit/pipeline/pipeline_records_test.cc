// From an event to its record and back: dead letters for bad rows and
// messages, records the broker refuses at produce time or in their delivery
// reports (by position, in the next session), over the test doubles.
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/bad_event.h"
#include "outbox/v1/envelope.pb.h"
#include "pipeline_fixture.h"

namespace outboxd::pipeline {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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
