// Test-only pgoutput encoder: writes a Message in the wire layout the decoder reads, so tests
// can build edge cases field by field and check that decode(bytes) re-encodes to the same bytes.
// It is written from the protocol docs, independently of the decoder's code.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "pgoutput/messages.h"

namespace outboxd::pgoutput::testing {

class WireWriter {
 public:
  WireWriter& Byte(uint8_t v) { return Int(v); }
  WireWriter& Int16(int16_t v) { return Int(v); }
  WireWriter& Int32(int32_t v) { return Int(v); }
  WireWriter& Uint32(uint32_t v) { return Int(v); }
  WireWriter& Int64(int64_t v) { return Int(v); }
  WireWriter& Uint64(uint64_t v) { return Int(v); }
  WireWriter& Bytes(std::string_view v) {
    out_.append(v.data(), v.size());
    return *this;
  }
  WireWriter& String(std::string_view v) {
    Bytes(v);
    out_.push_back('\0');
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  template <typename T>
  WireWriter& Int(T v) {
    auto u = static_cast<std::make_unsigned_t<T>>(v);
    for (int shift = 8 * (static_cast<int>(sizeof(T)) - 1); shift >= 0; shift -= 8) {
      out_.push_back(static_cast<char>((static_cast<uint64_t>(u) >> shift) & 0xff));
    }
    return *this;
  }
  std::string out_;
};

inline void WriteTuple(WireWriter& w, const TupleData& tuple) {
  w.Int16(static_cast<int16_t>(tuple.values.size()));
  for (const TupleValue& v : tuple.values) {
    w.Byte(static_cast<uint8_t>(v.kind));
    if (v.kind == TupleValue::Kind::kText || v.kind == TupleValue::Kind::kBinary) {
      w.Int32(static_cast<int32_t>(v.data.size())).Bytes(v.data);
    }
  }
}

inline std::string Encode(const Message& message) {
  WireWriter w;
  std::visit(
      [&w](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, BeginMessage>) {
          w.Byte('B').Uint64(m.final_lsn.value()).Int64(m.commit_time).Uint32(m.xid);
        } else if constexpr (std::is_same_v<T, CommitMessage>) {
          w.Byte('C').Byte(m.flags).Uint64(m.commit_lsn.value()).Uint64(m.end_lsn.value());
          w.Int64(m.commit_time);
        } else if constexpr (std::is_same_v<T, OriginMessage>) {
          w.Byte('O').Uint64(m.origin_lsn.value()).String(m.name);
        } else if constexpr (std::is_same_v<T, RelationMessage>) {
          w.Byte('R').Uint32(m.oid).String(m.schema).String(m.name);
          w.Byte(static_cast<uint8_t>(m.replica_identity));
          w.Int16(static_cast<int16_t>(m.columns.size()));
          for (const RelationColumn& c : m.columns) {
            w.Byte(c.flags).String(c.name).Uint32(c.type_oid).Int32(c.type_modifier);
          }
        } else if constexpr (std::is_same_v<T, TypeMessage>) {
          w.Byte('Y').Uint32(m.oid).String(m.schema).String(m.name);
        } else if constexpr (std::is_same_v<T, InsertMessage>) {
          w.Byte('I').Uint32(m.relation_oid).Byte('N');
          WriteTuple(w, m.new_tuple);
        } else if constexpr (std::is_same_v<T, UpdateMessage>) {
          w.Byte('U').Uint32(m.relation_oid);
          if (m.old_kind != 0) {
            w.Byte(static_cast<uint8_t>(m.old_kind));
            WriteTuple(w, m.old_tuple);
          }
          w.Byte('N');
          WriteTuple(w, m.new_tuple);
        } else if constexpr (std::is_same_v<T, DeleteMessage>) {
          w.Byte('D').Uint32(m.relation_oid).Byte(static_cast<uint8_t>(m.old_kind));
          WriteTuple(w, m.old_tuple);
        } else if constexpr (std::is_same_v<T, TruncateMessage>) {
          w.Byte('T').Int32(static_cast<int32_t>(m.relation_oids.size())).Byte(m.options);
          for (uint32_t oid : m.relation_oids) w.Uint32(oid);
        } else if constexpr (std::is_same_v<T, LogicalMessage>) {
          w.Byte('M').Byte(m.flags).Uint64(m.lsn.value()).String(m.prefix);
          w.Int32(static_cast<int32_t>(m.content.size())).Bytes(m.content);
        }
      },
      message);
  return w.str();
}

}  // namespace outboxd::pgoutput::testing
