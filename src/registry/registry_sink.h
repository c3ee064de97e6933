// RegistrySink: an EventSink in front of another that frames envelope values
// in Confluent's wire format (registry/wire_format.h) with the schema id of
// the topic's subject. Ids are resolved once per subject (at start for fixed
// topics, on first sight for templated ones) and cached: no registry call per
// event. A record whose id cannot be resolved is not produced at all: nothing
// goes out unframed.
//
// A topic first seen while streaming is looked up on a worker thread: the
// event loop never waits on the registry. Until its id is known, Produce
// answers backpressure (ResourceExhausted), so that the pipeline keeps
// sending status updates (the walsender's wal_sender_timeout) and honours a
// stop meanwhile; WakeFd wakes its loop when the answer arrives.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lru_map.h"
#include "kafka/event_sink.h"
#include "registry/wire_format.h"

namespace outboxd::registry {

// Subject -> schema id, talking to the registry when needed. Errors as
// SchemaRegistryClient's (UnavailableError: try again later). Called on the
// sink's worker thread (and by Prepare, on the caller's), one call at a time.
using SchemaIdResolver = std::function<absl::StatusOr<int32_t>(const std::string& subject)>;

// A schema id lookup that RegistrySink's worker runs (internal).
struct SchemaLookup {
  std::string topic;
  std::string subject;
  bool started = false;
  bool done = false;
  absl::StatusOr<int32_t> result;
};

class RegistrySink : public kafka::EventSink {
 public:
  // Records to `unframed_topic` (the dead-letter topic, whose values are of
  // several kinds named by a header) and records with envelope = false pass
  // through as they are. `cancel` (optional) ends a registry call in
  // progress: called when the sink is dropped during a lookup, so that
  // dropping it does not wait for a registry that does not answer.
  RegistrySink(std::unique_ptr<kafka::EventSink> inner, SubjectStrategy strategy, SchemaIdResolver resolve,
               std::string unframed_topic, std::function<void()> cancel = nullptr);
  // Ends the worker (cancelling a lookup in progress) and waits for it.
  ~RegistrySink() override;

  // Resolves the ids of these topics now, so that a registry that is down or
  // refuses the schema shows before streaming starts. Errors: AbortedError when
  // the registry is unreachable (transient), FailedPreconditionError otherwise
  // (incompatible schema, no such subject, access denied: fatal).
  absl::Status Prepare(const std::vector<std::string>& topics);

  void SetDeliveryHandler(kafka::DeliveryHandler handler) override;
  // Frames and produces. A topic whose id is not known yet: ResourceExhausted
  // while its lookup runs (bounded by [schema_registry] timeout), then, once,
  // the lookup's error as Prepare's (the next call asks the registry again).
  absl::Status Produce(const kafka::ProduceRequest& request) override;
  // Also takes note of a finished lookup (clears the wake descriptor).
  void Poll(absl::Duration timeout) override;
  absl::Status Flush(absl::Duration timeout) override { return inner_->Flush(timeout); }
  size_t InFlight() const override { return inner_->InFlight(); }
  absl::Status CheckReachable(absl::Duration timeout) override { return inner_->CheckReachable(timeout); }
  absl::Status FatalError() const override { return inner_->FatalError(); }
  // Readable when the producer has reports to serve (its own descriptor) or
  // a lookup finished: one epoll descriptor over both. The event loop waits on
  // it: a wrapper that hid the producer's would leave delivery reports to the
  // status timer.
  int WakeFd() const override { return epoll_fd_; }
  void PrepareTopic(std::string_view topic) override { inner_->PrepareTopic(topic); }
  void Purge() override { inner_->Purge(); }
  absl::Status BeginTransaction() override { return inner_->BeginTransaction(); }
  absl::Status CommitTransaction(absl::Duration timeout) override { return inner_->CommitTransaction(timeout); }
  absl::Status AbortTransaction(absl::Duration timeout) override { return inner_->AbortTransaction(timeout); }

  // Topics whose ids are kept; past it the least recently used is dropped
  // (and looked up again if it comes back).
  static constexpr size_t kMaxTopics = 1024;
  size_t cached_topics() const { return topic_ids_.size(); }

 private:
  // The status of a failed lookup for `topic`, as Prepare documents.
  static absl::Status LookupError(std::string_view subject, std::string_view topic, const absl::Status& error);
  // The id of `topic` when its lookup finished (the error once); nullopt while
  // it runs, after starting it if none does.
  std::optional<absl::StatusOr<int32_t>> TakeLookup(std::string_view topic);
  void Work();

  std::unique_ptr<kafka::EventSink> inner_;
  SubjectStrategy strategy_;
  SchemaIdResolver resolve_;
  std::string unframed_topic_;
  std::function<void()> cancel_;
  LruMap<int32_t> topic_ids_{kMaxTopics};
  std::string framed_;  // reused: the framed value of the record being produced

  // One lookup at a time: the pipeline waits for the record that needs it.
  std::mutex mu_;
  std::condition_variable wake_worker_;
  std::optional<SchemaLookup> lookup_;  // guarded by mu_
  bool stopping_ = false;         // guarded by mu_
  std::thread worker_;            // started at the first lookup
  int event_fd_ = -1;             // written by the worker when a lookup finished
  int epoll_fd_ = -1;
};

}  // namespace outboxd::registry
