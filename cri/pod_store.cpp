#include "cri/pod_store.h"

#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

namespace chrys::cri {

namespace {

constexpr const char* kPodKind = "pods";
constexpr const char* kContainerKind = "containers";

std::string ProtoToJsonString(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

base::Status ProtoFromJsonString(const std::string& text, google::protobuf::Message* message) {
  auto status = google::protobuf::util::JsonStringToMessage(text, message);
  if (!status.ok()) {
    return base::Internal("record config does not parse: " + std::string(status.message()));
  }
  return base::Status::Ok();
}

PodState PodStateFromName(const std::string& name) {
  if (name == "ready") {
    return PodState::kReady;
  }
  if (name == "creating") {
    return PodState::kCreating;
  }
  return PodState::kNotReady;
}

const char* ContainerStateName(ContainerState state) {
  switch (state) {
    case ContainerState::kCreated:
      return "created";
    case ContainerState::kRunning:
      return "running";
    case ContainerState::kExited:
      return "exited";
    case ContainerState::kUnknown:
      return "unknown";
  }
  return "unknown";
}

ContainerState ContainerStateFromName(const std::string& name) {
  if (name == "created") {
    return ContainerState::kCreated;
  }
  if (name == "running") {
    return ContainerState::kRunning;
  }
  if (name == "exited") {
    return ContainerState::kExited;
  }
  return ContainerState::kUnknown;
}

template <typename Map>
base::Result<typename Map::mapped_type> FindByPrefix(const Map& map, const std::string& id_or_prefix,
                                                     const char* what) {
  if (id_or_prefix.empty()) {
    return base::InvalidArgument(std::string(what) + " id is required");
  }
  auto exact = map.find(id_or_prefix);
  if (exact != map.end()) {
    return exact->second;
  }
  auto it = map.lower_bound(id_or_prefix);
  if (it == map.end() || it->first.rfind(id_or_prefix, 0) != 0) {
    return base::NotFound(std::string(what) + " '" + id_or_prefix + "' not found");
  }
  auto next = std::next(it);
  if (next != map.end() && next->first.rfind(id_or_prefix, 0) == 0) {
    return base::InvalidArgument(std::string(what) + " id prefix '" + id_or_prefix + "' is ambiguous");
  }
  return it->second;
}

}  // namespace

const char* PodStateName(PodState state) {
  switch (state) {
    case PodState::kCreating:
      return "creating";
    case PodState::kReady:
      return "ready";
    case PodState::kNotReady:
      return "notready";
  }
  return "notready";
}

std::string PodNameKey(const v1::PodSandboxMetadata& md) {
  return md.name() + "_" + md.namespace_() + "_" + md.uid() + "_" + std::to_string(md.attempt());
}

std::string ContainerNameKey(const std::string& sandbox_id, const v1::ContainerMetadata& md) {
  return sandbox_id + "_" + md.name() + "_" + std::to_string(md.attempt());
}

PodStore::PodStore(StateStore& state) : state_(state) {}

nlohmann::json PodStore::PodToJson(const PodRecord& pod) {
  return {{"id", pod.id},
          {"state", PodStateName(pod.state)},
          {"config", ProtoToJsonString(pod.config)},
          {"handler", pod.handler},
          {"created_at", pod.created_at},
          {"host_network", pod.host_network},
          {"netns_path", pod.netns_path},
          {"ips", pod.ips},
          {"error", pod.error},
          {"shared_dir", pod.shared_dir},
          {"shared_guest_path", pod.shared_guest_path}};
}

base::Result<PodRecord> PodStore::PodFromJson(const nlohmann::json& json) {
  PodRecord pod;
  try {
    pod.id = json.at("id").get<std::string>();
    pod.state = PodStateFromName(json.at("state").get<std::string>());
    CHRYS_RETURN_IF_ERROR(ProtoFromJsonString(json.at("config").get<std::string>(), &pod.config));
    pod.handler = json.at("handler").get<std::string>();
    pod.created_at = json.at("created_at").get<int64_t>();
    pod.host_network = json.value("host_network", false);
    pod.netns_path = json.value("netns_path", "");
    pod.ips = json.value("ips", std::vector<std::string>{});
    pod.error = json.value("error", "");
    pod.shared_dir = json.value("shared_dir", "");
    pod.shared_guest_path = json.value("shared_guest_path", "");
  } catch (const nlohmann::json::exception& e) {
    return base::Internal(std::string("pod record: ") + e.what());
  }
  return pod;
}

nlohmann::json PodStore::ContainerToJson(const ContainerRecord& c) {
  return {{"id", c.id},
          {"sandbox_id", c.sandbox_id},
          {"state", ContainerStateName(c.state)},
          {"config", ProtoToJsonString(c.config)},
          {"image_id", c.image_id},
          {"image_ref", c.image_ref},
          {"log_path", c.log_path},
          {"created_at", c.created_at},
          {"started_at", c.started_at},
          {"finished_at", c.finished_at},
          {"exit_code", c.exit_code},
          {"reason", c.reason},
          {"message", c.message},
          {"layer_serials", c.layer_serials},
          {"scratch_serial", c.scratch_serial},
          {"volume_targets", c.volume_targets}};
}

base::Result<ContainerRecord> PodStore::ContainerFromJson(const nlohmann::json& json) {
  ContainerRecord c;
  try {
    c.id = json.at("id").get<std::string>();
    c.sandbox_id = json.at("sandbox_id").get<std::string>();
    c.state = ContainerStateFromName(json.at("state").get<std::string>());
    CHRYS_RETURN_IF_ERROR(ProtoFromJsonString(json.at("config").get<std::string>(), &c.config));
    c.image_id = json.value("image_id", "");
    c.image_ref = json.value("image_ref", "");
    c.log_path = json.value("log_path", "");
    c.created_at = json.value("created_at", int64_t{0});
    c.started_at = json.value("started_at", int64_t{0});
    c.finished_at = json.value("finished_at", int64_t{0});
    c.exit_code = json.value("exit_code", 0);
    c.reason = json.value("reason", "");
    c.message = json.value("message", "");
    c.layer_serials = json.value("layer_serials", std::vector<std::string>{});
    c.scratch_serial = json.value("scratch_serial", "");
    c.volume_targets = json.value("volume_targets", std::vector<std::string>{});
  } catch (const nlohmann::json::exception& e) {
    return base::Internal(std::string("container record: ") + e.what());
  }
  return c;
}

void PodStore::Load() {
  std::lock_guard write(write_mutex_);
  std::unique_lock lock(index_mutex_);
  for (const auto& [id, json] : state_.LoadAll(kPodKind)) {
    auto pod = PodFromJson(json);
    if (!pod.ok()) {
      spdlog::error("state: pod record {} unreadable: {}", id, pod.error().message());
      continue;
    }
    pod_names_[PodNameKey(pod->config.metadata())] = pod->id;
    std::string pod_id = pod->id;  // before the move below (the right side of = is evaluated first)
    pods_[pod_id] = std::make_shared<const PodRecord>(std::move(pod).value());
  }
  for (const auto& [id, json] : state_.LoadAll(kContainerKind)) {
    auto container = ContainerFromJson(json);
    if (!container.ok()) {
      spdlog::error("state: container record {} unreadable: {}", id, container.error().message());
      continue;
    }
    container_names_[ContainerNameKey(container->sandbox_id, container->config.metadata())] = container->id;
    std::string container_id = container->id;
    containers_[container_id] = std::make_shared<const ContainerRecord>(std::move(container).value());
  }
  spdlog::info("state: {} pod sandboxes and {} containers on record", pods_.size(), containers_.size());
}

base::Status PodStore::AddPod(const PodRecord& pod) {
  std::lock_guard write(write_mutex_);
  std::string key = PodNameKey(pod.config.metadata());
  {
    std::shared_lock lock(index_mutex_);
    if (auto it = pod_names_.find(key); it != pod_names_.end()) {
      return base::MakeError(base::ErrorCode::kAlreadyExists,
                             "pod sandbox name '" + key + "' is already reserved by sandbox " + it->second);
    }
  }
  CHRYS_RETURN_IF_ERROR(state_.Put(kPodKind, pod.id, PodToJson(pod)));
  AfterWrite();
  auto record = std::make_shared<const PodRecord>(pod);
  std::unique_lock lock(index_mutex_);
  pod_names_[key] = pod.id;
  pods_[pod.id] = std::move(record);
  return base::Status::Ok();
}

base::Status PodStore::UpdatePod(const PodRecord& pod) {
  std::lock_guard write(write_mutex_);
  {
    std::shared_lock lock(index_mutex_);
    if (pods_.find(pod.id) == pods_.end()) {
      return base::NotFound("pod sandbox " + pod.id + " not found");
    }
  }
  CHRYS_RETURN_IF_ERROR(state_.Put(kPodKind, pod.id, PodToJson(pod)));
  AfterWrite();
  auto record = std::make_shared<const PodRecord>(pod);
  std::unique_lock lock(index_mutex_);
  pods_[pod.id] = std::move(record);
  return base::Status::Ok();
}

base::Status PodStore::RemovePod(const std::string& id) {
  std::lock_guard write(write_mutex_);
  PodPtr existing;
  {
    std::shared_lock lock(index_mutex_);
    auto it = pods_.find(id);
    if (it == pods_.end()) {
      return base::Status::Ok();
    }
    existing = it->second;
  }
  CHRYS_RETURN_IF_ERROR(state_.Delete(kPodKind, id));
  AfterWrite();
  std::unique_lock lock(index_mutex_);
  pod_names_.erase(PodNameKey(existing->config.metadata()));
  pods_.erase(id);
  return base::Status::Ok();
}

std::optional<PodRecord> PodStore::GetPod(const std::string& id) const {
  PodPtr pod;
  {
    std::shared_lock lock(index_mutex_);
    auto it = pods_.find(id);
    if (it == pods_.end()) {
      return std::nullopt;
    }
    pod = it->second;
  }
  return *pod;  // the copy is made outside the lock
}

base::Result<PodRecord> PodStore::FindPod(const std::string& id_or_prefix) const {
  base::Result<PodPtr> found = [&] {
    std::shared_lock lock(index_mutex_);
    return FindByPrefix(pods_, id_or_prefix, "pod sandbox");
  }();
  if (!found.ok()) {
    return found.error();
  }
  return **found;
}

std::vector<PodRecord> PodStore::ListPods() const {
  std::vector<PodRecord> out;
  for (const auto& pod : SnapshotPods()) {
    out.push_back(*pod);
  }
  return out;
}

std::vector<PodStore::PodPtr> PodStore::SnapshotPods() const {
  std::shared_lock lock(index_mutex_);
  std::vector<PodPtr> out;
  out.reserve(pods_.size());
  for (const auto& [id, pod] : pods_) {
    out.push_back(pod);
  }
  return out;
}

base::Status PodStore::AddContainer(const ContainerRecord& container) {
  std::lock_guard write(write_mutex_);
  std::string key = ContainerNameKey(container.sandbox_id, container.config.metadata());
  {
    std::shared_lock lock(index_mutex_);
    if (auto it = container_names_.find(key); it != container_names_.end()) {
      return base::MakeError(base::ErrorCode::kAlreadyExists,
                             "container name '" + key + "' is already reserved by container " + it->second);
    }
  }
  CHRYS_RETURN_IF_ERROR(state_.Put(kContainerKind, container.id, ContainerToJson(container)));
  AfterWrite();
  auto record = std::make_shared<const ContainerRecord>(container);
  std::unique_lock lock(index_mutex_);
  container_names_[key] = container.id;
  containers_[container.id] = std::move(record);
  return base::Status::Ok();
}

base::Status PodStore::UpdateContainer(const ContainerRecord& container) {
  std::lock_guard write(write_mutex_);
  {
    std::shared_lock lock(index_mutex_);
    if (containers_.find(container.id) == containers_.end()) {
      return base::NotFound("container " + container.id + " not found");
    }
  }
  CHRYS_RETURN_IF_ERROR(state_.Put(kContainerKind, container.id, ContainerToJson(container)));
  AfterWrite();
  auto record = std::make_shared<const ContainerRecord>(container);
  std::unique_lock lock(index_mutex_);
  containers_[container.id] = std::move(record);
  return base::Status::Ok();
}

base::Result<ContainerRecord> PodStore::MutateContainer(const std::string& id,
                                                        const std::function<void(ContainerRecord&)>& change) {
  std::lock_guard write(write_mutex_);
  ContainerPtr current;
  {
    std::shared_lock lock(index_mutex_);
    auto it = containers_.find(id);
    if (it == containers_.end()) {
      return base::NotFound("container " + id + " not found");
    }
    current = it->second;
  }
  ContainerRecord updated = *current;
  change(updated);
  CHRYS_RETURN_IF_ERROR(state_.Put(kContainerKind, id, ContainerToJson(updated)));
  AfterWrite();
  auto record = std::make_shared<const ContainerRecord>(updated);
  std::unique_lock lock(index_mutex_);
  containers_[id] = std::move(record);
  return updated;
}

base::Status PodStore::RemoveContainer(const std::string& id) {
  std::lock_guard write(write_mutex_);
  ContainerPtr existing;
  {
    std::shared_lock lock(index_mutex_);
    auto it = containers_.find(id);
    if (it == containers_.end()) {
      return base::Status::Ok();
    }
    existing = it->second;
  }
  CHRYS_RETURN_IF_ERROR(state_.Delete(kContainerKind, id));
  AfterWrite();
  std::unique_lock lock(index_mutex_);
  container_names_.erase(ContainerNameKey(existing->sandbox_id, existing->config.metadata()));
  containers_.erase(id);
  return base::Status::Ok();
}

std::optional<ContainerRecord> PodStore::GetContainer(const std::string& id) const {
  ContainerPtr container;
  {
    std::shared_lock lock(index_mutex_);
    auto it = containers_.find(id);
    if (it == containers_.end()) {
      return std::nullopt;
    }
    container = it->second;
  }
  return *container;
}

base::Result<PodStore::ContainerPtr> PodStore::FindContainerPtr(const std::string& id_or_prefix) const {
  std::shared_lock lock(index_mutex_);
  return FindByPrefix(containers_, id_or_prefix, "container");
}

base::Result<ContainerRecord> PodStore::FindContainer(const std::string& id_or_prefix) const {
  auto found = FindContainerPtr(id_or_prefix);
  if (!found.ok()) {
    return found.error();
  }
  return **found;
}

std::vector<ContainerRecord> PodStore::ListContainers() const {
  std::vector<ContainerRecord> out;
  for (const auto& c : SnapshotContainers()) {
    out.push_back(*c);
  }
  return out;
}

std::vector<PodStore::ContainerPtr> PodStore::SnapshotContainers() const {
  std::shared_lock lock(index_mutex_);
  std::vector<ContainerPtr> out;
  out.reserve(containers_.size());
  for (const auto& [id, c] : containers_) {
    out.push_back(c);
  }
  return out;
}

std::vector<ContainerRecord> PodStore::ContainersOf(const std::string& sandbox_id) const {
  std::vector<ContainerPtr> matching;
  {
    std::shared_lock lock(index_mutex_);
    for (const auto& [id, c] : containers_) {
      if (c->sandbox_id == sandbox_id) {
        matching.push_back(c);
      }
    }
  }
  std::vector<ContainerRecord> out;
  out.reserve(matching.size());
  for (const auto& c : matching) {
    out.push_back(*c);
  }
  return out;
}

}  // namespace chrys::cri
