// PodStore is the CRI metadata of pod sandboxes and containers: in memory, indexed, and persisted record by record.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "cri/proto/api.pb.h"
#include "cri/state_store.h"

namespace chrys::cri {

namespace v1 = ::runtime::v1;

enum class PodState { kCreating, kReady, kNotReady };
const char* PodStateName(PodState state);

// Bytes derived from a record, made on first use and kept while the record lives. A copy starts empty: records
// are immutable once stored and copied only to be changed, which would make the bytes stale.
class DerivedBytes {
 public:
  DerivedBytes() = default;
  DerivedBytes(const DerivedBytes& /*other*/) {}
  DerivedBytes& operator=(const DerivedBytes& other) {
    if (this != &other) {
      std::lock_guard lock(mu_);
      value_.reset();
    }
    return *this;
  }
  ~DerivedBytes() = default;

  // The bytes, made by `make` the first time. The reference lives as long as this object is not assigned to.
  template <typename Make>
  const std::string& Get(Make&& make) const {
    std::lock_guard lock(mu_);
    if (!value_) {
      value_ = std::forward<Make>(make)();
    }
    return *value_;
  }

 private:
  mutable std::mutex mu_;
  mutable std::optional<std::string> value_;
};

struct PodRecord {
  std::string id;
  PodState state = PodState::kCreating;
  v1::PodSandboxConfig config;
  std::string handler;
  int64_t created_at = 0;  // unix nanoseconds
  bool host_network = false;
  std::string netns_path;
  std::vector<std::string> ips;   // primary first
  std::string error;              // why it is not ready, when known
  std::string shared_dir;         // host dir exported to the VM over virtio-fs (container volumes)
  std::string shared_guest_path;  // where the guest mounted it
  // This pod's entry in a ListPodSandboxResponse, encoded (see list_responses.h).
  DerivedBytes list_entry;
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
  std::string reason;  // Completed, Error, OOMKilled
  std::string message;
  std::vector<std::string> layer_serials;   // read-only layer disks it uses, bottom first
  std::string scratch_serial;               // its writable disk
  std::vector<std::string> volume_targets;  // host bind mounts below the pod's shared dir
  // This container's entry in a ListContainersResponse, encoded (see list_responses.h).
  DerivedBytes list_entry;
};

// Kubelet's reservation keys: one live pod per name/namespace/uid/attempt, one container per pod/name/attempt.
std::string PodNameKey(const v1::PodSandboxMetadata& md);
std::string ContainerNameKey(const std::string& sandbox_id, const v1::ContainerMetadata& md);

// Concurrency: readers (Get/Find/List/Snapshot) take a shared lock on the in-memory index only, and never wait
// for a disk write: writers serialise among themselves on a separate lock, write the record file first (atomic,
// fsynced) and only then take the index lock exclusively for a pointer swap. Records are immutable once indexed
// (copy on write), so a snapshot is a vector of shared pointers, not a deep copy of every config.
class PodStore {
 public:
  using PodPtr = std::shared_ptr<const PodRecord>;
  using ContainerPtr = std::shared_ptr<const ContainerRecord>;

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
  // The pods as they are now, without copying them.
  std::vector<PodPtr> SnapshotPods() const;

  base::Status AddContainer(const ContainerRecord& container);
  base::Status UpdateContainer(const ContainerRecord& container);
  // Applies `change` to the container's current record and stores the result, atomically with respect to other
  // writers (no lost update between a read and a write); returns the stored record. kNotFound when it is gone.
  base::Result<ContainerRecord> MutateContainer(const std::string& id,
                                                const std::function<void(ContainerRecord&)>& change);
  base::Status RemoveContainer(const std::string& id);
  std::optional<ContainerRecord> GetContainer(const std::string& id) const;
  base::Result<ContainerRecord> FindContainer(const std::string& id_or_prefix) const;
  // Like FindContainer without copying the record.
  base::Result<ContainerPtr> FindContainerPtr(const std::string& id_or_prefix) const;
  std::vector<ContainerRecord> ListContainers() const;
  // The containers as they are now, without copying them.
  std::vector<ContainerPtr> SnapshotContainers() const;
  std::vector<ContainerRecord> ContainersOf(const std::string& sandbox_id) const;

  static nlohmann::json PodToJson(const PodRecord& pod);
  static base::Result<PodRecord> PodFromJson(const nlohmann::json& json);
  static nlohmann::json ContainerToJson(const ContainerRecord& container);
  static base::Result<ContainerRecord> ContainerFromJson(const nlohmann::json& json);

  // For tests: called by writers after the record file is written and before the index is updated, while
  // holding the writer lock (not the index lock).
  void SetWriteHookForTest(std::function<void()> hook) { write_hook_ = std::move(hook); }

 private:
  void AfterWrite() const {
    if (write_hook_) {
      write_hook_();
    }
  }

  StateStore& state_;
  std::mutex write_mutex_;                 // one writer at a time: disk write, then index update
  mutable std::shared_mutex index_mutex_;  // the maps below; held only for lookups and pointer swaps
  std::map<std::string, PodPtr> pods_;
  std::map<std::string, std::string> pod_names_;  // name key → id
  std::map<std::string, ContainerPtr> containers_;
  std::map<std::string, std::string> container_names_;
  std::function<void()> write_hook_;
};

}  // namespace chrys::cri
