// TestGuest: a tiny busybox guest (kernel modules + a line-protocol agent on the virtio-serial port) and host
// helpers (netns + multi-queue tap, EROFS images) for the runtime e2e tests and the sandbox benchmark.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "runtime/sandbox.h"

namespace chrys::runtime::testing {

// The Debian cloud kernel under /boot and its version; empty when missing.
std::string FindCloudKernel();

// The marker the test guest's /init prints on the console right before its agent starts listening.
inline constexpr const char* kGuestUpMarker = "CHRYS-TEST-GUEST-UP";

enum class GuestFlavor {
  kAgent,       // modules, agent loop on the virtio-serial port
  kMarkerOnly,  // prints the marker and powers off (bare-QEMU benchmark peer)
  kNeverReady,  // boots, prints something, never serves the agent
};

// Builds the initramfs into `dir` (busybox-static, the needed modules of `kernel_version`, /init).
base::Result<std::string> BuildTestInitramfs(const std::string& dir, const std::string& kernel_version,
                                             GuestFlavor flavor);

// A line protocol over the agent socket: "<id> CMD args" → "<id> reply". Lines with other ids are stale
// replies to probes the guest read late, and are skipped.
class LineAgentConnector : public AgentConnector {
 public:
  base::Result<bool> Probe(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                           std::chrono::milliseconds patience) override;
  base::Status Shutdown(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                        std::chrono::milliseconds timeout) override;
  void Forget(const std::string& sandbox_id) override;
  void Rename(const std::string& from, const std::string& to) override;
  // The line-protocol guest has no hot-plug: it is never a warm VM.
  base::Status OnlineResources(const std::string& sandbox_id, const AgentEndpoint& endpoint, int vcpus,
                               int added_memory_mib, std::chrono::milliseconds timeout) override;
  // Nothing runs in the background of the line-protocol guest: ready is settled.
  base::Result<bool> Settled(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                             std::chrono::milliseconds patience) override;
  // The line-protocol guest is never restored from a template.
  base::Status Resume(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                      std::chrono::milliseconds timeout) override;
  base::Status PrepareTemplate(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                               std::chrono::milliseconds timeout) override;

  // Sends one command and returns the reply text after the id.
  base::Result<std::string> Call(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                 const std::string& command, std::chrono::milliseconds timeout);

 private:
  struct Conn {
    base::UniqueFd fd;
    std::string buffer;
  };
  std::mutex mu_;
  std::map<std::string, Conn> conns_;
  uint64_t next_id_ = 1;
};

// A network namespace with one multi-queue tap (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_MULTI_QUEUE) inside; removed on
// destruction. Stands in for netcni's tap link until that lands.
class TestNetns {
 public:
  static base::Result<std::unique_ptr<TestNetns>> Create(const std::string& name, int queues);
  ~TestNetns();
  const std::string& path() const { return path_; }
  std::vector<int> queue_fds() const;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::string path_;
  std::vector<base::UniqueFd> queues_;
};

// Opens `queues` queue fds of multi-queue tap `tap_name` inside the namespace at `netns_path` (creating it).
base::Result<std::vector<base::UniqueFd>> OpenTapQueues(const std::string& netns_path, const std::string& tap_name,
                                                        int queues);

// mkfs.erofs over a directory holding `files` (name → content, made executable).
base::Result<std::string> BuildErofsImage(const std::string& work_dir, const std::string& name,
                                          const std::map<std::string, std::string>& files);

// Processes whose command line mentions `needle` (zombies excluded).
std::vector<pid_t> ProcessesMentioning(const std::string& needle);

}  // namespace chrys::runtime::testing
