#include "guest/agent/oci_spec.h"

#include <algorithm>
#include <map>

#include "base/text.h"
#include "guest/agent/validation.h"

namespace chrys::guest {
namespace {

using nlohmann::json;

constexpr const char* kDefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

json Mount(const std::string& destination, const std::string& type, const std::string& source,
           std::vector<std::string> options) {
  return json{{"destination", destination}, {"type", type}, {"source", source}, {"options", std::move(options)}};
}

std::optional<uint32_t> ParseId(const std::string& text) {
  if (text.empty() || text.size() > 10 || !std::all_of(text.begin(), text.end(), ::isdigit)) {
    return std::nullopt;
  }
  uint64_t value = std::stoull(text);
  if (value > 0xFFFFFFFEULL) {  // (uid_t)-1 means "no change" to the kernel
    return std::nullopt;
  }
  return static_cast<uint32_t>(value);
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (!line.empty() && line[0] != '#') {
      lines.push_back(std::move(line));
    }
    if (end == std::string::npos) {
      break;
    }
    start = end + 1;
  }
  return lines;
}

}  // namespace

std::vector<PasswdEntry> ParsePasswd(const std::string& text) {
  std::vector<PasswdEntry> out;
  for (const auto& line : Lines(text)) {
    auto f = base::SplitFields(line, ':');
    if (f.size() < 4 || f[0].empty()) {
      continue;
    }
    auto uid = ParseId(f[2]);
    auto gid = ParseId(f[3]);
    if (uid && gid) {
      out.push_back({f[0], *uid, *gid});
    }
  }
  return out;
}

std::vector<GroupEntry> ParseGroup(const std::string& text) {
  std::vector<GroupEntry> out;
  for (const auto& line : Lines(text)) {
    auto f = base::SplitFields(line, ':');
    if (f.size() < 3 || f[0].empty()) {
      continue;
    }
    auto gid = ParseId(f[2]);
    if (!gid) {
      continue;
    }
    GroupEntry entry{f[0], *gid, {}};
    if (f.size() >= 4 && !f[3].empty()) {
      for (auto& member : base::SplitFields(f[3], ',')) {
        if (!member.empty()) {
          entry.members.push_back(std::move(member));
        }
      }
    }
    out.push_back(std::move(entry));
  }
  return out;
}

base::Result<v1::User> ResolveUser(const v1::User& user, const std::optional<std::string>& passwd,
                                   const std::optional<std::string>& group) {
  if (user.name().empty()) {
    return user;
  }
  v1::User out = user;
  out.clear_name();
  out.clear_group();
  out.clear_additional_gids();
  auto users = passwd ? ParsePasswd(*passwd) : std::vector<PasswdEntry>{};
  auto groups = group ? ParseGroup(*group) : std::vector<GroupEntry>{};

  std::string username;  // for /etc/group membership; empty for a number with no passwd entry
  if (auto uid = ParseId(user.name())) {
    out.set_uid(*uid);
    out.set_gid(0);
    for (const auto& entry : users) {
      if (entry.uid == *uid) {
        out.set_gid(entry.gid);
        username = entry.name;
        break;
      }
    }
  } else {
    auto it = std::find_if(users.begin(), users.end(), [&](const auto& e) { return e.name == user.name(); });
    if (it == users.end()) {
      return base::InvalidArgument("user '" + user.name() + "' is not in the image's /etc/passwd" +
                                   (passwd ? "" : " (the image has no /etc/passwd)") +
                                   "; use a numeric uid or add the user to the image");
    }
    out.set_uid(it->uid);
    out.set_gid(it->gid);
    username = it->name;
  }
  if (!user.group().empty()) {
    if (auto gid = ParseId(user.group())) {
      out.set_gid(*gid);
    } else {
      auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& e) { return e.name == user.group(); });
      if (it == groups.end()) {
        return base::InvalidArgument("group '" + user.group() + "' is not in the image's /etc/group" +
                                     (group ? "" : " (the image has no /etc/group)"));
      }
      out.set_gid(it->gid);
    }
  }
  std::vector<uint32_t> extra;
  auto add = [&](uint32_t gid) {
    if (gid != out.gid() && std::find(extra.begin(), extra.end(), gid) == extra.end()) {
      extra.push_back(gid);
    }
  };
  if (!username.empty()) {
    for (const auto& entry : groups) {
      if (std::find(entry.members.begin(), entry.members.end(), username) != entry.members.end()) {
        add(entry.gid);
      }
    }
  }
  for (uint32_t gid : user.additional_gids()) {
    add(gid);
  }
  for (uint32_t gid : extra) {
    out.add_additional_gids(gid);
  }
  return out;
}

namespace {

// The seccomp architectures of this build's guest: the native ABI and the compat ones the kernel also accepts
// (a filter that left them out would let a 32-bit call through the deny list).
std::vector<std::string> NativeSeccompArchitectures() {
#if defined(__x86_64__)
  return {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
#elif defined(__aarch64__)
  return {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"};
#else
  return {};
#endif
}

constexpr int kEperm = 1;
constexpr uint64_t kCloneNewUser = 0x10000000;  // CLONE_NEWUSER

struct DenyGroup {
  const char* why;                       // the reason, for people reading this list
  std::vector<const char*> unless_caps;  // a container granted one of these keeps the calls
  std::vector<const char*> syscalls;
};

// Our own deny list. Each group says why; the VM boundary stays the real isolation, this narrows what a
// compromised container can do to the pod's shared guest kernel.
const std::vector<DenyGroup>& DenyGroups() {
  static const std::vector<DenyGroup> groups = {
      {"load or replace kernel code", {"CAP_SYS_MODULE"}, {"init_module", "finit_module", "delete_module"}},
      {"boot another kernel or reboot the pod's VM", {"CAP_SYS_BOOT"}, {"kexec_load", "kexec_file_load", "reboot"}},
      {"mounts, namespace switches and root changes: the container's view of files is fixed at create",
       {"CAP_SYS_ADMIN"},
       {"mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
        "mount_setattr", "setns", "swapon", "swapoff", "quotactl", "lookup_dcookie", "sethostname", "setdomainname",
        "vhangup", "fanotify_init"}},
      {"the kernel keyrings are not namespaced: one container could read or fill another's",
       {"CAP_SYS_ADMIN"},
       {"keyctl", "add_key", "request_key"}},
      {"tracing other processes (and ptrace's seccomp bypass on kernels before 4.8)",
       {"CAP_SYS_PTRACE"},
       {"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "process_madvise"}},
      {"kernel-wide instrumentation and programs in the kernel",
       {"CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"},
       {"bpf", "perf_event_open"}},
      {"userfaultfd stalls kernel page-fault handling, a staple of kernel exploits",
       {"CAP_SYS_PTRACE"},
       {"userfaultfd"}},
      {"file handles bypass path permission checks", {"CAP_DAC_READ_SEARCH"}, {"open_by_handle_at"}},
      {"the clock is the whole VM's", {"CAP_SYS_TIME"}, {"settimeofday", "clock_settime", "clock_adjtime"}},
      {"raw port I/O", {"CAP_SYS_RAWIO"}, {"iopl", "ioperm"}},
      {"the kernel log and process accounting are the VM's", {"CAP_SYSLOG", "CAP_SYS_PACCT"}, {"syslog", "acct"}},
      {"obsolete interfaces nothing should need", {}, {"uselib", "ustat", "sysfs", "_sysctl", "nfsservctl"}},
  };
  return groups;
}

bool HasAny(const std::vector<std::string>& have, const std::vector<const char*>& wanted) {
  for (const char* cap : wanted) {
    if (std::find(have.begin(), have.end(), cap) != have.end()) {
      return true;
    }
  }
  return false;
}

const std::vector<std::string>& SeccompActions() {
  static const std::vector<std::string> actions = {"SCMP_ACT_KILL",  "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                                   "SCMP_ACT_TRAP",  "SCMP_ACT_ERRNO",        "SCMP_ACT_TRACE",
                                                   "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",          "SCMP_ACT_NOTIFY"};
  return actions;
}

bool IsSeccompAction(const json& value) {
  return value.is_string() && std::find(SeccompActions().begin(), SeccompActions().end(), value.get<std::string>()) !=
                                  SeccompActions().end();
}

}  // namespace

json RuntimeDefaultSeccomp(const std::vector<std::string>& capabilities) {
  json syscalls = json::array();
  for (const auto& group : DenyGroups()) {
    if (HasAny(capabilities, group.unless_caps)) {
      continue;
    }
    std::vector<std::string> names(group.syscalls.begin(), group.syscalls.end());
    syscalls.push_back(json{{"names", names}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", kEperm}});
  }
  if (!HasAny(capabilities, {"CAP_SYS_ADMIN"})) {
    // New user namespaces give a process every capability inside them: a large kernel attack surface.
    json newuser =
        json{{"index", 0}, {"value", kCloneNewUser}, {"valueTwo", kCloneNewUser}, {"op", "SCMP_CMP_MASKED_EQ"}};
    syscalls.push_back(json{{"names", {"unshare", "clone"}},
                            {"action", "SCMP_ACT_ERRNO"},
                            {"errnoRet", kEperm},
                            {"args", json::array({newuser})}});
    // clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone, filtered above.
    syscalls.push_back(json{{"names", {"clone3"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 38}});
  }
  return json{
      {"defaultAction", "SCMP_ACT_ALLOW"}, {"architectures", NativeSeccompArchitectures()}, {"syscalls", syscalls}};
}

base::Result<json> LocalhostSeccomp(const std::string& profile_json) {
  json profile = json::parse(profile_json, nullptr, false);
  if (profile.is_discarded() || !profile.is_object()) {
    return base::InvalidArgument("seccomp profile: not a JSON object");
  }
  if (!IsSeccompAction(profile.value("defaultAction", json()))) {
    return base::InvalidArgument("seccomp profile: defaultAction must be one of SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, ...");
  }
  json out = json{{"defaultAction", profile["defaultAction"]}};
  if (profile.contains("defaultErrnoRet")) {
    if (!profile["defaultErrnoRet"].is_number_unsigned()) {
      return base::InvalidArgument("seccomp profile: defaultErrnoRet must be a positive number");
    }
    out["defaultErrnoRet"] = profile["defaultErrnoRet"];
  }
  std::vector<std::string> architectures;
  if (profile.contains("architectures")) {
    if (!profile["architectures"].is_array()) {
      return base::InvalidArgument("seccomp profile: architectures must be an array of SCMP_ARCH_* names");
    }
    for (const auto& arch : profile["architectures"]) {
      if (!arch.is_string() || arch.get<std::string>().rfind("SCMP_ARCH_", 0) != 0) {
        return base::InvalidArgument("seccomp profile: architectures must be an array of SCMP_ARCH_* names");
      }
      architectures.push_back(arch.get<std::string>());
    }
  } else if (profile.contains("archMap") && profile["archMap"].is_array()) {
    // Docker's form: the native architecture and its sub-architectures; keep the ones of this guest.
    auto native = NativeSeccompArchitectures();
    for (const auto& entry : profile["archMap"]) {
      if (!entry.is_object() || !entry.value("architecture", json()).is_string()) {
        continue;
      }
      std::string arch = entry["architecture"].get<std::string>();
      if (!native.empty() && arch != native.front()) {
        continue;
      }
      architectures.push_back(arch);
      if (entry.contains("subArchitectures") && entry["subArchitectures"].is_array()) {
        for (const auto& sub : entry["subArchitectures"]) {
          if (sub.is_string()) {
            architectures.push_back(sub.get<std::string>());
          }
        }
      }
    }
  }
  if (!architectures.empty()) {
    out["architectures"] = architectures;
  }
  if (profile.contains("flags")) {
    if (!profile["flags"].is_array()) {
      return base::InvalidArgument("seccomp profile: flags must be an array");
    }
    out["flags"] = profile["flags"];
  }
  json syscalls = json::array();
  if (profile.contains("syscalls")) {
    if (!profile["syscalls"].is_array()) {
      return base::InvalidArgument("seccomp profile: syscalls must be an array");
    }
    size_t index = 0;
    for (const auto& entry : profile["syscalls"]) {
      std::string where = "seccomp profile: syscalls[" + std::to_string(index++) + "]";
      if (!entry.is_object()) {
        return base::InvalidArgument(where + ": not an object");
      }
      if (entry.contains("includes") || entry.contains("excludes")) {
        bool empty = entry.value("includes", json::object()).empty() && entry.value("excludes", json::object()).empty();
        if (!empty) {
          return base::InvalidArgument(where +
                                       ": Docker's conditional includes/excludes are not supported; "
                                       "write the profile in the OCI form");
        }
      }
      json names = json::array();
      if (entry.contains("names") && entry["names"].is_array()) {
        names = entry["names"];
      } else if (entry.contains("name") && entry["name"].is_string()) {
        names.push_back(entry["name"]);
      }
      if (names.empty() || !std::all_of(names.begin(), names.end(), [](const json& n) { return n.is_string(); })) {
        return base::InvalidArgument(where + ": names must be a non-empty array of syscall names");
      }
      if (!IsSeccompAction(entry.value("action", json()))) {
        return base::InvalidArgument(where + ": action must be one of SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, ...");
      }
      json rule = json{{"names", names}, {"action", entry["action"]}};
      if (entry.contains("errnoRet")) {
        if (!entry["errnoRet"].is_number_unsigned()) {
          return base::InvalidArgument(where + ": errnoRet must be a positive number");
        }
        rule["errnoRet"] = entry["errnoRet"];
      }
      if (entry.contains("args") && !entry["args"].is_null()) {
        if (!entry["args"].is_array()) {
          return base::InvalidArgument(where + ": args must be an array");
        }
        for (const auto& arg : entry["args"]) {
          if (!arg.is_object() || !arg.value("index", json()).is_number_unsigned() ||
              !arg.value("op", json()).is_string()) {
            return base::InvalidArgument(where + ": each of args needs an index and an op");
          }
        }
        rule["args"] = entry["args"];
      }
      syscalls.push_back(std::move(rule));
    }
  }
  out["syscalls"] = syscalls;
  return out;
}

v1::ProcessSpec ExecProcessSpec(const v1::ProcessSpec& container, const v1::ProcessSpec& request) {
  v1::ProcessSpec out = container;
  *out.mutable_args() = request.args();
  out.set_tty(request.tty());
  out.set_stdin(request.stdin());
  out.set_tty_rows(request.tty_rows());
  out.set_tty_columns(request.tty_columns());
  for (const auto& entry : request.env()) {
    std::string key = entry.substr(0, entry.find('='));
    auto* env = out.mutable_env();
    auto same = std::find_if(env->begin(), env->end(), [&key](const std::string& existing) {
      return existing.compare(0, key.size() + 1, key + "=") == 0;
    });
    if (same != env->end()) {
      *same = entry;
    } else {
      env->Add(std::string(entry));
    }
  }
  if (!request.cwd().empty()) {
    out.set_cwd(request.cwd());
  }
  if (request.has_user()) {
    *out.mutable_user() = request.user();
  }
  if (request.rlimits_size() > 0) {
    *out.mutable_rlimits() = request.rlimits();
  }
  // Never less confined than the container: a request may ask for no_new_privileges, not lift it.
  out.set_no_new_privileges(container.no_new_privileges() || request.no_new_privileges());
  return out;
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
  } else if (process.has_capabilities()) {
    caps.assign(process.capabilities().names().begin(), process.capabilities().names().end());
  } else {
    caps = DefaultCapabilities();
  }
  std::vector<std::string> ambient;
  if (!privileged) {
    ambient.assign(process.capabilities().ambient().begin(), process.capabilities().ambient().end());
  }
  json capabilities{{"bounding", caps}, {"effective", caps}, {"permitted", caps}, {"ambient", ambient}};
  // A non-root user's exec keeps only the ambient set (effective and permitted after it); root keeps the rest too.
  if (process.user().uid() == 0) {
    capabilities["inheritable"] = caps;
  } else {
    capabilities["inheritable"] = ambient;
    capabilities["effective"] = ambient;
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
    if (res.memory_swap_limit_bytes() != 0) {
      resources["memory"]["swap"] = res.memory_swap_limit_bytes();  // OCI: memory plus swap, -1 unlimited
    }
  }
  json cpu = json::object();
  if (res.cpu_quota_us() > 0) {
    cpu["quota"] = res.cpu_quota_us();
    cpu["period"] = res.cpu_period_us() != 0 ? res.cpu_period_us() : 100000;
  }
  if (!res.cpuset_cpus().empty()) {
    cpu["cpus"] = res.cpuset_cpus();
  }
  if (!res.cpuset_mems().empty()) {
    cpu["mems"] = res.cpuset_mems();
  }
  if (!cpu.empty()) {
    resources["cpu"] = cpu;
  }
  json unified = json::object();
  if (res.cpu_weight() > 0) {
    unified["cpu.weight"] = std::to_string(res.cpu_weight());
  }
  for (const auto& [key, value] : res.unified()) {
    unified[key] = value;
  }
  if (!unified.empty()) {
    resources["unified"] = unified;
  }
  if (res.hugepage_limits_size() > 0) {
    json hugepages = json::array();
    std::map<std::string, uint64_t> sorted(res.hugepage_limits().begin(), res.hugepage_limits().end());
    for (const auto& [size, limit] : sorted) {
      hugepages.push_back(json{{"pageSize", size}, {"limit", limit}});
    }
    resources["hugepageLimits"] = hugepages;
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
  // A privileged container is unconfined, as with other runtimes; otherwise the requested filter.
  if (!config.privileged() && config.seccomp().mode() == v1::Seccomp::RUNTIME_DEFAULT) {
    const auto& caps = spec["process"]["capabilities"]["bounding"];
    linux_section["seccomp"] = RuntimeDefaultSeccomp(caps.get<std::vector<std::string>>());
  } else if (!config.privileged() && config.seccomp().mode() == v1::Seccomp::LOCALHOST) {
    // Checked by ValidateContainerConfig before anything was created.
    auto profile = LocalhostSeccomp(config.seccomp().profile_json());
    if (profile.ok()) {
      linux_section["seccomp"] = *profile;
    }
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
