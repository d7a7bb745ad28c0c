// EventBus fans container lifecycle events out to every GetContainerEvents stream, with a bounded queue each.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "cri/proto/api.pb.h"

namespace chrys::cri {

class EventBus {
 public:
  // A subscriber that falls this far behind loses the oldest events rather than blocking chrysd.
  static constexpr size_t kMaxQueued = 1024;

  class Subscription {
   public:
    // The next event, or nullopt after `timeout` (so the caller can check for cancellation).
    std::optional<::runtime::v1::ContainerEventResponse> Next(std::chrono::milliseconds timeout);
    size_t dropped() const { return dropped_; }

   private:
    friend class EventBus;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<::runtime::v1::ContainerEventResponse> queue_;
    size_t dropped_ = 0;
  };

  std::shared_ptr<Subscription> Subscribe();
  void Unsubscribe(const std::shared_ptr<Subscription>& subscription);
  void Publish(const ::runtime::v1::ContainerEventResponse& event);

 private:
  std::mutex mutex_;
  std::set<std::shared_ptr<Subscription>> subscribers_;
};

}  // namespace chrys::cri
