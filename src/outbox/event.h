// OutboxEvent: one event decoded from an outbox row or a logical decoding
// message, with its source position. The mapper fills it; the router and the
// envelope encoder read it. Reused across events to avoid allocations.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/lsn.h"

namespace outboxd::outbox {

struct Header {
  std::string key;
  std::string value;
};

// Where the event came from in the WAL.
struct SourcePosition {
  Lsn commit_lsn;          // the transaction's commit LSN (Begin's final_lsn)
  Lsn lsn;                 // the change's own LSN (XLogData dataStart, or the message LSN)
  uint32_t xid = 0;
  int64_t commit_time = 0;  // PostgreSQL microseconds since 2000-01-01
  std::string schema;       // empty for logical decoding messages
  std::string table;        // for messages: "" (the prefix goes in `message_prefix`)
  std::string message_prefix;
  // The database the event was committed in: a constant of the stream. Empty
  // until the pipeline sets it (the envelope then leaves it out).
  std::string database;
};

struct OutboxEvent {
  std::string id;              // canonical lower-case UUID text, validated
  std::string aggregate_type;
  std::string aggregate_id;
  std::string event_type;
  std::string payload;         // raw bytes: JSON text for json/jsonb, text, or bytea bytes
  std::string content_type;    // application/json, text/plain or application/octet-stream
  std::vector<Header> headers; // the row's own headers (headers jsonb), in object order
  std::optional<std::string> destination;
  std::optional<int64_t> created_at;  // PostgreSQL microseconds since 2000-01-01
  // Columns placed in the envelope ([[outbox.fields]] placement = "envelope").
  std::vector<Header> attributes;
  // The text of the extra columns the table's RecordConfig reads, indexed by
  // ExtraSlot (outbox/record.h); nullopt when NULL or not configured.
  std::vector<std::optional<std::string>> extra;
  SourcePosition source;

  void Clear() {
    id.clear(); aggregate_type.clear(); aggregate_id.clear(); event_type.clear();
    payload.clear(); content_type.clear(); headers.clear(); destination.reset();
    created_at.reset(); attributes.clear(); extra.clear(); source = SourcePosition();
  }
};

}  // namespace outboxd::outbox
