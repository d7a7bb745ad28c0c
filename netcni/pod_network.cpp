#include "netcni/pod_network.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "base/file_util.h"
#include "netcni/netns.h"
#include "netcni/tap_link.h"

namespace chrys::netcni {
namespace {

using base::Status;
using nlohmann::json;

constexpr const char* kRecordKind = "chrysPodNetworkV1";

// Records describe objects that live in /run (netns, taps) and vanish with them at a reboot, so they need
// atomicity (temp file + rename) but not durability: no fsync, which costs milliseconds per pod.
Status WriteRecord(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  base::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) {
    return base::SystemError("create " + tmp);
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      base::Error e = base::SystemError("write " + tmp);
      ::unlink(tmp.c_str());
      return e;
    }
    done += static_cast<size_t>(n);
  }
  fd.Reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    base::Error e = base::SystemError("rename " + tmp);
    ::unlink(tmp.c_str());
    return e;
  }
  return Status::Ok();
}

Status ValidateArgValue(const std::string& value, const char* field) {
  if (value.find_first_of(";=\n") != std::string::npos) {
    return base::InvalidArgument(std::string(field) + " \"" + value + "\" must not contain ';', '=' or newlines");
  }
  return Status::Ok();
}

Status ValidateRequest(const PodNetworkRequest& r) {
  if (auto st = NetnsHandle::ValidateName(r.sandbox_id); !st.ok()) {
    return base::InvalidArgument("sandbox id: " + st.error().message());
  }
  CHRYS_RETURN_IF_ERROR(ValidateArgValue(r.pod_name, "pod name"));
  CHRYS_RETURN_IF_ERROR(ValidateArgValue(r.pod_namespace, "pod namespace"));
  CHRYS_RETURN_IF_ERROR(ValidateArgValue(r.pod_uid, "pod uid"));
  if (r.queues < 1 || r.queues > 256) {
    return base::InvalidArgument("queues (vCPUs) must be 1..256, got " + std::to_string(r.queues));
  }
  for (const auto& pm : r.port_mappings) {
    std::string proto = pm.protocol;
    std::transform(proto.begin(), proto.end(), proto.begin(), ::tolower);
    if (proto != "tcp" && proto != "udp" && proto != "sctp") {
      return base::InvalidArgument("port mapping protocol \"" + pm.protocol + "\" must be TCP, UDP or SCTP");
    }
    if (pm.container_port < 1 || pm.container_port > 65535) {
      return base::InvalidArgument("port mapping container port " + std::to_string(pm.container_port) +
                                   " is outside 1..65535");
    }
    if (pm.host_port < 0 || pm.host_port > 65535) {
      return base::InvalidArgument("port mapping host port " + std::to_string(pm.host_port) + " is outside 0..65535");
    }
    if (!pm.host_ip.empty() && IpFamily(pm.host_ip) == 0) {
      return base::InvalidArgument("port mapping host IP \"" + pm.host_ip + "\" is not an IP address");
    }
  }
  if (r.dns) {
    for (const auto& s : r.dns->servers) {
      if (IpFamily(s) == 0) {
        return base::InvalidArgument("DNS server \"" + s + "\" is not an IP address");
      }
    }
  }
  return Status::Ok();
}

json CapabilityArgs(const PodNetworkRequest& r) {
  json caps = json::object();
  json mappings = json::array();
  for (const auto& pm : r.port_mappings) {
    if (pm.host_port == 0) {
      continue;
    }
    std::string proto = pm.protocol;
    std::transform(proto.begin(), proto.end(), proto.begin(), ::tolower);
    json m = {{"hostPort", pm.host_port}, {"containerPort", pm.container_port}, {"protocol", proto}};
    if (!pm.host_ip.empty()) {
      m["hostIP"] = pm.host_ip;
    }
    mappings.push_back(m);
  }
  if (!mappings.empty()) {
    caps["portMappings"] = mappings;
  }
  if (r.bandwidth) {
    json bw = json::object();
    if (r.bandwidth->ingress_rate != 0) {
      bw["ingressRate"] = r.bandwidth->ingress_rate;
      bw["ingressBurst"] = r.bandwidth->ingress_burst;
    }
    if (r.bandwidth->egress_rate != 0) {
      bw["egressRate"] = r.bandwidth->egress_rate;
      bw["egressBurst"] = r.bandwidth->egress_burst;
    }
    if (!bw.empty()) {
      caps["bandwidth"] = bw;
    }
  }
  if (r.dns) {
    caps["dns"] = {{"servers", r.dns->servers}, {"searches", r.dns->searches}, {"options", r.dns->options}};
  }
  return caps;
}

std::string TapNameFor(size_t index, const std::string& ifname) {
  return ("tap" + std::to_string(index) + "_" + ifname).substr(0, 15);
}

json InterfaceToJson(const PodInterface& itf) {
  json ips = json::array();
  for (const auto& ip : itf.ips) {
    ips.push_back(
        {{"family", ip.family}, {"address", ip.address}, {"prefixLen", ip.prefix_len}, {"gateway", ip.gateway}});
  }
  json routes = json::array();
  for (const auto& r : itf.routes) {
    routes.push_back({{"family", r.family},
                      {"dst", r.dst},
                      {"dstPrefixLen", r.dst_prefix_len},
                      {"gateway", r.gateway},
                      {"mtu", r.mtu},
                      {"priority", r.priority}});
  }
  return {{"cniIfname", itf.cni_ifname}, {"tap", itf.tap_name}, {"mac", itf.guest_mac}, {"mtu", itf.mtu},
          {"queues", itf.queues},        {"ips", ips},          {"routes", routes}};
}

PodInterface InterfaceFromJson(const json& j) {
  PodInterface itf;
  itf.cni_ifname = j.value("cniIfname", "");
  itf.tap_name = j.value("tap", "");
  itf.guest_mac = j.value("mac", "");
  itf.mtu = j.value("mtu", 0U);
  itf.queues = j.value("queues", 0);
  for (const auto& ip : j.value("ips", json::array())) {
    itf.ips.push_back(
        {ip.value("family", 4), ip.value("address", ""), ip.value("prefixLen", 0), ip.value("gateway", "")});
  }
  for (const auto& r : j.value("routes", json::array())) {
    itf.routes.push_back({r.value("family", 4), r.value("dst", ""), r.value("dstPrefixLen", 0), r.value("gateway", ""),
                          r.value("mtu", 0U), r.value("priority", 0U)});
  }
  return itf;
}

// Per-pod record: enough to undo everything after a restart, written before anything is created.
struct PodRecord {
  std::string sandbox_id;
  std::string netns_name;
  std::string netns_path;
  std::string phase;  // "adding" until the network is complete, then "ready"
  std::string config_text;
  std::string config_source;
  CniAttachment attachment;
  std::vector<PodInterface> interfaces;
  DnsConfig dns;
};

json RecordToJson(const PodRecord& r) {
  json args = json::array();
  for (const auto& [k, v] : r.attachment.args) {
    args.push_back(json::array({k, v}));
  }
  json interfaces = json::array();
  for (const auto& itf : r.interfaces) {
    interfaces.push_back(InterfaceToJson(itf));
  }
  return {{"kind", kRecordKind},
          {"sandboxId", r.sandbox_id},
          {"netnsName", r.netns_name},
          {"netnsPath", r.netns_path},
          {"phase", r.phase},
          {"config", r.config_text},
          {"configSource", r.config_source},
          {"ifname", r.attachment.ifname},
          {"cniArgs", args},
          {"capabilityArgs", r.attachment.capability_args},
          {"interfaces", interfaces},
          {"dns",
           {{"nameservers", r.dns.nameservers},
            {"domain", r.dns.domain},
            {"search", r.dns.search},
            {"options", r.dns.options}}}};
}

base::Result<PodRecord> ReadRecord(const std::string& path) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, base::ReadFile(path, 8 << 20));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("kind", "") != kRecordKind) {
    return base::Internal("pod network record " + path + " is corrupt");
  }
  try {
    PodRecord r;
    r.sandbox_id = j.at("sandboxId").get<std::string>();
    r.netns_name = j.at("netnsName").get<std::string>();
    r.netns_path = j.at("netnsPath").get<std::string>();
    r.phase = j.at("phase").get<std::string>();
    r.config_text = j.at("config").get<std::string>();
    r.config_source = j.value("configSource", "");
    r.attachment.container_id = r.sandbox_id;
    r.attachment.ifname = j.at("ifname").get<std::string>();
    for (const auto& kv : j.at("cniArgs")) {
      r.attachment.args.emplace_back(kv.at(0).get<std::string>(), kv.at(1).get<std::string>());
    }
    r.attachment.capability_args = j.value("capabilityArgs", json::object());
    for (const auto& itf : j.at("interfaces")) {
      r.interfaces.push_back(InterfaceFromJson(itf));
    }
    const json& dns = j.at("dns");
    r.dns.nameservers = dns.value("nameservers", std::vector<std::string>{});
    r.dns.domain = dns.value("domain", "");
    r.dns.search = dns.value("search", std::vector<std::string>{});
    r.dns.options = dns.value("options", std::vector<std::string>{});
    return r;
  } catch (const json::exception& e) {
    return base::Internal("pod network record " + path + " is corrupt: " + e.what());
  }
}

// Gives each pod interface its IPs and routes from the CNI result.
void AssignAddresses(const CniResult& result, std::vector<PodInterface>& interfaces,
                     const std::vector<std::string>& result_names) {
  if (interfaces.empty()) {
    return;
  }
  auto find = [&](const std::string& name) -> PodInterface* {
    for (auto& itf : interfaces) {
      if (itf.cni_ifname == name) {
        return &itf;
      }
    }
    return nullptr;
  };
  for (const auto& ip : result.ips) {
    PodInterface* target = &interfaces.front();
    if (ip.interface && *ip.interface < result_names.size()) {
      target = find(result_names[*ip.interface]);
      if (target == nullptr) {
        continue;  // an address of a host-side interface
      }
    }
    target->ips.push_back({ip.family, ip.address, ip.prefix_len, ip.gateway});
  }
  for (const auto& route : result.routes) {
    // CNI routes are not tied to an interface: take the one whose subnet holds the next hop.
    PodInterface* target = &interfaces.front();
    if (!route.gw.empty()) {
      for (auto& itf : interfaces) {
        for (const auto& ip : itf.ips) {
          if (CidrContains(ip.address, ip.prefix_len, route.gw)) {
            target = &itf;
          }
        }
      }
    }
    RouteConfig rc{route.family, route.dst, route.dst_prefix_len, route.gw, route.mtu, route.priority};
    if (rc.gateway.empty()) {
      for (const auto& ip : target->ips) {
        if (ip.family == route.family && !ip.gateway.empty()) {
          rc.gateway = ip.gateway;
          break;
        }
      }
    }
    target->routes.push_back(rc);
  }
}

}  // namespace

// Serialises operations on one sandbox: a second concurrent call for the same id is refused.
class PodNetworkManager::BusyGuard {
 public:
  BusyGuard(PodNetworkManager& manager, const std::string& id) : manager_(manager), id_(id) {
    std::lock_guard<std::mutex> lock(manager_.mu_);
    acquired_ = manager_.busy_.insert(id_).second;
  }
  ~BusyGuard() {
    if (acquired_) {
      std::lock_guard<std::mutex> lock(manager_.mu_);
      manager_.busy_.erase(id_);
    }
  }
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;

  Status status() const {
    if (acquired_) {
      return Status::Ok();
    }
    return base::MakeError(base::ErrorCode::kAborted,
                           "another network operation on sandbox " + id_ + " is in progress; retry");
  }

 private:
  PodNetworkManager& manager_;
  std::string id_;
  bool acquired_ = false;
};

PodNetworkManager::PodNetworkManager(PodNetworkConfig config)
    : config_(std::move(config)), cni_(CniRuntimeConfig{config_.bin_dirs, config_.cache_dir, config_.plugin_timeout}) {}

std::string PodNetworkManager::RecordPath(const std::string& sandbox_id) const {
  return config_.state_dir + "/pods/" + sandbox_id + ".json";
}

base::Result<PodNetwork> PodNetworkManager::Setup(const PodNetworkRequest& request) {
  CHRYS_RETURN_IF_ERROR(ValidateRequest(request));
  if (request.host_network) {
    PodNetwork net;
    net.sandbox_id = request.sandbox_id;
    net.host_network = true;
    return net;
  }
  auto config_or = LoadNetworkConfigList(config_.conf_dir, config_.network_name);
  if (!config_or.ok()) {
    return config_or.error().Wrap("pod network setup for sandbox " + request.sandbox_id);
  }
  NetworkConfigList config = std::move(config_or).value();
  if (auto st = cni_.CheckPluginsPresent(config); !st.ok()) {
    return st.error().Wrap("pod network setup for sandbox " + request.sandbox_id);
  }
  BusyGuard busy(*this, request.sandbox_id);
  CHRYS_RETURN_IF_ERROR(busy.status());
  const std::string record_path = RecordPath(request.sandbox_id);
  if (::access(record_path.c_str(), F_OK) == 0) {
    return base::MakeError(base::ErrorCode::kAlreadyExists,
                           "sandbox " + request.sandbox_id + " already has a network; tear it down first");
  }
  CHRYS_ASSIGN_OR_RETURN(NetnsHandle netns, NetnsHandle::Create(request.sandbox_id, config_.netns_dir));

  PodRecord record;
  record.sandbox_id = request.sandbox_id;
  record.netns_name = netns.name();
  record.netns_path = netns.path();
  record.phase = "adding";
  record.config_text = config.text;
  record.config_source = config.source;
  record.attachment.container_id = request.sandbox_id;
  record.attachment.netns_path = netns.path();
  record.attachment.ifname = config_.ifname;
  record.attachment.args = {{"IgnoreUnknown", "1"},
                            {"K8S_POD_NAMESPACE", request.pod_namespace},
                            {"K8S_POD_NAME", request.pod_name},
                            {"K8S_POD_INFRA_CONTAINER_ID", request.sandbox_id},
                            {"K8S_POD_UID", request.pod_uid}};
  record.attachment.capability_args = CapabilityArgs(request);
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(config_.state_dir + "/pods", 0700));
  CHRYS_RETURN_IF_ERROR(WriteRecord(record_path, RecordToJson(record).dump()));

  std::vector<TapLink> taps;
  Status cache_written;
  std::thread cache_writer;
  struct Joiner {
    std::thread& thread;
    void Join() {
      if (thread.joinable()) {
        thread.join();
      }
    }
    ~Joiner() { Join(); }
  } cache_writer_joiner{cache_writer};
  // Undo in reverse: taps, CNI DEL, netns, record. If DEL fails the record stays so Teardown can retry it.
  auto undo = [&](const base::Error& cause, const std::optional<json>& prev_result) -> base::Error {
    cache_writer_joiner.Join();  // DEL removes the cache entry: the writer must be done first
    taps.clear();
    Status del = cni_.Del(config, record.attachment, prev_result);
    (void)netns.Remove();
    if (!del.ok()) {
      return base::MakeError(cause.code(), "pod network setup for sandbox " + request.sandbox_id +
                                               " failed: " + cause.message() + "; cleanup CNI DEL also failed (" +
                                               del.error().message() + "), Teardown will retry it");
    }
    (void)base::RemoveFileIfExists(record_path);
    return cause.Wrap("pod network setup for sandbox " + request.sandbox_id);
  };

  auto added = cni_.AddUncached(config, record.attachment);
  if (!added.ok()) {
    return undo(added.error(), std::nullopt);
  }
  const CniResult& result = *added;
  // The durable cache write (two fsyncs) overlaps with the tap setup below; both must succeed.
  // It works on copies, so nothing it reads can go away before it is joined.
  cache_writer = std::thread([this, config, attachment = record.attachment, raw = result.raw, &cache_written] {
    cache_written = cni_.WriteCache(config, attachment, raw);
  });

  PodNetwork net;
  net.sandbox_id = request.sandbox_id;
  net.netns_path = netns.path();
  net.dns = {result.dns.nameservers, result.dns.domain, result.dns.search, result.dns.options};
  std::vector<std::string> result_names;
  for (const auto& itf : result.interfaces) {
    result_names.push_back(itf.name);
    if (itf.sandbox == netns.path()) {
      PodInterface pi;
      pi.cni_ifname = itf.name;
      net.interfaces.push_back(std::move(pi));
    }
  }
  if (net.interfaces.empty()) {
    // Some plugins report no sandbox interface; the attachment's own name is the one they created.
    PodInterface pi;
    pi.cni_ifname = config_.ifname;
    net.interfaces.push_back(std::move(pi));
  }
  AssignAddresses(result, net.interfaces, result_names);

  for (size_t i = 0; i < net.interfaces.size(); ++i) {
    PodInterface& itf = net.interfaces[i];
    TapLinkSpec spec{itf.cni_ifname, TapNameFor(i, itf.cni_ifname), request.queues, config_.tap_tx_queue_len};
    auto tap = TapLink::Create(netns.fd(), spec);
    if (!tap.ok()) {
      return undo(tap.error().Wrap("tap link for " + itf.cni_ifname), result.raw);
    }
    itf.tap_name = tap->tap_name();
    itf.guest_mac = tap->guest_mac();
    itf.mtu = tap->mtu();
    itf.queues = request.queues;
    itf.queue_fds = tap->TakeQueueFds();
    taps.push_back(std::move(tap).value());
  }

  cache_writer_joiner.Join();
  if (!cache_written.ok()) {
    return undo(cache_written.error(), result.raw);
  }

  record.phase = "ready";
  record.interfaces.clear();
  for (const auto& itf : net.interfaces) {
    PodInterface copy;
    copy.cni_ifname = itf.cni_ifname;
    copy.tap_name = itf.tap_name;
    copy.guest_mac = itf.guest_mac;
    copy.mtu = itf.mtu;
    copy.queues = itf.queues;
    copy.ips = itf.ips;
    copy.routes = itf.routes;
    record.interfaces.push_back(std::move(copy));
  }
  record.dns = net.dns;
  if (auto st = WriteRecord(record_path, RecordToJson(record).dump()); !st.ok()) {
    return undo(st.error(), result.raw);
  }
  for (auto& tap : taps) {
    tap.Keep();
  }
  netns.Keep();
  return net;
}

Status PodNetworkManager::Teardown(const std::string& sandbox_id) {
  if (auto st = NetnsHandle::ValidateName(sandbox_id); !st.ok()) {
    return base::InvalidArgument("sandbox id: " + st.error().message());
  }
  BusyGuard busy(*this, sandbox_id);
  CHRYS_RETURN_IF_ERROR(busy.status());
  const std::string record_path = RecordPath(sandbox_id);
  auto record_or = ReadRecord(record_path);
  if (!record_or.ok()) {
    if (record_or.error().code() != base::ErrorCode::kNotFound) {
      return record_or.error();
    }
    // No record (lost with /run at a reboot, or a crash before it was written): DEL whatever the CNI cache
    // holds for this sandbox, then drop a netns of that name if one is left.
    const bool netns_exists = NetnsHandle::Exists(sandbox_id, config_.netns_dir);
    for (auto& cached : cni_.ReadCacheFor(sandbox_id)) {
      cached.attachment.netns_path = netns_exists ? config_.netns_dir + "/" + sandbox_id : "";
      if (auto st = cni_.Del(cached.config, cached.attachment, cached.result); !st.ok()) {
        return st.error().Wrap("teardown of sandbox " + sandbox_id);
      }
    }
    return NetnsHandle::RemoveByName(sandbox_id, config_.netns_dir);
  }
  PodRecord record = std::move(record_or).value();
  const std::string dir = std::filesystem::path(record.netns_path).parent_path().string();
  // The taps are not deleted one by one: each RTM_DELLINK waits for an RCU grace period (~20 ms), while
  // removing the netns below destroys them, batched, off our path. A VMM must have stopped by now; if a
  // process still pins the netns, the taps live on with it but no packet reaches them once the veth is gone.
  auto netns = NetnsHandle::Open(record.netns_name, dir);

  // DEL with what ADD used: the cached config and result if ADD finished, else the recorded config.
  const std::string network = [&] {
    auto parsed = ParseNetworkConfigList(record.config_text, record.config_source);
    return parsed.ok() ? parsed->name : std::string();
  }();
  auto cached = cni_.ReadCache(network, sandbox_id, record.attachment.ifname);
  Status del;
  if (cached.ok()) {
    cached->attachment.netns_path = netns.ok() ? record.netns_path : "";
    del = cni_.Del(cached->config, cached->attachment, cached->result);
  } else {
    auto config = ParseNetworkConfigList(record.config_text, record.config_source);
    if (!config.ok()) {
      return config.error().Wrap("teardown of sandbox " + sandbox_id + ": recorded CNI config");
    }
    record.attachment.netns_path = netns.ok() ? record.netns_path : "";
    del = cni_.Del(*config, record.attachment, std::nullopt);
  }
  if (!del.ok()) {
    return del.error().Wrap("teardown of sandbox " + sandbox_id);
  }
  if (netns.ok()) {
    CHRYS_RETURN_IF_ERROR(netns->Remove());
  } else {
    CHRYS_RETURN_IF_ERROR(NetnsHandle::RemoveByName(record.netns_name, dir));
  }
  return base::RemoveFileIfExists(record_path);
}

Status PodNetworkManager::Check(const std::string& sandbox_id) {
  if (auto st = NetnsHandle::ValidateName(sandbox_id); !st.ok()) {
    return base::InvalidArgument("sandbox id: " + st.error().message());
  }
  CHRYS_ASSIGN_OR_RETURN(PodRecord record, ReadRecord(RecordPath(sandbox_id)));
  if (record.phase != "ready") {
    return base::FailedPrecondition("network of sandbox " + sandbox_id + " was never completed");
  }
  const std::string dir = std::filesystem::path(record.netns_path).parent_path().string();
  auto netns = NetnsHandle::Open(record.netns_name, dir);
  if (!netns.ok()) {
    return netns.error().Wrap("check of sandbox " + sandbox_id);
  }
  for (const auto& itf : record.interfaces) {
    CHRYS_ASSIGN_OR_RETURN(TapLinkState s, TapLink::Inspect(netns->fd(), itf.tap_name, itf.cni_ifname));
    auto redirects_to = [](const std::vector<RedirectFilter>& filters, int ifindex) {
      return std::any_of(filters.begin(), filters.end(), [ifindex](const RedirectFilter& f) {
        return f.action == "mirred" && f.target_ifindex == ifindex;
      });
    };
    std::string problem;
    if (!s.veth_exists) {
      problem = "pod interface " + itf.cni_ifname + " is gone";
    } else if (!s.tap_exists) {
      problem = "tap " + itf.tap_name + " is gone";
    } else if (!s.veth_ingress_qdisc || !redirects_to(s.veth_filters, s.tap_ifindex)) {
      problem = "redirect " + itf.cni_ifname + " -> " + itf.tap_name + " is missing";
    } else if (!s.tap_ingress_qdisc || !redirects_to(s.tap_filters, s.veth_ifindex)) {
      problem = "redirect " + itf.tap_name + " -> " + itf.cni_ifname + " is missing";
    }
    if (!problem.empty()) {
      return base::FailedPrecondition("check of sandbox " + sandbox_id + ": " + problem);
    }
  }
  auto config = ParseNetworkConfigList(record.config_text, record.config_source);
  if (!config.ok()) {
    return config.error();
  }
  auto cached = cni_.ReadCache(config->name, sandbox_id, record.attachment.ifname);
  if (!cached.ok()) {
    return cached.error().Wrap("check of sandbox " + sandbox_id);
  }
  cached->attachment.netns_path = record.netns_path;
  if (auto st = cni_.Check(cached->config, cached->attachment, cached->result); !st.ok()) {
    return st.error().Wrap("check of sandbox " + sandbox_id);
  }
  return Status::Ok();
}

Status PodNetworkManager::Quiesce(const std::string& sandbox_id) {
  if (auto st = NetnsHandle::ValidateName(sandbox_id); !st.ok()) {
    return base::InvalidArgument("sandbox id: " + st.error().message());
  }
  auto record = ReadRecord(RecordPath(sandbox_id));
  if (!record.ok()) {
    return record.error().code() == base::ErrorCode::kNotFound ? Status::Ok() : Status(record.error());
  }
  const std::string dir = std::filesystem::path(record->netns_path).parent_path().string();
  auto netns = NetnsHandle::Open(record->netns_name, dir);
  if (!netns.ok()) {
    return Status::Ok();  // no namespace, no traffic
  }
  for (const auto& itf : record->interfaces) {
    Status st = TapLink::SetLinkUp(netns->fd(), itf.cni_ifname, false);
    if (!st.ok() && st.error().code() != base::ErrorCode::kNotFound) {
      return st.error().Wrap("quiesce of sandbox " + sandbox_id);
    }
  }
  return Status::Ok();
}

NetworkReadiness PodNetworkManager::Readiness() const {
  NetworkReadiness out;
  auto config = LoadNetworkConfigList(config_.conf_dir, config_.network_name);
  if (!config.ok()) {
    out.reason = "NetworkPluginNotReady";
    out.message = "Network plugin returns error: " + config.error().message();
    return out;
  }
  if (auto st = cni_.CheckPluginsPresent(*config); !st.ok()) {
    out.reason = "NetworkPluginNotReady";
    out.message =
        "Network plugin returns error: network " + config->name + " (" + config->source + "): " + st.error().message();
    return out;
  }
  out.ready = true;
  return out;
}

base::Result<PodNetwork> PodNetworkManager::Describe(const std::string& sandbox_id) const {
  if (auto st = NetnsHandle::ValidateName(sandbox_id); !st.ok()) {
    return base::InvalidArgument("sandbox id: " + st.error().message());
  }
  CHRYS_ASSIGN_OR_RETURN(PodRecord record, ReadRecord(RecordPath(sandbox_id)));
  PodNetwork net;
  net.sandbox_id = sandbox_id;
  net.netns_path = record.netns_path;
  net.interfaces = std::move(record.interfaces);
  net.dns = record.dns;
  return net;
}

base::Result<std::vector<base::UniqueFd>> PodNetworkManager::ReopenQueues(const std::string& sandbox_id,
                                                                          const std::string& tap_name,
                                                                          int queues) const {
  CHRYS_ASSIGN_OR_RETURN(PodNetwork net, Describe(sandbox_id));
  const std::string dir = std::filesystem::path(net.netns_path).parent_path().string();
  CHRYS_ASSIGN_OR_RETURN(NetnsHandle netns,
                         NetnsHandle::Open(std::filesystem::path(net.netns_path).filename().string(), dir));
  return TapLink::OpenQueues(netns.fd(), tap_name, queues);
}

std::vector<std::string> PodNetworkManager::ListSandboxes() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(config_.state_dir + "/pods", ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->path().extension() == ".json") {
      out.push_back(it->path().stem().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace chrys::netcni
