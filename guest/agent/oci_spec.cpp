#include "guest/agent/oci_spec.h"

#include "guest/agent/validation.h"

namespace chrys::guest {
namespace {

using nlohmann::json;

constexpr const char* kDefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

json Mount(const std::string& destination, const std::string& type, const std::string& source,
           std::vector<std::string> options) {
  return json{{"destination", destination}, {"type", type}, {"source", source}, {"options", std::move(options)}};
}

}  // namespace

const std::vector<std::string>& DefaultCapabilities() {
  static const std::vector<std::string> defaults = {
      "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
      "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
      "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
      "CAP_KILL",    "CAP_AUDIT_WRITE"};
  return defaults;
}

json BuildOciProcess(const v1::ProcessSpec& process, bool privileged) {
  json p;
  p["terminal"] = false;
  p["args"] = std::vector<std::string>(process.args().begin(), process.args().end());
  std::vector<std::string> env(process.env().begin(), process.env().end());
  bool has_path = false;
  for (const auto& kv : env) {
    has_path = has_path || kv.rfind("PATH=", 0) == 0;
  }
  if (!has_path) {
    env.insert(env.begin(), kDefaultPath);
  }
  if (process.tty()) {
    bool has_term = false;
    for (const auto& kv : env) {
      has_term = has_term || kv.rfind("TERM=", 0) == 0;
    }
    if (!has_term) {
      env.emplace_back("TERM=xterm");
    }
  }
  p["env"] = env;
  p["cwd"] = process.cwd().empty() ? "/" : process.cwd();

  json user{{"uid", process.user().uid()}, {"gid", process.user().gid()}};
  if (process.user().additional_gids_size() > 0) {
    user["additionalGids"] =
        std::vector<uint32_t>(process.user().additional_gids().begin(), process.user().additional_gids().end());
  }
  user["umask"] = process.user().umask() != 0 ? process.user().umask() : 022;
  p["user"] = user;

  std::vector<std::string> caps;
  if (privileged) {
    caps = KnownCapabilities();
  } else if (process.capabilities().names_size() > 0) {
    caps.assign(process.capabilities().names().begin(), process.capabilities().names().end());
  } else {
    caps = DefaultCapabilities();
  }
  json capabilities{{"bounding", caps}, {"effective", caps}, {"permitted", caps}};
  // A non-root user keeps capabilities only through the ambient set; root needs none there.
  if (process.user().uid() == 0) {
    capabilities["inheritable"] = caps;
  } else {
    capabilities["inheritable"] = json::array();
    capabilities["ambient"] = json::array();
    capabilities["effective"] = json::array();
  }
  p["capabilities"] = capabilities;

  json rlimits = json::array();
  for (const auto& r : process.rlimits()) {
    rlimits.push_back(json{{"type", r.type()}, {"soft", r.soft()}, {"hard", r.hard()}});
  }
  if (!rlimits.empty()) {
    p["rlimits"] = rlimits;
  }
  p["noNewPrivileges"] = process.no_new_privileges();
  if (process.tty() && process.tty_rows() > 0 && process.tty_columns() > 0) {
    p["consoleSize"] = json{{"height", process.tty_rows()}, {"width", process.tty_columns()}};
  }
  return p;
}

json BuildOciSpec(const v1::ContainerConfig& config, const SpecContext& context) {
  json spec;
  spec["ociVersion"] = "1.0.2";
  spec["process"] = BuildOciProcess(config.process(), config.privileged());
  spec["root"] = json{{"path", context.rootfs_path}, {"readonly", config.readonly_rootfs()}};

  json mounts = json::array();
  mounts.push_back(Mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}));
  mounts.push_back(Mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}));
  mounts.push_back(Mount("/dev/pts", "devpts", "devpts",
                         {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}));
  mounts.push_back(Mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}));
  mounts.push_back(Mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}));
  std::vector<std::string> sys_opts = {"nosuid", "noexec", "nodev"};
  if (!config.privileged()) {
    sys_opts.emplace_back("ro");
  }
  mounts.push_back(Mount("/sys", "sysfs", "sysfs", sys_opts));
  mounts.push_back(Mount("/sys/fs/cgroup", "cgroup", "cgroup", sys_opts));
  for (const auto& [destination, source] : context.sandbox_files) {
    mounts.push_back(Mount(destination, "bind", source, {"rbind", "ro", "nosuid", "nodev", "noexec"}));
  }
  for (const auto& m : config.mounts()) {
    std::vector<std::string> options(m.options().begin(), m.options().end());
    if (m.type().empty() || m.type() == "bind") {
      options.insert(options.begin(), "rbind");
      mounts.push_back(Mount(m.destination(), "bind", m.source(), options));
    } else {
      mounts.push_back(Mount(m.destination(), "tmpfs", "tmpfs", options));
    }
  }
  spec["mounts"] = mounts;

  json linux_section;
  // Network, IPC and UTS stay the VM's: the VM is the pod, and its containers share those.
  linux_section["namespaces"] = json::array({json{{"type", "pid"}}, json{{"type", "mount"}}, json{{"type", "cgroup"}}});
  linux_section["cgroupsPath"] = context.cgroups_path;

  json resources;
  resources["devices"] = json::array({json{{"allow", false}, {"access", "rwm"}}});
  const auto& res = config.resources();
  if (res.memory_limit_bytes() > 0) {
    resources["memory"] = json{{"limit", res.memory_limit_bytes()}};
  }
  json cpu = json::object();
  if (res.cpu_quota_us() > 0) {
    cpu["quota"] = res.cpu_quota_us();
    cpu["period"] = res.cpu_period_us() != 0 ? res.cpu_period_us() : 100000;
  }
  if (!res.cpuset_cpus().empty()) {
    cpu["cpus"] = res.cpuset_cpus();
  }
  if (!cpu.empty()) {
    resources["cpu"] = cpu;
  }
  if (res.cpu_weight() > 0) {
    resources["unified"] = json{{"cpu.weight", std::to_string(res.cpu_weight())}};
  }
  if (res.pids_limit() > 0) {
    resources["pids"] = json{{"limit", res.pids_limit()}};
  }
  linux_section["resources"] = resources;

  if (config.sysctls_size() > 0) {
    json sysctl = json::object();
    for (const auto& [key, value] : config.sysctls()) {
      sysctl[key] = value;
    }
    linux_section["sysctl"] = sysctl;
  }
  if (!config.privileged()) {
    linux_section["maskedPaths"] = {"/proc/acpi",          "/proc/asound",     "/proc/kcore",       "/proc/keys",
                                    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                                    "/proc/scsi",          "/sys/firmware"};
    linux_section["readonlyPaths"] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"};
  }
  spec["linux"] = linux_section;

  if (config.annotations_size() > 0) {
    json annotations = json::object();
    for (const auto& [key, value] : config.annotations()) {
      annotations[key] = value;
    }
    spec["annotations"] = annotations;
  }
  return spec;
}

}  // namespace chrys::guest
