// The pgoutput logical replication messages that outboxd accepts, one struct per
// protocol message, as documented in PostgreSQL's "Logical Replication Message
// Formats" (protocol-logicalrep-message-formats.html). Integers are big-endian.
//
// Strings that are only needed while one message is handled (tuple values,
// logical message prefix and content) are views into the receive buffer: they are
// valid until the next frame is read. Relation and Type messages own their
// strings because the relation cache keeps them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/lsn.h"

namespace outboxd::pgoutput {

// 'B' Begin: Int64 final LSN of the transaction (its commit record),
// Int64 commit timestamp (microseconds since 2000-01-01), Int32 xid.
struct BeginMessage {
  Lsn final_lsn;
  int64_t commit_time = 0;
  uint32_t xid = 0;
};

// 'C' Commit: Int8 flags (unused, 0), Int64 commit LSN, Int64 end LSN of the
// transaction, Int64 commit timestamp.
struct CommitMessage {
  uint8_t flags = 0;
  Lsn commit_lsn;
  Lsn end_lsn;
  int64_t commit_time = 0;
};

// 'O' Origin: Int64 commit LSN on the origin server, String origin name.
struct OriginMessage {
  Lsn origin_lsn;
  std::string name;
};

// One column of a Relation message: Int8 flags (1 = part of the key),
// String name, Int32 type OID, Int32 type modifier.
struct RelationColumn {
  uint8_t flags = 0;
  std::string name;
  uint32_t type_oid = 0;
  int32_t type_modifier = -1;
};

// 'R' Relation: Int32 relation OID, String namespace ("" means pg_catalog),
// String name, Int8 replica identity, Int16 column count, then the columns.
struct RelationMessage {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
  char replica_identity = 'd';
  std::vector<RelationColumn> columns;
};

// 'Y' Type: Int32 type OID, String namespace, String name.
struct TypeMessage {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
};

// One value of TupleData: Byte1 kind, then for 't' and 'b' Int32 length and
// that many bytes. 'n' is NULL, 'u' an unchanged TOASTed value (no bytes).
struct TupleValue {
  enum class Kind : char { kNull = 'n', kUnchangedToast = 'u', kText = 't', kBinary = 'b' };
  Kind kind = Kind::kNull;
  std::string_view data;  // empty for kNull and kUnchangedToast
};

// TupleData: Int16 column count, then one TupleValue per column.
struct TupleData {
  std::vector<TupleValue> values;
};

// 'I' Insert: Int32 relation OID, Byte1 'N', TupleData of the new row.
struct InsertMessage {
  uint32_t relation_oid = 0;
  TupleData new_tuple;
};

// 'U' Update: Int32 relation OID, optionally Byte1 'K' (key) or 'O' (old row)
// with a TupleData, then Byte1 'N' and the new row's TupleData.
struct UpdateMessage {
  uint32_t relation_oid = 0;
  char old_kind = 0;  // 0 when absent, else 'K' or 'O'
  TupleData old_tuple;
  TupleData new_tuple;
};

// 'D' Delete: Int32 relation OID, Byte1 'K' or 'O', TupleData of the old row.
struct DeleteMessage {
  uint32_t relation_oid = 0;
  char old_kind = 'K';
  TupleData old_tuple;
};

// 'T' Truncate: Int32 relation count, Int8 options (1 CASCADE, 2 RESTART
// IDENTITY), Int32 OID per relation.
struct TruncateMessage {
  uint8_t options = 0;
  std::vector<uint32_t> relation_oids;
};

// 'M' Message (pg_logical_emit_message): Int8 flags (1 = transactional),
// Int64 LSN of the message, String prefix, Int32 content length, content bytes.
struct LogicalMessage {
  uint8_t flags = 0;
  Lsn lsn;
  std::string_view prefix;
  std::string_view content;
  bool transactional() const { return (flags & 1) != 0; }
};

using Message = std::variant<BeginMessage, CommitMessage, OriginMessage, RelationMessage,
                             TypeMessage, InsertMessage, UpdateMessage, DeleteMessage,
                             TruncateMessage, LogicalMessage>;

}  // namespace outboxd::pgoutput
