#include "outbox/dead_letter.h"

#include <utility>

#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "outbox/envelope.h"

namespace outboxd::outbox {
namespace {

using Json = nlohmann::ordered_json;

// Reason, detail and source position headers, common to every dead letter.
void Start(std::string_view reason, std::string_view detail, const OutboxEvent& event,
           std::string_view value_kind, std::string_view topic, DeadLetter* out) {
  out->reason = std::string(reason);
  out->key = event.id;
  out->value.clear();
  out->headers.clear();
  const SourcePosition& src = event.source;
  const std::string source = src.table.empty()
                                 ? fmt::format("message:{}", src.message_prefix)
                                 : fmt::format("{}.{}", src.schema, src.table);
  out->headers = {
      {std::string(kDlqReasonHeader), std::string(reason)},
      {std::string(kDlqErrorHeader), std::string(detail)},
      {std::string(kDlqSourceHeader), source},
      {std::string(kDlqCommitLsnHeader), src.commit_lsn.ToString()},
      {std::string(kDlqLsnHeader), src.lsn.ToString()},
      {std::string(kDlqXidHeader), std::to_string(src.xid)},
      {std::string(kDlqValueHeader), std::string(value_kind)},
  };
  if (!event.id.empty()) out->headers.push_back({std::string(kDlqOutboxIdHeader), event.id});
  if (!topic.empty()) out->headers.push_back({std::string(kDlqTopicHeader), std::string(topic)});
}

std::string Hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\\x";
  out.reserve(2 + bytes.size() * 2);
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

}  // namespace

void DeadLetterForRow(std::string_view reason, std::string_view detail, const OutboxEvent& event,
                      const pgoutput::RelationMessage& relation, const pgoutput::TupleData& row,
                      DeadLetter* out) {
  Start(reason, detail, event, "row", "", out);
  out->headers.push_back({"content-type", "application/json"});
  Json doc = Json::object();
  for (size_t i = 0; i < row.values.size(); ++i) {
    const std::string name =
        i < relation.columns.size() ? relation.columns[i].name : fmt::format("column{}", i + 1);
    const pgoutput::TupleValue& value = row.values[i];
    switch (value.kind) {
      case pgoutput::TupleValue::Kind::kNull:
        doc[name] = nullptr;
        break;
      case pgoutput::TupleValue::Kind::kText:
        doc[name] = std::string(value.data);
        break;
      case pgoutput::TupleValue::Kind::kBinary:
        doc[name] = Hex(value.data);
        break;
      case pgoutput::TupleValue::Kind::kUnchangedToast:
        break;
    }
  }
  // Text that is not UTF-8 is replaced (U+FFFD) rather than failing the dead letter.
  out->value = doc.dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace);
}

void DeadLetterForMessage(std::string_view reason, std::string_view detail,
                          const OutboxEvent& event, std::string_view content, DeadLetter* out) {
  Start(reason, detail, event, "message", "", out);
  out->headers.push_back({"content-type", "application/octet-stream"});
  out->value.assign(content.data(), content.size());
}

void DeadLetterForEvent(std::string_view reason, std::string_view detail, const OutboxEvent& event,
                        std::string_view topic, bool keep_payload, DeadLetter* out) {
  Start(reason, detail, event, keep_payload ? "envelope" : "envelope-without-payload", topic, out);
  out->headers.push_back({"content-type", "application/x-protobuf; messageType=outbox.v1.Envelope"});
  if (keep_payload) {
    EncodeEnvelope(event, &out->value);
    return;
  }
  OutboxEvent copy = event;
  copy.payload.clear();
  EncodeEnvelope(copy, &out->value);
}

}  // namespace outboxd::outbox
