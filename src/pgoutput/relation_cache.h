// Relation cache: the newest Relation message seen per relation OID. pgoutput
// sends a Relation message before the first change of a relation in a session
// and again after its schema changes; each one replaces the cached entry.
#pragma once

#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "pgoutput/messages.h"

namespace outboxd::pgoutput {

class RelationCache {
 public:
  // Stores (or replaces) the entry for relation.oid.
  void Put(RelationMessage relation);
  // FailedPreconditionError when no Relation message for `oid` was seen.
  absl::StatusOr<const RelationMessage*> Get(uint32_t oid) const;
  void Clear() { relations_.clear(); }
  size_t size() const { return relations_.size(); }

 private:
  absl::flat_hash_map<uint32_t, RelationMessage> relations_;
};

}  // namespace outboxd::pgoutput
