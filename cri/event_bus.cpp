#include "cri/event_bus.h"

namespace chrys::cri {

std::optional<::runtime::v1::ContainerEventResponse> EventBus::Subscription::Next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !queue_.empty(); })) {
    return std::nullopt;
  }
  auto event = std::move(queue_.front());
  queue_.pop_front();
  return event;
}

std::shared_ptr<EventBus::Subscription> EventBus::Subscribe() {
  auto subscription = std::make_shared<Subscription>();
  std::lock_guard lock(mutex_);
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

}  // namespace chrys::cri
