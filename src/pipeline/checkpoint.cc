#include "pipeline/checkpoint.h"

#include <optional>
#include <utility>

#include "common/format.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace outboxd::pipeline {
namespace {

constexpr size_t kMaxCheckpointBytes = 4096;

absl::StatusOr<Lsn> LsnField(const nlohmann::json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) {
    return absl::InvalidArgumentError(fmt::format("\"{}\" is missing or not a string", name));
  }
  absl::StatusOr<Lsn> lsn = Lsn::Parse(it->get<std::string>());
  if (!lsn.ok()) return absl::InvalidArgumentError(fmt::format("\"{}\": {}", name, lsn.status().message()));
  return *lsn;
}

std::string StringField(const nlohmann::json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string CheckpointKey(std::string_view system_id, std::string_view slot) {
  return fmt::format("{}/{}", system_id, slot);
}

std::string EncodeCheckpoint(const Checkpoint& checkpoint) {
  nlohmann::ordered_json json;
  json["system_id"] = checkpoint.system_id;
  json["timeline"] = checkpoint.timeline;
  json["slot"] = checkpoint.slot;
  json["transactional_id"] = checkpoint.transactional_id;
  json["lsn"] = checkpoint.lsn.ToString();
  if (checkpoint.partial_commit_lsn.valid()) {
    json["partial"] = {{"commit_lsn", checkpoint.partial_commit_lsn.ToString()},
                       {"through_lsn", checkpoint.partial_through.lsn.ToString()},
                       {"index", checkpoint.partial_through.index}};
  }
  return json.dump();
}

absl::StatusOr<Checkpoint> DecodeCheckpoint(std::string_view text) {
  auto invalid = [](std::string_view why) {
    return absl::InvalidArgumentError(fmt::format("not an outboxd checkpoint: {}", why));
  };
  if (text.size() > kMaxCheckpointBytes) return invalid(fmt::format("{} bytes, over {}", text.size(), kMaxCheckpointBytes));
  // Flat and small: a depth limit is implied by the size limit and the shape check.
  const nlohmann::json json = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return invalid("not a JSON object");
  Checkpoint checkpoint;
  checkpoint.system_id = StringField(json, "system_id");
  checkpoint.slot = StringField(json, "slot");
  checkpoint.transactional_id = StringField(json, "transactional_id");
  if (checkpoint.system_id.empty() || checkpoint.slot.empty()) return invalid("system_id or slot missing");
  if (auto it = json.find("timeline"); it != json.end() && it->is_number_unsigned() &&
                                       it->get<uint64_t>() <= UINT32_MAX) {
    checkpoint.timeline = static_cast<uint32_t>(it->get<uint64_t>());
  }
  absl::StatusOr<Lsn> lsn = LsnField(json, "lsn");
  if (!lsn.ok()) return invalid(std::string(lsn.status().message()));
  checkpoint.lsn = *lsn;
  if (auto partial = json.find("partial"); partial != json.end()) {
    if (!partial->is_object()) return invalid("\"partial\" is not an object");
    absl::StatusOr<Lsn> commit = LsnField(*partial, "commit_lsn");
    absl::StatusOr<Lsn> through = LsnField(*partial, "through_lsn");
    if (!commit.ok() || !through.ok()) return invalid("\"partial\" needs commit_lsn and through_lsn");
    auto index = partial->find("index");
    if (index == partial->end() || !index->is_number_unsigned() || index->get<uint64_t>() > UINT32_MAX) {
      return invalid("\"partial\".index is not a number");
    }
    checkpoint.partial_commit_lsn = *commit;
    checkpoint.partial_through = {*through, static_cast<uint32_t>(index->get<uint64_t>())};
  }
  return checkpoint;
}

bool NeedsTimelineHistory(const Checkpoint& checkpoint, uint32_t server_timeline) {
  return !checkpoint.empty() && checkpoint.timeline != 0 && checkpoint.timeline < server_timeline;
}

std::vector<CheckpointBound> TrustCheckpoint(Checkpoint* checkpoint, const ServerWal& server) {
  std::vector<CheckpointBound> bounds;
  if (checkpoint->empty()) return bounds;
  auto reach = [checkpoint] {
    return checkpoint->partial_commit_lsn.valid()
               ? fmt::format("{} (and a transaction in pieces committed at {})", checkpoint->lsn.ToString(),
                             checkpoint->partial_commit_lsn.ToString())
               : checkpoint->lsn.ToString();
  };
  auto bound = [&](std::string_view reason, Lsn at, std::string why) {
    checkpoint->BoundTo(at);
    bounds.push_back({reason, at, std::move(why)});
  };
  if (checkpoint->timeline != server.timeline) {
    std::optional<replication::TimelineSwitch> ancestor;
    if (NeedsTimelineHistory(*checkpoint, server.timeline) && server.history.ok()) {
      for (const replication::TimelineSwitch& entry : *server.history) {
        if (entry.timeline == checkpoint->timeline) ancestor = entry;
      }
    }
    if (ancestor.has_value()) {
      if (checkpoint->ReachesPast(ancestor->switch_point)) {
        bound(kBoundTimeline, ancestor->switch_point,
              fmt::format("the checkpoint was written on timeline {} and reaches {}, but the server's timeline {} "
                          "branched off timeline {} at {}: past that point the checkpoint describes WAL this server "
                          "does not have",
                          checkpoint->timeline, reach(), server.timeline, checkpoint->timeline,
                          ancestor->switch_point.ToString()));
      }
    } else if (NeedsTimelineHistory(*checkpoint, server.timeline) && !server.history.ok()) {
      bound(kBoundTimeline, Lsn::Invalid(),
            fmt::format("the checkpoint was written on timeline {}, and the history of the server's timeline {} "
                        "cannot be read ({}): where the two part is unknown",
                        checkpoint->timeline, server.timeline, server.history.status().message()));
    } else {
      bound(kBoundTimeline, Lsn::Invalid(),
            checkpoint->timeline == 0
                ? fmt::format("the checkpoint records no timeline, so it cannot be placed in the history of the "
                              "server's timeline {}",
                              server.timeline)
                : fmt::format("the checkpoint was written on timeline {}, which is not in the history of the "
                              "server's timeline {}: it describes another server's history",
                              checkpoint->timeline, server.timeline));
    }
  }
  if (!checkpoint->empty() && checkpoint->ReachesPast(server.position)) {
    bound(kBoundAheadOfServer, Lsn::Invalid(),
          fmt::format("the checkpoint reaches {}, past the server's WAL position {} (timeline {}): the server went "
                      "back to an earlier position (a restore of an older copy), and where its history parts from "
                      "the checkpoint's is unknown",
                      reach(), server.position.ToString(), server.timeline));
  }
  return bounds;
}

}  // namespace outboxd::pipeline
