// PodEnv runs one real chrysd for pod tests: a private CNI network (own bridge and subnet), the build-tree guest,
// a busybox test image imported into its store, and helpers that drive pods and containers over the CRI socket.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "cri/client/cri_client.h"
#include "cri/proto/api.grpc.pb.h"
#include "e2e/cri/chrysd_process.h"

namespace chrys::e2e {

namespace v1 = ::runtime::v1;

// What a failed or finished operation may leave on the host: netns, VMM processes, state records.
struct HostTraces {
  std::set<std::string> netns;                 // ours under /run/netns: named after our pods or on our bridge
  std::set<pid_t> vmm_pids;                    // qemu/cloud-hypervisor processes referring to chrysd's dirs
  std::map<std::string, std::string> records;  // regular files under chrysd's state and run dirs
  std::set<std::string> mounts;                // mount points under chrysd's state and run dirs
};

// Lines describing what `after` holds beyond `before` (new netns, VMM processes, records, mounts); empty when none.
std::string NewTraces(const HostTraces& before, const HostTraces& after);

class PodEnv {
 public:
  // Starts chrysd with the network, guest and image; the error says which part failed.
  static base::Result<std::unique_ptr<PodEnv>> Create(std::vector<std::string> extra_chrysd_args = {});
  // Removes every pod (CRI), stops chrysd, then kills by pid any VMM of ours still alive and deletes the
  // bridge, netns and directories it made.
  ~PodEnv();
  PodEnv(const PodEnv&) = delete;
  PodEnv& operator=(const PodEnv&) = delete;

  ChrysdProcess& chrysd() { return *chrysd_; }
  v1::RuntimeService::Stub& runtime() { return *runtime_; }
  v1::ImageService::Stub& images() { return *images_; }
  cri::CriClient& client() { return *client_; }

  const std::string& root() const { return root_; }
  const std::string& image() const { return image_ref_; }
  // The same busybox layer with USER app:staff (uid 1000, gid 50 in its /etc/passwd and /etc/group).
  const std::string& app_user_image() const { return app_image_ref_; }
  // The OCI layout holding image(), app_user_image() and pause_image(), a busybox that sleeps forever (a sandbox
  // image for containerd; chrysd does not get it).
  std::string image_layout() const { return root_ + "/image"; }
  const std::string& pause_image() const { return pause_image_ref_; }
  const std::string& bridge() const { return bridge_; }
  const std::string& subnet() const { return subnet_; }

  // chrysd crashes (SIGKILL) or stops (SIGTERM) and starts again on the same state; pods keep running.
  base::Status Restart(bool crash);

  // A pod config with unique uid, hostname = name and a log directory under root().
  v1::PodSandboxConfig PodConfig(const std::string& name, uint32_t attempt = 0) const;
  // A container config running `args` in the test image, logging to <name>.log.
  v1::ContainerConfig ContainerConfig(const std::string& name, const std::vector<std::string>& args) const;

  // RunPodSandbox; the id is remembered so teardown removes it even when a test fails half-way. Thread-safe.
  base::Result<std::string> RunPod(const v1::PodSandboxConfig& config, const std::string& handler = "");
  base::Result<std::string> CreateContainer(const std::string& pod_id, const v1::ContainerConfig& config,
                                            const v1::PodSandboxConfig& pod_config);
  base::Status StartContainer(const std::string& id);
  base::Result<v1::ContainerStatus> ContainerStatus(const std::string& id);
  base::Result<v1::PodSandboxStatus> PodStatus(const std::string& id);
  // Polls ContainerStatus until the container is EXITED (bounded).
  base::Result<v1::ContainerStatus> WaitExited(const std::string& id,
                                               std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Polls until the container is RUNNING (bounded).
  base::Status WaitRunning(const std::string& id, std::chrono::milliseconds timeout = std::chrono::seconds(60));
  base::Status StopPod(const std::string& id);
  base::Status RemovePod(const std::string& id);

  // The CRI log file of a container of `pod_config`.
  std::string LogPath(const v1::PodSandboxConfig& pod_config, const v1::ContainerConfig& config) const;

  HostTraces Traces() const;
  // VMM processes that belong to the pod (their command line names the sandbox id).
  std::vector<pid_t> VmmPidsOf(const std::string& pod_id) const;

 private:
  PodEnv() = default;
  base::Status Init(std::vector<std::string> extra_chrysd_args);
  base::Status WriteCniConfig();
  base::Status BuildAndImportImage();
  base::Status Connect();

  std::string root_;
  base::UniqueFd network_lock_;  // holds our bridge/subnet slot against other test processes
  int slot_ = -1;
  std::string bridge_;
  std::string subnet_;
  std::string run_dir_;  // chrysd's --run-dir, short enough for VM socket paths
  std::string image_ref_ = "localhost/chrys-e2e/busybox:1";
  std::string app_image_ref_ = "localhost/chrys-e2e/busybox-app:1";
  std::string pause_image_ref_ = "localhost/chrys-e2e/pause:1";
  std::unique_ptr<ChrysdProcess> chrysd_;
  std::unique_ptr<cri::CriClient> client_;
  std::unique_ptr<v1::RuntimeService::Stub> runtime_;
  std::unique_ptr<v1::ImageService::Stub> images_;
  mutable std::mutex pod_ids_mutex_;  // RunPod may be called from several threads at once
  std::set<std::string> pod_ids_;
};

// A context with a deadline for one call.
std::unique_ptr<grpc::ClientContext> Ctx(std::chrono::milliseconds timeout = std::chrono::seconds(120));

// The lines of a CRI log file, parsed: stream, tag (P/F) and text; full lines are joined from P pieces.
struct CriLogLine {
  std::string timestamp;
  std::string stream;
  std::string tag;
  std::string text;
};
base::Result<std::vector<CriLogLine>> ReadCriLog(const std::string& path);
// The logical lines of a log (P pieces joined up to their F), per stream ("stdout"/"stderr"), in order.
std::vector<std::string> JoinedLines(const std::vector<CriLogLine>& lines, const std::string& stream);

}  // namespace chrys::e2e
