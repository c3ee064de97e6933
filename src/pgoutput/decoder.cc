// pgoutput message decoder. Layouts, as PostgreSQL 15 sends them at proto_version 1 to 3 with
// streaming and two_phase off (protocol-logicalrep-message-formats.html; the optional Int32
// xid of streamed transactions is then never present). Byte 0 is the kind.
//
//   'B' Begin     Int64 final LSN | Int64 commit time | Int32 xid
//   'C' Commit    Int8 flags | Int64 commit LSN | Int64 end LSN | Int64 commit time
//   'O' Origin    Int64 origin LSN | String name
//   'R' Relation  Int32 OID | String namespace | String name | Int8 replica identity |
//                 Int16 ncols | ncols x (Int8 flags | String name | Int32 type OID | Int32 typmod)
//   'Y' Type      Int32 OID | String namespace | String name
//   'I' Insert    Int32 relation OID | 'N' TupleData
//   'U' Update    Int32 relation OID | ['K' or 'O' TupleData] | 'N' TupleData
//   'D' Delete    Int32 relation OID | 'K' or 'O' TupleData
//   'T' Truncate  Int32 nrels | Int8 options | nrels x Int32 relation OID
//   'M' Message   Int8 flags | Int64 LSN | String prefix | Int32 length | Byten content
//
//   TupleData     Int16 ncols | ncols x ('n' | 'u' | ('t' or 'b') Int32 length Byten value)
//
// Every field is read through ByteReader, so truncation anywhere is a DataLossError with the
// offset; a message must also end exactly where its layout ends.
#include "pgoutput/decoder.h"

#include <cctype>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/status_macros.h"
#include "fmt/format.h"
#include "common/byte_reader.h"

namespace outboxd::pgoutput {
namespace {

// Tuple vectors of a row message that `out` stops holding (Begin after Insert, ...), kept
// for the next row message: a stream alternates Begin, Insert..., Commit, and without this
// every transaction would free and allocate its tuple vector again. Per thread, because a
// decoder call has no other state; two vectors cover Update's old and new tuple.
struct SpareTuples {
  std::vector<TupleValue> values[2];

  void Keep(std::vector<TupleValue>&& v) {
    for (std::vector<TupleValue>& slot : values) {
      if (slot.capacity() < v.capacity()) {
        std::swap(slot, v);
        return;
      }
    }
  }
  void Give(std::vector<TupleValue>& v) {
    for (std::vector<TupleValue>& slot : values) {
      if (slot.capacity() > v.capacity()) {
        std::swap(slot, v);
        return;
      }
    }
  }
};
thread_local SpareTuples spare_tuples;

void KeepTuples(Message& out) {
  if (auto* m = std::get_if<InsertMessage>(&out)) {
    spare_tuples.Keep(std::move(m->new_tuple.values));
  } else if (auto* u = std::get_if<UpdateMessage>(&out)) {
    spare_tuples.Keep(std::move(u->new_tuple.values));
    spare_tuples.Keep(std::move(u->old_tuple.values));
  } else if (auto* d = std::get_if<DeleteMessage>(&out)) {
    spare_tuples.Keep(std::move(d->old_tuple.values));
  }
}

void GiveTuples(InsertMessage& m) { spare_tuples.Give(m.new_tuple.values); }
void GiveTuples(UpdateMessage& m) {
  spare_tuples.Give(m.new_tuple.values);
  spare_tuples.Give(m.old_tuple.values);
}
void GiveTuples(DeleteMessage& m) { spare_tuples.Give(m.old_tuple.values); }
template <typename T>
void GiveTuples(T&) {}

// Returns the alternative T of `out`, keeping its storage when it already holds a T (so that
// the tuple vectors keep their capacity), else replacing it with a fresh T whose tuple
// vectors come from the spares. Callers assign every field, so nothing of the previous
// message survives.
template <typename T>
T& Reuse(Message& out) {
  if (T* existing = std::get_if<T>(&out)) return *existing;
  KeepTuples(out);
  T& fresh = out.emplace<T>();
  GiveTuples(fresh);
  return fresh;
}

std::string DescribeByte(uint8_t byte) {
  if (std::isprint(byte)) return fmt::format("'{}' (0x{:02x})", static_cast<char>(byte), byte);
  return fmt::format("0x{:02x}", byte);
}

absl::Status DecodeTupleData(ByteReader& r, TupleData& tuple) {
  const size_t count_at = r.offset();
  ASSIGN_OR_RETURN(const int16_t count, r.ReadInt16("the TupleData column count"));
  if (count < 0) {
    return r.Malformed(count_at, fmt::format("negative TupleData column count {}", count));
  }
  // Each value takes at least its kind byte; checking first keeps a corrupt count from
  // sizing the vector.
  if (static_cast<size_t>(count) > r.remaining()) {
    return absl::DataLossError(fmt::format(
        "{} truncated at byte {}: TupleData announces {} columns but only {} bytes are left",
        r.what(), r.offset(), count, r.remaining()));
  }
  tuple.values.resize(static_cast<size_t>(count));
  for (TupleValue& value : tuple.values) {
    const size_t kind_at = r.offset();
    ASSIGN_OR_RETURN(const uint8_t kind, r.ReadUint8("a tuple value kind"));
    switch (kind) {
      case 'n':
        value.kind = TupleValue::Kind::kNull;
        value.data = {};
        break;
      case 'u':
        value.kind = TupleValue::Kind::kUnchangedToast;
        value.data = {};
        break;
      case 't':
      case 'b': {
        value.kind = kind == 't' ? TupleValue::Kind::kText : TupleValue::Kind::kBinary;
        const size_t length_at = r.offset();
        ASSIGN_OR_RETURN(const int32_t length, r.ReadInt32("a tuple value length"));
        if (length < 0) {
          return r.Malformed(length_at, fmt::format("negative tuple value length {}", length));
        }
        ASSIGN_OR_RETURN(value.data, r.ReadBytes(static_cast<size_t>(length), "a tuple value"));
        break;
      }
      default:
        return r.Malformed(
            kind_at, fmt::format("unknown tuple value kind {} (expected 'n', 'u', 't' or 'b')",
                                 DescribeByte(kind)));
    }
  }
  return absl::OkStatus();
}

// Reads the Byte1 that introduces a TupleData ('N', 'K' or 'O').
absl::StatusOr<uint8_t> ReadTupleTag(ByteReader& r, std::string_view expected) {
  const size_t at = r.offset();
  ASSIGN_OR_RETURN(const uint8_t tag, r.ReadUint8("the tuple tag"));
  if (expected.find(static_cast<char>(tag)) == std::string_view::npos) {
    std::string list;
    for (char c : expected) list += fmt::format("{}'{}'", list.empty() ? "" : " or ", c);
    return r.Malformed(at, fmt::format("tuple tag {} where {} was expected", DescribeByte(tag),
                                       list));
  }
  return tag;
}

absl::Status DecodeBegin(ByteReader& r, Message& out) {
  BeginMessage& m = Reuse<BeginMessage>(out);
  ASSIGN_OR_RETURN(const uint64_t final_lsn, r.ReadUint64("the final LSN"));
  m.final_lsn = Lsn(final_lsn);
  ASSIGN_OR_RETURN(m.commit_time, r.ReadInt64("the commit timestamp"));
  ASSIGN_OR_RETURN(m.xid, r.ReadUint32("the xid"));
  return absl::OkStatus();
}

absl::Status DecodeCommit(ByteReader& r, Message& out) {
  CommitMessage& m = Reuse<CommitMessage>(out);
  ASSIGN_OR_RETURN(m.flags, r.ReadUint8("the flags"));
  ASSIGN_OR_RETURN(const uint64_t commit_lsn, r.ReadUint64("the commit LSN"));
  m.commit_lsn = Lsn(commit_lsn);
  ASSIGN_OR_RETURN(const uint64_t end_lsn, r.ReadUint64("the end LSN"));
  m.end_lsn = Lsn(end_lsn);
  ASSIGN_OR_RETURN(m.commit_time, r.ReadInt64("the commit timestamp"));
  return absl::OkStatus();
}

absl::Status DecodeOrigin(ByteReader& r, Message& out) {
  OriginMessage& m = Reuse<OriginMessage>(out);
  ASSIGN_OR_RETURN(const uint64_t origin_lsn, r.ReadUint64("the origin LSN"));
  m.origin_lsn = Lsn(origin_lsn);
  ASSIGN_OR_RETURN(const std::string_view name, r.ReadString("the origin name"));
  m.name.assign(name.data(), name.size());
  return absl::OkStatus();
}

absl::Status DecodeRelation(ByteReader& r, Message& out) {
  RelationMessage& m = Reuse<RelationMessage>(out);
  ASSIGN_OR_RETURN(m.oid, r.ReadUint32("the relation OID"));
  ASSIGN_OR_RETURN(const std::string_view schema, r.ReadString("the namespace"));
  m.schema.assign(schema.data(), schema.size());
  ASSIGN_OR_RETURN(const std::string_view name, r.ReadString("the relation name"));
  m.name.assign(name.data(), name.size());
  const size_t identity_at = r.offset();
  ASSIGN_OR_RETURN(const uint8_t identity, r.ReadUint8("the replica identity"));
  // pg_class.relreplident: default, nothing, full, index.
  if (identity != 'd' && identity != 'n' && identity != 'f' && identity != 'i') {
    return r.Malformed(identity_at,
                       fmt::format("unknown replica identity {} (expected 'd', 'n', 'f' or 'i')",
                                   DescribeByte(identity)));
  }
  m.replica_identity = static_cast<char>(identity);
  const size_t count_at = r.offset();
  ASSIGN_OR_RETURN(const int16_t count, r.ReadInt16("the column count"));
  if (count < 0) return r.Malformed(count_at, fmt::format("negative column count {}", count));
  // A column takes at least 10 bytes (flags, empty name's NUL, type OID, typmod).
  if (static_cast<size_t>(count) * 10 > r.remaining()) {
    return absl::DataLossError(fmt::format(
        "{} truncated at byte {}: {} columns need at least {} bytes but only {} are left",
        r.what(), r.offset(), count, static_cast<size_t>(count) * 10, r.remaining()));
  }
  m.columns.resize(static_cast<size_t>(count));
  for (RelationColumn& column : m.columns) {
    ASSIGN_OR_RETURN(column.flags, r.ReadUint8("the column flags"));
    ASSIGN_OR_RETURN(const std::string_view column_name, r.ReadString("the column name"));
    column.name.assign(column_name.data(), column_name.size());
    ASSIGN_OR_RETURN(column.type_oid, r.ReadUint32("the column type OID"));
    ASSIGN_OR_RETURN(column.type_modifier, r.ReadInt32("the column type modifier"));
  }
  return absl::OkStatus();
}

absl::Status DecodeType(ByteReader& r, Message& out) {
  TypeMessage& m = Reuse<TypeMessage>(out);
  ASSIGN_OR_RETURN(m.oid, r.ReadUint32("the type OID"));
  ASSIGN_OR_RETURN(const std::string_view schema, r.ReadString("the namespace"));
  m.schema.assign(schema.data(), schema.size());
  ASSIGN_OR_RETURN(const std::string_view name, r.ReadString("the type name"));
  m.name.assign(name.data(), name.size());
  return absl::OkStatus();
}

absl::Status DecodeInsert(ByteReader& r, Message& out) {
  InsertMessage& m = Reuse<InsertMessage>(out);
  ASSIGN_OR_RETURN(m.relation_oid, r.ReadUint32("the relation OID"));
  RETURN_IF_ERROR(ReadTupleTag(r, "N").status());
  return DecodeTupleData(r, m.new_tuple);
}

absl::Status DecodeUpdate(ByteReader& r, Message& out) {
  UpdateMessage& m = Reuse<UpdateMessage>(out);
  ASSIGN_OR_RETURN(m.relation_oid, r.ReadUint32("the relation OID"));
  ASSIGN_OR_RETURN(uint8_t tag, ReadTupleTag(r, "KON"));
  if (tag == 'K' || tag == 'O') {
    m.old_kind = static_cast<char>(tag);
    RETURN_IF_ERROR(DecodeTupleData(r, m.old_tuple));
    ASSIGN_OR_RETURN(tag, ReadTupleTag(r, "N"));
  } else {
    m.old_kind = 0;
    m.old_tuple.values.clear();
  }
  return DecodeTupleData(r, m.new_tuple);
}

absl::Status DecodeDelete(ByteReader& r, Message& out) {
  DeleteMessage& m = Reuse<DeleteMessage>(out);
  ASSIGN_OR_RETURN(m.relation_oid, r.ReadUint32("the relation OID"));
  ASSIGN_OR_RETURN(const uint8_t tag, ReadTupleTag(r, "KO"));
  m.old_kind = static_cast<char>(tag);
  return DecodeTupleData(r, m.old_tuple);
}

absl::Status DecodeTruncate(ByteReader& r, Message& out) {
  TruncateMessage& m = Reuse<TruncateMessage>(out);
  const size_t count_at = r.offset();
  ASSIGN_OR_RETURN(const int32_t count, r.ReadInt32("the relation count"));
  if (count < 0) return r.Malformed(count_at, fmt::format("negative relation count {}", count));
  ASSIGN_OR_RETURN(m.options, r.ReadUint8("the options"));
  if (static_cast<uint64_t>(count) * 4 > r.remaining()) {
    return absl::DataLossError(fmt::format(
        "{} truncated at byte {}: {} relation OIDs need {} bytes but only {} are left", r.what(),
        r.offset(), count, static_cast<uint64_t>(count) * 4, r.remaining()));
  }
  m.relation_oids.resize(static_cast<size_t>(count));
  for (uint32_t& oid : m.relation_oids) {
    ASSIGN_OR_RETURN(oid, r.ReadUint32("a relation OID"));
  }
  return absl::OkStatus();
}

absl::Status DecodeLogicalMessage(ByteReader& r, Message& out) {
  LogicalMessage& m = Reuse<LogicalMessage>(out);
  ASSIGN_OR_RETURN(m.flags, r.ReadUint8("the flags"));
  ASSIGN_OR_RETURN(const uint64_t lsn, r.ReadUint64("the message LSN"));
  m.lsn = Lsn(lsn);
  ASSIGN_OR_RETURN(m.prefix, r.ReadString("the prefix"));
  const size_t length_at = r.offset();
  ASSIGN_OR_RETURN(const int32_t length, r.ReadInt32("the content length"));
  if (length < 0) return r.Malformed(length_at, fmt::format("negative content length {}", length));
  ASSIGN_OR_RETURN(m.content, r.ReadBytes(static_cast<size_t>(length), "the content"));
  return absl::OkStatus();
}

// Messages a PostgreSQL 15 walsender sends only when asked for streaming or two-phase.
absl::Status NotRequested(char kind, std::string_view name, std::string_view option) {
  return absl::UnimplementedError(fmt::format(
      "pgoutput message '{}' ({}) was not requested: outboxd runs with {} off, so the server "
      "should never send it; check the options given to START_REPLICATION (outboxd passes "
      "only proto_version, publication_names and messages)",
      kind, name, option));
}

}  // namespace

absl::Status DecodeMessageInto(std::string_view data, Message& out) {
  if (data.empty()) {
    return absl::DataLossError(
        "pgoutput message truncated at byte 0: the message is empty, not even its 1-byte kind "
        "is there");
  }
  const char kind = data[0];
  const char* what = nullptr;
  absl::Status (*decode)(ByteReader&, Message&) = nullptr;
  switch (kind) {
    case 'B': what = "pgoutput Begin message"; decode = DecodeBegin; break;
    case 'C': what = "pgoutput Commit message"; decode = DecodeCommit; break;
    case 'O': what = "pgoutput Origin message"; decode = DecodeOrigin; break;
    case 'R': what = "pgoutput Relation message"; decode = DecodeRelation; break;
    case 'Y': what = "pgoutput Type message"; decode = DecodeType; break;
    case 'I': what = "pgoutput Insert message"; decode = DecodeInsert; break;
    case 'U': what = "pgoutput Update message"; decode = DecodeUpdate; break;
    case 'D': what = "pgoutput Delete message"; decode = DecodeDelete; break;
    case 'T': what = "pgoutput Truncate message"; decode = DecodeTruncate; break;
    case 'M': what = "pgoutput logical Message"; decode = DecodeLogicalMessage; break;
    case 'S': return NotRequested(kind, "stream start", "streaming");
    case 'E': return NotRequested(kind, "stream stop", "streaming");
    case 'c': return NotRequested(kind, "stream commit", "streaming");
    case 'A': return NotRequested(kind, "stream abort", "streaming");
    case 'p': return NotRequested(kind, "stream prepare", "streaming and two_phase");
    case 'b': return NotRequested(kind, "begin prepare", "two_phase");
    case 'P': return NotRequested(kind, "prepare", "two_phase");
    case 'K': return NotRequested(kind, "commit prepared", "two_phase");
    case 'r': return NotRequested(kind, "rollback prepared", "two_phase");
    default:
      return absl::UnimplementedError(fmt::format(
          "pgoutput message kind {} is unknown: it is not one PostgreSQL 15 sends at "
          "proto_version 1 to 3; the server may be a newer version speaking a newer protocol "
          "than outboxd requested, or the stream is not pgoutput",
          DescribeByte(static_cast<uint8_t>(kind))));
  }
  ByteReader reader(data, what);
  RETURN_IF_ERROR(reader.ReadUint8("the kind").status());  // offsets count from the kind
  RETURN_IF_ERROR(decode(reader, out));
  return reader.ExpectEnd();
}

absl::StatusOr<Message> DecodeMessage(std::string_view data) {
  Message message;
  RETURN_IF_ERROR(DecodeMessageInto(data, message));
  return message;
}

}  // namespace outboxd::pgoutput
