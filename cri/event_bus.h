// EventBus fans container lifecycle events out to every GetContainerEvents stream, with a bounded queue each.
#pragma once

#include <chrono>
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
    // The next event, or nullopt after `timeout` (so the caller can check for cancellation) or at once when the
    // bus is closed and nothing is left queued.
    std::optional<::runtime::v1::ContainerEventResponse> Next(std::chrono::milliseconds timeout);
    size_t dropped() const { return dropped_; }
    // True once the bus closed: the stream should end after what Next still returns.
    bool closed();

   private:
    friend class EventBus;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<::runtime::v1::ContainerEventResponse> queue_;
    size_t dropped_ = 0;
    bool closed_ = false;
  };

  std::shared_ptr<Subscription> Subscribe();
  void Unsubscribe(const std::shared_ptr<Subscription>& subscription);
  void Publish(const ::runtime::v1::ContainerEventResponse& event);
  // Ends every subscription (now and later): waiting Next calls return, so streams end and the server can stop.
  void Close();

  // Closes every EventBus of the process: chrysd's shutdown path, which does not own the runtime service's bus.
  static void CloseAll();

  EventBus();
  ~EventBus();
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

 private:
  std::mutex mutex_;
  std::set<std::shared_ptr<Subscription>> subscribers_;
  bool closed_ = false;
};

}  // namespace chrys::cri
