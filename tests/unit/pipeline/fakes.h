// Test doubles for the pipeline: a scripted replication stream, a recording
// sink with controllable delivery reports, and a builder of pgoutput bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/bad_event.h"
#include "common/lsn.h"
#include "kafka/event_sink.h"
#include "replication/copy_frame.h"
#include "replication/replication_stream.h"

namespace outboxd::testing {

// Big-endian pgoutput message builder.
class PgBytes {
 public:
  PgBytes& Byte(char c) { data_.push_back(c); return *this; }
  PgBytes& Int16(uint16_t v) { return Raw(v, 2); }
  PgBytes& Int32(uint32_t v) { return Raw(v, 4); }
  PgBytes& Int64(uint64_t v) { return Raw(v, 8); }
  PgBytes& Str(const std::string& s) { data_ += s; data_.push_back('\0'); return *this; }
  PgBytes& Text(const std::string& s) { Byte('t'); Int32(s.size()); data_ += s; return *this; }
  PgBytes& Null() { return Byte('n'); }
  std::string bytes() const { return data_; }

 private:
  PgBytes& Raw(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) data_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  std::string data_;
};

inline std::string Begin(uint64_t final_lsn, uint32_t xid, int64_t commit_time = 1000) {
  return PgBytes().Byte('B').Int64(final_lsn).Int64(commit_time).Int32(xid).bytes();
}
inline std::string Commit(uint64_t commit_lsn, uint64_t end_lsn, int64_t commit_time = 1000) {
  return PgBytes().Byte('C').Byte(0).Int64(commit_lsn).Int64(end_lsn).Int64(commit_time).bytes();
}
// Relation with the given (name, type oid) columns.
inline std::string Relation(uint32_t oid, const std::string& schema, const std::string& name,
                            const std::vector<std::pair<std::string, uint32_t>>& columns) {
  PgBytes b;
  b.Byte('R').Int32(oid).Str(schema).Str(name).Byte('d').Int16(columns.size());
  for (const auto& [col, type] : columns) b.Byte(0).Str(col).Int32(type).Int32(0xffffffff);
  return b.bytes();
}
// Insert with text values; std::nullopt is NULL.
inline std::string Insert(uint32_t oid, const std::vector<std::optional<std::string>>& values) {
  PgBytes b;
  b.Byte('I').Int32(oid).Byte('N').Int16(values.size());
  for (const auto& v : values) v ? b.Text(*v) : b.Null();
  return b.bytes();
}
inline std::string Delete(uint32_t oid, const std::vector<std::optional<std::string>>& key) {
  PgBytes b;
  b.Byte('D').Int32(oid).Byte('K').Int16(key.size());
  for (const auto& v : key) v ? b.Text(*v) : b.Null();
  return b.bytes();
}
inline std::string Message(bool transactional, uint64_t lsn, const std::string& prefix,
                           const std::string& content) {
  PgBytes b;
  b.Byte('M').Byte(transactional ? 1 : 0).Int64(lsn).Str(prefix).Int32(content.size());
  return b.bytes() + content;
}

// Scripted stream: frames are handed out in order; an action runs at the next
// read that may wait, so the frames before it form one batch; when the script
// runs out, `on_empty` runs (e.g. to request a stop) and reads time out.
class FakeStream : public replication::ReplicationStream {
 public:
  explicit FakeStream(absl::Time* now) : now_(now) {}

  void PushData(uint64_t lsn, std::string pgoutput) {
    frames_.push_back(replication::EncodeXLogData(
        {.data_start = Lsn(lsn), .wal_end = Lsn(lsn), .send_time = 0, .data = pgoutput}));
  }
  void PushKeepalive(uint64_t wal_end, bool reply) {
    frames_.push_back(replication::EncodeKeepalive(
        {.wal_end = Lsn(wal_end), .send_time = 0, .reply_requested = reply}));
  }
  // Runs `fn` when the script reaches this point.
  void PushAction(std::function<void()> fn) { frames_.push_back(std::move(fn)); }
  // Holds the script at this point (reads find nothing, the pipeline goes on
  // serving Kafka) until `open` holds or `timeout` of real time has passed.
  void PushGate(std::function<bool()> open, absl::Duration timeout = absl::Seconds(30)) {
    frames_.push_back(Gate{std::move(open), timeout, absl::InfiniteFuture()});
  }

  absl::StatusOr<bool> ReadFrame(absl::Duration timeout, std::string_view* frame) override {
    ++reads_;
    // An action happens between wakes: a read that must not wait (the
    // pipeline draining what is ready) ends the batch before it.
    if (timeout == absl::ZeroDuration() && !frames_.empty() &&
        std::holds_alternative<std::function<void()>>(frames_.front())) {
      return false;
    }
    while (!frames_.empty()) {
      if (auto* gate = std::get_if<Gate>(&frames_.front())) {
        if (gate->deadline == absl::InfiniteFuture()) gate->deadline = absl::Now() + gate->timeout;
        if (!gate->open() && absl::Now() < gate->deadline) {
          *now_ += timeout;
          return false;
        }
        frames_.pop_front();
        continue;
      }
      auto next = std::move(frames_.front());
      frames_.pop_front();
      if (auto* fn = std::get_if<std::function<void()>>(&next)) {
        (*fn)();
        continue;
      }
      current_ = std::get<std::string>(std::move(next));
      *frame = current_;
      return true;
    }
    if (on_empty) on_empty();
    *now_ += timeout;
    if (!error_when_empty.ok()) return error_when_empty;
    return false;
  }

  absl::Status SendStatus(const replication::StandbyStatus& status) override {
    statuses.push_back(status);
    return absl::OkStatus();
  }

  Lsn last_flushed() const { return statuses.empty() ? Lsn() : statuses.back().flushed; }
  Lsn max_flushed() const {
    Lsn max;
    for (const auto& s : statuses) max = std::max(max, s.flushed);
    return max;
  }

  std::vector<replication::StandbyStatus> statuses;
  std::function<void()> on_empty;
  absl::Status error_when_empty = absl::OkStatus();
  int reads_ = 0;

 private:
  struct Gate {
    std::function<bool()> open;
    absl::Duration timeout;
    absl::Time deadline;  // real time, set when the script first reaches the gate
  };
  absl::Time* now_;
  std::deque<std::variant<std::string, std::function<void()>, Gate>> frames_;
  std::string current_;
};

struct Produced {
  std::string topic, key, value;
  std::vector<std::pair<std::string, std::string>> headers;
  uint64_t token;
};

// Recording sink. Records wait for Deliver*/auto_ack; a queue limit makes
// Produce answer ResourceExhausted until reports are served.
class FakeSink : public kafka::EventSink {
 public:
  void SetDeliveryHandler(kafka::DeliveryHandler handler) override { handler_ = std::move(handler); }
  absl::Status Produce(const kafka::ProduceRequest& r) override {
    if (!produce_error.ok()) return produce_error;
    if (produce_hook) {
      if (absl::Status refused = produce_hook(r); !refused.ok()) return refused;
    }
    if (queue_limit > 0 && pending_.size() >= queue_limit) {
      ++queue_full_answers;
      return absl::ResourceExhaustedError("queue full");
    }
    Produced p{std::string(r.topic), std::string(r.key), std::string(r.value), {}, r.token};
    if (r.headers) {
      for (const auto& [k, v] : *r.headers) p.headers.emplace_back(std::string(k), std::string(v));
    }
    produced.push_back(p);
    pending_.push_back(produced.size() - 1);
    return absl::OkStatus();
  }
  void Poll(absl::Duration) override {
    ++polls;
    if (on_poll) on_poll();
    if (auto_ack) DeliverAll(absl::OkStatus());
  }
  absl::Status Flush(absl::Duration) override {
    ++flushes;
    if (auto_ack || ack_on_flush) DeliverAll(absl::OkStatus());
    return pending_.empty() ? absl::OkStatus() : absl::DeadlineExceededError("pending");
  }
  size_t InFlight() const override { return pending_.size(); }
  absl::Status CheckReachable(absl::Duration) override { return absl::OkStatus(); }
  absl::Status FatalError() const override { return fatal; }

  // Reports the i-th pending record (0 = oldest) with `status`.
  void DeliverAt(size_t i, const absl::Status& status) {
    const size_t index = pending_[i];
    pending_.erase(pending_.begin() + i);
    handler_(produced[index].token, status);
  }
  void DeliverAll(const absl::Status& status) {
    while (!pending_.empty()) DeliverAt(0, status);
  }
  size_t pending() const { return pending_.size(); }

  std::vector<Produced> produced;
  std::function<void()> on_poll;
  bool auto_ack = false;
  bool ack_on_flush = false;
  size_t queue_limit = 0;
  int queue_full_answers = 0;
  int polls = 0;
  int flushes = 0;
  absl::Status produce_error = absl::OkStatus();
  // Per-record refusals at produce time (non-OK: refused, no report).
  std::function<absl::Status(const kafka::ProduceRequest&)> produce_hook;
  absl::Status fatal = absl::OkStatus();

 private:
  kafka::DeliveryHandler handler_;
  std::vector<size_t> pending_;  // indexes into `produced`, oldest first
};

}  // namespace outboxd::testing
