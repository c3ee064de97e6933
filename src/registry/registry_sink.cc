#include "registry/registry_sink.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <utility>

#include "common/format.h"
#include "fmt/format.h"

namespace outboxd::registry {

RegistrySink::RegistrySink(std::unique_ptr<kafka::EventSink> inner, SubjectStrategy strategy,
                           SchemaIdResolver resolve, std::string unframed_topic, std::function<void()> cancel)
    : inner_(std::move(inner)), strategy_(strategy), resolve_(std::move(resolve)),
      unframed_topic_(std::move(unframed_topic)), cancel_(std::move(cancel)) {
  // Level-triggered: readable as long as either descriptor is.
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (event_fd_ >= 0 && epoll_fd_ >= 0) {
    for (int fd : {event_fd_, inner_->WakeFd()}) {
      if (fd < 0) continue;
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.fd = fd;
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event);
    }
  }
}

RegistrySink::~RegistrySink() {
  bool running = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    running = lookup_.has_value() && lookup_->started && !lookup_->done;
  }
  wake_worker_.notify_all();
  if (running && cancel_) cancel_();
  if (worker_.joinable()) worker_.join();
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (event_fd_ >= 0) close(event_fd_);
}

void RegistrySink::SetDeliveryHandler(kafka::DeliveryHandler handler) {
  inner_->SetDeliveryHandler(std::move(handler));
}

absl::Status RegistrySink::LookupError(std::string_view subject, std::string_view topic,
                                       const absl::Status& error) {
  if (absl::IsUnavailable(error)) {
    return absl::AbortedError(fmt::format(
        "no schema id for subject {} (topic {}): {}; nothing was produced unframed, retrying", subject, topic,
        error.message()));
  }
  return absl::FailedPreconditionError(fmt::format(
      "the schema registry refused subject {} (topic {}): {}; outboxd stopped before producing to it: fix the "
      "subject's schema or compatibility in the registry, or [schema_registry] in the config",
      subject, topic, error.message()));
}

absl::Status RegistrySink::Prepare(const std::vector<std::string>& topics) {
  for (const std::string& topic : topics) {
    if (topic == unframed_topic_ || topic_ids_.Contains(topic)) continue;
    const std::string subject = SubjectName(strategy_, topic);
    absl::StatusOr<int32_t> id = resolve_(subject);
    if (!id.ok()) return LookupError(subject, topic, id.status());
    topic_ids_.Insert(topic, *id);
  }
  return absl::OkStatus();
}

std::optional<absl::StatusOr<int32_t>> RegistrySink::TakeLookup(std::string_view topic) {
  std::lock_guard<std::mutex> lock(mu_);
  if (lookup_.has_value()) {
    if (!lookup_->done || lookup_->topic != topic) return std::nullopt;  // one at a time
    absl::StatusOr<int32_t> result = std::move(lookup_->result);
    lookup_.reset();
    if (!result.ok()) return LookupError(SubjectName(strategy_, topic), topic, result.status());
    return result;
  }
  lookup_.emplace();
  lookup_->topic = std::string(topic);
  lookup_->subject = SubjectName(strategy_, topic);
  if (!worker_.joinable()) worker_ = std::thread([this] { Work(); });
  wake_worker_.notify_one();
  return std::nullopt;
}

void RegistrySink::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    wake_worker_.wait(lock, [this] { return stopping_ || (lookup_.has_value() && !lookup_->started); });
    if (stopping_) return;
    lookup_->started = true;
    const std::string subject = lookup_->subject;
    lock.unlock();
    absl::StatusOr<int32_t> id = resolve_(subject);
    lock.lock();
    lookup_->result = std::move(id);
    lookup_->done = true;
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof one);
  }
}

void RegistrySink::Poll(absl::Duration timeout) {
  uint64_t count;
  (void)!read(event_fd_, &count, sizeof count);  // nonblocking: clears it
  inner_->Poll(timeout);
}

absl::Status RegistrySink::Produce(const kafka::ProduceRequest& request) {
  if (!request.envelope || request.topic == unframed_topic_) return inner_->Produce(request);
  int32_t id;
  if (const int32_t* cached = topic_ids_.Get(request.topic); cached != nullptr) {
    id = *cached;
  } else {
    std::optional<absl::StatusOr<int32_t>> looked_up = TakeLookup(request.topic);
    if (!looked_up.has_value()) {
      return absl::ResourceExhaustedError(fmt::format(
          "waiting for the schema registry's id for subject {} (topic {})",
          SubjectName(strategy_, request.topic), request.topic));
    }
    if (!looked_up->ok()) return looked_up->status();
    id = **looked_up;
    topic_ids_.Insert(request.topic, id);
  }
  FrameEnvelope(id, request.value, &framed_);
  kafka::ProduceRequest framed = request;
  framed.value = framed_;
  return inner_->Produce(framed);
}

}  // namespace outboxd::registry
