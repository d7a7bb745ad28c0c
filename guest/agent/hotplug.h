// ResourceOnliner: brings hot-plugged vCPUs and memory blocks online through sysfs (a warm VM grown to its pod).
#pragma once

#include <chrono>
#include <string>

#include "base/result.h"

namespace chrys::guest {

// What is online now: CPUs, and memory blocks beyond those present when the onliner was made.
struct OnlineCounts {
  int vcpus = 0;
  int added_memory_mib = 0;
  int memory_block_mib = 0;
};

class ResourceOnliner {
 public:
  // `system_dir` is sysfs's /sys/devices/system (a test points it at a tree of its own). Counts the memory
  // blocks present now as the boot memory.
  explicit ResourceOnliner(std::string system_dir = "/sys/devices/system");

  // One pass: every CPU and memory block that is offline is asked to come online; returns what is online after.
  base::Result<OnlineCounts> OnlinePass();

  // Repeats OnlinePass until `vcpus` CPUs and `added_memory_mib` MiB beyond the boot memory are online, or
  // `timeout` passes (DEADLINE_EXCEEDED saying what is missing: the devices never appeared, or would not online).
  base::Result<OnlineCounts> WaitOnline(int vcpus, int added_memory_mib, std::chrono::milliseconds timeout);

  int boot_memory_blocks() const { return boot_memory_blocks_; }

 private:
  std::string system_dir_;
  int boot_memory_blocks_ = 0;
};

}  // namespace chrys::guest
