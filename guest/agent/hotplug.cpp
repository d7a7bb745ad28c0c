// ResourceOnliner: counts and onlines CPUs and memory blocks through sysfs.
#include "guest/agent/hotplug.h"

#include <dirent.h>

#include <cstdlib>
#include <regex>
#include <thread>
#include <vector>

#include "base/file_util.h"

namespace chrys::guest {
namespace {

// Entries of `dir` named <prefix><digits> ("cpu3", "memory12").
std::vector<std::string> NumberedEntries(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return names;
  }
  const std::regex numbered("^" + prefix + "[0-9]+$");
  while (dirent* e = ::readdir(d)) {
    if (std::regex_match(e->d_name, numbered)) {
      names.emplace_back(e->d_name);
    }
  }
  ::closedir(d);
  return names;
}

std::string Trimmed(const base::Result<std::string>& text) {
  if (!text.ok()) {
    return "";
  }
  std::string s = *text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

}  // namespace

ResourceOnliner::ResourceOnliner(std::string system_dir) : system_dir_(std::move(system_dir)) {
  boot_memory_blocks_ = static_cast<int>(NumberedEntries(system_dir_ + "/memory", "memory").size());
}

base::Result<OnlineCounts> ResourceOnliner::OnlinePass() {
  OnlineCounts counts;
  for (const std::string& cpu : NumberedEntries(system_dir_ + "/cpu", "cpu")) {
    std::string online = system_dir_ + "/cpu/" + cpu + "/online";
    auto state = base::ReadFile(online, 64);
    if (!state.ok()) {
      // The boot CPU has no 'online' file: it cannot go offline.
      counts.vcpus += cpu == "cpu0" ? 1 : 0;
      continue;
    }
    if (Trimmed(state) != "1") {
      // Busy or failing now is retried on the next pass; WaitOnline reports what never came.
      if (!base::WriteInterfaceFile(online, "1").ok()) {
        continue;
      }
    }
    ++counts.vcpus;
  }
  std::string memory_dir = system_dir_ + "/memory";
  std::string block_hex = Trimmed(base::ReadFile(memory_dir + "/block_size_bytes", 64));
  unsigned long long block_bytes = block_hex.empty() ? 0 : std::strtoull(block_hex.c_str(), nullptr, 16);
  if (block_bytes == 0) {
    return base::FailedPrecondition("the guest kernel reports no memory block size (" + memory_dir +
                                    "/block_size_bytes): no memory hot-plug");
  }
  counts.memory_block_mib = static_cast<int>(block_bytes >> 20);
  int online_blocks = 0;
  for (const std::string& block : NumberedEntries(memory_dir, "memory")) {
    std::string state_path = memory_dir;
    state_path.append("/").append(block).append("/state");
    std::string state = Trimmed(base::ReadFile(state_path, 64));
    if (state != "online" && (state != "offline" || !base::WriteInterfaceFile(state_path, "online").ok())) {
      continue;
    }
    ++online_blocks;
  }
  counts.added_memory_mib = std::max(0, online_blocks - boot_memory_blocks_) * counts.memory_block_mib;
  return counts;
}

base::Result<OnlineCounts> ResourceOnliner::WaitOnline(int vcpus, int added_memory_mib,
                                                       std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(OnlineCounts counts, OnlinePass());
    if (counts.vcpus >= vcpus && counts.added_memory_mib >= added_memory_mib) {
      return counts;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return base::DeadlineExceeded("after " + std::to_string(timeout.count()) + " ms the guest has " +
                                    std::to_string(counts.vcpus) + " of " + std::to_string(vcpus) + " vCPUs and " +
                                    std::to_string(counts.added_memory_mib) + " of " +
                                    std::to_string(added_memory_mib) + " MiB of hot-plugged memory online");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace chrys::guest
