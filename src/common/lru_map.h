// LruMap: string keys to values, at most `capacity` entries: the least
// recently used one makes room for a new key. For caches keyed by data from
// outside (topics rendered from {event_type} or {destination}, registry
// subjects), which must not grow for the life of the process.
//
// An entry may be pinned while something refers to it by slot (a record in
// flight names its topic by slot): a pinned entry is never dropped, so the
// map may hold more than `capacity` entries while more than that are pinned.
// Lookups and hits do not allocate; only a new key does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace outboxd {

template <typename V>
class LruMap {
 public:
  // Names an entry for as long as it is in the map.
  using Slot = uint32_t;

  explicit LruMap(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  // The slot of `key`, now the most recently used entry; nullopt if absent.
  std::optional<Slot> Find(std::string_view key) {
    auto it = index_.find(absl::string_view(key.data(), key.size()));
    if (it == index_.end()) return std::nullopt;
    Touch(it->second);
    return it->second;
  }
  // The value of `key` (most recently used now), or nullptr.
  V* Get(std::string_view key) {
    std::optional<Slot> slot = Find(key);
    return slot.has_value() ? &nodes_[*slot].value : nullptr;
  }

  // Whether `key` is in the map; its recency stays as it was.
  bool Contains(std::string_view key) const {
    return index_.contains(absl::string_view(key.data(), key.size()));
  }

  // Adds `key`, which must be absent, as the most recently used entry, and
  // sets `*slot` to it. When the map was full, the least recently used
  // unpinned entry was dropped first: its value is returned, so that the
  // caller can release what it holds.
  std::optional<V> Insert(std::string_view key, V value, Slot* slot = nullptr) {
    std::optional<V> dropped;
    if (index_.size() >= capacity_ && lru_ != kNone) dropped = Drop(lru_);
    Slot s;
    if (free_ != kNone) {
      s = free_;
      free_ = nodes_[s].next;
    } else {
      s = static_cast<Slot>(nodes_.size());
      nodes_.emplace_back();
    }
    Node& node = nodes_[s];
    node.key.assign(key.data(), key.size());
    node.value = std::move(value);
    node.pins = 0;
    node.used = true;
    index_.emplace(node.key, s);
    Link(s);
    if (slot != nullptr) *slot = s;
    return dropped;
  }

  const std::string& key(Slot s) const { return nodes_[s].key; }
  V& value(Slot s) { return nodes_[s].value; }

  // While pinned, the entry is never dropped.
  void Pin(Slot s) {
    if (nodes_[s].pins++ == 0) Unlink(s);
  }
  // The last unpin makes the entry the most recently used again.
  void Unpin(Slot s) {
    if (--nodes_[s].pins == 0) Link(s);
  }

  size_t size() const { return index_.size(); }
  size_t capacity() const { return capacity_; }

  // Calls fn(key, value) for every entry, in no particular order.
  template <typename F>
  void ForEach(F fn) {
    for (Node& node : nodes_) {
      if (node.used) fn(std::string_view(node.key), node.value);
    }
  }

 private:
  static constexpr Slot kNone = static_cast<Slot>(-1);
  struct Node {
    std::string key;
    V value{};
    uint32_t pins = 0;
    bool used = false;
    // The recency list (most recent first), unpinned entries only; `next`
    // also chains free slots.
    Slot prev = kNone;
    Slot next = kNone;
  };

  void Touch(Slot s) {
    if (nodes_[s].pins > 0 || mru_ == s) return;
    Unlink(s);
    Link(s);
  }
  void Link(Slot s) {  // at the most recently used end
    Node& node = nodes_[s];
    node.prev = kNone;
    node.next = mru_;
    if (mru_ != kNone) nodes_[mru_].prev = s;
    mru_ = s;
    if (lru_ == kNone) lru_ = s;
  }
  void Unlink(Slot s) {
    Node& node = nodes_[s];
    if (node.prev != kNone) nodes_[node.prev].next = node.next; else mru_ = node.next;
    if (node.next != kNone) nodes_[node.next].prev = node.prev; else lru_ = node.prev;
    node.prev = node.next = kNone;
  }
  V Drop(Slot s) {
    Unlink(s);
    Node& node = nodes_[s];
    index_.erase(absl::string_view(node.key));
    V value = std::move(node.value);
    node.value = V{};
    node.used = false;
    node.next = free_;
    free_ = s;
    return value;
  }

  size_t capacity_;
  std::vector<Node> nodes_;
  absl::flat_hash_map<std::string, Slot> index_;
  Slot mru_ = kNone;
  Slot lru_ = kNone;
  Slot free_ = kNone;
};

}  // namespace outboxd
