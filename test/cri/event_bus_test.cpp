// EventBus: fan-out with a bounded queue, and Close ending every subscription so chrysd can stop promptly.
#include "cri/event_bus.h"

#include <gtest/gtest.h>

#include <future>

namespace chrys::cri {
namespace {

::runtime::v1::ContainerEventResponse Event(const std::string& id) {
  ::runtime::v1::ContainerEventResponse event;
  event.set_container_id(id);
  return event;
}

TEST(EventBus, CloseWakesAWaitingSubscriberAfterItsQueuedEvents) {
  EventBus bus;
  auto sub = bus.Subscribe();
  bus.Publish(Event("c1"));
  auto waiter = std::async(std::launch::async, [&] {
    std::vector<std::string> got;
    // An hour-long wait: only Close can end it within the bound below.
    while (auto event = sub->Next(std::chrono::hours(1))) {
      got.push_back(event->container_id());
    }
    return got;
  });
  ASSERT_EQ(waiter.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);  // still waiting
  bus.Close();
  ASSERT_EQ(waiter.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(waiter.get(), std::vector<std::string>{"c1"});
  EXPECT_TRUE(sub->closed());
  // Late subscribers get a closed subscription at once.
  auto late = bus.Subscribe();
  EXPECT_TRUE(late->closed());
  EXPECT_FALSE(late->Next(std::chrono::hours(1)).has_value());
}

TEST(EventBus, CloseAllReachesEveryBusAndSlowSubscribersDropTheOldest) {
  EventBus a;
  EventBus b;
  auto sa = a.Subscribe();
  auto sb = b.Subscribe();
  for (size_t i = 0; i < EventBus::kMaxQueued + 3; ++i) {
    a.Publish(Event(std::to_string(i)));
  }
  EXPECT_EQ(sa->dropped(), 3u);
  EXPECT_EQ(sa->Next(std::chrono::milliseconds(0))->container_id(), "3");
  EventBus::CloseAll();
  EXPECT_TRUE(sa->closed());
  EXPECT_TRUE(sb->closed());
  EXPECT_FALSE(sb->Next(std::chrono::hours(1)).has_value());
}

}  // namespace
}  // namespace chrys::cri
