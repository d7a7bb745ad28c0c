// The runtime-information RPC family: Version, Status, RuntimeConfig, UpdateRuntimeConfig.
#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "cri/grpc_status.h"
#include "cri/runtime_service.h"

namespace chrys::cri {

namespace {
constexpr const char* kRuntimeName = "chrysalis";
constexpr const char* kCriApiVersion = "v1";
// The kubelet-facing API version string every CRI runtime reports.
constexpr const char* kKubeletApiVersion = "0.1.0";
constexpr const char* kRuntimeStateKind = "runtime";
constexpr const char* kRuntimeStateId = "config";

// Handlers served: the microVM default, forced QEMU, and the confidential disk-boot kinds.
constexpr const char* kHandlers[] = {"chrysalis", "chrysalis-qemu", "chrysalis-cvm", "chrysalis-snp", "chrysalis-tdx"};
}  // namespace

const char* ChrysalisVersion() {
  return CHRYSALIS_VERSION;
}

base::Status ValidatePodCidr(const std::string& cidr) {
  if (cidr.empty()) {
    return base::Status::Ok();
  }
  std::stringstream parts(cidr);
  std::string part;
  int count = 0;
  while (std::getline(parts, part, ',')) {
    ++count;
    auto slash = part.find('/');
    if (slash == std::string::npos) {
      return base::InvalidArgument("pod_cidr '" + part + "': expected address/prefix, e.g. 10.244.1.0/24");
    }
    std::string address = part.substr(0, slash);
    std::string prefix = part.substr(slash + 1);
    unsigned char buf[16];
    int max_prefix = 0;
    if (::inet_pton(AF_INET, address.c_str(), buf) == 1) {
      max_prefix = 32;
    } else if (::inet_pton(AF_INET6, address.c_str(), buf) == 1) {
      max_prefix = 128;
    } else {
      std::string what = "pod_cidr '" + part;
      what.append("': '").append(address).append("' is not an IPv4 or IPv6 address");
      return base::InvalidArgument(what);
    }
    if (prefix.empty() || prefix.size() > 3 || prefix.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(prefix) > max_prefix) {
      return base::InvalidArgument("pod_cidr '" + part + "': prefix length must be 0.." + std::to_string(max_prefix));
    }
  }
  if (count > 2) {
    return base::InvalidArgument("pod_cidr '" + cidr + "': at most two CIDRs (one per IP family)");
  }
  return base::Status::Ok();
}

RuntimeServiceImpl::RuntimeServiceImpl(const Config& config, RuntimeBackends backends, ReadinessCheck network_ready)
    : config_(config),
      backends_(backends),
      monitor_(std::make_unique<ContainerMonitor>(
          backends.pods, backends.agents,
          [this](const std::string& id) { PublishContainerEvent(id, v1::CONTAINER_STOPPED_EVENT); })),
      state_(backends.state),
      network_ready_(std::move(network_ready)) {}

void RuntimeServiceImpl::LoadState() {
  // LoadAll moves a corrupt record aside (logged) instead of failing the start.
  for (const auto& [id, record] : state_.LoadAll(kRuntimeStateKind)) {
    if (id != kRuntimeStateId) {
      continue;
    }
    std::lock_guard lock(mutex_);
    pod_cidr_ = record.value("pod_cidr", "");
    if (!pod_cidr_.empty()) {
      spdlog::info("state: pod CIDR {} restored", pod_cidr_);
    }
  }
}

grpc::Status RuntimeServiceImpl::Version(grpc::ServerContext* /*context*/, const v1::VersionRequest* /*request*/,
                                         v1::VersionResponse* response) {
  response->set_version(kKubeletApiVersion);
  response->set_runtime_name(kRuntimeName);
  response->set_runtime_version(ChrysalisVersion());
  response->set_runtime_api_version(kCriApiVersion);
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::Status(grpc::ServerContext* /*context*/, const v1::StatusRequest* request,
                                        v1::StatusResponse* response) {
  auto add = [&](const char* type, const Condition& condition) {
    auto* c = response->mutable_status()->add_conditions();
    c->set_type(type);
    c->set_status(condition.ready);
    c->set_reason(condition.reason);
    c->set_message(condition.message);
  };
  add("RuntimeReady", CheckRuntimeReady(config_));
  add("NetworkReady", network_ready_());
  for (const char* handler : kHandlers) {
    auto* h = response->add_runtime_handlers();
    h->set_name(handler);
    h->mutable_features()->set_recursive_read_only_mounts(false);
    h->mutable_features()->set_user_namespaces(false);
  }
  if (request->verbose()) {
    nlohmann::json info = config_.ToJson();
    {
      std::lock_guard lock(mutex_);
      info["pod_cidr"] = pod_cidr_;
    }
    runtime::WarmPoolStatus pool = backends_.sandboxes.warm_pool_status();
    info["warm_pool"] = {{"size", pool.size},
                         {"ready", pool.ready},
                         {"booting", pool.booting},
                         {"claimed", pool.claimed},
                         {"missed", pool.missed},
                         {"restored_on_demand", pool.restored_on_demand},
                         {"template", pool.template_state},
                         {"template_memory_bytes", pool.template_memory_bytes},
                         {"last_error", pool.last_error}};
    (*response->mutable_info())["config"] = info.dump();
  }
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::RuntimeConfig(grpc::ServerContext* /*context*/,
                                               const v1::RuntimeConfigRequest* /*request*/,
                                               v1::RuntimeConfigResponse* response) {
  response->mutable_linux()->set_cgroup_driver(config_.cgroup_driver == CgroupDriver::kSystemd ? v1::SYSTEMD
                                                                                               : v1::CGROUPFS);
  return grpc::Status::OK;
}

grpc::Status RuntimeServiceImpl::UpdateRuntimeConfig(grpc::ServerContext* /*context*/,
                                                     const v1::UpdateRuntimeConfigRequest* request,
                                                     v1::UpdateRuntimeConfigResponse* /*response*/) {
  const std::string& cidr = request->runtime_config().network_config().pod_cidr();
  if (auto valid = ValidatePodCidr(cidr); !valid.ok()) {
    return InvalidArgument("runtime_config.network_config." + valid.error().message());
  }
  std::lock_guard lock(mutex_);
  if (cidr == pod_cidr_) {
    return grpc::Status::OK;
  }
  if (auto saved = state_.Put(kRuntimeStateKind, kRuntimeStateId, {{"pod_cidr", cidr}}); !saved.ok()) {
    return ToGrpcStatus(saved.error().Wrap("record pod CIDR"));
  }
  spdlog::info("pod CIDR set to '{}'", cidr);
  pod_cidr_ = cidr;
  return grpc::Status::OK;
}

}  // namespace chrys::cri
