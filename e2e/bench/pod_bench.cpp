// pod_bench: pods through chrysd's CRI socket beside a bare QEMU boot of the same guest, in the same run.
//   - RunPodSandbox → first container running → its first log line, for pods one after another (kept running) and
//     for pods started all at once; the peer is qemu-system-x86_64 booting the same kernel + initramfs with the
//     same accelerator, vCPUs and memory to the agent's "ready" line on the serial console (one after another,
//     interleaved with the pods, and all at once).
//   - chrysd's RSS with the serial pods running, beside its RSS with no pod.
//   - p50/p99 of ListContainers, ContainerStatus and ListPodSandbox with those pods × containers per pod, right
//     after the last pod started and again once the host has gone quiet, each with the host's CPU use meanwhile;
//     the settled figures beside the gRPC floor (grpc_floor.h: chrysd's own answers served as fixed bytes, so what is
//     left is gRPC, the socket and the client's decoding) and containerd's CRI with the same pods and containers.
//     chrysd runs at its default log level (info), as on a node.
// Prints a table and one JSON line. Flags: --serial N --parallel N --containers N --rpc-iterations N --bare-every N
// --warm-pool N. With --warm-pool N (0..64; default chrysd's, auto; 0: no pool) chrysd keeps N VMs booted and
// the bench waits for a full pool before each serial pod, each bare boot and each at-once phase, so a pod meets a node
// whose pool refilled since the last start and no refill boot runs beside a bare one; it counts the pods that claimed
// a warm VM (pods started at once beyond N boot cold). --pod-cpus N and --pod-memory-mib M give every pod those
// pod-level limits (kubelet's LinuxPodSandboxConfig.resources), so its VM is sized by them (and a warm VM is grown to
// them); the bare boot takes the pod VM's vCPUs and memory as the pod reports them. --no-containerd skips the
// containerd peer. CHRYS_E2E_KEEP_LOGS=DIR keeps chrysd's log there (its directory goes when the bench ends).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/file_util.h"
#include "cri/config.h"
#include "e2e/bench/containerd_cri.h"
#include "e2e/bench/grpc_floor.h"
#include "e2e/fixtures/child_process.h"
#include "e2e/pods/pod_env.h"
#include "runtime/guest_manifest.h"
#include "runtime/qemu_cpu.h"

namespace chrys::e2e {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Options {
  int serial = 20;
  int parallel = 10;
  int containers = 3;
  int rpc_iterations = 1000;
  int bare_every = 5;                  // one bare boot before every Nth serial pod
  int warm_pool = cri::kWarmPoolAuto;  // chrysd's vmm.warm_pool_size; by default chrysd's default, auto
  int pod_cpus = 0;                    // pod-level CPU limit in whole CPUs; 0: none
  int pod_memory_mib = 0;              // pod-level memory limit; 0: none
  bool containerd_peer = true;         // the RPC latency of containerd's CRI beside chrysd's
};

// The pod-level limits of every pod the bench starts (none when both are 0).
void ApplyPodLimits(const Options& o, v1::PodSandboxConfig& pod_config) {
  if (o.pod_cpus > 0) {
    pod_config.mutable_linux()->mutable_resources()->set_cpu_period(100000);
    pod_config.mutable_linux()->mutable_resources()->set_cpu_quota(100000LL * o.pod_cpus);
  }
  if (o.pod_memory_mib > 0) {
    pod_config.mutable_linux()->mutable_resources()->set_memory_limit_in_bytes(static_cast<int64_t>(o.pod_memory_mib)
                                                                               << 20);
  }
}

// Labels and annotations as kubelet sets them on a pod and its containers, so list answers are as large as on a node.
void AddKubeletMetadata(v1::PodSandboxConfig& pod) {
  const auto& md = pod.metadata();
  auto& labels = *pod.mutable_labels();
  labels["io.kubernetes.pod.name"] = md.name();
  labels["io.kubernetes.pod.namespace"] = md.namespace_();
  labels["io.kubernetes.pod.uid"] = md.uid();
  labels["app"] = "bench";
  auto& annotations = *pod.mutable_annotations();
  annotations["kubernetes.io/config.seen"] = "2026-12-03T10:00:00.000000000Z";
  annotations["kubernetes.io/config.source"] = "api";
}
void AddKubeletMetadata(const v1::PodSandboxConfig& pod, v1::ContainerConfig& container) {
  auto& labels = *container.mutable_labels();
  labels["io.kubernetes.container.name"] = container.metadata().name();
  labels["io.kubernetes.pod.name"] = pod.metadata().name();
  labels["io.kubernetes.pod.namespace"] = pod.metadata().namespace_();
  labels["io.kubernetes.pod.uid"] = pod.metadata().uid();
  auto& annotations = *container.mutable_annotations();
  annotations["io.kubernetes.container.hash"] = "5d3a1b7c";
  annotations["io.kubernetes.container.restartCount"] = "0";
  annotations["io.kubernetes.container.terminationMessagePath"] = "/dev/termination-log";
  annotations["io.kubernetes.container.terminationMessagePolicy"] = "File";
  annotations["io.kubernetes.pod.terminationGracePeriod"] = "30";
}

// The bench's pod `name` and its containers: the first prints a line then sleeps, the others sleep.
v1::PodSandboxConfig BenchPod(PodEnv& env, const Options& o, const std::string& name) {
  v1::PodSandboxConfig pod = env.PodConfig(name);
  ApplyPodLimits(o, pod);
  AddKubeletMetadata(pod);
  return pod;
}
v1::ContainerConfig BenchContainer(PodEnv& env, const v1::PodSandboxConfig& pod, int index) {
  v1::ContainerConfig c = index == 0
                              ? env.ContainerConfig("first", {"/bin/sh", "-c", "echo first-line; exec sleep 100000"})
                              : env.ContainerConfig("extra-" + std::to_string(index), {"sleep", "100000"});
  AddKubeletMetadata(pod, c);
  return c;
}

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}
double Us(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) {
    return 0;
  }
  std::sort(values.begin(), values.end());
  size_t index = static_cast<size_t>(std::ceil(p * static_cast<double>(values.size()))) - 1;
  return values[std::min(index, values.size() - 1)];
}

double Median(const std::vector<double>& values) {
  return Percentile(values, 0.5);
}
double Max(const std::vector<double>& values) {
  return values.empty() ? 0 : *std::max_element(values.begin(), values.end());
}

long StatusKib(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      return std::strtol(line.c_str() + key.size() + 1, nullptr, 10);
    }
  }
  return -1;
}

std::vector<std::string> Cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> out;
  std::string arg;
  while (std::getline(in, arg, '\0')) {
    out.push_back(arg);
  }
  return out;
}

std::string ArgAfter(const std::vector<std::string>& argv, const std::string& flag) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) {
      return argv[i + 1];
    }
  }
  return "";
}

// Usage errors only: past that point failures are values, so the environment tears its pods down.
[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "pod_bench: %s\n", message.c_str());
  std::exit(2);
}

// The VM shape of a pod, read from its VMM's command line, so the bare boot matches it.
struct VmShape {
  std::string machine = "q35,accel=tcg";
  std::string cpu = runtime::kTcgCpuModel;
  std::string smp = "1";
  std::string memory = "256M";
  std::string firmware;  // the pod VM's -bios, if any: the bare boot uses the same firmware
};

// Bare QEMU: the guest's kernel, initramfs and command line, the pod VM's machine/cpu/smp/memory, the agent's
// virtio-serial port and tools disk; no NIC, no other disks, no chrysd. Time from launch to the agent's ready line on
// the console.
class BareBoot {
 public:
  BareBoot(std::string guest_dir, VmShape shape, std::string work_dir)
      : guest_dir_(std::move(guest_dir)), shape_(std::move(shape)), work_dir_(std::move(work_dir)) {}

  base::Status Load() {
    CHRYS_ASSIGN_OR_RETURN(runtime::GuestImageFiles files, runtime::ReadGuestManifest(guest_dir_));
    kernel_ = files.kernel;
    initramfs_ = files.initramfs;
    cmdline_ = files.cmdline.empty() ? "console=ttyS0" : files.cmdline;
    if (files.tools_disk) {
      tools_disk_ = files.tools_disk->path;
      tools_serial_ = files.tools_disk->serial;
    }
    return base::Status::Ok();
  }

  // Starts `count` VMs at once; returns each one's launch → marker time in ms (bounded by `timeout`).
  base::Result<std::vector<double>> Run(int count, std::chrono::seconds timeout = std::chrono::seconds(300)) {
    std::vector<ChildProcess> vms;
    std::vector<std::string> consoles;
    std::vector<Clock::time_point> started;
    for (int i = 0; i < count; ++i) {
      std::string tag = std::to_string(round_) + "-" + std::to_string(i);
      std::string console = work_dir_ + "/bare-" + tag + ".console";
      (void)base::RemoveFileIfExists(console);
      std::vector<std::string> argv = {
          "qemu-system-x86_64",
          "-machine",
          shape_.machine,
          "-cpu",
          shape_.cpu,
          "-smp",
          shape_.smp,
          "-m",
          shape_.memory,
          "-nodefaults",
          "-no-user-config",
          "-nographic",
          "-no-reboot",
          "-chardev",
          "file,id=console,path=" + console,
          "-serial",
          "chardev:console",
          "-kernel",
          kernel_,
          "-initrd",
          initramfs_,
          "-append",
          cmdline_,
          "-device",
          "virtio-serial-pci,id=vser0",
          "-chardev",
          "socket,id=agent,path=" + work_dir_ + "/bare-" + tag + ".sock,server=on,wait=off",
          "-device",
          "virtserialport,bus=vser0.0,chardev=agent,name=chrys.agent"};
      if (!shape_.firmware.empty()) {
        argv.insert(argv.end(), {"-bios", shape_.firmware});
      }
      if (!tools_disk_.empty()) {
        argv.insert(argv.end(), {"-drive", "if=none,id=tools,format=raw,readonly=on,file=" + tools_disk_, "-device",
                                 "virtio-blk-pci,drive=tools,serial=" + tools_serial_});
      }
      started.push_back(Clock::now());
      CHRYS_ASSIGN_OR_RETURN(ChildProcess vm, ChildProcess::Start(argv, work_dir_ + "/bare-" + tag + ".log"));
      vms.push_back(std::move(vm));
      consoles.push_back(console);
    }
    ++round_;
    std::vector<double> ms(count, -1);
    auto deadline = Clock::now() + timeout;
    int left = count;
    while (left > 0 && Clock::now() < deadline) {
      for (int i = 0; i < count; ++i) {
        if (ms[i] >= 0) {
          continue;
        }
        auto text = base::ReadFile(consoles[i]);
        if (text.ok() && text->find(kMarker) != std::string::npos) {
          ms[i] = Ms(Clock::now() - started[i]);
          --left;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    for (auto& vm : vms) {
      vm.Stop(std::chrono::seconds(2));
    }
    if (left > 0) {
      return base::DeadlineExceeded(std::to_string(left) + " bare VMs never printed '" + kMarker + "'");
    }
    return ms;
  }

  static constexpr const char* kMarker = "chrys-agent info: ready";

 private:
  std::string guest_dir_;
  VmShape shape_;
  std::string work_dir_;
  std::string kernel_;
  std::string initramfs_;
  std::string tools_disk_;  // the image's tools disk: part of the guest, plugged as chrysd plugs it
  std::string tools_serial_;
  std::string cmdline_;
  int round_ = 0;
};

struct PodTiming {
  std::string pod_id;
  std::vector<std::string> container_ids;
  double ready_ms = 0;    // RunPodSandbox returned
  double running_ms = 0;  // first container RUNNING
  double log_ms = 0;      // its first log line in the CRI log file
};

bool LogHasLine(const std::string& path, const std::string& text) {
  auto content = base::ReadFile(path, 1 << 20);
  return content.ok() && content->find(" F " + text + "\n") != std::string::npos;
}

// One pod's critical path, timed from the RunPodSandbox call; extra containers are added after the clock stops.
// `pod_id` is set as soon as the pod exists, so a failure later still lets the caller remove it.
base::Result<PodTiming> RunOnePod(PodEnv& env, const Options& o, const std::string& name, int containers,
                                  std::string* pod_id) {
  PodTiming t;
  v1::PodSandboxConfig pod_config = BenchPod(env, o, name);
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(pod_config.log_directory()));
  auto start = Clock::now();
  CHRYS_ASSIGN_OR_RETURN(t.pod_id, env.RunPod(pod_config));
  *pod_id = t.pod_id;
  t.ready_ms = Ms(Clock::now() - start);
  auto first = BenchContainer(env, pod_config, 0);
  CHRYS_ASSIGN_OR_RETURN(std::string id, env.CreateContainer(t.pod_id, first, pod_config));
  CHRYS_RETURN_IF_ERROR(env.StartContainer(id));
  t.container_ids.push_back(id);
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(v1::ContainerStatus st, env.ContainerStatus(id));
    if (st.state() == v1::CONTAINER_RUNNING) {
      break;
    }
    if (st.state() == v1::CONTAINER_EXITED || Clock::now() > deadline) {
      return base::Internal(name + ": the first container never ran");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  t.running_ms = Ms(Clock::now() - start);
  std::string log = env.LogPath(pod_config, first);
  while (!LogHasLine(log, "first-line")) {
    if (Clock::now() > deadline) {
      std::string message = name;
      message.append(": no first log line in ").append(log);
      return base::Internal(message);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  t.log_ms = Ms(Clock::now() - start);
  for (int c = 1; c < containers; ++c) {
    auto extra = BenchContainer(env, pod_config, c);
    CHRYS_ASSIGN_OR_RETURN(std::string extra_id, env.CreateContainer(t.pod_id, extra, pod_config));
    CHRYS_RETURN_IF_ERROR(env.StartContainer(extra_id));
    t.container_ids.push_back(extra_id);
  }
  return t;
}

void RemovePods(PodEnv& env, const std::vector<std::string>& ids) {
  std::vector<std::future<void>> removals;
  for (const auto& pod_id : ids) {
    if (pod_id.empty()) {
      continue;
    }
    removals.push_back(std::async(std::launch::async, [&env, id = pod_id] {
      (void)env.StopPod(id);
      (void)env.RemovePod(id);
    }));
  }
  for (auto& r : removals) {
    r.get();
  }
}

// The "vm" object of the pod's verbose PodSandboxStatus info; empty when there is none or the call failed.
json VmInfoOf(PodEnv& env, const std::string& pod_id) {
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(pod_id);
  req.set_verbose(true);
  v1::PodSandboxStatusResponse resp;
  if (!env.runtime().PodSandboxStatus(Ctx().get(), req, &resp).ok() || !resp.info().contains("info")) {
    return json::object();
  }
  auto info = json::parse(resp.info().at("info"), nullptr, false);
  return info.is_object() && info.contains("vm") && info["vm"].is_object() ? info["vm"] : json::object();
}

pid_t VmPidOf(PodEnv& env, const std::string& pod_id) {
  return VmInfoOf(env, pod_id).value("pid", -1);
}

bool FromWarmPool(PodEnv& env, const std::string& pod_id) {
  return VmInfoOf(env, pod_id).value("fromWarmPool", false);
}

// chrysd's warm pool as its verbose Status reports it (size, ready, booting, claimed, missed, last_error).
base::Result<json> WarmPoolInfo(PodEnv& env) {
  v1::StatusRequest req;
  req.set_verbose(true);
  v1::StatusResponse resp;
  auto status = env.runtime().Status(Ctx(std::chrono::seconds(30)).get(), req, &resp);
  if (!status.ok()) {
    return cri::CriClient::CallError("Status", status);
  }
  if (!resp.info().contains("config")) {
    return base::Internal("verbose Status has no \"config\" info");
  }
  auto config = json::parse(resp.info().at("config"), nullptr, false);
  if (!config.is_object() || !config.contains("warm_pool") || !config["warm_pool"].is_object()) {
    return base::Internal("verbose Status info has no warm_pool object");
  }
  return config["warm_pool"];
}

// Polls chrysd's verbose Status every 200 ms until its warm pool holds `size` ready VMs and boots none, at most
// max(180 s, 30 s per VM). Returns how long it waited, in ms; on timeout the error quotes the pool's last_error.
base::Result<double> WaitForFullWarmPool(PodEnv& env, int size) {
  auto start = Clock::now();
  auto deadline = start + std::max<Clock::duration>(std::chrono::seconds(180), size * std::chrono::seconds(30));
  json pool;
  while (true) {
    CHRYS_ASSIGN_OR_RETURN(pool, WarmPoolInfo(env));
    if (pool.value("ready", -1) == size && pool.value("booting", -1) == 0) {
      return Ms(Clock::now() - start);
    }
    if (Clock::now() >= deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::string last_error = pool.value("last_error", "");
  std::string message = "the warm pool did not fill (" + std::to_string(size) + " ready, none booting) in ";
  message.append(std::to_string(std::lround(Ms(Clock::now() - start) / 1000)))
      .append(" s: ready ")
      .append(std::to_string(pool.value("ready", -1)))
      .append(", booting ")
      .append(std::to_string(pool.value("booting", -1)))
      .append(", last_error '")
      .append(last_error.empty() ? "none" : last_error)
      .append("'");
  return base::DeadlineExceeded(message);
}

// Share of all host CPUs busy (not idle or iowait) between two /proc/stat readings, in percent.
struct CpuTimes {
  unsigned long long busy = 0;
  unsigned long long total = 0;
};
CpuTimes ReadCpuTimes() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  CpuTimes t;
  in >> cpu;
  for (int field = 0; field < 10; ++field) {
    unsigned long long v = 0;
    if (!(in >> v)) {
      break;
    }
    t.total += v;
    if (field != 3 && field != 4) {  // idle, iowait
      t.busy += v;
    }
  }
  return t;
}
double BusyPercent(const CpuTimes& from, const CpuTimes& to) {
  unsigned long long total = to.total - from.total;
  return total == 0 ? 0 : 100.0 * static_cast<double>(to.busy - from.busy) / static_cast<double>(total);
}

// Waits (at most 30 s) until the host has been under 40% busy for two 1 s windows in a row: the pods just
// started have finished booting and starting their containers. Returns how long it waited, in ms.
double WaitForQuietHost() {
  auto start = Clock::now();
  int quiet_windows = 0;
  while (quiet_windows < 2 && Clock::now() - start < std::chrono::seconds(30)) {
    CpuTimes before = ReadCpuTimes();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    quiet_windows = BusyPercent(before, ReadCpuTimes()) < 40 ? quiet_windows + 1 : 0;
  }
  return Ms(Clock::now() - start);
}

// Latency of one RPC repeated `n` times, in µs.
template <typename Call>
base::Result<std::vector<double>> TimeRpc(const std::string& name, int n, Call call) {
  std::vector<double> us;
  us.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto start = Clock::now();
    if (!call(i)) {
      return base::Internal(name + " failed or answered wrongly during the latency run");
    }
    us.push_back(Us(Clock::now() - start));
  }
  return us;
}

struct RpcLatency {
  std::vector<double> list_containers, container_status, list_pods;  // µs
  double host_busy_percent = 0;                                      // while they ran
};

base::Result<RpcLatency> MeasureRpcs(v1::RuntimeService::Stub& rt, int iterations,
                                     const std::vector<std::string>& containers, size_t pods) {
  RpcLatency out;
  CpuTimes before = ReadCpuTimes();
  CHRYS_ASSIGN_OR_RETURN(out.list_containers, TimeRpc("ListContainers", iterations, [&](int) {
                           v1::ListContainersResponse resp;
                           grpc::ClientContext ctx;
                           return rt.ListContainers(&ctx, v1::ListContainersRequest(), &resp).ok() &&
                                  resp.containers_size() == static_cast<int>(containers.size());
                         }));
  CHRYS_ASSIGN_OR_RETURN(out.container_status, TimeRpc("ContainerStatus", iterations, [&](int i) {
                           v1::ContainerStatusRequest req;
                           req.set_container_id(containers[i % containers.size()]);
                           v1::ContainerStatusResponse resp;
                           grpc::ClientContext ctx;
                           return rt.ContainerStatus(&ctx, req, &resp).ok();
                         }));
  CHRYS_ASSIGN_OR_RETURN(out.list_pods, TimeRpc("ListPodSandbox", iterations, [&](int) {
                           v1::ListPodSandboxResponse resp;
                           grpc::ClientContext ctx;
                           return rt.ListPodSandbox(&ctx, v1::ListPodSandboxRequest(), &resp).ok() &&
                                  resp.items_size() == static_cast<int>(pods);
                         }));
  out.host_busy_percent = BusyPercent(before, ReadCpuTimes());
  return out;
}

// The same RPCs on containerd's CRI (runc containers) with the same pods x containers (configs, image, labels), run
// while chrysd's pods still run: the same host, background and client. containerd goes when this returns.
base::Result<RpcLatency> MeasureContainerd(PodEnv& env, const Options& o, const std::string& work,
                                           std::string* version) {
  ContainerdCriOptions options;
  options.dir = work + "/containerd";
  options.image_layout = env.image_layout();
  options.pause_image = env.pause_image();
  options.bridge = "chrys-bcd0";
  options.subnet = "10.199.90.0/24";
  CHRYS_ASSIGN_OR_RETURN(std::unique_ptr<ContainerdCri> containerd, ContainerdCri::Start(options));
  *version = containerd->version();
  std::vector<std::string> containers;
  for (int i = 0; i < o.serial; ++i) {
    std::string name = "serial-" + std::to_string(i);
    v1::PodSandboxConfig pod = BenchPod(env, o, name);
    pod.set_log_directory(options.dir + "/logs/" + name);
    std::vector<v1::ContainerConfig> configs;
    configs.reserve(o.containers);
    for (int c = 0; c < o.containers; ++c) {
      configs.push_back(BenchContainer(env, pod, c));
    }
    CHRYS_ASSIGN_OR_RETURN(std::vector<std::string> ids, containerd->RunPodWith(pod, configs));
    containers.insert(containers.end(), ids.begin(), ids.end());
  }
  double waited = WaitForQuietHost();
  std::fprintf(stderr, "%s: %d pods x %d containers running; host quiet after %.0f ms\n", version->c_str(), o.serial,
               o.containers, waited);
  return MeasureRpcs(containerd->runtime(), o.rpc_iterations, containers, static_cast<size_t>(o.serial));
}

// The same RPCs on the gRPC floor (e2e/bench/grpc_floor.h): a server answering with chrysd's own answers as
// fixed bytes, so what is left is gRPC, the socket and the client's decoding. Measured while chrysd's pods run.
base::Result<RpcLatency> MeasureFloor(PodEnv& env, const Options& o, const std::string& work,
                                      const std::vector<std::string>& containers, size_t pods) {
  FloorAnswers answers;
  v1::ListContainersResponse containers_listed;
  if (auto st = env.runtime().ListContainers(Ctx().get(), {}, &containers_listed); !st.ok()) {
    return cri::CriClient::CallError("ListContainers", st);
  }
  answers.list_containers = containers_listed.SerializeAsString();
  v1::ContainerStatusRequest status_request;
  status_request.set_container_id(containers.front());
  v1::ContainerStatusResponse status;
  if (auto st = env.runtime().ContainerStatus(Ctx().get(), status_request, &status); !st.ok()) {
    return cri::CriClient::CallError("ContainerStatus", st);
  }
  answers.container_status = status.SerializeAsString();
  v1::ListPodSandboxResponse pods_listed;
  if (auto st = env.runtime().ListPodSandbox(Ctx().get(), {}, &pods_listed); !st.ok()) {
    return cri::CriClient::CallError("ListPodSandbox", st);
  }
  answers.list_pod_sandbox = pods_listed.SerializeAsString();
  CHRYS_ASSIGN_OR_RETURN(
      std::unique_ptr<GrpcFloor> floor,
      GrpcFloor::Start(std::filesystem::read_symlink("/proc/self/exe").string(), work + "/grpc-floor", answers));
  return MeasureRpcs(floor->runtime(), o.rpc_iterations, containers, pods);
}

json RpcJson(const RpcLatency& r) {
  auto pct = [](const std::vector<double>& v) {
    return json{{"p50", Percentile(v, 0.5)}, {"p99", Percentile(v, 0.99)}};
  };
  return {{"list_containers_us", pct(r.list_containers)},
          {"container_status_us", pct(r.container_status)},
          {"list_pod_sandbox_us", pct(r.list_pods)},
          {"host_busy_percent", r.host_busy_percent}};
}

int ParseCount(const char* flag, const char* value, long min = 1, long max = 1000000) {
  char* end = nullptr;
  long n = std::strtol(value, &end, 10);
  if (*end != '\0' || n < min || n > max) {
    Die(std::string(flag) + (min == 1 ? " takes a positive number" : " takes a number from " + std::to_string(min)) +
        (max == 1000000 ? "" : " to " + std::to_string(max)) + ", got '" + value + "'");
  }
  return static_cast<int>(n);
}

base::Status Bench(const Options& o, PodEnv& env, std::vector<std::string>& pods);

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        Die(arg + " needs a value");
      }
      return argv[++i];
    };
    if (arg == "--serial") {
      o.serial = ParseCount("--serial", next());
    } else if (arg == "--parallel") {
      o.parallel = ParseCount("--parallel", next());
    } else if (arg == "--containers") {
      o.containers = ParseCount("--containers", next());
    } else if (arg == "--rpc-iterations") {
      o.rpc_iterations = ParseCount("--rpc-iterations", next());
    } else if (arg == "--bare-every") {
      o.bare_every = ParseCount("--bare-every", next());
    } else if (arg == "--warm-pool") {
      o.warm_pool = ParseCount("--warm-pool", next(), 0, 64);
    } else if (arg == "--pod-cpus") {
      o.pod_cpus = ParseCount("--pod-cpus", next(), 0, 16);
    } else if (arg == "--pod-memory-mib") {
      o.pod_memory_mib = ParseCount("--pod-memory-mib", next(), 0, 1 << 20);
    } else if (arg == "--no-containerd") {
      o.containerd_peer = false;
    } else {
      std::fprintf(stderr,
                   "usage: pod_bench [--serial N (20)] [--parallel N (10)] [--containers N per serial pod (3)]\n"
                   "                 [--rpc-iterations N (1000)] [--bare-every N serial pods (5)]\n"
                   "                 [--warm-pool N chrysd's vmm.warm_pool_size, 0..64 (chrysd's default)]\n"
                   "                 [--pod-cpus N pod CPU limit (0: none)] [--pod-memory-mib M pod memory limit (0)]\n"
                   "                 [--no-containerd (skip containerd's CRI as the RPC latency peer)]\n");
      return 2;
    }
  }

  // Always said, since the test harness turns the pool off unless asked.
  // chrysd logs at its default level, as on a node: the harness's debug level writes a line per RPC.
  std::vector<std::string> chrysd_args = {
      "--log-level", "info", "--set",
      "vmm.warm_pool_size=" + (o.warm_pool == cri::kWarmPoolAuto ? std::string("auto") : std::to_string(o.warm_pool))};
  auto env = PodEnv::Create(chrysd_args);
  if (!env.ok()) {
    std::fprintf(stderr, "pod_bench: environment: %s\n", env.error().message().c_str());
    return 1;
  }
  if (o.warm_pool == cri::kWarmPoolAuto) {
    // The size chrysd chose for this node.
    auto pool = WarmPoolInfo(**env);
    if (!pool.ok()) {
      std::fprintf(stderr, "pod_bench: reading the warm pool's size: %s\n", pool.error().message().c_str());
      return 1;
    }
    o.warm_pool = pool->value("size", 0);
  }
  std::vector<std::string> pods;  // every pod made, removed on the way out whatever happened
  base::Status done = Bench(o, **env, pods);
  RemovePods(**env, pods);
  if (!done.ok()) {
    std::fprintf(stderr, "pod_bench: %s\n", done.error().message().c_str());
    return 1;
  }
  return 0;
}

base::Status Bench(const Options& o, PodEnv& env, std::vector<std::string>& pods) {
  // With a warm pool: wait until it is full (no refill boot running). `what` names the phase for the log.
  auto full_pool = [&](const std::string& what) -> base::Status {
    if (o.warm_pool == 0) {
      return base::Status::Ok();
    }
    CHRYS_ASSIGN_OR_RETURN(double waited, WaitForFullWarmPool(env, o.warm_pool));
    std::fprintf(stderr, "warm pool full (%d) before %s after %.0f ms\n", o.warm_pool, what.c_str(), waited);
    return base::Status::Ok();
  };
  CHRYS_RETURN_IF_ERROR(full_pool("the serial pods"));
  pid_t chrysd = env.chrysd().pid();
  long idle_rss = StatusKib(chrysd, "VmRSS");
  std::string work = env.root() + "/bench";
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(work));

  // --- pods one after another, kept running; a bare boot before every Nth, under the same background ---
  std::vector<PodTiming> serial;
  std::vector<double> bare_serial;
  std::vector<int> bare_paired_pod;  // the serial pod each bare boot ran beside (same background load)
  std::vector<bool> serial_warm;     // per serial pod: its VM came from the warm pool (only with --warm-pool)
  std::unique_ptr<BareBoot> bare;
  for (int i = 0; i < o.serial; ++i) {
    if (bare && i % o.bare_every == 0) {
      CHRYS_RETURN_IF_ERROR(full_pool("bare boot " + std::to_string(bare_serial.size())));
      CHRYS_ASSIGN_OR_RETURN(std::vector<double> one, bare->Run(1));
      bare_serial.push_back(one[0]);
      bare_paired_pod.push_back(i);
    }
    CHRYS_RETURN_IF_ERROR(full_pool("serial pod " + std::to_string(i)));
    pods.emplace_back();
    CHRYS_ASSIGN_OR_RETURN(PodTiming timing,
                           RunOnePod(env, o, "serial-" + std::to_string(i), o.containers, &pods.back()));
    serial.push_back(std::move(timing));
    std::string source;
    if (o.warm_pool > 0) {
      serial_warm.push_back(FromWarmPool(env, serial.back().pod_id));
      source = serial_warm.back() ? ", warm VM" : ", booted its VM";
    }
    std::fprintf(stderr, "serial pod %d: ready %.0f ms, running %.0f ms, first log line %.0f ms%s\n", i,
                 serial.back().ready_ms, serial.back().running_ms, serial.back().log_ms, source.c_str());
    if (!bare) {
      // The first pod tells the VM shape; its first bare boot follows it directly.
      VmShape shape;
      auto vm_argv = Cmdline(VmPidOf(env, serial[0].pod_id));
      for (auto [flag, field] :
           {std::pair{"-machine", &shape.machine}, std::pair{"-cpu", &shape.cpu}, std::pair{"-smp", &shape.smp},
            std::pair{"-m", &shape.memory}, std::pair{"-bios", &shape.firmware}}) {
        if (std::string v = ArgAfter(vm_argv, flag); !v.empty()) {
          *field = v;
        }
      }
      // vCPUs and memory as the pod reports them: a claimed warm VM booted smaller (with room to grow) and was grown.
      json vm = VmInfoOf(env, serial[0].pod_id);
      if (vm.value("vcpus", 0) > 0 && vm.value("memoryMib", 0) > 0) {
        shape.smp = std::to_string(vm.value("vcpus", 0));
        shape.memory = std::to_string(vm.value("memoryMib", 0)) + "M";
      }
      bare = std::make_unique<BareBoot>(CHRYS_GUEST_IMAGE_DIR, shape, work);
      CHRYS_RETURN_IF_ERROR(bare->Load());
      CHRYS_RETURN_IF_ERROR(full_pool("bare boot 0"));
      CHRYS_ASSIGN_OR_RETURN(std::vector<double> one, bare->Run(1));
      bare_serial.push_back(one[0]);
      bare_paired_pod.push_back(0);
      std::fprintf(stderr, "bare boot (%s, -cpu %s, -smp %s, -m %s, firmware %s): %.0f ms\n", shape.machine.c_str(),
                   shape.cpu.c_str(), shape.smp.c_str(), shape.memory.c_str(),
                   shape.firmware.empty() ? "default" : shape.firmware.c_str(), bare_serial.back());
    }
  }
  long pods_rss = StatusKib(chrysd, "VmRSS");
  long pods_hwm = StatusKib(chrysd, "VmHWM");

  // --- RPC latency with serial × containers: right after the last pod started, and once the pods settled ---
  std::vector<std::string> all_containers;
  for (const auto& p : serial) {
    all_containers.insert(all_containers.end(), p.container_ids.begin(), p.container_ids.end());
  }
  CHRYS_ASSIGN_OR_RETURN(RpcLatency rpc_fresh,
                         MeasureRpcs(env.runtime(), o.rpc_iterations, all_containers, serial.size()));
  double settle_ms = WaitForQuietHost();
  CHRYS_ASSIGN_OR_RETURN(RpcLatency rpc_settled,
                         MeasureRpcs(env.runtime(), o.rpc_iterations, all_containers, serial.size()));
  CHRYS_ASSIGN_OR_RETURN(RpcLatency rpc_floor, MeasureFloor(env, o, work, all_containers, serial.size()));
  std::optional<RpcLatency> rpc_containerd;
  std::string containerd_version;
  if (o.containerd_peer) {
    CHRYS_ASSIGN_OR_RETURN(rpc_containerd, MeasureContainerd(env, o, work, &containerd_version));
  }
  RemovePods(env, pods);
  pods.clear();

  // --- pods all at once, then bare VMs all at once ---
  CHRYS_RETURN_IF_ERROR(full_pool("the pods at once"));
  auto parallel_start = Clock::now();
  std::vector<std::future<base::Result<PodTiming>>> runs;
  runs.reserve(o.parallel);
  std::vector<std::string> parallel_ids(o.parallel);
  for (int i = 0; i < o.parallel; ++i) {
    runs.push_back(std::async(std::launch::async, [&env, &o, &parallel_ids, i] {
      return RunOnePod(env, o, "parallel-" + std::to_string(i), 1, &parallel_ids[i]);
    }));
  }
  std::vector<PodTiming> parallel;
  base::Status parallel_status = base::Status::Ok();
  for (auto& r : runs) {
    auto timing = r.get();
    if (timing.ok()) {
      parallel.push_back(std::move(timing).value());
    } else if (parallel_status.ok()) {
      parallel_status = timing.error();
    }
  }
  double parallel_wall = Ms(Clock::now() - parallel_start);
  pods = parallel_ids;
  CHRYS_RETURN_IF_ERROR(std::move(parallel_status));
  std::vector<bool> parallel_warm;  // per pod started at once, as `parallel` (only with --warm-pool)
  if (o.warm_pool > 0) {
    for (const auto& p : parallel) {
      parallel_warm.push_back(FromWarmPool(env, p.pod_id));
    }
  }
  RemovePods(env, pods);
  pods.clear();
  CHRYS_RETURN_IF_ERROR(full_pool("the bare boots at once"));
  auto bare_parallel_start = Clock::now();
  CHRYS_ASSIGN_OR_RETURN(std::vector<double> bare_parallel, bare->Run(o.parallel));
  double bare_parallel_wall = Ms(Clock::now() - bare_parallel_start);

  auto column = [](const std::vector<PodTiming>& timings, double PodTiming::*field) {
    std::vector<double> out;
    out.reserve(timings.size());
    for (const auto& p : timings) {
      out.push_back(p.*field);
    }
    return out;
  };
  auto s_ready = column(serial, &PodTiming::ready_ms);
  auto s_running = column(serial, &PodTiming::running_ms);
  auto s_log = column(serial, &PodTiming::log_ms);
  auto p_log = column(parallel, &PodTiming::log_ms);
  auto p_ready = column(parallel, &PodTiming::ready_ms);
  auto p_running = column(parallel, &PodTiming::running_ms);
  double bare_median = Median(bare_serial);
  // Later serial pods boot beside more running VMs; each bare boot is compared with the pod next to it.
  std::vector<double> paired_ratio;
  std::vector<double> paired_delta;
  for (size_t b = 0; b < bare_serial.size(); ++b) {
    paired_ratio.push_back(serial[bare_paired_pod[b]].log_ms / bare_serial[b]);
    paired_delta.push_back(serial[bare_paired_pod[b]].log_ms - bare_serial[b]);
  }

  std::string pool_note = o.warm_pool > 0 ? " (warm pool " + std::to_string(o.warm_pool) + ")" : "";
  if (o.pod_cpus > 0 || o.pod_memory_mib > 0) {
    pool_note += " (pod limits: " + (o.pod_cpus > 0 ? std::to_string(o.pod_cpus) + " CPUs" : "no CPU limit") + ", " +
                 (o.pod_memory_mib > 0 ? std::to_string(o.pod_memory_mib) + " MiB" : "no memory limit") + ")";
  }
  std::printf(
      "\npod_bench%s: %d pods one after another (kept running), %d at once; accel from the pod VM's command "
      "line; bare = qemu-system-x86_64 to '%s'\n\n",
      pool_note.c_str(), o.serial, o.parallel, BareBoot::kMarker);
  auto count_warm = [](const std::vector<bool>& v) { return std::count(v.begin(), v.end(), true); };
  if (o.warm_pool > 0) {
    std::printf("warm pool: %d VMs; serial pods that claimed a warm VM: %ld of %zu; at once: %ld of %zu\n\n",
                o.warm_pool, static_cast<long>(count_warm(serial_warm)), serial_warm.size(),
                static_cast<long>(count_warm(parallel_warm)), parallel_warm.size());
  }
  std::printf("%-52s %12s %12s %8s %10s\n", "metric", "chrysalis", "bare qemu", "ratio", "delta");
  auto row = [](const char* name, double ours, double peer) {
    std::printf("%-52s %12.0f %12.0f %8.2f %10.0f\n", name, ours, peer, peer > 0 ? ours / peer : 0, ours - peer);
  };
  row("serial: RunPodSandbox returned, p50 (ms)", Median(s_ready), bare_median);
  row("serial: first container running, p50 (ms)", Median(s_running), bare_median);
  row("serial: first log line, p50 (ms)", Median(s_log), bare_median);
  row("serial: first log line, max (ms)", Max(s_log), Max(bare_serial));
  std::printf("%-52s %12s %12s %8.2f %10.0f\n", "serial: paired with the bare boot beside it, p50", "-", "-",
              Median(paired_ratio), Median(paired_delta));
  row("at once: RunPodSandbox returned, p50 (ms)", Median(p_ready), Median(bare_parallel));
  row("at once: first container running, p50 (ms)", Median(p_running), Median(bare_parallel));
  row("at once: first log line, p50 (ms)", Median(p_log), Median(bare_parallel));
  row("at once: first log line, max (ms)", Max(p_log), Max(bare_parallel));
  row("at once: wall time, all pods (ms)", parallel_wall, bare_parallel_wall);
  std::printf("\n%-52s %12s %12s\n", "memory", "with pods", "no pods");
  std::printf("%-52s %12.1f %12.1f\n", ("chrysd VmRSS with " + std::to_string(o.serial) + " pods (MiB)").c_str(),
              static_cast<double>(pods_rss) / 1024.0, static_cast<double>(idle_rss) / 1024.0);
  std::printf("%-52s %12.1f %12s\n", "chrysd VmHWM (MiB)", static_cast<double>(pods_hwm) / 1024.0, "-");
  for (const auto* r : {&rpc_fresh, &rpc_settled}) {
    std::string when = r == &rpc_fresh ? "right after the last pod started"
                                       : "after the pods settled (" + std::to_string(std::lround(settle_ms)) + " ms)";
    std::printf("\nRPC latency, %d pods x %d containers, %s; host %.0f%% busy\n", o.serial, o.containers, when.c_str(),
                r->host_busy_percent);
    std::printf("%-52s %12s %12s\n", "", "p50 (us)", "p99 (us)");
    std::printf("%-52s %12.0f %12.0f\n", "ListContainers", Percentile(r->list_containers, 0.5),
                Percentile(r->list_containers, 0.99));
    std::printf("%-52s %12.0f %12.0f\n", "ContainerStatus", Percentile(r->container_status, 0.5),
                Percentile(r->container_status, 0.99));
    std::printf("%-52s %12.0f %12.0f\n", "ListPodSandbox", Percentile(r->list_pods, 0.5),
                Percentile(r->list_pods, 0.99));
  }

  {
    // chrysd beside the gRPC floor (its own answers as fixed bytes) and, when measured, containerd's CRI.
    const RpcLatency& ours = rpc_settled;
    std::printf(
        "\nRPC latency beside the gRPC floor (a server answering chrysd's answers as fixed bytes)%s, the same "
        "%d pods x %d containers, after the pods settled; host %.0f%% / %.0f%%%s busy\n",
        rpc_containerd ? (" and " + containerd_version + " (CRI plugin, runc)").c_str() : "", o.serial, o.containers,
        ours.host_busy_percent, rpc_floor.host_busy_percent,
        rpc_containerd ? (" / " + std::to_string(std::lround(rpc_containerd->host_busy_percent)) + "%").c_str() : "");
    std::printf("%-22s %10s %10s %10s %10s", "", "chrysd p50", "chrysd p99", "floor p50", "floor p99");
    if (rpc_containerd) {
      std::printf(" %14s %14s %10s", "containerd p50", "containerd p99", "p99 ratio");
    }
    std::printf("\n");
    for (auto [name, field] : {std::pair{"ListContainers (us)", &RpcLatency::list_containers},
                               std::pair{"ContainerStatus (us)", &RpcLatency::container_status},
                               std::pair{"ListPodSandbox (us)", &RpcLatency::list_pods}}) {
      double our_p99 = Percentile(ours.*field, 0.99);
      std::printf("%-22s %10.0f %10.0f %10.0f %10.0f", name, Percentile(ours.*field, 0.5), our_p99,
                  Percentile(rpc_floor.*field, 0.5), Percentile(rpc_floor.*field, 0.99));
      if (rpc_containerd) {
        double their_p99 = Percentile((*rpc_containerd).*field, 0.99);
        std::printf(" %14.0f %14.0f %10.2f", Percentile((*rpc_containerd).*field, 0.5), their_p99,
                    their_p99 > 0 ? our_p99 / their_p99 : 0);
      }
      std::printf("\n");
    }
  }

  json out = {
      {"bench", "pod_bench"},
      {"serial_pods", o.serial},
      {"parallel_pods", o.parallel},
      {"containers_per_pod", o.containers},
      {"pod_cpus", o.pod_cpus},
      {"pod_memory_mib", o.pod_memory_mib},
      {"serial_ready_ms", s_ready},
      {"serial_running_ms", s_running},
      {"serial_first_log_ms", s_log},
      {"bare_serial_ms", bare_serial},
      {"serial_first_log_p50_ms", Median(s_log)},
      {"bare_p50_ms", bare_median},
      {"serial_ratio_to_bare", bare_median > 0 ? Median(s_log) / bare_median : 0},
      {"serial_delta_ms", Median(s_log) - bare_median},
      {"bare_paired_pod", bare_paired_pod},
      {"paired_ratio_p50", Median(paired_ratio)},
      {"paired_delta_ms_p50", Median(paired_delta)},
      {"parallel_ready_ms", p_ready},
      {"parallel_running_ms", p_running},
      {"parallel_first_log_ms", p_log},
      {"bare_parallel_ms", bare_parallel},
      {"parallel_wall_ms", parallel_wall},
      {"bare_parallel_wall_ms", bare_parallel_wall},
      {"chrysd_rss_kib_with_pods", pods_rss},
      {"chrysd_rss_kib_idle", idle_rss},
      {"chrysd_hwm_kib", pods_hwm},
      {"rpc_right_after_start", RpcJson(rpc_fresh)},
      {"rpc_settled", RpcJson(rpc_settled)},
      {"rpc_settle_wait_ms", settle_ms},
      {"rpc_grpc_floor", RpcJson(rpc_floor)},
  };
  if (rpc_containerd) {
    out["rpc_containerd"] = RpcJson(*rpc_containerd);
    out["containerd_version"] = containerd_version;
  }
  if (o.warm_pool > 0) {
    out["warm_pool_size"] = o.warm_pool;
    out["serial_from_warm_pool"] = serial_warm;  // per pod, in the order of serial_ready_ms
    out["parallel_from_warm_pool"] = parallel_warm;
  }
  std::printf("\n%s\n", out.dump().c_str());
  return base::Status::Ok();
}

}  // namespace
}  // namespace chrys::e2e

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--grpc-floor") {
    return chrys::e2e::ServeGrpcFloor(argv[2]);  // the floor server's own process (grpc_floor.h)
  }
  return chrys::e2e::Main(argc, argv);
}
