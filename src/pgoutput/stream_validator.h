// Stream validator: the ordering rules of a pgoutput stream that no single
// message shows (Begin before changes, Commit after Begin, LSNs that only move
// forward, rows as wide as their relation). A violation means the server or the
// connection broke the protocol: it is DataLoss naming the LSN, never a bad
// event, so nothing after it is published or confirmed. Pure: no I/O.
#pragma once

#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/lsn.h"
#include "pgoutput/messages.h"

namespace outboxd::pgoutput {

class StreamValidator {
 public:
  // Checks `message`, which started at WAL position `lsn` (the XLogData's
  // data_start), against what came before it in this session. DataLossError
  // naming the LSN for:
  //  - Begin inside an open transaction, or whose final LSN is before the end
  //    of the previous transaction (LSNs going backwards);
  //  - Commit without Begin, or whose end LSN is before its commit LSN or its
  //    Begin's final LSN;
  //  - Insert, Update, Delete, Truncate or a transactional Message outside a
  //    transaction;
  //  - Insert or Update whose column count differs from its relation's newest
  //    Relation message.
  // The state advances only on success.
  absl::Status Check(const Message& message, Lsn lsn);

  bool in_transaction() const { return in_transaction_; }

 private:
  absl::Status Violation(Lsn lsn, std::string_view what) const;
  absl::Status CheckRow(Lsn lsn, const char* kind, uint32_t relation_oid, size_t columns) const;

  bool in_transaction_ = false;
  Lsn begin_final_lsn_;
  Lsn last_end_lsn_;  // end LSN of the newest committed transaction of this session
  absl::flat_hash_map<uint32_t, size_t> relation_columns_;
};

}  // namespace outboxd::pgoutput
