// End to end: schema changes on an outbox table, while outboxd streams and
// while it is stopped. Mapping follows the newest Relation message; a required
// column that disappears makes dead letters, never a crash.
#include <signal.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "harness.h"
#include "outbox/v1/envelope.pb.h"

namespace outboxd::it {
namespace {

std::string HeaderOf(const Record& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "<absent>";
}

class SchemaChangeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Stack("status")) << "the local stack is not up: run deploy/local/stack.sh up";
    source_ = CreateDefaultSource(sql_, "schema");
    outboxd_ = std::make_unique<OutboxdProcess>(
        ConfigFor(source_) + fmt::format("\n[errors]\ndead_letter_topic = \"{}\"\n", Dlq()));
  }
  void TearDown() override {
    if (outboxd_) outboxd_->Stop(SIGKILL);
    DropSource(sql_, source_);
  }
  void Start() {
    outboxd_->Start();
    ASSERT_TRUE(outboxd_->WaitForLog("streaming slot", absl::Seconds(30))) << outboxd_->Log();
  }
  std::string Dlq() const { return source_.topic_prefix + ".dlq"; }
  std::string Topic() const { return source_.topic_prefix + ".Order"; }
  // Inserts one row with the columns the table has now; returns its id.
  std::string Insert(const std::string& columns, const std::string& values) {
    return sql_.Scalar(fmt::format("INSERT INTO public.{} ({}) VALUES ({}) RETURNING id::text",
                                   source_.table, columns, values));
  }
  std::string InsertFull(const std::string& agg) {
    return Insert("aggregate_type, aggregate_id, event_type, payload",
                  fmt::format("'Order', '{}', 'OrderCreated', '{{\"agg\": \"{}\"}}'", agg, agg));
  }
  void Alter(const std::string& change) {
    sql_.Exec(fmt::format("ALTER TABLE public.{} {}", source_.table, change));
  }

  // Runs every kind of change with an insert after each; returns the ids that
  // must be published and those that must be dead-lettered (missing_column).
  void ChangeEverything(std::set<std::string>* published, std::set<std::string>* dead) {
    published->insert(InsertFull("before"));
    Alter("ADD COLUMN extra text DEFAULT 'x'");
    published->insert(InsertFull("added"));
    Alter("RENAME COLUMN aggregate_id TO agg_id");
    dead->insert(Insert("aggregate_type, agg_id, event_type, payload",
                        "'Order', 'renamed', 'OrderCreated', '{}'"));
    Alter("RENAME COLUMN agg_id TO aggregate_id");
    published->insert(InsertFull("renamed-back"));
    Alter("ALTER COLUMN payload TYPE text USING payload::text");
    published->insert(InsertFull("retyped"));
    Alter("DROP COLUMN headers");
    published->insert(InsertFull("dropped-optional"));
    Alter("DROP COLUMN aggregate_id");
    dead->insert(
        Insert("aggregate_type, event_type, payload", "'Order', 'OrderCreated', 'no aggregate'"));
    // Dropped and created again: a new OID, added to the publication again.
    sql_.Exec(fmt::format("DROP TABLE public.{}", source_.table));
    sql_.Exec(fmt::format(
        "CREATE TABLE public.{} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type "
        "text NOT NULL, aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT "
        "NULL, created_at timestamptz NOT NULL DEFAULT now())",
        source_.table));
    sql_.Exec(fmt::format("ALTER PUBLICATION {} ADD TABLE public.{}", source_.publication,
                          source_.table));
    published->insert(InsertFull("recreated"));
  }

  void ExpectDelivered(const std::set<std::string>& published, const std::set<std::string>& dead) {
    std::set<std::string> seen;
    std::map<std::string, ::outbox::v1::Envelope> envelopes;
    ReadTopicsUntil(
        {Topic()},
        [&](const std::vector<Record>& records) {
          for (const Record& r : records) {
            seen.insert(r.key);
            envelopes[r.key].ParseFromString(r.value);
          }
          return std::includes(seen.begin(), seen.end(), published.begin(), published.end());
        },
        absl::Seconds(60));
    for (const std::string& id : published) {
      EXPECT_TRUE(seen.count(id)) << "event " << id << " not published\n" << outboxd_->Log();
    }
    std::map<std::string, std::string> reasons;
    ReadTopicsUntil(
        {Dlq()},
        [&](const std::vector<Record>& records) {
          for (const Record& r : records) {
            reasons[HeaderOf(r, "outbox-id")] = HeaderOf(r, "outboxd-dlq-reason");
          }
          return reasons.size() >= dead.size();
        },
        absl::Seconds(60));
    for (const std::string& id : dead) {
      EXPECT_EQ(reasons[id], "missing_column") << "dead letter of " << id << "\n" << outboxd_->Log();
    }
    // The retyped payload (text now) travels as text.
    for (const auto& [id, envelope] : envelopes) {
      if (envelope.aggregate_id() == "retyped") {
        EXPECT_EQ(envelope.content_type(), "text/plain");
      }
      if (envelope.aggregate_id() == "before") {
        EXPECT_EQ(envelope.content_type(), "application/json");
      }
    }
  }

  Sql sql_;
  TestSource source_;
  std::unique_ptr<OutboxdProcess> outboxd_;
};

TEST_F(SchemaChangeTest, WhileStreaming) {
  Start();
  std::set<std::string> published, dead;
  ChangeEverything(&published, &dead);
  ASSERT_EQ(published.size(), 6u);
  ASSERT_EQ(dead.size(), 2u);
  ExpectDelivered(published, dead);
  EXPECT_TRUE(outboxd_->running());
}

TEST_F(SchemaChangeTest, WhileStopped) {
  Start();  // creates the slot
  ASSERT_EQ(outboxd_->Stop(SIGTERM), 0) << outboxd_->Log();
  std::set<std::string> published, dead;
  ChangeEverything(&published, &dead);
  Start();
  ExpectDelivered(published, dead);
  EXPECT_TRUE(outboxd_->running());
}

}  // namespace
}  // namespace outboxd::it
