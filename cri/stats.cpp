// The stats and events RPC family: ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats,
// GetContainerEvents (UpdateContainerResources lives with the container lifecycle in container.cpp). Container figures
// come from the guest's cgroups through the agent; sandbox figures are the VM as the host sees it (the VMM's cgroup,
// its network namespace).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "base/file_util.h"
#include "cri/cri_util.h"
#include "cri/grpc_status.h"
#include "cri/list_responses.h"
#include "cri/runtime_service.h"

namespace chrys::cri {

namespace {

// "key value" lines of a cgroup stat file.
std::map<std::string, uint64_t> ReadKeyValues(const std::string& path) {
  std::map<std::string, uint64_t> out;
  std::ifstream in(path);
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value) {
    out[key] = value;
  }
  return out;
}

std::optional<uint64_t> ReadNumber(const std::string& path) {
  auto text = base::ReadFile(path, 4096);
  if (!text.ok()) {
    return std::nullopt;
  }
  try {
    return std::stoull(*text);
  } catch (const std::exception&) {
    return std::nullopt;  // "max" or garbage
  }
}

// The cgroup v2 directory of a process, from /proc/<pid>/cgroup ("0::/path").
std::string CgroupV2Dir(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) {
      return "/sys/fs/cgroup" + line.substr(3);
    }
  }
  return "";
}

// CPU and memory of the VM process: its cgroup when it has one of its own, else /proc.
void FillVmUsage(pid_t pid, v1::LinuxPodSandboxStats* linux) {
  int64_t now = NowNanos();
  auto* cpu = linux->mutable_cpu();
  auto* memory = linux->mutable_memory();
  cpu->set_timestamp(now);
  memory->set_timestamp(now);
  std::string dir = CgroupV2Dir(pid);
  auto cpu_stat = dir.empty() ? std::map<std::string, uint64_t>{} : ReadKeyValues(dir + "/cpu.stat");
  uint64_t current = 0;
  bool have_memory = false;
  if (!dir.empty()) {
    if (auto value = ReadNumber(dir + "/memory.current")) {
      current = *value;
      have_memory = true;
    }
  }
  if (cpu_stat.count("usage_usec") != 0U && have_memory) {
    cpu->mutable_usage_core_nano_seconds()->set_value(cpu_stat["usage_usec"] * 1000);
    auto memory_stat = ReadKeyValues(dir + "/memory.stat");
    uint64_t inactive = memory_stat["inactive_file"];
    memory->mutable_usage_bytes()->set_value(current);
    memory->mutable_working_set_bytes()->set_value(current > inactive ? current - inactive : 0);
    memory->mutable_rss_bytes()->set_value(memory_stat["anon"]);
    return;
  }
  // /proc/<pid>/stat: utime and stime (fields 14 and 15) in clock ticks.
  auto stat = base::ReadFile("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (stat.ok()) {
    std::istringstream fields(stat->substr(stat->rfind(')') + 2));
    std::string field;
    uint64_t utime = 0;
    uint64_t stime = 0;
    for (int i = 3; fields >> field; ++i) {
      if (i == 14) {
        utime = std::stoull(field);
      } else if (i == 15) {
        stime = std::stoull(field);
        break;
      }
    }
    uint64_t ticks = static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
    cpu->mutable_usage_core_nano_seconds()->set_value((utime + stime) * 1000000000ULL / ticks);
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      uint64_t kib = 0;
      status >> kib;
      memory->mutable_working_set_bytes()->set_value(kib * 1024);
      memory->mutable_rss_bytes()->set_value(kib * 1024);
      memory->mutable_usage_bytes()->set_value(kib * 1024);
      break;
    }
  }
}

// The pod's interfaces as the VMM's network namespace counts them (/proc/<pid>/net/dev).
void FillNetwork(pid_t pid, v1::LinuxPodSandboxStats* linux) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/net/dev");
  std::string line;
  auto* network = linux->mutable_network();
  network->set_timestamp(NowNanos());
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    if (name == "lo" || name.rfind("tap", 0) == 0) {
      continue;
    }
    std::istringstream fields(line.substr(colon + 1));
    uint64_t v[16] = {};
    for (auto& x : v) {
      fields >> x;
    }
    v1::NetworkInterfaceUsage usage;
    usage.set_name(name);
    usage.mutable_rx_bytes()->set_value(v[0]);
    usage.mutable_rx_errors()->set_value(v[2]);
    usage.mutable_tx_bytes()->set_value(v[8]);
    usage.mutable_tx_errors()->set_value(v[10]);
    if (name == "eth0" || !network->has_default_interface()) {
      *network->mutable_default_interface() = usage;
    }
    *network->add_interfaces() = usage;
  }
}

}  // namespace

base::Status RuntimeServiceImpl::FillContainerStats(const ContainerRecord& record, v1::ContainerStats* stats) {
  auto* attributes = stats->mutable_attributes();
  attributes->set_id(record.id);
  *attributes->mutable_metadata() = record.config.metadata();
  *attributes->mutable_labels() = record.config.labels();
  *attributes->mutable_annotations() = record.config.annotations();
  if (record.state != ContainerState::kRunning) {
    return base::Status::Ok();  // no figures for a container that does not run
  }
  CHRYS_ASSIGN_OR_RETURN(runtime::SandboxStatus vm, backends_.sandboxes.Inspect(record.sandbox_id));
  CHRYS_ASSIGN_OR_RETURN(auto agent, backends_.agents.Get(record.sandbox_id, vm.agent));
  CHRYS_ASSIGN_OR_RETURN(auto guest, agent->ContainerStats(record.id));
  const auto& c = guest.stats();
  int64_t timestamp = c.timestamp_unix_nanos() != 0 ? c.timestamp_unix_nanos() : NowNanos();
  stats->mutable_cpu()->set_timestamp(timestamp);
  stats->mutable_cpu()->mutable_usage_core_nano_seconds()->set_value(c.cpu_usage_usec() * 1000);
  stats->mutable_memory()->set_timestamp(timestamp);
  stats->mutable_memory()->mutable_working_set_bytes()->set_value(c.memory_working_set_bytes());
  stats->mutable_memory()->mutable_usage_bytes()->set_value(c.memory_usage_bytes());
  stats->mutable_memory()->mutable_rss_bytes()->set_value(c.memory_rss_bytes());
  stats->mutable_writable_layer()->set_timestamp(timestamp);
  stats->mutable_writable_layer()->mutable_fs_id()->set_mountpoint("virtio-blk:" + record.scratch_serial);
  stats->mutable_writable_layer()->mutable_used_bytes()->set_value(guest.rootfs_used_bytes());
  return base::Status::Ok();
}

grpc::Status RuntimeServiceImpl::ContainerStats(grpc::ServerContext* /*context*/,
                                                const v1::ContainerStatsRequest* request,
                                                v1::ContainerStatsResponse* response) {
  auto record = backends_.pods.FindContainer(request->container_id());
  if (!record.ok()) {
    return ToGrpcStatus(record.error());
  }
  return ToGrpcStatus(FillContainerStats(*record, response->mutable_stats()));
}

grpc::Status RuntimeServiceImpl::ListContainerStats(grpc::ServerContext* /*context*/,
                                                    const v1::ListContainerStatsRequest* request,
                                                    v1::ListContainerStatsResponse* response) {
  const auto& filter = request->filter();
  for (const auto& record : backends_.pods.ListContainers()) {
    if (record.state != ContainerState::kRunning) {
      continue;
    }
    if (!filter.id().empty() && record.id.rfind(filter.id(), 0) != 0) {
      continue;
    }
    if (!filter.pod_sandbox_id().empty() && record.sandbox_id.rfind(filter.pod_sandbox_id(), 0) != 0) {
      continue;
    }
    if (!MatchesSelector(record.config.labels(), filter.label_selector())) {
      continue;
    }
    v1::ContainerStats stats;
    if (auto filled = FillContainerStats(record, &stats); !filled.ok()) {
      // One unreachable VM must not hide every other container's figures.
      spdlog::debug("stats of container {}: {}", record.id, filled.error().message());
    }
    *response->add_stats() = std::move(stats);
  }
  return grpc::Status::OK;
}

base::Status RuntimeServiceImpl::FillPodStats(const PodRecord& pod, v1::PodSandboxStats* stats) {
  auto* attributes = stats->mutable_attributes();
  attributes->set_id(pod.id);
  *attributes->mutable_metadata() = pod.config.metadata();
  *attributes->mutable_labels() = pod.config.labels();
  *attributes->mutable_annotations() = pod.config.annotations();
  if (pod.state != PodState::kReady) {
    return base::Status::Ok();
  }
  CHRYS_ASSIGN_OR_RETURN(runtime::SandboxStatus vm, backends_.sandboxes.Inspect(pod.id));
  auto* linux = stats->mutable_linux();
  if (vm.vmm_pid > 0) {
    FillVmUsage(vm.vmm_pid, linux);
    if (!pod.host_network) {
      FillNetwork(vm.vmm_pid, linux);
    }
  }
  int processes = 0;
  for (const auto& container : backends_.pods.ContainersOf(pod.id)) {
    if (container.state != ContainerState::kRunning) {
      continue;
    }
    ++processes;
    v1::ContainerStats container_stats;
    if (FillContainerStats(container, &container_stats).ok()) {
      *linux->add_containers() = std::move(container_stats);
    }
  }
  linux->mutable_process()->set_timestamp(NowNanos());
  linux->mutable_process()->mutable_process_count()->set_value(static_cast<uint64_t>(processes));
  return base::Status::Ok();
}

grpc::Status RuntimeServiceImpl::PodSandboxStats(grpc::ServerContext* /*context*/,
                                                 const v1::PodSandboxStatsRequest* request,
                                                 v1::PodSandboxStatsResponse* response) {
  auto pod = backends_.pods.FindPod(request->pod_sandbox_id());
  if (!pod.ok()) {
    return ToGrpcStatus(pod.error());
  }
  return ToGrpcStatus(FillPodStats(*pod, response->mutable_stats()));
}

grpc::Status RuntimeServiceImpl::ListPodSandboxStats(grpc::ServerContext* /*context*/,
                                                     const v1::ListPodSandboxStatsRequest* request,
                                                     v1::ListPodSandboxStatsResponse* response) {
  const auto& filter = request->filter();
  for (const auto& pod : backends_.pods.ListPods()) {
    if (!filter.id().empty() && pod.id.rfind(filter.id(), 0) != 0) {
      continue;
    }
    if (!MatchesSelector(pod.config.labels(), filter.label_selector())) {
      continue;
    }
    v1::PodSandboxStats stats;
    if (auto filled = FillPodStats(pod, &stats); !filled.ok()) {
      spdlog::debug("stats of sandbox {}: {}", pod.id, filled.error().message());
    }
    *response->add_stats() = std::move(stats);
  }
  return grpc::Status::OK;
}

void RuntimeServiceImpl::PublishContainerEvent(const std::string& container_id, v1::ContainerEventType type) {
  v1::ContainerEventResponse event;
  event.set_container_id(container_id);
  event.set_container_event_type(type);
  event.set_created_at(NowNanos());
  auto record = backends_.pods.GetContainer(container_id);
  if (record) {
    FillContainerStatus(*record, event.add_containers_statuses());
    if (auto pod = backends_.pods.GetPod(record->sandbox_id)) {
      auto* status = event.mutable_pod_sandbox_status();
      status->set_id(pod->id);
      *status->mutable_metadata() = pod->config.metadata();
      status->set_state(ToCriState(pod->state));
      status->set_created_at(pod->created_at);
      status->set_runtime_handler(pod->handler);
    }
  }
  events_.Publish(event);
}

grpc::Status RuntimeServiceImpl::GetContainerEvents(grpc::ServerContext* context,
                                                    const v1::GetEventsRequest* /*request*/,
                                                    grpc::ServerWriter<v1::ContainerEventResponse>* writer) {
  auto subscription = events_.Subscribe();
  while (!context->IsCancelled()) {
    auto event = subscription->Next(std::chrono::milliseconds(500));
    if (event) {
      if (!writer->Write(*event)) {
        break;
      }
      continue;
    }
    if (subscription->closed()) {
      // chrysd is stopping: end the stream now rather than hold the server's shutdown for its whole grace.
      events_.Unsubscribe(subscription);
      return {grpc::StatusCode::UNAVAILABLE, "chrysd is shutting down"};
    }
  }
  events_.Unsubscribe(subscription);
  return grpc::Status::OK;
}

}  // namespace chrys::cri
