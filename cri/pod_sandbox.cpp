// The pod sandbox RPC family: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox.
// A pod sandbox is a VM: its network namespace and CNI attachment, the VM wired to the pod's taps, and the guest
// agent set up with the pod's hostname, DNS, addresses and sysctls.
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/phase_timer.h"
#include "cri/confidential_pods.h"
#include "cri/cri_util.h"
#include "cri/grpc_status.h"
#include "cri/list_responses.h"
#include "cri/runtime_service.h"
#include "cri/shared_dir.h"
#include "cri/validation.h"
#include "runtime/process.h"

namespace chrys::cri {

namespace {

// Undo steps run in reverse unless Commit() was called.
class Rollback {
 public:
  ~Rollback() {
    if (committed_) {
      return;
    }
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
      (*it)();
    }
  }
  void Add(std::function<void()> step) { steps_.push_back(std::move(step)); }
  void Commit() { committed_ = true; }

 private:
  std::vector<std::function<void()>> steps_;
  bool committed_ = false;
};

bool IsHostNetwork(const v1::PodSandboxConfig& config) {
  return config.linux().security_context().namespace_options().network() == v1::NODE;
}

runtime::PodResources PodResourcesOf(const v1::PodSandboxConfig& config) {
  runtime::PodResources resources;
  const auto& r = config.linux().resources();
  if (r.cpu_quota() > 0 && r.cpu_period() > 0) {
    resources.cpu_millis = r.cpu_quota() * 1000 / r.cpu_period();
  }
  resources.memory_bytes = r.memory_limit_in_bytes();
  return resources;
}

netcni::PodNetworkRequest NetworkRequestOf(const std::string& id, const v1::PodSandboxConfig& config, int queues) {
  netcni::PodNetworkRequest req;
  req.sandbox_id = id;
  req.pod_name = config.metadata().name();
  req.pod_namespace = config.metadata().namespace_();
  req.pod_uid = config.metadata().uid();
  req.queues = queues;
  for (const auto& pm : config.port_mappings()) {
    netcni::PortMapping mapping;
    mapping.protocol = pm.protocol() == v1::UDP ? "udp" : pm.protocol() == v1::SCTP ? "sctp" : "tcp";
    mapping.container_port = pm.container_port();
    mapping.host_port = pm.host_port();
    mapping.host_ip = pm.host_ip();
    req.port_mappings.push_back(mapping);
  }
  if (config.has_dns_config()) {
    netcni::DnsRequest dns;
    dns.servers.assign(config.dns_config().servers().begin(), config.dns_config().servers().end());
    dns.searches.assign(config.dns_config().searches().begin(), config.dns_config().searches().end());
    dns.options.assign(config.dns_config().options().begin(), config.dns_config().options().end());
    req.dns = dns;
  }
  return req;
}

runtime::agent::v1::SetupSandboxRequest AgentSetupOf(const v1::PodSandboxConfig& config,
                                                     const netcni::PodNetwork* network) {
  runtime::agent::v1::SetupSandboxRequest setup;
  setup.set_hostname(config.hostname().empty() ? config.metadata().name() : config.hostname());
  if (config.has_dns_config()) {
    auto* dns = setup.mutable_dns();
    for (const auto& s : config.dns_config().servers()) {
      dns->add_servers(s);
    }
    for (const auto& s : config.dns_config().searches()) {
      dns->add_searches(s);
    }
    for (const auto& s : config.dns_config().options()) {
      dns->add_options(s);
    }
  }
  for (const auto& [key, value] : config.linux().sysctls()) {
    (*setup.mutable_sysctls())[key] = value;
  }
  if (network == nullptr) {
    return setup;
  }
  for (const auto& iface : network->interfaces) {
    auto* nic = setup.add_interfaces();
    nic->set_mac(iface.guest_mac);
    nic->set_name(iface.cni_ifname);
    nic->set_mtu(iface.mtu);
    for (const auto& ip : iface.ips) {
      auto* address = nic->add_addresses();
      address->set_address(ip.address);
      address->set_prefix_length(static_cast<uint32_t>(ip.prefix_len));
    }
    for (const auto& route : iface.routes) {
      auto* r = setup.add_routes();
      bool is_default = route.dst_prefix_len == 0;
      r->set_destination(is_default ? (route.family == 6 ? "::/0" : "0.0.0.0/0")
                                    : route.dst + "/" + std::to_string(route.dst_prefix_len));
      r->set_gateway(route.gateway);
      r->set_device(iface.cni_ifname);
      r->set_metric(route.priority);
    }
  }
  return setup;
}

runtime::CgroupDriver RuntimeCgroupDriver(CgroupDriver driver) {
  return driver == CgroupDriver::kSystemd ? runtime::CgroupDriver::kSystemd : runtime::CgroupDriver::kCgroupfs;
}

}  // namespace

base::Result<PodRecord> RuntimeServiceImpl::CreatePod(const v1::RunPodSandboxRequest& request) {
  const v1::PodSandboxConfig& config = request.config();
  CHRYS_RETURN_IF_ERROR(ValidatePodSandboxConfig(config));
  CHRYS_ASSIGN_OR_RETURN(std::string handler, ResolveHandler(request.runtime_handler()));
  const bool confidential = IsConfidentialHandler(handler);
  if (confidential) {
    CHRYS_RETURN_IF_ERROR(CheckConfidentialHandler(config_, handler, DefaultHostProbe(config_)));
  }
  Condition ready = CheckRuntimeReady(config_);
  if (!ready.ready) {
    return base::FailedPrecondition("runtime not ready (" + ready.reason + "): " + ready.message);
  }

  // Where a pod's start time goes, logged once it is ready (operators compare it with the VM boot).
  base::PhaseTimer phases;

  PodRecord pod;
  pod.id = NewId();
  pod.state = PodState::kCreating;
  pod.config = config;
  pod.handler = handler;
  pod.created_at = NowNanos();
  pod.host_network = IsHostNetwork(config);
  CHRYS_RETURN_IF_ERROR(backends_.pods.AddPod(pod));
  Rollback rollback;
  rollback.Add([this, id = pod.id] { backends_.pods.RemovePod(id).ok(); });

  runtime::PodResources resources = PodResourcesOf(config);
  int vcpus = runtime::VcpusFor(resources, runtime::VmSizing{});

  std::optional<netcni::PodNetwork> network;
  if (!pod.host_network) {
    auto setup = backends_.network.Setup(NetworkRequestOf(pod.id, config, vcpus));
    if (!setup.ok()) {
      return setup.error().Wrap("pod network");
    }
    network.emplace(std::move(setup).value());
    rollback.Add([this, id = pod.id] {
      if (auto s = backends_.network.Teardown(id); !s.ok()) {
        spdlog::error("rollback of sandbox {}: network teardown: {}", id, s.error().message());
      }
    });
    pod.netns_path = network->netns_path;
    for (const auto& iface : network->interfaces) {
      for (const auto& ip : iface.ips) {
        pod.ips.push_back(ip.address);
      }
    }
  }

  phases.End("network");
  // Container volumes reach the guest through one virtio-fs share per pod.
  pod.shared_dir = config_.run_dir + "/pods/" + pod.id;
  CHRYS_RETURN_IF_ERROR(PrepareSharedDir(pod.shared_dir));
  rollback.Add([dir = pod.shared_dir] { ReleaseSharedDir(dir).ok(); });

  runtime::SandboxRequest sandbox;
  if (confidential) {
    // The HAL guest gets its configuration from the env 9P share (agent.json) instead of SetupSandbox.
    rollback.Add([this, id = pod.id] { ReleaseConfidentialPod(config_, id).ok(); });
    CHRYS_RETURN_IF_ERROR(PrepareConfidentialPod(config_, pod.id, handler, pod.shared_dir,
                                                 AgentSetupOf(config, network ? &network.value() : nullptr)));
  } else {
    sandbox.fs_shares.push_back({kPodShareTag, pod.shared_dir, false});
  }
  sandbox.id = pod.id;
  sandbox.handler = handler;
  sandbox.resources = resources;
  sandbox.netns_path = pod.netns_path;
  sandbox.cgroup_parent = config.linux().cgroup_parent();
  sandbox.cgroup_driver = RuntimeCgroupDriver(config_.cgroup_driver);
  if (network) {
    for (const auto& iface : network->interfaces) {
      runtime::NetInterfaceSpec nic;
      for (const auto& fd : iface.queue_fds) {
        nic.tap_queue_fds.push_back(fd.get());
      }
      nic.guest_mac = iface.guest_mac;
      nic.mtu = static_cast<int>(iface.mtu);
      sandbox.interfaces.push_back(std::move(nic));
    }
  }
  phases.End("prepare");
  auto created = backends_.sandboxes.Create(sandbox);
  if (!created.ok()) {
    return created.error().Wrap("pod VM");
  }
  if (!confidential && !created->fs_shares.empty() && created->fs_shares[0].host_dir != pod.shared_dir) {
    // A warm VM serves its own shared directory, which is the pod's from now on.
    CHRYS_RETURN_IF_ERROR(ReleaseSharedDir(pod.shared_dir));
    pod.shared_dir = created->fs_shares[0].host_dir;
    rollback.Add([dir = pod.shared_dir] { ReleaseSharedDir(dir).ok(); });
  }
  rollback.Add([this, id = pod.id] {
    if (auto s = backends_.sandboxes.Remove(id); !s.ok()) {
      spdlog::error("rollback of sandbox {}: VM removal: {}", id, s.error().message());
    }
  });
  // The VMM holds its own copies of the tap queues now.
  network.reset();
  auto described =
      pod.host_network ? base::Result<netcni::PodNetwork>(netcni::PodNetwork{}) : backends_.network.Describe(pod.id);
  if (!described.ok()) {
    return described.error().Wrap("pod network");
  }

  phases.End("vm");
  phases.Note(created->from_warm_pool ? fmt::format(" (a warm VM, claimed in {} ms)", created->claim_time.count())
                                      : fmt::format(" (launch {} ms, boot {} ms)", created->launch_time.count(),
                                                    created->boot_time.count()));
  auto agent = backends_.agents.Get(pod.id, created->agent);
  if (!agent.ok()) {
    return agent.error();
  }
  if (!confidential) {
    CHRYS_RETURN_IF_ERROR(
        (*agent)->SetupSandbox(AgentSetupOf(config, pod.host_network ? nullptr : &described.value())));
    auto share = (*agent)->MountShare(kPodShareTag, "pod", false);
    if (!share.ok()) {
      return share.error().Wrap("mount the pod's shared directory in the guest");
    }
    pod.shared_guest_path = *share;
  }
  phases.End("agent setup");

  pod.state = PodState::kReady;
  CHRYS_RETURN_IF_ERROR(backends_.pods.UpdatePod(pod));
  rollback.Commit();
  phases.End("record");
  spdlog::info("pod sandbox {} started: {}", pod.id, phases.summary());
  return pod;
}

grpc::Status RuntimeServiceImpl::RunPodSandbox(grpc::ServerContext* /*context*/,
                                               const v1::RunPodSandboxRequest* request,
                                               v1::RunPodSandboxResponse* response) {
  auto pod = CreatePod(*request);
  if (!pod.ok()) {
    spdlog::warn("RunPodSandbox {}/{} failed: {}", request->config().metadata().namespace_(),
                 request->config().metadata().name(), pod.error().message());
    return ToGrpcStatus(pod.error());
  }
  spdlog::info("pod sandbox {} ({}/{}) ready, handler {}, ips [{}]", pod->id, pod->config.metadata().namespace_(),
               pod->config.metadata().name(), pod->handler, fmt::join(pod->ips, ", "));
  response->set_pod_sandbox_id(pod->id);
  return grpc::Status::OK;
}

void RuntimeServiceImpl::MarkContainersGone(const std::string& sandbox_id, const std::string& reason) {
  for (auto container : backends_.pods.ContainersOf(sandbox_id)) {
    if (container.state == ContainerState::kExited) {
      continue;
    }
    bool was_running = container.state == ContainerState::kRunning;
    container.state = ContainerState::kExited;
    container.finished_at = NowNanos();
    if (was_running) {
      container.exit_code = 137;
      container.reason = "Error";
      container.message = reason;
    }
    backends_.pods.UpdateContainer(container).ok();
    PublishContainerEvent(container.id, v1::CONTAINER_STOPPED_EVENT);
  }
}

base::Status RuntimeServiceImpl::StopPod(PodRecord& pod) {
  if (!pod.host_network) {
    // Nothing may be redirected into the tap of a VM that is going away.
    if (auto quiet = backends_.network.Quiesce(pod.id); !quiet.ok()) {
      spdlog::warn("stop sandbox {}: {}", pod.id, quiet.error().message());
    }
  }
  auto stopped = backends_.sandboxes.Stop(pod.id);
  if (!stopped.ok() && stopped.error().code() != base::ErrorCode::kNotFound) {
    return stopped.error().Wrap("stop VM of sandbox " + pod.id);
  }
  backends_.agents.Forget(pod.id);
  MarkContainersGone(pod.id, "the pod sandbox was stopped");
  if (!pod.shared_dir.empty()) {
    CHRYS_RETURN_IF_ERROR(ReleaseSharedDir(pod.shared_dir));
  }
  if (IsConfidentialHandler(pod.handler)) {
    CHRYS_RETURN_IF_ERROR(ReleaseConfidentialPod(config_, pod.id));
  }
  if (!pod.host_network) {
    CHRYS_RETURN_IF_ERROR(backends_.network.Teardown(pod.id));
  }
  if (pod.state != PodState::kNotReady) {
    pod.state = PodState::kNotReady;
    CHRYS_RETURN_IF_ERROR(backends_.pods.UpdatePod(pod));
  }
  return base::Status::Ok();
}

grpc::Status RuntimeServiceImpl::StopPodSandbox(grpc::ServerContext* /*context*/,
                                                const v1::StopPodSandboxRequest* request,
                                                v1::StopPodSandboxResponse* /*response*/) {
  auto pod = backends_.pods.FindPod(request->pod_sandbox_id());
  if (!pod.ok()) {
    return ToGrpcStatus(pod.error());
  }
  if (auto stopped = StopPod(*pod); !stopped.ok()) {
    return ToGrpcStatus(stopped.error());
  }
  spdlog::info("pod sandbox {} stopped", pod->id);
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::RemovePodSandbox(grpc::ServerContext* /*context*/,
                                                  const v1::RemovePodSandboxRequest* request,
                                                  v1::RemovePodSandboxResponse* /*response*/) {
  if (request->pod_sandbox_id().empty()) {
    return InvalidArgument("pod_sandbox_id is required");
  }
  auto pod = backends_.pods.FindPod(request->pod_sandbox_id());
  if (!pod.ok()) {
    // Removing what is already gone succeeds: kubelet retries removals.
    return pod.error().code() == base::ErrorCode::kNotFound ? grpc::Status::OK : ToGrpcStatus(pod.error());
  }
  if (auto stopped = StopPod(*pod); !stopped.ok()) {
    return ToGrpcStatus(stopped.error());
  }
  auto removed = backends_.sandboxes.Remove(pod->id);
  if (!removed.ok() && removed.error().code() != base::ErrorCode::kNotFound) {
    return ToGrpcStatus(removed.error().Wrap("remove VM of sandbox " + pod->id));
  }
  for (const auto& container : backends_.pods.ContainersOf(pod->id)) {
    backends_.images.ReleaseLease(container.id).ok();
    if (auto s = backends_.pods.RemoveContainer(container.id); !s.ok()) {
      return ToGrpcStatus(s.error());
    }
  }
  if (auto s = backends_.pods.RemovePod(pod->id); !s.ok()) {
    return ToGrpcStatus(s.error());
  }
  spdlog::info("pod sandbox {} removed", pod->id);
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::PodSandboxStatus(grpc::ServerContext* /*context*/,
                                                  const v1::PodSandboxStatusRequest* request,
                                                  v1::PodSandboxStatusResponse* response) {
  auto pod = backends_.pods.FindPod(request->pod_sandbox_id());
  if (!pod.ok()) {
    return ToGrpcStatus(pod.error());
  }
  // A VM that died since the last look makes the pod not ready.
  if (pod->state == PodState::kReady) {
    auto state = backends_.sandboxes.Refresh(pod->id);
    if (!state.ok() || *state != runtime::SandboxState::kReady) {
      pod->state = PodState::kNotReady;
      pod->error = state.ok() ? std::string("the VM is ") + runtime::SandboxStateName(*state) : state.error().message();
      backends_.pods.UpdatePod(*pod).ok();
      MarkContainersGone(pod->id, "the pod VM exited");
    }
  }
  auto* status = response->mutable_status();
  status->set_id(pod->id);
  *status->mutable_metadata() = pod->config.metadata();
  status->set_state(ToCriState(pod->state));
  status->set_created_at(pod->created_at);
  if (!pod->ips.empty()) {
    status->mutable_network()->set_ip(pod->ips[0]);
    for (size_t i = 1; i < pod->ips.size(); ++i) {
      status->mutable_network()->add_additional_ips()->set_ip(pod->ips[i]);
    }
  }
  *status->mutable_linux()->mutable_namespaces()->mutable_options() =
      pod->config.linux().security_context().namespace_options();
  *status->mutable_labels() = pod->config.labels();
  *status->mutable_annotations() = pod->config.annotations();
  status->set_runtime_handler(pod->handler);
  response->set_timestamp(NowNanos());
  if (request->verbose()) {
    nlohmann::json info = {{"handler", pod->handler},
                           {"netnsPath", pod->netns_path},
                           {"hostNetwork", pod->host_network},
                           {"state", PodStateName(pod->state)}};
    if (!pod->error.empty()) {
      info["error"] = pod->error;
    }
    auto vm = backends_.sandboxes.Inspect(pod->id);
    if (vm.ok()) {
      info["vm"] = {{"pid", vm->vmm_pid},
                    {"vmm", runtime::VmmKindName(vm->vmm)},
                    {"state", runtime::SandboxStateName(vm->state)},
                    {"consoleLog", vm->console_log_path},
                    {"agentSocket", vm->agent.socket_path},
                    {"vcpus", vm->vcpus},
                    {"memoryMib", vm->memory_mib},
                    {"consoleSocket", vm->console_socket},
                    {"fromWarmPool", vm->from_warm_pool}};
      // For chrysctl ps (uptime) and debug (the command line to reproduce the VM by hand).
      if (auto argv = runtime::ProcessCmdline(vm->vmm_pid); vm->vmm_pid > 0 && argv.ok()) {
        info["vm"]["commandLine"] = *argv;
      }
      if (auto ticks = runtime::ProcessStartTicks(vm->vmm_pid); vm->vmm_pid > 0 && ticks.ok()) {
        info["vm"]["startTicks"] = *ticks;  // clock ticks after boot (/proc/<pid>/stat field 22)
      }
    }
    (*response->mutable_info())["info"] = info.dump();
  }
  return grpc::Status::OK;
}

// A raw callback method like ListContainers (see list_responses.h): the answer is the pods' cached entries.
grpc::ServerUnaryReactor* RuntimeServiceImpl::ListPodSandbox(grpc::CallbackServerContext* context,
                                                             const grpc::ByteBuffer* request_bytes,
                                                             grpc::ByteBuffer* response_bytes) {
  return ReplyWithEncoded<v1::ListPodSandboxRequest>(
      context, request_bytes, response_bytes, [this](const v1::ListPodSandboxRequest& request) {
        return EncodeListPodSandboxResponse(backends_.pods.SnapshotPods(), request.filter());
      });
}

void RuntimeServiceImpl::RecoverPods(const runtime::RecoveryReport& report) {
  for (auto pod : backends_.pods.ListPods()) {
    auto vm = backends_.sandboxes.Inspect(pod.id);
    bool running = vm.ok() && vm->state == runtime::SandboxState::kReady;
    if (pod.state == PodState::kCreating) {
      // A crash mid-creation: nothing of it may stay behind.
      spdlog::warn("recovery: sandbox {} was half created; cleaning it up", pod.id);
      StopPod(pod).ok();
      backends_.sandboxes.Remove(pod.id).ok();
      backends_.pods.RemovePod(pod.id).ok();
      continue;
    }
    if (pod.state == PodState::kReady && !running) {
      pod.state = PodState::kNotReady;
      pod.error = vm.ok() ? std::string("the VM is ") + runtime::SandboxStateName(vm->state) : vm.error().message();
      backends_.pods.UpdatePod(pod).ok();
      MarkContainersGone(pod.id, "the pod VM exited while chrysd was down");
      spdlog::warn("recovery: sandbox {} is not ready: {}", pod.id, pod.error);
    }
  }
  spdlog::info("recovery: {} VMs adopted, {} not ready, {} half-created cleaned up", report.adopted.size(),
               report.not_ready.size(), report.cleaned_up.size());
}

}  // namespace chrys::cri
