#include "pgoutput/stream_validator.h"

#include <variant>

#include "fmt/format.h"

namespace outboxd::pgoutput {

absl::Status StreamValidator::Violation(Lsn lsn, std::string_view what) const {
  return absl::DataLossError(fmt::format(
      "pgoutput protocol violation at LSN {}: {}; the stream cannot be trusted past this point, "
      "so nothing after it is published or confirmed (outboxd reconnects and reads the slot again; "
      "if it recurs, report it with the server version)",
      lsn.ToString(), what));
}

absl::Status StreamValidator::CheckRow(Lsn lsn, const char* kind, uint32_t relation_oid,
                                       size_t columns) const {
  if (!in_transaction_) {
    return Violation(lsn, fmt::format("{} for relation {} outside a transaction", kind, relation_oid));
  }
  const auto it = relation_columns_.find(relation_oid);
  if (it != relation_columns_.end() && it->second != columns) {
    return Violation(lsn, fmt::format("{} for relation {} has {} columns but its Relation message "
                                      "has {}",
                                      kind, relation_oid, columns, it->second));
  }
  return absl::OkStatus();
}

absl::Status StreamValidator::Check(const Message& message, Lsn lsn) {
  if (const auto* begin = std::get_if<BeginMessage>(&message)) {
    if (in_transaction_) return Violation(lsn, "Begin inside an open transaction");
    if (begin->final_lsn < last_end_lsn_) {
      return Violation(lsn, fmt::format("Begin of xid {} with final LSN {}, before the end {} of "
                                        "the previous transaction (LSNs going backwards)",
                                        begin->xid, begin->final_lsn.ToString(),
                                        last_end_lsn_.ToString()));
    }
    in_transaction_ = true;
    begin_final_lsn_ = begin->final_lsn;
    return absl::OkStatus();
  }
  if (const auto* commit = std::get_if<CommitMessage>(&message)) {
    if (!in_transaction_) {
      return Violation(lsn, fmt::format("Commit (end LSN {}) without a Begin",
                                        commit->end_lsn.ToString()));
    }
    if (commit->end_lsn < commit->commit_lsn || commit->end_lsn < begin_final_lsn_) {
      return Violation(lsn, fmt::format("Commit whose end LSN {} is before its commit LSN {} "
                                        "(Begin said {})",
                                        commit->end_lsn.ToString(), commit->commit_lsn.ToString(),
                                        begin_final_lsn_.ToString()));
    }
    in_transaction_ = false;
    last_end_lsn_ = commit->end_lsn;
    return absl::OkStatus();
  }
  if (const auto* relation = std::get_if<RelationMessage>(&message)) {
    relation_columns_.insert_or_assign(relation->oid, relation->columns.size());
    return absl::OkStatus();
  }
  if (const auto* insert = std::get_if<InsertMessage>(&message)) {
    return CheckRow(lsn, "Insert", insert->relation_oid, insert->new_tuple.values.size());
  }
  if (const auto* update = std::get_if<UpdateMessage>(&message)) {
    return CheckRow(lsn, "Update", update->relation_oid, update->new_tuple.values.size());
  }
  if (std::holds_alternative<DeleteMessage>(message) && !in_transaction_) {
    return Violation(lsn, "Delete outside a transaction");
  }
  if (std::holds_alternative<TruncateMessage>(message) && !in_transaction_) {
    return Violation(lsn, "Truncate outside a transaction");
  }
  if (const auto* logical = std::get_if<LogicalMessage>(&message);
      logical != nullptr && logical->transactional() && !in_transaction_) {
    return Violation(lsn, "transactional Message outside a transaction");
  }
  return absl::OkStatus();
}

}  // namespace outboxd::pgoutput
