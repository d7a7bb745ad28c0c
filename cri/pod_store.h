// PodStore is the CRI metadata of pod sandboxes and containers: in memory, indexed, and persisted record by record.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "cri/proto/api.pb.h"
#include "cri/state_store.h"

namespace chrys::cri {

namespace v1 = ::runtime::v1;

enum class PodState { kCreating, kReady, kNotReady };
const char* PodStateName(PodState state);

struct PodRecord {
  std::string id;
  PodState state = PodState::kCreating;
  v1::PodSandboxConfig config;
  std::string handler;
  int64_t created_at = 0;  // unix nanoseconds
  bool host_network = false;
  std::string netns_path;
  std::vector<std::string> ips;  // primary first
  std::string error;             // why it is not ready, when known
  std::string shared_dir;        // host dir exported to the VM over virtio-fs (container volumes)
  std::string shared_guest_path; // where the guest mounted it
};

enum class ContainerState { kCreated, kRunning, kExited, kUnknown };

struct ContainerRecord {
  std::string id;
  std::string sandbox_id;
  ContainerState state = ContainerState::kCreated;
  v1::ContainerConfig config;
  std::string image_id;   // resolved image id ("sha256:...")
  std::string image_ref;  // the reference it was created from
  std::string log_path;   // absolute, empty when none
  int64_t created_at = 0;
  int64_t started_at = 0;
  int64_t finished_at = 0;
  int32_t exit_code = 0;
  std::string reason;   // Completed, Error, OOMKilled
  std::string message;
  std::vector<std::string> layer_serials;  // read-only layer disks it uses, bottom first
  std::string scratch_serial;              // its writable disk
  std::vector<std::string> volume_targets; // host bind mounts below the pod's shared dir
};

// Kubelet's reservation keys: one live pod per name/namespace/uid/attempt, one container per pod/name/attempt.
std::string PodNameKey(const v1::PodSandboxMetadata& md);
std::string ContainerNameKey(const std::string& sandbox_id, const v1::ContainerMetadata& md);

class PodStore {
 public:
  explicit PodStore(StateStore& state);

  // Loads every pod and container record (corrupt ones are moved aside by the state store).
  void Load();

  // Reserves the name and stores the record; kAlreadyExists when the name is taken (naming the holder).
  base::Status AddPod(const PodRecord& pod);
  base::Status UpdatePod(const PodRecord& pod);
  base::Status RemovePod(const std::string& id);
  std::optional<PodRecord> GetPod(const std::string& id) const;
  // A full id or a unique prefix of one (as crictl allows); kNotFound / kInvalidArgument (ambiguous).
  base::Result<PodRecord> FindPod(const std::string& id_or_prefix) const;
  std::vector<PodRecord> ListPods() const;

  base::Status AddContainer(const ContainerRecord& container);
  base::Status UpdateContainer(const ContainerRecord& container);
  base::Status RemoveContainer(const std::string& id);
  std::optional<ContainerRecord> GetContainer(const std::string& id) const;
  base::Result<ContainerRecord> FindContainer(const std::string& id_or_prefix) const;
  std::vector<ContainerRecord> ListContainers() const;
  std::vector<ContainerRecord> ContainersOf(const std::string& sandbox_id) const;

  static nlohmann::json PodToJson(const PodRecord& pod);
  static base::Result<PodRecord> PodFromJson(const nlohmann::json& json);
  static nlohmann::json ContainerToJson(const ContainerRecord& container);
  static base::Result<ContainerRecord> ContainerFromJson(const nlohmann::json& json);

 private:
  StateStore& state_;
  mutable std::mutex mutex_;
  std::map<std::string, PodRecord> pods_;
  std::map<std::string, std::string> pod_names_;  // name key → id
  std::map<std::string, ContainerRecord> containers_;
  std::map<std::string, std::string> container_names_;
};

}  // namespace chrys::cri
