// libFuzzer target for the mapping of rows and logical messages to events
// (src/outbox/table_mapping.h) and what the pipeline does next with the result
// (topic, envelope, or dead letter): any row or message content gives an event
// or a bad-event status, never a crash, however deep or large its JSON. The
// first byte chooses the input kind; a row's columns are separated by 0xff and
// a leading 0x01 makes a column NULL, 0x02 unchanged TOAST, 0x03 binary (the
// rest), anything else text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/bad_event.h"
#include "outbox/dead_letter.h"
#include "outbox/envelope.h"
#include "outbox/routing.h"
#include "outbox/table_mapping.h"
#include "outbox/values.h"

namespace {

using outboxd::outbox::OutboxEvent;
using outboxd::pgoutput::TupleValue;

void Check(bool ok) {
  if (!ok) std::abort();
}

outboxd::pgoutput::RelationMessage Relation(uint8_t variant) {
  // sql/outbox.sql's table, with the payload's type chosen by the input.
  static constexpr uint32_t kPayloadTypes[] = {outboxd::outbox::kJsonbOid, outboxd::outbox::kJsonOid,
                                               outboxd::outbox::kTextOid, outboxd::outbox::kByteaOid,
                                               23 /* int4 */};
  outboxd::pgoutput::RelationMessage relation;
  relation.oid = 16385;
  relation.schema = "public";
  relation.name = "outbox";
  const std::pair<const char*, uint32_t> columns[] = {
      {"id", outboxd::outbox::kUuidOid},
      {"aggregate_type", outboxd::outbox::kTextOid},
      {"aggregate_id", outboxd::outbox::kTextOid},
      {"event_type", outboxd::outbox::kTextOid},
      {"payload", kPayloadTypes[variant % 5]},
      {"headers", (variant & 8) ? outboxd::outbox::kJsonOid : outboxd::outbox::kJsonbOid},
      {"destination", outboxd::outbox::kTextOid},
      {"created_at", (variant & 16) ? outboxd::outbox::kTimestampOid : outboxd::outbox::kTimestamptzOid},
  };
  for (const auto& [name, type] : columns) {
    outboxd::pgoutput::RelationColumn column;
    column.name = name;
    column.type_oid = type;
    relation.columns.push_back(column);
  }
  return relation;
}

// What the pipeline does with a mapped event or a bad one.
void AfterMapping(const absl::Status& status, const OutboxEvent& event,
                  const outboxd::outbox::TopicTemplate& topic, std::string_view content,
                  const outboxd::pgoutput::RelationMessage* relation,
                  const outboxd::pgoutput::TupleData* row) {
  outboxd::outbox::DeadLetter letter;
  if (!status.ok()) {
    // Every mapping failure is a bad event with a reason (or, for a row that
    // does not match its relation, a protocol error): never silently dropped.
    const std::string reason = outboxd::BadEventReason(status);
    Check(status.code() == absl::StatusCode::kInvalidArgument ||
          status.code() == absl::StatusCode::kFailedPrecondition);
    Check(status.code() != absl::StatusCode::kInvalidArgument || !reason.empty());
    if (row != nullptr) {
      outboxd::outbox::DeadLetterForRow(reason, outboxd::StatusMessage(status), event, *relation,
                                        *row, &letter);
    } else {
      outboxd::outbox::DeadLetterForMessage(reason, outboxd::StatusMessage(status), event, content,
                                            &letter);
    }
    return;
  }
  std::string name;
  (void)topic.Render(event, &name);
  std::string envelope;
  outboxd::outbox::EncodeEnvelope(event, &envelope);
  OutboxEvent decoded;
  Check(outboxd::outbox::DecodeEnvelope(envelope, &decoded).ok());
  Check(decoded.id == event.id && decoded.payload == event.payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const auto topic = *outboxd::outbox::TopicTemplate::Parse("t.{aggregate_type}.{event_type}");
  const uint8_t mode = data[0];
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  OutboxEvent event;
  if ((mode & 1) == 0) {
    const absl::Status status = outboxd::outbox::MapLogicalMessage(rest, &event);
    AfterMapping(status, event, topic, rest, nullptr, nullptr);
    return 0;
  }
  outboxd::outbox::TableMapper mapper({outboxd::outbox::TableConfig{}});
  const outboxd::pgoutput::RelationMessage relation = Relation(mode >> 1);
  mapper.OnRelation(relation);
  outboxd::pgoutput::TupleData row;
  size_t start = 0;
  while (start <= rest.size()) {
    size_t end = rest.find('\xff', start);
    if (end == std::string_view::npos) end = rest.size();
    std::string_view field = rest.substr(start, end - start);
    TupleValue value{TupleValue::Kind::kText, field};
    if (!field.empty()) {
      switch (field[0]) {
        case '\x01': value = {TupleValue::Kind::kNull, {}}; break;
        case '\x02': value = {TupleValue::Kind::kUnchangedToast, {}}; break;
        case '\x03': value = {TupleValue::Kind::kBinary, field.substr(1)}; break;
        default: break;
      }
    }
    row.values.push_back(value);
    start = end + 1;
  }
  const outboxd::outbox::TableBinding* binding = mapper.Find(relation.oid);
  Check(binding != nullptr);
  const absl::Status status = mapper.MapInsert(*binding, row, &event);
  AfterMapping(status, event, topic, rest, &relation, &row);
  return 0;
}
