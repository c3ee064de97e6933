#include "pgoutput/relation_cache.h"

#include <utility>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace outboxd::pgoutput {

void RelationCache::Put(RelationMessage relation) {
  // Replace, never merge: a Relation message after ALTER TABLE describes the whole new layout,
  // and tuples that follow it must be read against that layout only.
  const uint32_t oid = relation.oid;
  relations_.insert_or_assign(oid, std::move(relation));
}

absl::StatusOr<const RelationMessage*> RelationCache::Get(uint32_t oid) const {
  auto it = relations_.find(oid);
  if (it == relations_.end()) {
    return absl::FailedPreconditionError(fmt::format(
        "no Relation message seen for relation OID {}: pgoutput sends one before the first "
        "change of each relation in a replication session, so the stream is out of order or "
        "the relation cache was cleared mid-session; reconnect to replay from the slot",
        oid));
  }
  return &it->second;
}

}  // namespace outboxd::pgoutput
