// libFuzzer target for the timeline history parser (src/replication/timeline.h):
// any bytes parse to a history or an error, never a crash; and whatever parses
// is a proper history of `current`: timelines increasing and below it, switch
// points in order, no more entries than the bound.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "replication/timeline.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const uint32_t current : {2u, 9u, 4294967295u}) {
    auto history = outboxd::replication::ParseTimelineHistory(bytes, current);
    if (!history.ok()) continue;
    Check(history->size() <= outboxd::replication::kMaxTimelineHistoryEntries);
    for (size_t i = 0; i < history->size(); ++i) {
      Check((*history)[i].timeline > 0 && (*history)[i].timeline < current);
      if (i > 0) {
        Check((*history)[i - 1].timeline < (*history)[i].timeline);
        Check((*history)[i - 1].switch_point <= (*history)[i].switch_point);
      }
    }
  }
  return 0;
}
