#include "replication/state_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "common/format.h"
#include "common/status_macros.h"
#include "fmt/format.h"

namespace outboxd::replication {
namespace {

constexpr std::string_view kHeader =
    "# outboxd state file: the slot outboxd streamed from and how far it confirmed.\n"
    "# Written atomically by outboxd; do not edit. Deleting it turns off gap detection for one start.\n";

absl::Status ErrnoError(std::string_view what, const std::string& path) {
  const int err = errno;
  const std::string message = fmt::format("{} {}: {}", what, path, std::strerror(err));
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(message);
  if (err == ENOENT) return absl::NotFoundError(message);
  return absl::UnavailableError(message);
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string Since(const SavedState& saved) {
  return saved.confirmed_lsn.valid() ? fmt::format("after LSN {}", saved.confirmed_lsn.ToString())
                                     : std::string("since outboxd last ran");
}

}  // namespace

std::string EncodeState(const SavedState& state) {
  return fmt::format("{}version=1\nsystem_identifier={}\ntimeline={}\nslot={}\nconfirmed_lsn={}\n{}", kHeader,
                     state.system_id, state.timeline, state.slot, state.confirmed_lsn.ToString(),
                     state.on_standby ? "on_standby=1\n" : "");
}

absl::StatusOr<SavedState> DecodeState(std::string_view text) {
  SavedState state;
  bool have_version = false, have_system = false, have_timeline = false, have_slot = false, have_lsn = false;
  int line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = Trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      return absl::DataLossError(fmt::format("state file line {}: expected key=value, got \"{}\"", line_no, line));
    }
    const std::string_view key = Trim(line.substr(0, eq));
    const std::string_view value = Trim(line.substr(eq + 1));
    if (key == "version") {
      if (value != "1") {
        return absl::DataLossError(fmt::format("state file line {}: unknown version \"{}\"", line_no, value));
      }
      have_version = true;
    } else if (key == "system_identifier") {
      uint64_t id = 0;
      if (!absl::SimpleAtoi(std::string(value), &id)) {
        return absl::DataLossError(
            fmt::format("state file line {}: system_identifier \"{}\" is not a number", line_no, value));
      }
      state.system_id = std::string(value);
      have_system = true;
    } else if (key == "timeline") {
      if (!absl::SimpleAtoi(std::string(value), &state.timeline)) {
        return absl::DataLossError(fmt::format("state file line {}: timeline \"{}\" is not a number", line_no, value));
      }
      have_timeline = true;
    } else if (key == "slot") {
      if (value.empty()) return absl::DataLossError(fmt::format("state file line {}: empty slot", line_no));
      state.slot = std::string(value);
      have_slot = true;
    } else if (key == "confirmed_lsn") {
      absl::StatusOr<Lsn> lsn = Lsn::Parse(value);
      if (!lsn.ok()) {
        return absl::DataLossError(fmt::format("state file line {}: confirmed_lsn: {}", line_no,
                                               std::string(lsn.status().message())));
      }
      state.confirmed_lsn = *lsn;
      have_lsn = true;
    } else if (key == "on_standby") {
      if (value != "0" && value != "1") {
        return absl::DataLossError(fmt::format("state file line {}: on_standby \"{}\" is not 0 or 1", line_no, value));
      }
      state.on_standby = value == "1";
    } else {
      return absl::DataLossError(fmt::format("state file line {}: unknown key \"{}\"", line_no, key));
    }
  }
  if (!(have_version && have_system && have_timeline && have_slot && have_lsn)) {
    return absl::DataLossError(
        "state file is incomplete: it needs version, system_identifier, timeline, slot and confirmed_lsn");
  }
  return state;
}

std::string StateFilePath(std::string_view dir, std::string_view slot) {
  std::string path(dir);
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return fmt::format("{}/{}.state", path, slot);
}

absl::StatusOr<std::optional<SavedState>> ReadStateFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<SavedState>();
    return ErrnoError("cannot open the state file", path);
  }
  std::string text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status error = ErrnoError("cannot read the state file", path);
      close(fd);
      return error;
    }
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > (1 << 16)) {
      close(fd);
      return absl::DataLossError(fmt::format("state file {} is larger than 64 KiB: not an outboxd state file", path));
    }
  }
  close(fd);
  absl::StatusOr<SavedState> state = DecodeState(text);
  if (!state.ok()) {
    return absl::DataLossError(fmt::format(
        "{} ({}): outboxd cannot tell whether its slot lost events; move the file away to start without gap "
        "detection once, or restore it",
        path, state.status().message()));
  }
  return std::optional<SavedState>(*std::move(state));
}

absl::Status WriteStateFile(const std::string& path, const SavedState& state) {
  const std::string tmp = path + ".tmp";
  const std::string text = EncodeState(state);
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status error = ErrnoError("cannot write", tmp);
      close(fd);
      return error;
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    absl::Status error = ErrnoError("cannot fsync", tmp);
    close(fd);
    return error;
  }
  if (close(fd) != 0) return ErrnoError("cannot close", tmp);
  if (rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("cannot rename the state file to", path);
  // The rename itself is durable only once the directory is.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoError("cannot open the state directory", dir);
  const int rc = fsync(dfd);
  close(dfd);
  if (rc != 0) return ErrnoError("cannot fsync the state directory", dir);
  return absl::OkStatus();
}

StateRecorder::StateRecorder(std::string path, absl::Duration min_interval, std::function<absl::Time()> clock)
    : path_(std::move(path)), min_interval_(min_interval), clock_(std::move(clock)) {}

absl::Status StateRecorder::Begin(SavedState state) {
  state_ = std::move(state);
  return Write();
}

absl::Status StateRecorder::OnConfirmed(Lsn lsn) {
  if (!state_.has_value()) return absl::OkStatus();
  if (lsn > state_->confirmed_lsn) {
    state_->confirmed_lsn = lsn;
    dirty_ = true;
  }
  // A position held back by the throttle is written by a later call, also
  // one that repeats it (the pipeline repeats it with each status update).
  if (!dirty_ || clock_() - last_write_ < min_interval_) return absl::OkStatus();
  return Write();
}

absl::Status StateRecorder::Flush() { return dirty_ ? Write() : absl::OkStatus(); }

absl::Status StateRecorder::Write() {
  RETURN_IF_ERROR(WriteStateFile(path_, *state_));
  dirty_ = false;
  last_write_ = clock_();
  ++writes_;
  return absl::OkStatus();
}

absl::Status MarkGap(absl::Status status, bool invalidated) {
  status.SetPayload(kGapPayload, absl::Cord("1"));
  if (invalidated) status.SetPayload(kSlotInvalidatedPayload, absl::Cord("1"));
  return status;
}

bool IsGapUpstream(const absl::Status& status) { return status.GetPayload(kGapPayload).has_value(); }
bool IsSlotInvalidated(const absl::Status& status) {
  return status.GetPayload(kSlotInvalidatedPayload).has_value();
}

absl::StatusOr<SlotAction> DecideSlotAction(const SlotFacts& facts, const std::optional<SavedState>& saved) {
  // A state file of another slot says nothing about this one.
  const bool ours = saved.has_value() && saved->slot == facts.slot;
  if (facts.found && facts.invalidation.invalidated()) {
    if (facts.accept_gap) return SlotAction::kRecreate;
    const std::string prevent = InvalidationPrevention(facts.invalidation);
    return MarkGap(
        absl::FailedPreconditionError(fmt::format(
            "replication slot \"{}\" was invalidated by PostgreSQL ({}): the slot can no longer decode, so "
            "events committed {} may never reach Kafka (a gap upstream). outboxd never recreates the slot by "
            "itself: republish the missing events from the outbox table, then restart once with --accept-gap, "
            "which drops and recreates the slot and streams from now on.{}",
            facts.slot, DescribeInvalidation(facts.invalidation, facts.invalidation_setting),
            ours ? Since(*saved) : std::string("since its confirmed position"),
            prevent.empty() ? std::string() : fmt::format(" To keep it from happening again: {}", prevent))),
        /*invalidated=*/true);
  }
  if (ours && saved->system_id != facts.system_id) {
    if (facts.accept_gap) return facts.found ? SlotAction::kUse : SlotAction::kCreate;
    return MarkGap(
        absl::FailedPreconditionError(fmt::format(
            "the server is PostgreSQL system {}, but outboxd last streamed slot \"{}\" from system {} (timeline "
            "{}): this is another cluster (restored from a backup, or a failover to a server that is not a "
            "physical copy), so events committed on the old one {} may never reach Kafka (a possible gap "
            "upstream). Check the [source] dsn; if this server is right, republish the missing events from the "
            "outbox table, then restart once with --accept-gap to stream from this server",
            facts.system_id, facts.slot, saved->system_id, saved->timeline, Since(*saved))),
        /*invalidated=*/false);
  }
  // A slot is safe to resume on a new timeline when nothing it confirmed can lie on a branch
  // the server left: it was kept in step with the old primary, it stands at or behind what we
  // confirmed, everything it confirmed lies before the point where our timeline left the
  // server's history, or it is the promoted standby's own slot (outboxd decoded there).
  const bool new_timeline = ours && facts.found && saved->timeline != 0 && facts.timeline != 0 &&
                            facts.timeline != saved->timeline;
  const bool kept = facts.synced ||
                    (facts.confirmed_flush.valid() && facts.confirmed_flush <= saved->confirmed_lsn) ||
                    (facts.history_switch.valid() && facts.confirmed_flush.valid() &&
                     facts.confirmed_flush <= facts.history_switch) ||
                    (saved.has_value() && saved->on_standby && !facts.in_recovery);
  if (new_timeline && !kept && !facts.accept_gap) {
    return MarkGap(
        absl::FailedPreconditionError(fmt::format(
            "the server is on timeline {} of system {}, but outboxd last streamed slot \"{}\" on timeline {}{}: "
            "the server was promoted, restored or rewound, and this slot was not synchronized from the old "
            "primary (pg_replication_slots.synced is false) and stands at {}, past the {} outboxd confirmed{}, so "
            "events committed {} may never reach Kafka (a possible gap upstream). On PostgreSQL 17+ use failover "
            "slots ([source] failover = true, docs/operations.md \"Database failover\"); now republish the missing events "
            "from the outbox table, then restart once with --accept-gap",
            facts.timeline, facts.system_id, facts.slot, saved->timeline,
            saved->on_standby ? " of a hot standby, and the server is still a standby (it follows a new primary)"
                              : "",
            facts.confirmed_flush.ToString(), saved->confirmed_lsn.ToString(),
            facts.history_switch.valid()
                ? fmt::format(" and the point {} where timeline {} left this server's history",
                              facts.history_switch.ToString(), saved->timeline)
                : std::string(),
            Since(*saved))),
        /*invalidated=*/false);
  }
  if (facts.found) return SlotAction::kUse;
  if (ours && !facts.accept_gap) {
    return MarkGap(
        absl::FailedPreconditionError(fmt::format(
            "replication slot \"{}\" does not exist in database \"{}\", but outboxd streamed from it before "
            "(state file: system {}, confirmed up to LSN {}): the slot was dropped, so events committed {} "
            "may never reach Kafka (a gap upstream). Republish them from the outbox table (rows committed "
            "since then), then restart once with --accept-gap to create the slot anew",
            facts.slot, facts.database, saved->system_id, saved->confirmed_lsn.ToString(), Since(*saved))),
        /*invalidated=*/false);
  }
  if (ours || facts.create_slot) return SlotAction::kCreate;  // ours: --accept-gap
  return absl::FailedPreconditionError(fmt::format(
      "replication slot \"{}\" does not exist in database \"{}\" and [source] create_slot = false: create it "
      "with SELECT pg_create_logical_replication_slot('{}', 'pgoutput'), or set create_slot = true",
      facts.slot, facts.database, facts.slot));
}

}  // namespace outboxd::replication
