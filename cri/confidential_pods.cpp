#include "cri/confidential_pods.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "imagestore/reference.h"
#include "runtime/confidential/cvm_sandbox.h"

namespace chrys::cri {

using base::Status;
using nlohmann::json;
using runtime::confidential::TeeKind;

bool IsConfidentialHandler(const std::string& handler) {
  return handler == "chrysalis-cvm" || handler == "chrysalis-snp" || handler == "chrysalis-tdx";
}

TeeKind TeeOfHandler(const std::string& handler) {
  if (handler == "chrysalis-snp") {
    return TeeKind::kSevSnp;
  }
  if (handler == "chrysalis-tdx") {
    return TeeKind::kTdx;
  }
  return TeeKind::kNone;
}

std::string ConfidentialPlansDir(const Config& config) {
  return config.state_dir + "/cvm";
}

HostProbeFn DefaultHostProbe(const Config& config) {
  return [c = config.confidential, qemu = config.vmm.qemu_binary] {
    runtime::confidential::ProbeOptions options;
    options.qemu_binary = qemu;
    options.ovmf_code = c.ovmf_code;
    options.ovmf_vars = c.ovmf_vars;
    options.snp_firmware = c.snp_firmware;
    options.tdx_firmware = c.tdx_firmware;
    options.igvm_file = c.igvm_file;
    return runtime::confidential::ProbeConfidentialHost(options);
  };
}

Status CheckConfidentialHandler(const Config& config, const std::string& handler, const HostProbeFn& probe) {
  TeeKind tee = TeeOfHandler(handler);
  std::vector<std::string> problems = probe().ProblemsFor(tee);
  std::string disk = config.confidential.hal_dir + "/disk.img";
  if (::access(disk.c_str(), R_OK) != 0) {
    problems.push_back("the HAL disk image " + disk + " is missing (build it with chrys-hal-build --out " +
                       config.confidential.hal_dir + " --agent <chrys-agent>, or set confidential.hal_dir)");
  }
  if (problems.empty()) {
    return Status::Ok();
  }
  std::string message = "runtime_handler '" + handler + "': this host cannot run " +
                        (tee == TeeKind::kNone ? std::string("confidential (HAL disk boot)")
                                               : std::string(runtime::confidential::TeeKindName(tee))) +
                        " pods:";
  for (size_t i = 0; i < problems.size(); ++i) {
    message += (i == 0 ? " " : "; ") + problems[i];
  }
  return base::FailedPrecondition(message);
}

std::string RenderAgentJson(const std::string& sandbox_id, const ::chrys::agent::v1::SetupSandboxRequest& setup) {
  json dns = {{"servers", json::array()}, {"searches", json::array()}, {"options", json::array()}};
  for (const auto& s : setup.dns().servers()) {
    dns["servers"].push_back(s);
  }
  for (const auto& s : setup.dns().searches()) {
    dns["searches"].push_back(s);
  }
  for (const auto& s : setup.dns().options()) {
    dns["options"].push_back(s);
  }
  json interfaces = json::array();
  for (const auto& nic : setup.interfaces()) {
    json addresses = json::array();
    for (const auto& a : nic.addresses()) {
      addresses.push_back(a.address() + "/" + std::to_string(a.prefix_length()));
    }
    json routes = json::array();
    for (const auto& r : setup.routes()) {
      if (r.device() == nic.name() || (r.device().empty() && setup.interfaces_size() == 1)) {
        json route = {{"dst", r.destination()}, {"gateway", r.gateway()}};
        if (r.metric() != 0) {
          route["metric"] = r.metric();
        }
        routes.push_back(route);
      }
    }
    interfaces.push_back(
        {{"mac", nic.mac()}, {"name", nic.name()}, {"mtu", nic.mtu()}, {"addresses", addresses}, {"routes", routes}});
  }
  json sysctls = json::object();
  for (const auto& [key, value] : setup.sysctls()) {
    sysctls[key] = value;
  }
  json doc = {{"version", 1},
              {"sandbox_id", sandbox_id},
              {"hostname", setup.hostname()},
              {"channel", {{"kind", "serial"}}},
              {"dns", dns},
              {"interfaces", interfaces},
              {"sysctls", sysctls},
              {"container_storage", "/var/lib/chrys"}};
  return doc.dump(2) + "\n";
}

Status PrepareConfidentialPod(const Config& config, const std::string& pod_id, const std::string& handler,
                              const std::string& pod_dir, const ::chrys::agent::v1::SetupSandboxRequest& setup) {
  std::string env = pod_dir + "/env";
  std::string certs = pod_dir + "/certs";
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(env, 0700));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(certs, 0700));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(env + "/agent.json", RenderAgentJson(pod_id, setup), 0600));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(env + "/init.conf", "mode=agent\n", 0600));

  runtime::confidential::CvmPlan plan;
  plan.tee = TeeOfHandler(handler);
  plan.disk_image = config.confidential.hal_dir + "/disk.img";
  plan.vm_dir = ConfidentialPlansDir(config) + "/" + pod_id;
  plan.ovmf_code = config.confidential.ovmf_code;
  plan.ovmf_vars = config.confidential.ovmf_vars;
  plan.firmware_bios = plan.tee == TeeKind::kTdx ? config.confidential.tdx_firmware : config.confidential.snp_firmware;
  if (plan.tee == TeeKind::kNone) {
    plan.firmware_bios.clear();
  }
  plan.igvm_file = plan.tee == TeeKind::kSevSnp ? config.confidential.igvm_file : "";
  plan.env_share_dir = env;
  plan.certs_share_dir = certs;
  plan.min_memory_mib = config.confidential.min_memory_mib;
  plan.boot_timeout_seconds = config.confidential.boot_timeout_seconds;
  return runtime::confidential::SaveCvmPlan(plan,
                                            runtime::confidential::CvmPlanPath(ConfidentialPlansDir(config), pod_id));
}

base::Result<::chrys::agent::v1::PullImageResponse> PullImageInConfidentialPod(const Config& config,
                                                                               runtime::agent::AgentClient& agent,
                                                                               const std::string& image,
                                                                               const ::runtime::v1::AuthConfig* auth,
                                                                               bool if_present) {
  CHRYS_ASSIGN_OR_RETURN(imagestore::Reference ref, imagestore::Reference::Parse(image));
  ::chrys::agent::v1::PullImageRequest request;
  request.set_image(image);
  request.set_if_present(if_present);
  auto registry = config.images.registries.find(ref.registry);
  request.set_insecure(registry != config.images.registries.end() && registry->second.insecure);
  if (registry != config.images.registries.end() && !registry->second.ca_file.empty()) {
    CHRYS_ASSIGN_OR_RETURN(std::string ca, base::ReadFile(registry->second.ca_file, 1 << 20));
    request.set_ca_pem(ca);
  }
  if (auth != nullptr) {
    auto* guest_auth = request.mutable_auth();
    guest_auth->set_username(auth->username());
    guest_auth->set_password(auth->password());
    guest_auth->set_auth(auth->auth());
    guest_auth->set_identity_token(auth->identity_token());
    guest_auth->set_registry_token(auth->registry_token());
  }
  return agent.PullImageInGuest(request, std::chrono::seconds(config.images.pull_timeout_seconds));
}

Status ReleaseConfidentialPod(const Config& config, const std::string& pod_id) {
  return base::RemoveTree(ConfidentialPlansDir(config) + "/" + pod_id);
}

}  // namespace chrys::cri
