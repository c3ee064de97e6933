#include "pgoutput/decoder.h"

#include <cstdint>
#include <map>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/time.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "golden.h"
#include "gtest/gtest.h"
#include "test_encoder.h"

namespace outboxd::pgoutput {
namespace {

// absl::string_view is not std::string_view in this toolchain; gMock's string matchers need
// a std::string.
std::string Text(const absl::Status& status) { return std::string(status.message()); }

using ::outboxd::pgoutput::testing::Encode;
using ::outboxd::pgoutput::testing::GoldenMessage;
using ::outboxd::pgoutput::testing::LoadAllGolden;
using ::outboxd::pgoutput::testing::LoadGolden;
using ::outboxd::pgoutput::testing::WireWriter;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Builtin type OIDs (pg_type.dat), stable across servers.
constexpr uint32_t kInt4Oid = 23;
constexpr uint32_t kTextOid = 25;
constexpr uint32_t kByteaOid = 17;
constexpr uint32_t kJsonbOid = 3802;
constexpr uint32_t kFirstNormalObjectId = 16384;

// A TupleData as comparable strings: "n", "u", "t:<text>", "b:<hex>".
std::vector<std::string> Show(const TupleData& tuple) {
  std::vector<std::string> out;
  for (const TupleValue& v : tuple.values) {
    switch (v.kind) {
      case TupleValue::Kind::kNull: out.push_back("n"); break;
      case TupleValue::Kind::kUnchangedToast: out.push_back("u"); break;
      case TupleValue::Kind::kText: out.push_back("t:" + std::string(v.data)); break;
      case TupleValue::Kind::kBinary: {
        std::string hex = "b:";
        for (unsigned char c : v.data) hex += fmt::format("{:02x}", c);
        out.push_back(hex);
        break;
      }
    }
  }
  return out;
}

std::vector<std::string> ColumnNames(const RelationMessage& r) {
  std::vector<std::string> out;
  for (const RelationColumn& c : r.columns) out.push_back(c.name);
  return out;
}

std::vector<uint32_t> ColumnTypes(const RelationMessage& r) {
  std::vector<uint32_t> out;
  for (const RelationColumn& c : r.columns) out.push_back(c.type_oid);
  return out;
}

// Decodes every message of a golden file; the views point into `golden`.
std::vector<Message> DecodeAll(const std::vector<GoldenMessage>& golden) {
  std::vector<Message> out;
  for (const GoldenMessage& g : golden) {
    absl::StatusOr<Message> m = DecodeMessage(g.bytes);
    EXPECT_TRUE(m.ok()) << g.file << ":" << g.line << ": " << m.status();
    out.push_back(m.ok() ? *std::move(m) : Message{});
  }
  return out;
}

template <typename T>
const T& Get(const std::vector<Message>& messages, size_t i) {
  static const T kEmpty{};
  if (i >= messages.size()) {
    ADD_FAILURE() << "no message " << i;
    return kEmpty;
  }
  const T* m = std::get_if<T>(&messages[i]);
  if (m == nullptr) {
    ADD_FAILURE() << "message " << i << " holds variant index " << messages[i].index();
    return kEmpty;
  }
  return *m;
}

// Kinds of the decoded messages, as wire letters.
std::string Kinds(const std::vector<Message>& messages) {
  static constexpr char kLetters[] = "BCORYIUDTM";  // variant order of Message
  std::string out;
  for (const Message& m : messages) out.push_back(kLetters[m.index()]);
  return out;
}

// Checks that hold for every captured transaction: Begin and Commit agree with each other and
// with the lsn/xid columns that the server returned beside the bytes.
void ExpectConsistentTransaction(const std::vector<GoldenMessage>& golden,
                                 const std::vector<Message>& messages) {
  const BeginMessage* begin = nullptr;
  size_t begin_index = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (const auto* b = std::get_if<BeginMessage>(&messages[i])) {
      begin = b;
      begin_index = i;
      EXPECT_EQ(b->xid, golden[i].xid) << golden[i].file;
      EXPECT_NE(b->xid, 0u);
    } else if (const auto* c = std::get_if<CommitMessage>(&messages[i])) {
      ASSERT_NE(begin, nullptr) << golden[i].file << ": Commit without Begin";
      EXPECT_EQ(c->flags, 0);
      EXPECT_EQ(c->commit_lsn, begin->final_lsn) << golden[i].file;
      EXPECT_EQ(c->end_lsn, golden[i].lsn) << golden[i].file;
      EXPECT_GT(c->end_lsn, c->commit_lsn);
      EXPECT_EQ(c->commit_time, begin->commit_time);
      EXPECT_EQ(golden[i].xid, golden[begin_index].xid);
      // Captured in 2024 or later (PostgreSQL epoch 2000-01-01).
      EXPECT_GE(PgTimestampToTime(c->commit_time),
                absl::FromCivil(absl::CivilDay(2024, 1, 1), absl::UTCTimeZone()));
      begin = nullptr;
    }
  }
  EXPECT_EQ(begin, nullptr) << "Begin without Commit";
}

TEST(DecoderGoldenTest, InsertTextJsonbByteaNull) {
  const auto golden = LoadGolden("insert.hex");
  const auto m = DecodeAll(golden);
  ASSERT_EQ(Kinds(m), "BRIC");
  ExpectConsistentTransaction(golden, m);

  const auto& rel = Get<RelationMessage>(m, 1);
  EXPECT_GE(rel.oid, kFirstNormalObjectId);
  EXPECT_EQ(rel.schema, "capture");
  EXPECT_EQ(rel.name, "kitchen");
  EXPECT_EQ(rel.replica_identity, 'd');
  EXPECT_THAT(ColumnNames(rel), ElementsAre("id", "name", "doc", "blob", "note"));
  EXPECT_THAT(ColumnTypes(rel), ElementsAre(kInt4Oid, kTextOid, kJsonbOid, kByteaOid, kTextOid));
  ASSERT_EQ(rel.columns.size(), 5u);
  EXPECT_EQ(rel.columns[0].flags, 1);  // primary key
  for (size_t i = 1; i < 5; ++i) EXPECT_EQ(rel.columns[i].flags, 0) << i;
  for (const auto& c : rel.columns) EXPECT_EQ(c.type_modifier, -1);

  const auto& ins = Get<InsertMessage>(m, 2);
  EXPECT_EQ(ins.relation_oid, rel.oid);
  EXPECT_THAT(Show(ins.new_tuple),
              ElementsAre("t:7", "t:widget", R"(t:{"qty": 3, "sku": "W-7"})", R"(t:\x00ff10)",
                          "n"));
}

TEST(DecoderGoldenTest, InsertBinary) {
  const auto golden = LoadGolden("insert.binary.hex");
  const auto m = DecodeAll(golden);
  ASSERT_EQ(Kinds(m), "BRIC");
  ExpectConsistentTransaction(golden, m);
  const auto& ins = Get<InsertMessage>(m, 2);
  // int4 in network order; jsonb's binary form is a version byte (1) then the text.
  EXPECT_THAT(Show(ins.new_tuple),
              ElementsAre("b:00000007", "b:776964676574",
                          "b:017b22717479223a20332c2022736b75223a2022572d37227d", "b:00ff10", "n"));
}

TEST(DecoderGoldenTest, UpdateReplicaIdentityFullSendsOldRow) {
  for (const char* file : {"update_full.hex", "update_full.binary.hex"}) {
    SCOPED_TRACE(file);
    const auto golden = LoadGolden(file);
    const auto m = DecodeAll(golden);
    ASSERT_EQ(Kinds(m), "BRUC");
    ExpectConsistentTransaction(golden, m);
    const auto& rel = Get<RelationMessage>(m, 1);
    EXPECT_EQ(rel.name, "full_row");
    EXPECT_EQ(rel.replica_identity, 'f');
    // With FULL identity every column is part of the key.
    EXPECT_EQ(rel.columns[0].flags, 1);
    EXPECT_EQ(rel.columns[1].flags, 1);
    const auto& upd = Get<UpdateMessage>(m, 2);
    EXPECT_EQ(upd.relation_oid, rel.oid);
    EXPECT_EQ(upd.old_kind, 'O');
    if (std::string(file) == "update_full.hex") {
      EXPECT_THAT(Show(upd.old_tuple), ElementsAre("t:1", "t:before"));
      EXPECT_THAT(Show(upd.new_tuple), ElementsAre("t:1", "t:after"));
    } else {
      EXPECT_THAT(Show(upd.old_tuple), ElementsAre("b:00000001", "b:6265666f7265"));
      EXPECT_THAT(Show(upd.new_tuple), ElementsAre("b:00000001", "b:6166746572"));
    }
  }
}

TEST(DecoderGoldenTest, UpdateOfKeySendsOldKey) {
  const auto golden = LoadGolden("update_key.hex");
  const auto m = DecodeAll(golden);
  ASSERT_EQ(Kinds(m), "BRUC");
  ExpectConsistentTransaction(golden, m);
  const auto& rel = Get<RelationMessage>(m, 1);
  EXPECT_EQ(rel.name, "keyed");
  EXPECT_EQ(rel.replica_identity, 'd');
  const auto& upd = Get<UpdateMessage>(m, 2);
  EXPECT_EQ(upd.relation_oid, rel.oid);
  EXPECT_EQ(upd.old_kind, 'K');
  // Only key columns are set in a 'K' tuple; the others are sent as NULL.
  EXPECT_THAT(Show(upd.old_tuple), ElementsAre("t:1", "n"));
  EXPECT_THAT(Show(upd.new_tuple), ElementsAre("t:2", "t:keep"));
}

TEST(DecoderGoldenTest, UnchangedToastValue) {
  for (const char* file : {"toast_unchanged.hex", "toast_unchanged.binary.hex"}) {
    SCOPED_TRACE(file);
    const auto golden = LoadGolden(file);
    const auto m = DecodeAll(golden);
    ASSERT_EQ(Kinds(m), "BRUC");
    ExpectConsistentTransaction(golden, m);
    const auto& rel = Get<RelationMessage>(m, 1);
    EXPECT_EQ(rel.name, "toasted");
    EXPECT_THAT(ColumnNames(rel), ElementsAre("id", "counter", "big"));
    const auto& upd = Get<UpdateMessage>(m, 2);
    EXPECT_EQ(upd.old_kind, 0);
    EXPECT_TRUE(upd.old_tuple.values.empty());
    if (std::string(file) == "toast_unchanged.hex") {
      EXPECT_THAT(Show(upd.new_tuple), ElementsAre("t:1", "t:1", "u"));
    } else {
      EXPECT_THAT(Show(upd.new_tuple), ElementsAre("b:00000001", "b:00000001", "u"));
    }
  }
}

TEST(DecoderGoldenTest, DeleteWithKeyAndWithFullRow) {
  {
    const auto golden = LoadGolden("delete_key.hex");
    const auto m = DecodeAll(golden);
    ASSERT_EQ(Kinds(m), "BRDC");
    ExpectConsistentTransaction(golden, m);
    const auto& del = Get<DeleteMessage>(m, 2);
    EXPECT_EQ(del.relation_oid, Get<RelationMessage>(m, 1).oid);
    EXPECT_EQ(del.old_kind, 'K');
    EXPECT_THAT(Show(del.old_tuple), ElementsAre("t:2", "n"));
  }
  {
    const auto golden = LoadGolden("delete_full.hex");
    const auto m = DecodeAll(golden);
    ASSERT_EQ(Kinds(m), "BRDC");
    ExpectConsistentTransaction(golden, m);
    const auto& del = Get<DeleteMessage>(m, 2);
    EXPECT_EQ(del.old_kind, 'O');
    EXPECT_THAT(Show(del.old_tuple), ElementsAre("t:1", "t:after"));
  }
  {
    const auto golden = LoadGolden("delete_key.binary.hex");
    const auto m = DecodeAll(golden);
    ASSERT_EQ(Kinds(m), "BRDC");
    EXPECT_THAT(Show(Get<DeleteMessage>(m, 2).old_tuple), ElementsAre("b:00000002", "n"));
  }
}

TEST(DecoderGoldenTest, TruncateTwoRelationsCascadeRestartIdentity) {
  const auto golden = LoadGolden("truncate.hex");
  const auto m = DecodeAll(golden);
  ASSERT_EQ(Kinds(m), "BRRTC");
  ExpectConsistentTransaction(golden, m);
  const auto& a = Get<RelationMessage>(m, 1);
  const auto& b = Get<RelationMessage>(m, 2);
  EXPECT_EQ(a.name, "trunc_a");
  EXPECT_EQ(b.name, "trunc_b");
  const auto& t = Get<TruncateMessage>(m, 3);
  EXPECT_EQ(t.options, 1 | 2);  // CASCADE | RESTART IDENTITY
  EXPECT_THAT(t.relation_oids, ElementsAre(a.oid, b.oid));
}

TEST(DecoderGoldenTest, TransactionalLogicalMessage) {
  const auto golden = LoadGolden("message_transactional.hex");
  const auto m = DecodeAll(golden);
  ASSERT_EQ(Kinds(m), "BMC");
  ExpectConsistentTransaction(golden, m);
  const auto& msg = Get<LogicalMessage>(m, 1);
  EXPECT_EQ(msg.flags, 1);
  EXPECT_TRUE(msg.transactional());
  EXPECT_EQ(msg.lsn, golden[1].lsn);
  EXPECT_EQ(msg.prefix, "outbox");
  EXPECT_EQ(msg.content, R"({"event": "created"})");
}

TEST(DecoderGoldenTest, NonTransactionalLogicalMessageWithNulInContent) {
  const auto golden = LoadGolden("message_nontransactional.hex");
  const auto m = DecodeAll(golden);
  ASSERT_EQ(Kinds(m), "M");
  EXPECT_EQ(golden[0].xid, 0u);
  const auto& msg = Get<LogicalMessage>(m, 0);
  EXPECT_EQ(msg.flags, 0);
  EXPECT_FALSE(msg.transactional());
  EXPECT_EQ(msg.lsn, golden[0].lsn);
  EXPECT_EQ(msg.prefix, "audit");
  EXPECT_EQ(msg.content, std::string_view("\x00\xff\x01", 3));
}

TEST(DecoderGoldenTest, CustomTypeSendsTypeMessageFirst) {
  for (const char* file : {"type.hex", "type.binary.hex"}) {
    SCOPED_TRACE(file);
    const auto golden = LoadGolden(file);
    const auto m = DecodeAll(golden);
    ASSERT_EQ(Kinds(m), "BYRIC");
    ExpectConsistentTransaction(golden, m);
    const auto& type = Get<TypeMessage>(m, 1);
    EXPECT_GE(type.oid, kFirstNormalObjectId);
    EXPECT_EQ(type.schema, "capture");
    EXPECT_EQ(type.name, "mood");
    const auto& rel = Get<RelationMessage>(m, 2);
    EXPECT_EQ(rel.name, "moods");
    EXPECT_THAT(ColumnTypes(rel), ElementsAre(kInt4Oid, type.oid));
    const auto& ins = Get<InsertMessage>(m, 3);
    EXPECT_EQ(ins.relation_oid, rel.oid);
    if (std::string(file) == "type.hex") {
      EXPECT_THAT(Show(ins.new_tuple), ElementsAre("t:1", "t:happy"));
    } else {
      // An enum's binary send form is its label.
      EXPECT_THAT(Show(ins.new_tuple), ElementsAre("b:00000001", "b:6861707079"));
    }
  }
}

TEST(DecoderGoldenTest, OriginMessage) {
  const auto golden = LoadGolden("origin.hex");
  const auto m = DecodeAll(golden);
  ASSERT_EQ(Kinds(m), "BORIC");
  const auto& origin = Get<OriginMessage>(m, 1);
  EXPECT_EQ(origin.origin_lsn, Lsn(0x1234ABCD));
  EXPECT_EQ(origin.name, "outboxd_capture_origin");
  // pg_replication_origin_xact_setup('0/1234ABCD', '2024-01-02 03:04:05+00') sets the commit
  // timestamp that Begin and Commit carry.
  const int64_t origin_time = TimeToPgTimestamp(
      absl::FromCivil(absl::CivilSecond(2024, 1, 2, 3, 4, 5), absl::UTCTimeZone()));
  EXPECT_EQ(Get<BeginMessage>(m, 0).commit_time, origin_time);
  EXPECT_EQ(Get<CommitMessage>(m, 4).commit_time, origin_time);
  EXPECT_EQ(Get<BeginMessage>(m, 0).xid, golden[0].xid);
  EXPECT_EQ(Get<CommitMessage>(m, 4).end_lsn, golden[4].lsn);
  EXPECT_THAT(Show(Get<InsertMessage>(m, 3).new_tuple), ElementsAre("t:9", "t:from origin"));
}

TEST(DecoderGoldenTest, EveryFileIsConsistentAndReEncodesExactly) {
  size_t files = 0;
  for (const std::string& name : testing::GoldenFiles()) {
    SCOPED_TRACE(name);
    ++files;
    const auto golden = LoadGolden(name);
    const auto m = DecodeAll(golden);
    ExpectConsistentTransaction(golden, m);
    for (size_t i = 0; i < m.size(); ++i) EXPECT_EQ(Encode(m[i]), golden[i].bytes) << i;
  }
  EXPECT_EQ(files, 18u);
}

TEST(DecoderTest, ViewsPointIntoTheInput) {
  const auto golden = LoadGolden("insert.hex");
  const std::string& bytes = golden[2].bytes;
  auto m = DecodeMessage(bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  for (const TupleValue& v : std::get<InsertMessage>(*m).new_tuple.values) {
    if (v.data.empty()) continue;
    EXPECT_GE(v.data.data(), bytes.data());
    EXPECT_LE(v.data.data() + v.data.size(), bytes.data() + bytes.size());
  }
}

TEST(DecoderTest, DecodeIntoReusesTupleStorageOfTheSameKind) {
  const auto golden = LoadGolden("insert.hex");
  Message out;
  ASSERT_TRUE(DecodeMessageInto(golden[2].bytes, out).ok());
  const TupleValue* storage = std::get<InsertMessage>(out).new_tuple.values.data();
  ASSERT_TRUE(DecodeMessageInto(golden[2].bytes, out).ok());
  EXPECT_EQ(std::get<InsertMessage>(out).new_tuple.values.data(), storage);
  EXPECT_THAT(Show(std::get<InsertMessage>(out).new_tuple),
              ElementsAre("t:7", "t:widget", R"(t:{"qty": 3, "sku": "W-7"})", R"(t:\x00ff10)",
                          "n"));
  // Another kind replaces the alternative.
  ASSERT_TRUE(DecodeMessageInto(golden[3].bytes, out).ok());
  EXPECT_TRUE(std::holds_alternative<CommitMessage>(out));
}

TEST(DecoderTest, DecodeIntoLeavesNothingOfThePreviousMessage) {
  // An Update with an old row, then one without: the second must not keep the old row.
  const auto with_old = LoadGolden("update_full.hex");
  const auto without_old = LoadGolden("toast_unchanged.hex");
  Message out;
  ASSERT_TRUE(DecodeMessageInto(with_old[2].bytes, out).ok());
  ASSERT_EQ(std::get<UpdateMessage>(out).old_kind, 'O');
  ASSERT_TRUE(DecodeMessageInto(without_old[2].bytes, out).ok());
  const auto& upd = std::get<UpdateMessage>(out);
  EXPECT_EQ(upd.old_kind, 0);
  EXPECT_TRUE(upd.old_tuple.values.empty());
  EXPECT_THAT(Show(upd.new_tuple), ElementsAre("t:1", "t:1", "u"));
  // A wider Relation, then a narrower one: columns shrink.
  const auto kitchen = LoadGolden("insert.hex");
  const auto keyed = LoadGolden("update_key.hex");
  ASSERT_TRUE(DecodeMessageInto(kitchen[1].bytes, out).ok());
  ASSERT_TRUE(DecodeMessageInto(keyed[1].bytes, out).ok());
  EXPECT_THAT(ColumnNames(std::get<RelationMessage>(out)), ElementsAre("id", "val"));
  EXPECT_EQ(std::get<RelationMessage>(out).name, "keyed");
}

// The server's wire format is identical at proto_version 1, 2 and 3 while streaming and
// two_phase are off; a Relation built from the docs decodes field by field.
TEST(DecoderTest, HandBuiltRelationWithPgCatalogNamespace) {
  WireWriter w;
  w.Byte('R').Uint32(1259).String("").String("pg_class").Byte('n').Int16(2);
  w.Byte(1).String("oid").Uint32(26).Int32(-1);
  w.Byte(0).String("relname").Uint32(19).Int32(64);
  auto m = DecodeMessage(w.str());
  ASSERT_TRUE(m.ok()) << m.status();
  const auto& rel = std::get<RelationMessage>(*m);
  EXPECT_EQ(rel.oid, 1259u);
  EXPECT_EQ(rel.schema, "");
  EXPECT_EQ(rel.name, "pg_class");
  EXPECT_EQ(rel.replica_identity, 'n');
  ASSERT_EQ(rel.columns.size(), 2u);
  EXPECT_EQ(rel.columns[1].name, "relname");
  EXPECT_EQ(rel.columns[1].type_oid, 19u);
  EXPECT_EQ(rel.columns[1].type_modifier, 64);
}

TEST(DecoderTest, HighBitValuesAreNotSignExtended) {
  WireWriter w;
  w.Byte('B').Uint64(0xFEDCBA9876543210ull).Int64(-5).Uint32(0xFFFFFFF0u);
  auto m = DecodeMessage(w.str());
  ASSERT_TRUE(m.ok()) << m.status();
  const auto& b = std::get<BeginMessage>(*m);
  EXPECT_EQ(b.final_lsn, Lsn(0xFEDCBA9876543210ull));
  EXPECT_EQ(b.commit_time, -5);
  EXPECT_EQ(b.xid, 0xFFFFFFF0u);
}

// --- errors -------------------------------------------------------------------------------

size_t OffsetIn(const absl::Status& status) {
  static const std::regex kAtByte("at byte ([0-9]+)");
  std::smatch match;
  const std::string message(status.message());
  if (!std::regex_search(message, match, kAtByte)) return SIZE_MAX;
  return std::stoul(match[1]);
}

// How errors name each message kind.
std::string KindName(char kind) {
  static const std::map<char, std::string> kNames = {
      {'B', "Begin message"},    {'C', "Commit message"},   {'O', "Origin message"},
      {'R', "Relation message"}, {'Y', "Type message"},     {'I', "Insert message"},
      {'U', "Update message"},   {'D', "Delete message"},   {'T', "Truncate message"},
      {'M', "logical Message"}};
  return kNames.at(kind);
}

TEST(DecoderErrorTest, EveryPrefixOfEveryGoldenIsDataLossWithOffset) {
  size_t checked = 0;
  Message reused;
  for (const GoldenMessage& g : LoadAllGolden()) {
    for (size_t len = 0; len < g.bytes.size(); ++len) {
      // A fresh allocation of exactly `len` bytes, so that a read past the end is a real
      // out-of-bounds read under sanitizers.
      const std::string prefix = g.bytes.substr(0, len);
      const absl::Status status = DecodeMessage(prefix).status();
      ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss)
          << g.file << ":" << g.line << " len " << len << ": " << status;
      const size_t offset = OffsetIn(status);
      ASSERT_LE(offset, len) << status;
      if (len == 0) {
        EXPECT_THAT(Text(status), StartsWith("pgoutput message truncated at byte 0"));
      } else {
        EXPECT_THAT(Text(status), StartsWith("pgoutput " + KindName(g.bytes[0])))
            << status;
      }
      EXPECT_EQ(DecodeMessageInto(prefix, reused).code(), absl::StatusCode::kDataLoss);
      ++checked;
    }
  }
  EXPECT_GT(checked, 2000u);  // every golden byte count, summed
}

TEST(DecoderErrorTest, ExactTruncationMessage) {
  // Insert: kind(0) oid(1..4) 'N'(5) ncols(6..7) 't'(8) len(9..12) "7"(13) 't'(14) len(15..18).
  const auto golden = LoadGolden("insert.hex");
  const absl::Status status = DecodeMessage(golden[2].bytes.substr(0, 17)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(),
            "pgoutput Insert message truncated at byte 15: a tuple value length needs 4 bytes, 2 "
            "left of the 17-byte message");
}

TEST(DecoderErrorTest, TrailingBytesAreDataLoss) {
  for (const GoldenMessage& g : LoadAllGolden()) {
    for (std::string_view extra : {std::string_view("\0", 1), std::string_view("xyz")}) {
      const std::string bytes = g.bytes + std::string(extra);
      const absl::Status status = DecodeMessage(bytes).status();
      ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss) << g.file << ":" << g.line;
      EXPECT_THAT(Text(status), HasSubstr(fmt::format("{} trailing bytes at byte {}",
                                                          extra.size(), g.bytes.size())));
    }
  }
}

TEST(DecoderErrorTest, UnrequestedStreamingAndTwoPhaseMessagesAreUnimplemented) {
  const std::map<char, std::string> kinds = {
      {'S', "'S' (stream start) was not requested: outboxd runs with streaming off"},
      {'E', "'E' (stream stop) was not requested: outboxd runs with streaming off"},
      {'c', "'c' (stream commit) was not requested"},
      {'A', "'A' (stream abort) was not requested"},
      {'p', "'p' (stream prepare) was not requested"},
      {'b', "'b' (begin prepare) was not requested: outboxd runs with two_phase off"},
      {'P', "'P' (prepare) was not requested"},
      {'K', "'K' (commit prepared) was not requested"},
      {'r', "'r' (rollback prepared) was not requested"},
  };
  for (const auto& [kind, text] : kinds) {
    for (const std::string& rest : {std::string(), std::string(40, '\0')}) {
      const absl::Status status = DecodeMessage(std::string(1, kind) + rest).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << kind;
      EXPECT_THAT(Text(status), HasSubstr("pgoutput message " + text)) << status;
    }
  }
}

TEST(DecoderErrorTest, UnknownKindsAreUnimplemented) {
  for (char kind : {'Z', 'x', '\0', '\xff', 'N', 'k', 'w'}) {
    const absl::Status status = DecodeMessage(std::string(1, kind) + "abc").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << static_cast<int>(kind);
    EXPECT_THAT(Text(status), HasSubstr("is unknown"));
  }
  EXPECT_THAT(Text(DecodeMessage("Zq").status()),
              StartsWith("pgoutput message kind 'Z' (0x5a) is unknown"));
  EXPECT_THAT(Text(DecodeMessage(std::string("\x01", 1)).status()),
              StartsWith("pgoutput message kind 0x01 is unknown"));
}

struct MalformedCase {
  std::string name;
  std::string bytes;
  std::string expected;  // substring of the DataLoss message
};

std::vector<MalformedCase> MalformedCases() {
  std::vector<MalformedCase> cases;
  auto add = [&cases](std::string name, const WireWriter& w, std::string expected) {
    cases.push_back({std::move(name), w.str(), std::move(expected)});
  };
  add("negative tuple column count", WireWriter().Byte('I').Uint32(1).Byte('N').Int16(-1),
      "pgoutput Insert message malformed at byte 6: negative TupleData column count -1");
  add("tuple column count beyond the message",
      WireWriter().Byte('I').Uint32(1).Byte('N').Int16(32767).Byte('n'),
      "pgoutput Insert message truncated at byte 8: TupleData announces 32767 columns");
  add("unknown tuple value kind", WireWriter().Byte('I').Uint32(1).Byte('N').Int16(1).Byte('x'),
      "pgoutput Insert message malformed at byte 8: unknown tuple value kind 'x' (0x78)");
  add("negative tuple value length",
      WireWriter().Byte('I').Uint32(1).Byte('N').Int16(1).Byte('t').Int32(-2),
      "pgoutput Insert message malformed at byte 9: negative tuple value length -2");
  add("tuple value longer than the message",
      WireWriter().Byte('I').Uint32(1).Byte('N').Int16(1).Byte('b').Int32(5).Bytes("abc"),
      "pgoutput Insert message truncated at byte 13: a tuple value needs 5 bytes, 3 left");
  add("insert without N", WireWriter().Byte('I').Uint32(1).Byte('K').Int16(0),
      "pgoutput Insert message malformed at byte 5: tuple tag 'K' (0x4b) where 'N' was expected");
  add("update with an unknown tag", WireWriter().Byte('U').Uint32(1).Byte('X').Int16(0),
      "pgoutput Update message malformed at byte 5: tuple tag 'X' (0x58) where 'K' or 'O' or "
      "'N' was expected");
  add("update with old key but no new row",
      WireWriter().Byte('U').Uint32(1).Byte('K').Int16(0).Byte('K').Int16(0),
      "pgoutput Update message malformed at byte 8: tuple tag 'K' (0x4b) where 'N' was expected");
  add("delete with a new row", WireWriter().Byte('D').Uint32(1).Byte('N').Int16(0),
      "pgoutput Delete message malformed at byte 5: tuple tag 'N' (0x4e) where 'K' or 'O' was "
      "expected");
  add("negative relation column count",
      WireWriter().Byte('R').Uint32(1).String("s").String("t").Byte('d').Int16(-3),
      "pgoutput Relation message malformed at byte 10: negative column count -3");
  add("relation column count beyond the message",
      WireWriter().Byte('R').Uint32(1).String("s").String("t").Byte('d').Int16(2).Byte(0),
      "pgoutput Relation message truncated at byte 12: 2 columns need at least 20 bytes");
  add("unknown replica identity",
      WireWriter().Byte('R').Uint32(1).String("s").String("t").Byte('z').Int16(0),
      "pgoutput Relation message malformed at byte 9: unknown replica identity 'z' (0x7a)");
  add("unterminated relation name", WireWriter().Byte('R').Uint32(1).String("s").Bytes("tab"),
      "pgoutput Relation message truncated at byte 7: the relation name (a NUL-terminated "
      "string) has no terminator in the 3 bytes left of the 10-byte message");
  add("unterminated type name", WireWriter().Byte('Y').Uint32(1).String("s").Bytes("mood"),
      "pgoutput Type message truncated at byte 7: the type name (a NUL-terminated string)");
  add("unterminated origin name", WireWriter().Byte('O').Uint64(1).Bytes("node"),
      "pgoutput Origin message truncated at byte 9: the origin name");
  add("negative truncate count", WireWriter().Byte('T').Int32(-1).Byte(0),
      "pgoutput Truncate message malformed at byte 1: negative relation count -1");
  add("huge truncate count", WireWriter().Byte('T').Int32(0x7fffffff).Byte(0).Uint32(5),
      "pgoutput Truncate message truncated at byte 6: 2147483647 relation OIDs need 8589934588 "
      "bytes but only 4 are left");
  add("negative message length",
      WireWriter().Byte('M').Byte(1).Uint64(1).String("p").Int32(-1),
      "pgoutput logical Message malformed at byte 12: negative content length -1");
  add("message content beyond the end",
      WireWriter().Byte('M').Byte(1).Uint64(1).String("p").Int32(10).Bytes("abc"),
      "pgoutput logical Message truncated at byte 16: the content needs 10 bytes, 3 left");
  add("unterminated message prefix", WireWriter().Byte('M').Byte(0).Uint64(1).Bytes("outbox"),
      "pgoutput logical Message truncated at byte 10: the prefix");
  return cases;
}

TEST(DecoderErrorTest, MalformedFieldsAreDataLossNamingKindAndOffset) {
  for (const MalformedCase& c : MalformedCases()) {
    const absl::Status status = DecodeMessage(c.bytes).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.name << ": " << status;
    EXPECT_THAT(Text(status), HasSubstr(c.expected)) << c.name;
  }
}

// --- random input -------------------------------------------------------------------------

// Decodes `input` both ways and checks the contract: only OK, DataLoss or Unimplemented;
// an OK result re-encodes to exactly the input (the decoder is exact, nothing is skipped);
// DecodeMessageInto into a reused Message agrees with DecodeMessage.
void CheckArbitraryInput(const std::string& input, Message& reused,
                         std::map<absl::StatusCode, size_t>& codes) {
  absl::StatusOr<Message> fresh = DecodeMessage(input);
  const absl::StatusCode code = fresh.status().code();
  ++codes[code];
  ASSERT_TRUE(code == absl::StatusCode::kOk || code == absl::StatusCode::kDataLoss ||
              code == absl::StatusCode::kUnimplemented)
      << fresh.status();
  if (code == absl::StatusCode::kDataLoss) {
    ASSERT_LE(OffsetIn(fresh.status()), input.size()) << fresh.status();
  }
  const absl::Status into = DecodeMessageInto(input, reused);
  ASSERT_EQ(into.code(), code);
  if (fresh.ok()) {
    ASSERT_EQ(Encode(*fresh), input);
    ASSERT_EQ(Encode(reused), input);
  }
}

TEST(DecoderRandomTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(20240102);
  static constexpr char kKinds[] = "BCORYIUDTMSEcApbPKr";
  std::map<absl::StatusCode, size_t> codes;
  Message reused;
  for (int i = 0; i < 200000; ++i) {
    std::string input(rng() % 48, '\0');
    for (char& c : input) {
      // Mostly small bytes, so that counts and lengths are often plausible.
      const uint64_t r = rng();
      c = static_cast<char>(r % 4 == 0 ? (r >> 8) & 0xff : (r >> 8) % 4);
    }
    if (!input.empty() && rng() % 4 != 0) input[0] = kKinds[rng() % (sizeof(kKinds) - 1)];
    CheckArbitraryInput(input, reused, codes);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(codes[absl::StatusCode::kOk], 0u);
  EXPECT_GT(codes[absl::StatusCode::kDataLoss], 0u);
  EXPECT_GT(codes[absl::StatusCode::kUnimplemented], 0u);
}

TEST(DecoderRandomTest, MutatedGoldenPayloadsNeverCrash) {
  std::mt19937_64 rng(7);
  std::map<absl::StatusCode, size_t> codes;
  Message reused;
  const auto golden = LoadAllGolden();
  for (const GoldenMessage& g : golden) {
    for (int i = 0; i < 1500; ++i) {
      std::string input = g.bytes;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits && !input.empty(); ++e) {
        const size_t at = rng() % input.size();
        switch (rng() % 5) {
          case 0: input[at] = static_cast<char>(rng()); break;               // replace
          case 1: input[at] = static_cast<char>(input[at] ^ (1 << (rng() % 8))); break;  // flip
          case 2: input.insert(at, 1, static_cast<char>(rng())); break;     // insert
          case 3: input.erase(at, 1); break;                                // delete
          case 4: input.resize(at); break;                                  // truncate
        }
      }
      CheckArbitraryInput(input, reused, codes);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  EXPECT_GT(codes[absl::StatusCode::kOk], 0u);
  EXPECT_GT(codes[absl::StatusCode::kDataLoss], 0u);
}

// What each supported server version sends with the options outboxd asks for
// (capture_versions.sh: the proto_version of ProtoVersionFor, messages on, streaming off):
// the same messages on 14 to 18, an Origin message ('O') that the pipeline ignores on purpose
// (an outbox row replicated in by a subscriber is still a committed row of this database), and
// no stored generated column: PostgreSQL 18 publishes those only with
// publish_generated_columns, which outboxd's publications never set.
class DecoderVersionsTest : public ::testing::TestWithParam<int> {};

TEST_P(DecoderVersionsTest, OutboxRowAndMessageDecodeTheSame) {
  const std::string dir = fmt::format("pg{}/", GetParam());
  const auto golden = LoadGolden(dir + "outbox_insert.hex");
  const auto m = DecodeAll(golden);
  ASSERT_EQ(Kinds(m), "BRIMC");
  ExpectConsistentTransaction(golden, m);
  const auto& relation = Get<RelationMessage>(m, 1);
  EXPECT_EQ(relation.schema, "capture");
  EXPECT_EQ(relation.name, "outbox");
  EXPECT_THAT(ColumnNames(relation),
              ::testing::ElementsAre("id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers",
                                     "created_at"))
      << "the generated column payload_size is never published";
  const auto& insert = Get<InsertMessage>(m, 2);
  EXPECT_EQ(insert.relation_oid, relation.oid);
  ASSERT_EQ(insert.new_tuple.values.size(), 7u);
  EXPECT_EQ(insert.new_tuple.values[0].data, "4f1c2a58-3b7e-4d0a-9c61-0a5be8d3e201");
  EXPECT_EQ(insert.new_tuple.values[4].data, R"({"total": 12})");
  EXPECT_EQ(insert.new_tuple.values[5].data, R"({"traceparent": "00-abc"})");
  const auto& message = Get<LogicalMessage>(m, 3);
  EXPECT_TRUE(message.transactional());
  EXPECT_EQ(message.prefix, "outbox");
  EXPECT_EQ(message.content, R"({"event": "created"})");
  EXPECT_EQ(message.lsn, Get<BeginMessage>(m, 0).final_lsn) << "emitted just before the commit record";
}

TEST_P(DecoderVersionsTest, OriginMessageAfterBegin) {
  const auto golden = LoadGolden(fmt::format("pg{}/origin.hex", GetParam()));
  const auto m = DecodeAll(golden);
  // PostgreSQL 14 still sends empty transactions (here pg_replication_origin_create's, which
  // changed no published table) as Begin + Commit; 15 and later skip them. The pipeline
  // confirms such a transaction like any other that produced no event.
  const size_t skip = GetParam() == 14 ? 2 : 0;
  ASSERT_EQ(Kinds(m), GetParam() == 14 ? "BCBORIC" : "BORIC");
  ExpectConsistentTransaction(golden, m);
  const auto& origin = Get<OriginMessage>(m, skip + 1);
  EXPECT_EQ(origin.name, "outboxd_capture_origin");
  EXPECT_EQ(origin.origin_lsn, Lsn(0x1234ABCD));
  EXPECT_EQ(Get<InsertMessage>(m, skip + 3).new_tuple.values[0].data, "4f1c2a58-3b7e-4d0a-9c61-0a5be8d3e202");
}

INSTANTIATE_TEST_SUITE_P(PostgreSQL, DecoderVersionsTest, ::testing::Values(14, 15, 16, 17, 18),
                         [](const ::testing::TestParamInfo<int>& info) { return fmt::format("pg{}", info.param); });

}  // namespace
}  // namespace outboxd::pgoutput
