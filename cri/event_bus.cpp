#include "cri/event_bus.h"

namespace chrys::cri {

namespace {

// Every live bus, for CloseAll. A function-local static: it must outlive buses destroyed at exit.
std::mutex& RegistryMutex() {
  static std::mutex mutex;
  return mutex;
}
std::set<EventBus*>& Registry() {
  static std::set<EventBus*> buses;
  return buses;
}

}  // namespace

EventBus::EventBus() {
  std::lock_guard lock(RegistryMutex());
  Registry().insert(this);
}

EventBus::~EventBus() {
  std::lock_guard lock(RegistryMutex());
  Registry().erase(this);
}

void EventBus::CloseAll() {
  std::lock_guard lock(RegistryMutex());
  for (EventBus* bus : Registry()) {
    bus->Close();
  }
}

std::optional<::runtime::v1::ContainerEventResponse> EventBus::Subscription::Next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !queue_.empty() || closed_; }) || queue_.empty()) {
    return std::nullopt;
  }
  auto event = std::move(queue_.front());
  queue_.pop_front();
  return event;
}

bool EventBus::Subscription::closed() {
  std::lock_guard lock(mutex_);
  return closed_;
}

std::shared_ptr<EventBus::Subscription> EventBus::Subscribe() {
  auto subscription = std::make_shared<Subscription>();
  std::lock_guard lock(mutex_);
  if (closed_) {
    subscription->closed_ = true;
    return subscription;
  }
  subscribers_.insert(subscription);
  return subscription;
}

void EventBus::Unsubscribe(const std::shared_ptr<Subscription>& subscription) {
  std::lock_guard lock(mutex_);
  subscribers_.erase(subscription);
}

void EventBus::Publish(const ::runtime::v1::ContainerEventResponse& event) {
  std::lock_guard lock(mutex_);
  for (const auto& subscriber : subscribers_) {
    std::lock_guard sub_lock(subscriber->mutex_);
    if (subscriber->queue_.size() >= kMaxQueued) {
      subscriber->queue_.pop_front();
      ++subscriber->dropped_;
    }
    subscriber->queue_.push_back(event);
    subscriber->ready_.notify_one();
  }
}

void EventBus::Close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  for (const auto& subscriber : subscribers_) {
    std::lock_guard sub_lock(subscriber->mutex_);
    subscriber->closed_ = true;
    subscriber->ready_.notify_all();
  }
  subscribers_.clear();
}

}  // namespace chrys::cri
