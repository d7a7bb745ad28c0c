// ContainerdCri runs containerd (Debian's 1.6, its CRI plugin, runc) on a socket and directories of its own, as the
// peer the benchmarks measure chrysd's CRI beside: the same client, pods and containers, on the same host.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "cri/proto/api.grpc.pb.h"
#include "e2e/fixtures/child_process.h"

namespace chrys::e2e {

namespace v1 = ::runtime::v1;

struct ContainerdCriOptions {
  std::string dir;           // containerd's root, state, socket, CNI config and logs; created
  std::string image_layout;  // OCI layout imported into containerd (every image named in its index)
  std::string pause_image;   // sandbox image: must keep running
  std::string bridge;        // CNI bridge for its pods (deleted on the way out)
  std::string subnet;        // its pods' addresses, e.g. "10.199.90.0/24"
};

class ContainerdCri {
 public:
  // Starts containerd, waits for its socket, imports the layout's images.
  static base::Result<std::unique_ptr<ContainerdCri>> Start(const ContainerdCriOptions& options);
  // Removes every pod it runs (runc containers, network namespaces, mounts), stops containerd and its shims, deletes
  // the bridge and unmounts anything left under `dir`.
  ~ContainerdCri();
  ContainerdCri(const ContainerdCri&) = delete;
  ContainerdCri& operator=(const ContainerdCri&) = delete;

  v1::RuntimeService::Stub& runtime() { return *runtime_; }
  pid_t pid() const { return daemon_.pid(); }
  // "containerd github.com/containerd/containerd 1.6.20~ds1 ...", for the report.
  const std::string& version() const { return version_; }

  // RunPodSandbox, then CreateContainer + StartContainer of each of `containers`; returns the container ids.
  base::Result<std::vector<std::string>> RunPodWith(const v1::PodSandboxConfig& pod,
                                                    const std::vector<v1::ContainerConfig>& containers);

 private:
  explicit ContainerdCri(ContainerdCriOptions options) : options_(std::move(options)) {}
  void RemoveAllPods();
  void StopShims();

  ContainerdCriOptions options_;
  std::string socket_;
  std::string version_;
  ChildProcess daemon_;
  std::unique_ptr<v1::RuntimeService::Stub> runtime_;
};

}  // namespace chrys::e2e
