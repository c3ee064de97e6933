// End to end: the outboxd binary against the real local PostgreSQL 15 and
// Kafka broker (deploy/local/stack.sh up).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <set>
#include <fstream>
#include <sstream>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::it {
namespace {

using ::testing::Contains;
using ::testing::Pair;

// Inserts one transaction of `rows` events, aggregate ids "t<txn>-<seq>".
void InsertTxn(Sql& sql, const std::string& table, int txn, int rows,
               const std::string& aggregate_type = "Order") {
  sql.Exec(fmt::format(
      "BEGIN; INSERT INTO public.{0} (aggregate_type, aggregate_id, event_type, payload) "
      "SELECT '{1}', 't{2}-' || g, 'OrderCreated', jsonb_build_object('txn', {2}, 'seq', g, "
      "'note', repeat('x', 200)) FROM generate_series(1, {3}) AS g ORDER BY g; COMMIT;",
      table, aggregate_type, txn, rows));
}

class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "the local stack is not up: run deploy/local/stack.sh up";
  }
  void TearDown() override {
    if (outboxd_) outboxd_->Stop(SIGKILL);
    if (!source_.table.empty()) DropSource(sql_, source_);
  }
  void StartOutboxd(const std::string& extra = "") {
    if (!outboxd_) outboxd_ = std::make_unique<OutboxdProcess>(ConfigFor(source_, extra));
    outboxd_->Start();
    ASSERT_TRUE(outboxd_->WaitForLog("streaming slot", absl::Seconds(30))) << outboxd_->Log();
  }
  std::string Topic(const std::string& aggregate_type = "Order") const {
    return source_.topic_prefix + "." + aggregate_type;
  }

  Sql sql_;
  TestSource source_;
  std::unique_ptr<OutboxdProcess> outboxd_;
};

// 10,000 events in 100 transactions of mixed sizes: every id arrives, the
// envelope equals the row, order within each transaction holds on the single
// partition; then the slot is confirmed past the last commit within seconds.
TEST_F(RelayTest, PublishesEveryRowInOrderAndConfirmsTheSlot) {
  source_ = CreateDefaultSource(sql_, "bulk");
  StartOutboxd();

  std::vector<int> sizes;
  for (int i = 0; i < 50; ++i) sizes.push_back(10);
  for (int i = 0; i < 30; ++i) sizes.push_back(50);
  for (int i = 0; i < 15; ++i) sizes.push_back(200);
  for (int i = 0; i < 5; ++i) sizes.push_back(1000);
  std::shuffle(sizes.begin(), sizes.end(), std::mt19937(42));
  for (size_t t = 0; t < sizes.size(); ++t) InsertTxn(sql_, source_.table, t, sizes[t]);

  std::vector<Record> records = ReadTopics({Topic()}, 10000, absl::Seconds(120));
  const absl::Time last_read = absl::Now();
  ASSERT_GE(records.size(), 10000u) << outboxd_->Log();

  struct Row {
    std::string aggregate_id, event_type, payload;
    int64_t created_at_micros;
  };
  std::map<std::string, Row> rows;
  for (const auto& r : sql_.Query(fmt::format(
           "SELECT id, aggregate_id, event_type, payload::text, (extract(epoch FROM created_at) * "
           "1000000)::bigint FROM public.{}",
           source_.table))) {
    rows[*r[0]] = Row{*r[1], *r[2], *r[3], std::stoll(*r[4])};
  }
  ASSERT_EQ(rows.size(), 10000u);

  std::set<std::string> seen;
  std::map<uint32_t, int> last_seq_by_xid;
  uint64_t max_commit_lsn = 0;
  for (const Record& record : records) {
    ::outbox::v1::Envelope e = Decode(record);
    ASSERT_EQ(record.key, e.id());
    ASSERT_TRUE(rows.contains(e.id())) << "unknown id " << e.id();
    const Row& row = rows[e.id()];
    EXPECT_EQ(e.aggregate_type(), "Order");
    EXPECT_EQ(e.aggregate_id(), row.aggregate_id);
    EXPECT_EQ(e.event_type(), row.event_type);
    EXPECT_EQ(e.payload(), row.payload);
    EXPECT_EQ(e.content_type(), "application/json");
    EXPECT_EQ(e.created_at().seconds() * 1000000 + e.created_at().nanos() / 1000, row.created_at_micros);
    EXPECT_EQ(e.source().table(), source_.table);
    EXPECT_EQ(e.source().schema(), "public");
    EXPECT_THAT(record.headers, Contains(Pair("outbox-id", e.id())));
    EXPECT_THAT(record.headers, Contains(Pair("event-type", "OrderCreated")));
    // Order within the transaction: seq is increasing in offset order.
    const int seq = std::stoi(row.aggregate_id.substr(row.aggregate_id.find('-') + 1));
    auto [it, fresh] = last_seq_by_xid.try_emplace(e.source().xid(), seq);
    if (!fresh) {
      EXPECT_EQ(seq, it->second + 1) << "out of order in xid " << e.source().xid();
      it->second = seq;
    }
    max_commit_lsn = std::max(max_commit_lsn, e.source().commit_lsn());
    seen.insert(e.id());
  }
  EXPECT_EQ(seen.size(), 10000u);
  EXPECT_EQ(last_seq_by_xid.size(), 100u);

  // The confirmed position passes the last commit record soon after the last ack.
  ASSERT_TRUE(WaitFor([&] { return sql_.ConfirmedFlush(source_.slot) > Lsn(max_commit_lsn); },
                      absl::Seconds(10)))
      << "confirmed " << sql_.ConfirmedFlush(source_.slot) << ", last commit at " << Lsn(max_commit_lsn);
  std::cout << "[ figures ] slot confirmed past the last commit "
            << absl::FormatDuration(absl::Now() - last_read) << " after the last record was read\n";
}

// Kafka down: nothing newer than the last acknowledged commit is confirmed;
// Kafka back: everything arrives, then the slot advances.
TEST_F(RelayTest, KafkaOutageNeverConfirmsUnacknowledgedCommits) {
  source_ = CreateDefaultSource(sql_, "outage");
  StartOutboxd();
  InsertTxn(sql_, source_.table, 0, 5);
  const std::vector<Record> before = ReadTopics({Topic()}, 5, absl::Seconds(60));
  ASSERT_EQ(before.size(), 5u) << outboxd_->Log();
  // Baseline: the acknowledged transaction is confirmed (past its commit record).
  // Not the server's current WAL position: WAL after the last commit is only
  // confirmed from a keepalive, whose timing is the walsender's.
  const Lsn acked_commit(Decode(before.back()).source().commit_lsn());
  ASSERT_TRUE(WaitFor([&] { return sql_.ConfirmedFlush(source_.slot) > acked_commit; },
                      absl::Seconds(15)))
      << "confirmed " << sql_.ConfirmedFlush(source_.slot) << ", acknowledged commit at " << acked_commit;

  ASSERT_TRUE(Stack("stop kafka"));
  for (int t = 1; t <= 20; ++t) InsertTxn(sql_, source_.table, t, 10);
  const Lsn written = sql_.CurrentLsn();
  // The walsender has handed every new transaction to outboxd...
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string sent = sql_.Scalar(fmt::format(
            "SELECT sent_lsn FROM pg_stat_replication WHERE pid = (SELECT active_pid FROM "
            "pg_replication_slots WHERE slot_name = '{}')",
            source_.slot));
        return !sent.empty() && *Lsn::Parse(sent) >= written;
      },
      absl::Seconds(30)));
  // ...which must not confirm any of them while Kafka is away.
  Lsn max_confirmed;
  const absl::Time until = absl::Now() + absl::Seconds(8);
  while (absl::Now() < until) {
    max_confirmed = std::max(max_confirmed, sql_.ConfirmedFlush(source_.slot));
    absl::SleepFor(absl::Milliseconds(100));
  }

  ASSERT_TRUE(Stack("start kafka"));
  const std::set<std::string> ids = Ids(sql_, source_.table);
  ASSERT_EQ(ids.size(), 205u);
  std::vector<Record> records = ReadUntilAllKeys({Topic()}, ids, absl::Seconds(180));
  std::set<std::string> keys;
  uint64_t first_new_commit = UINT64_MAX, last_commit = 0;
  for (const Record& r : records) {
    keys.insert(r.key);
    ::outbox::v1::Envelope e = Decode(r);
    if (e.aggregate_id().starts_with("t0-")) continue;
    first_new_commit = std::min(first_new_commit, e.source().commit_lsn());
    last_commit = std::max(last_commit, e.source().commit_lsn());
  }
  for (const std::string& id : ids) EXPECT_TRUE(keys.contains(id)) << id << "\n" << outboxd_->Log();
  EXPECT_LE(max_confirmed, Lsn(first_new_commit))
      << "the slot was confirmed past a commit whose events Kafka never acknowledged";
  ASSERT_TRUE(WaitFor([&] { return sql_.ConfirmedFlush(source_.slot) > Lsn(last_commit); },
                      absl::Seconds(30)));
}

// SIGTERM and SIGKILL mid-stream, while a writer commits: nothing is lost.
TEST_F(RelayTest, StopAndKillMidStreamLoseNothing) {
  source_ = CreateDefaultSource(sql_, "kill");
  StartOutboxd();
  std::atomic<int> committed{0};
  std::thread writer([&] {
    Sql writer_sql;
    for (int t = 0; t < 300; ++t) {
      InsertTxn(writer_sql, source_.table, t, 1 + t % 7);
      committed = t + 1;
      absl::SleepFor(absl::Milliseconds(10));
    }
  });

  ASSERT_TRUE(WaitFor([&] { return committed >= 60; }, absl::Seconds(60)));
  EXPECT_EQ(outboxd_->Stop(SIGTERM), 0) << outboxd_->Log();
  EXPECT_THAT(outboxd_->Log(), ::testing::HasSubstr("stopped cleanly"));
  StartOutboxd();
  ASSERT_TRUE(WaitFor([&] { return committed >= 150; }, absl::Seconds(60)));
  EXPECT_EQ(outboxd_->Stop(SIGKILL), 128 + SIGKILL);
  // The walsender notices the dead client and releases the slot; the new
  // instance retries until it can take it.
  StartOutboxd();
  writer.join();

  const std::set<std::string> ids = Ids(sql_, source_.table);
  // Read until every id was seen: after a kill, duplicates make the record
  // count reach ids.size() before every id has arrived.
  std::vector<Record> records = ReadUntilAllKeys({Topic()}, ids, absl::Seconds(120));
  std::set<std::string> keys;
  for (const Record& r : records) keys.insert(r.key);
  size_t missing = 0;
  for (const std::string& id : ids) missing += keys.contains(id) ? 0 : 1;
  EXPECT_EQ(missing, 0u) << outboxd_->Log();
  std::cout << "[ figures ] rows " << ids.size() << ", records " << records.size()
            << ", duplicates " << records.size() - keys.size() << "\n";
}

// An idle outbox must not pin WAL that other tables write.
TEST_F(RelayTest, IdleOutboxDoesNotPinOtherTablesWal) {
  source_ = CreateDefaultSource(sql_, "idle");
  const std::string other = UniqueName("idle_other");
  sql_.Exec(fmt::format("CREATE TABLE public.{} (id bigserial PRIMARY KEY, body text)", other));
  StartOutboxd();
  InsertTxn(sql_, source_.table, 0, 1);
  ASSERT_EQ(ReadTopics({Topic()}, 1, absl::Seconds(60)).size(), 1u);

  const Lsn start = sql_.CurrentLsn();
  int64_t max_retained = 0;
  for (int chunk = 0; chunk < 10; ++chunk) {
    // ~5 MB of WAL per chunk in a table outside the publication.
    sql_.Exec(fmt::format(
        "INSERT INTO public.{} (body) SELECT repeat(md5(g::text), 32) FROM generate_series(1, 4500) g",
        other));
    // A checkpoint logs the running transactions, which lets PostgreSQL move
    // the slot's restart_lsn up to what outboxd confirmed (the bgwriter does the
    // same every 15 s on a live server).
    sql_.Exec("CHECKPOINT");
    const Lsn chunk_end = sql_.CurrentLsn();
    EXPECT_TRUE(WaitFor([&] { return sql_.ConfirmedFlush(source_.slot) >= chunk_end; },
                        absl::Seconds(30)))
        << "confirmed " << sql_.ConfirmedFlush(source_.slot) << " never reached " << chunk_end;
    max_retained = std::max(max_retained, sql_.RetainedWal(source_.slot));
  }
  const int64_t written = sql_.CurrentLsn().value() - start.value();
  std::cout << "[ figures ] other table wrote " << written / (1 << 20) << " MB of WAL; slot retained at most "
            << max_retained / (1 << 20) << " MB\n";
  EXPECT_GE(written, 50 << 20);
  EXPECT_LT(max_retained, 16 << 20);
  sql_.Exec(fmt::format("DROP TABLE public.{}", other));
}

// A Debezium-style outbox table works with configuration alone.
TEST_F(RelayTest, DebeziumOutboxTableMappedByConfig) {
  source_.table = UniqueName("dbz_outbox");
  source_.publication = UniqueName("dbz_pub");
  source_.slot = UniqueName("dbz_slot");
  source_.topic_prefix = UniqueName("it.dbz");
  sql_.Exec(fmt::format(
      "CREATE TABLE public.{} (id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL, "
      "aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb)",
      source_.table));
  sql_.Exec(fmt::format("CREATE PUBLICATION {} FOR TABLE public.{} WITH (publish = 'insert')",
                        source_.publication, source_.table));
  StartOutboxd(R"(key = "aggregate_id"
[outbox.columns]
aggregate_type = "aggregatetype"
aggregate_id = "aggregateid"
event_type = "type"
)");
  sql_.Exec(fmt::format(
      "INSERT INTO public.{} SELECT gen_random_uuid(), 'Customer', 'c-' || g, 'CustomerCreated', "
      "jsonb_build_object('n', g) FROM generate_series(1, 10) g",
      source_.table));
  std::vector<Record> records = ReadTopics({Topic("Customer")}, 10, absl::Seconds(60));
  ASSERT_EQ(records.size(), 10u) << outboxd_->Log();
  for (size_t i = 0; i < records.size(); ++i) {
    ::outbox::v1::Envelope e = Decode(records[i]);
    EXPECT_EQ(records[i].key, fmt::format("c-{}", i + 1)) << "key is the aggregate id, in order";
    EXPECT_EQ(e.aggregate_id(), records[i].key);
    EXPECT_EQ(e.aggregate_type(), "Customer");
    EXPECT_EQ(e.event_type(), "CustomerCreated");
    EXPECT_EQ(e.payload(), fmt::format("{{\"n\": {}}}", i + 1));
  }
}

// A row deleted in the transaction that inserted it is still published (the
// WAL keeps the insert) with its headers, and so is a table-less event from outbox_emit().
TEST_F(RelayTest, DeletedRowsAndLogicalMessagesArePublished) {
  source_ = CreateDefaultSource(sql_, "emit");
  std::ifstream file(std::string(OUTBOXD_SOURCE_DIR) + "/sql/outbox.sql");
  std::stringstream outbox_sql;
  outbox_sql << file.rdbuf();
  sql_.Exec(outbox_sql.str());  // for outbox_emit(); idempotent
  std::string config = ConfigFor(source_);
  const std::string off = "[messages]\nenabled = false";
  config.replace(config.find(off), off.size(),
                 fmt::format("[messages]\nenabled = true\ntopic = \"{}.{{aggregate_type}}\"",
                             source_.topic_prefix));
  outboxd_ = std::make_unique<OutboxdProcess>(config);
  outboxd_->Start();
  ASSERT_TRUE(outboxd_->WaitForLog("streaming slot", absl::Seconds(30))) << outboxd_->Log();

  sql_.Exec("BEGIN");
  const std::string deleted_id = sql_.Scalar(fmt::format(
      "INSERT INTO public.{} (aggregate_type, aggregate_id, event_type, payload, headers) VALUES "
      "('Order', 'o-1', 'OrderCreated', '{{\"a\": 1}}', '{{\"traceparent\": \"00-abc-01\", "
      "\"attempt\": 2}}') RETURNING id",
      source_.table));
  sql_.Exec(fmt::format("DELETE FROM public.{} WHERE id = '{}'", source_.table, deleted_id));
  sql_.Exec("COMMIT");
  sql_.Exec("BEGIN");
  const std::string emitted_id =
      sql_.Scalar("SELECT outbox_emit('Invoice', 'i-7', 'InvoiceSent', '{\"total\": 12}')");
  sql_.Exec("COMMIT");
  ASSERT_FALSE(deleted_id.empty());
  ASSERT_FALSE(emitted_id.empty());
  EXPECT_EQ(sql_.Scalar(fmt::format("SELECT count(*) FROM public.{}", source_.table)), "0");
  // Rolled back: never published.
  sql_.Exec("BEGIN; SELECT outbox_emit('Invoice', 'i-8', 'InvoiceSent', '{}'); ROLLBACK;");
  sql_.Exec("BEGIN; SELECT outbox_emit('Invoice', 'i-9', 'InvoiceSent', '{}'); COMMIT;");

  std::vector<Record> orders = ReadTopics({Topic("Order")}, 1, absl::Seconds(60));
  ASSERT_EQ(orders.size(), 1u) << outboxd_->Log();
  EXPECT_EQ(orders[0].key, deleted_id);
  // The row's headers jsonb became Kafka headers after outboxd's own.
  EXPECT_EQ(orders[0].headers,
            (std::vector<std::pair<std::string, std::string>>{{"outbox-id", deleted_id},
                                                              {"event-type", "OrderCreated"},
                                                              {"content-type", "application/json"},
                                                              {"attempt", "2"},
                                                              {"traceparent", "00-abc-01"}}));
  std::vector<Record> invoices = ReadTopics({Topic("Invoice")}, 2, absl::Seconds(60));
  ASSERT_EQ(invoices.size(), 2u) << outboxd_->Log();
  ::outbox::v1::Envelope e = Decode(invoices[0]);
  EXPECT_EQ(invoices[0].key, emitted_id);
  EXPECT_EQ(e.aggregate_id(), "i-7");
  EXPECT_EQ(e.event_type(), "InvoiceSent");
  EXPECT_EQ(e.payload(), "{\"total\": 12}");
  EXPECT_EQ(e.source().message_prefix(), "outbox");
  EXPECT_EQ(Decode(invoices[1]).aggregate_id(), "i-9") << "the rolled-back event must not appear";
}

}  // namespace
}  // namespace outboxd::it
