// chrysctl's VM commands: ps (pods and their VMs), console (the VM's serial console), debug (the VMM command line).
#include "cri/ctl/vm_commands.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/file_util.h"
#include "base/text.h"
#include "base/unique_fd.h"
#include "cri/ctl/commands.h"

namespace chrys::cri::ctl {

namespace v1 = ::runtime::v1;
using nlohmann::json;

std::string ConsoleEscape::Feed(const std::string& typed, bool* detach) {
  *detach = false;
  std::string out;
  for (char c : typed) {
    if (pending_) {
      pending_ = false;
      if (c == 'q' || c == 'Q' || c == '.') {
        *detach = true;
        return out;
      }
      out += kEscape;
      if (c != kEscape) {
        out += c;
      }
      continue;
    }
    if (c == kEscape) {
      pending_ = true;
      continue;
    }
    out += c;
  }
  return out;
}

std::string FormatUptime(int64_t seconds) {
  if (seconds < 0) {
    return "-";
  }
  int64_t d = seconds / 86400;
  int64_t h = seconds % 86400 / 3600;
  int64_t m = seconds % 3600 / 60;
  int64_t s = seconds % 60;
  if (d > 0) {
    return std::to_string(d) + "d" + std::to_string(h) + "h";
  }
  if (h > 0) {
    return std::to_string(h) + "h" + std::to_string(m) + "m";
  }
  if (m > 0) {
    return std::to_string(m) + "m" + std::to_string(s) + "s";
  }
  return std::to_string(s) + "s";
}

std::string FormatCommandLine(const std::vector<std::string>& argv, const std::string& prefix) {
  std::string out = prefix;
  for (size_t i = 0; i < argv.size(); ++i) {
    bool option = i > 0 && argv[i].size() > 1 && argv[i][0] == '-';
    if (i > 0 && (option || i == 1)) {
      out += " \\\n  ";
    } else if (i > 0) {
      out += " ";
    }
    out += ShellQuote(argv[i]);
  }
  return out + "\n";
}

namespace {

// The value of "key=" in a comma-separated QEMU option string; empty when absent.
std::string OptionValue(const std::string& options, const std::string& key) {
  std::stringstream parts(options);
  std::string part;
  while (std::getline(parts, part, ',')) {
    if (part.rfind(key + "=", 0) == 0) {
      return part.substr(key.size() + 1);
    }
  }
  return "";
}

std::vector<int> ParseFdList(const std::string& list) {
  std::vector<int> out;
  std::stringstream parts(list);
  std::string part;
  while (std::getline(parts, part, ':')) {
    char* end = nullptr;
    long fd = std::strtol(part.c_str(), &end, 10);
    if (!part.empty() && *end == '\0' && fd >= 0) {
      out.push_back(static_cast<int>(fd));
    }
  }
  return out;
}

}  // namespace

std::vector<int> InheritedFds(const std::vector<std::string>& argv) {
  std::vector<int> out;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] != "-netdev" && argv[i] != "-add-fd") {
      continue;
    }
    const std::string& options = argv[i + 1];
    for (const char* key : {"fds", "fd", "vhostfds", "vhostfd"}) {
      for (int fd : ParseFdList(OptionValue(options, key))) {
        out.push_back(fd);
      }
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::string> ReplaceTapFds(const std::vector<std::string>& argv, const std::vector<std::string>& taps) {
  std::vector<std::string> out = argv;
  size_t nic = 0;
  for (size_t i = 0; i + 1 < out.size(); ++i) {
    if (out[i] != "-netdev" || out[i + 1].rfind("tap,", 0) != 0) {
      continue;
    }
    std::string fds = OptionValue(out[i + 1], "fds");
    if (fds.empty() || nic >= taps.size()) {
      ++nic;
      continue;
    }
    size_t queues = ParseFdList(fds).size();
    std::string rewritten;
    std::stringstream parts(out[i + 1]);
    std::string part;
    while (std::getline(parts, part, ',')) {
      if (part.rfind("fds=", 0) == 0) {
        part = "ifname=" + taps[nic] + ",script=no,downscript=no" +
               (queues > 1 ? ",queues=" + std::to_string(queues) : std::string());
      }
      rewritten += (rewritten.empty() ? "" : ",") + part;
    }
    out[i + 1] = rewritten;
    ++nic;
  }
  return out;
}

namespace {

std::string ShortId(const std::string& id) {
  return id.substr(0, 13);
}

// A pod by full id, unique id prefix, or unique metadata name ("name" or "namespace/name").
base::Result<v1::PodSandbox> ResolvePod(CriClient& client, const std::string& wanted) {
  v1::ListPodSandboxResponse resp;
  auto status = client.runtime().ListPodSandbox(CriClient::Context().get(), v1::ListPodSandboxRequest(), &resp);
  if (!status.ok()) {
    return CriClient::CallError("ListPodSandbox", status);
  }
  std::vector<const v1::PodSandbox*> matches;
  for (const auto& pod : resp.items()) {
    if (pod.id() == wanted) {
      return pod;
    }
  }
  for (const auto& pod : resp.items()) {
    std::string qualified = pod.metadata().namespace_() + "/" + pod.metadata().name();
    if (pod.id().rfind(wanted, 0) == 0 || pod.metadata().name() == wanted || qualified == wanted) {
      matches.push_back(&pod);
    }
  }
  if (matches.empty()) {
    return base::NotFound("no pod sandbox with id, id prefix or name '" + wanted + "' (see chrysctl ps)");
  }
  if (matches.size() > 1) {
    return base::InvalidArgument("'" + wanted + "' matches " + std::to_string(matches.size()) +
                                 " pod sandboxes; give more of the id");
  }
  return *matches[0];
}

// The pod's verbose status info ("info" key parsed), with the VM under "vm" when it has one.
base::Result<json> PodInfo(CriClient& client, const std::string& id) {
  CHRYS_ASSIGN_OR_RETURN(v1::PodSandboxStatusResponse resp, VerbosePodStatus(client, id));
  auto it = resp.info().find("info");
  json info = it == resp.info().end() ? json::object() : json::parse(it->second, nullptr, false);
  return info.is_object() ? info : json::object();
}

// Seconds since the process started: its start ticks (after boot) against the boot time in /proc/stat.
// The pod named by `wanted` (id, id prefix or name) with its verbose info.
struct PodWithInfo {
  v1::PodSandbox pod;
  json info;
};
base::Result<PodWithInfo> ResolvePodInfo(CriClient& client, const std::string& wanted) {
  CHRYS_ASSIGN_OR_RETURN(v1::PodSandbox pod, ResolvePod(client, wanted));
  CHRYS_ASSIGN_OR_RETURN(json info, PodInfo(client, pod.id()));
  return PodWithInfo{std::move(pod), std::move(info)};
}

int64_t UptimeSeconds(uint64_t start_ticks) {
  std::ifstream stat("/proc/stat");
  std::string line;
  int64_t btime = -1;
  while (std::getline(stat, line)) {
    if (line.rfind("btime ", 0) == 0) {
      btime = std::strtoll(line.c_str() + 6, nullptr, 10);
    }
  }
  long hz = ::sysconf(_SC_CLK_TCK);
  if (btime < 0 || hz <= 0) {
    return -1;
  }
  int64_t started = btime + static_cast<int64_t>(start_ticks / static_cast<uint64_t>(hz));
  return static_cast<int64_t>(::time(nullptr)) - started;
}

int Ps(CriClient& client, const std::vector<std::string>& args) {
  static const std::map<std::string, std::string> kShort = {{"-q", "--quiet"}};
  std::vector<std::string> expanded = args;
  for (auto& a : expanded) {
    if (auto it = kShort.find(a); it != kShort.end()) {
      a = it->second;
    }
  }
  auto parsed = ParseArgs(expanded, {"--namespace", "--name"}, {"--quiet", "--json"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (!parsed->positional.empty()) {
    return Fail("ps takes no arguments (see chrysctl ps --help)");
  }
  auto& options = parsed->options;
  v1::ListPodSandboxResponse resp;
  auto status = client.runtime().ListPodSandbox(CriClient::Context().get(), v1::ListPodSandboxRequest(), &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("ListPodSandbox", status));
  }
  bool quiet = options.count("--quiet") != 0;
  bool as_json = options.count("--json") != 0;
  json rows = json::array();
  for (const auto& pod : resp.items()) {
    if (options.count("--namespace") && pod.metadata().namespace_() != options["--namespace"]) {
      continue;
    }
    if (options.count("--name") && pod.metadata().name().find(options["--name"]) == std::string::npos) {
      continue;
    }
    if (quiet) {
      std::cout << pod.id() << "\n";
      continue;
    }
    auto info = PodInfo(client, pod.id());
    if (!info.ok()) {
      if (info.error().code() == base::ErrorCode::kNotFound) {
        continue;  // removed since the listing
      }
      return Fail(info.error());
    }
    json vm = info->value("vm", json::object());
    json row = {{"id", pod.id()},
                {"namespace", pod.metadata().namespace_()},
                {"name", pod.metadata().name()},
                {"state", pod.state() == v1::SANDBOX_READY ? "Ready" : "NotReady"},
                {"handler", pod.runtime_handler()},
                {"vmm", vm.value("vmm", "")},
                {"pid", vm.value("pid", 0)},
                {"vcpus", vm.value("vcpus", 0)},
                {"memoryMib", vm.value("memoryMib", 0)}};
    int64_t uptime = -1;
    if (vm.contains("startTicks") && vm["startTicks"].is_number_unsigned() && row["pid"].get<int>() > 0) {
      uptime = UptimeSeconds(vm["startTicks"].get<uint64_t>());
    }
    row["uptimeSeconds"] = uptime;
    rows.push_back(row);
  }
  if (quiet) {
    return 0;
  }
  if (as_json) {
    std::cout << rows.dump(2) << "\n";
    return 0;
  }
  std::cout << std::left << std::setw(15) << "POD ID" << std::setw(30) << "NAME" << std::setw(10) << "STATE"
            << std::setw(16) << "HANDLER" << std::setw(18) << "VMM" << std::setw(9) << "PID" << std::setw(7) << "VCPUS"
            << std::setw(9) << "MEMORY"
            << "UPTIME\n";
  for (const auto& row : rows) {
    int pid = row["pid"].get<int>();
    int vcpus = row["vcpus"].get<int>();
    int memory = row["memoryMib"].get<int>();
    std::cout << std::left << std::setw(15) << ShortId(row["id"].get<std::string>()) << std::setw(30)
              << (row["namespace"].get<std::string>() + "/" + row["name"].get<std::string>()) << std::setw(10)
              << row["state"].get<std::string>() << std::setw(16) << row["handler"].get<std::string>() << std::setw(18)
              << (row["vmm"].get<std::string>().empty() ? "-" : row["vmm"].get<std::string>()) << std::setw(9)
              << (pid > 0 ? std::to_string(pid) : "-") << std::setw(7) << (vcpus > 0 ? std::to_string(vcpus) : "-")
              << std::setw(9) << (memory > 0 ? std::to_string(memory) + "Mi" : "-")
              << FormatUptime(row["uptimeSeconds"].get<int64_t>()) << "\n";
  }
  return 0;
}

// Restores the terminal's settings when the console session ends, however it ends.
class RawTerminal {
 public:
  RawTerminal() = default;
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  ~RawTerminal() {
    if (active_) {
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
    }
  }
  base::Status Enter() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) {
      return base::SystemError("tcgetattr stdin");
    }
    termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) != 0) {
      return base::SystemError("tcsetattr stdin (raw mode)");
    }
    active_ = true;
    return base::Status::Ok();
  }

 private:
  termios saved_{};
  bool active_ = false;
};

base::Result<base::UniqueFd> ConnectUnix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    return base::InvalidArgument("socket path too long: " + path);
  }
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return base::SystemError("socket");
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return base::SystemError("connect to the console socket " + path);
  }
  return fd;
}

int Console(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = ParseArgs(args, {"--timeout"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (parsed->positional.size() != 1) {
    return Fail("console takes one pod (id, id prefix or name; see chrysctl console --help)");
  }
  int timeout_ms = -1;
  if (auto it = parsed->options.find("--timeout"); it != parsed->options.end()) {
    char* end = nullptr;
    double seconds = std::strtod(it->second.c_str(), &end);
    if (it->second.empty() || *end != '\0' || seconds <= 0) {
      return Fail("--timeout takes a positive number of seconds, got '" + it->second + "'");
    }
    timeout_ms = static_cast<int>(seconds * 1000);
  }
  auto resolved = ResolvePodInfo(client, parsed->positional[0]);
  if (!resolved.ok()) {
    return Fail(resolved.error());
  }
  const v1::PodSandbox* pod = &resolved->pod;
  const json* info = &resolved->info;
  json vm = info->value("vm", json::object());
  std::string socket = vm.value("consoleSocket", "");
  if (socket.empty()) {
    std::string log = vm.value("consoleLog", "");
    return Fail("pod " + ShortId(pod->id()) +
                "'s VM has no console socket (not running, or started by an older "
                "chrysd)" +
                (log.empty() ? std::string() : "; its console log is " + log));
  }
  auto fd = ConnectUnix(socket);
  if (!fd.ok()) {
    return Fail(fd.error());
  }
  bool tty = ::isatty(STDIN_FILENO) != 0;
  RawTerminal terminal;
  if (tty) {
    if (auto raw = terminal.Enter(); !raw.ok()) {
      return Fail(raw.error());
    }
  }
  std::cerr << "Connected to the console of pod " << ShortId(pod->id()) << " (" << pod->metadata().name()
            << "). Escape: Ctrl-] then q." << (tty ? "\r\n" : "\n") << std::flush;
  ConsoleEscape escape;
  bool stdin_open = true;
  std::string detach_reason = "detached";
  char buffer[4096];
  while (true) {
    pollfd fds[2] = {{fd->get(), POLLIN, 0}, {STDIN_FILENO, static_cast<short>(stdin_open ? POLLIN : 0), 0}};
    int ready = ::poll(fds, stdin_open ? 2 : 1, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) {
        continue;
      }
      return Fail(base::SystemError("poll"));
    }
    if (ready == 0) {
      detach_reason = "timed out";
      break;  // --timeout: a bounded session (scripts, tests)
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      ssize_t n = ::read(fd->get(), buffer, sizeof buffer);
      if (n <= 0) {
        detach_reason = "the VM closed its console";
        break;
      }
      if (auto w = base::WriteAll(STDOUT_FILENO, std::string(buffer, static_cast<size_t>(n)), "standard output");
          !w.ok()) {
        break;
      }
    }
    if (stdin_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
      if (n <= 0) {
        stdin_open = false;  // piped input ended: keep showing output until --timeout or the VM closes
        if (timeout_ms < 0) {
          break;
        }
        continue;
      }
      bool detach = false;
      std::string forward = escape.Feed(std::string(buffer, static_cast<size_t>(n)), &detach);
      if (!forward.empty()) {
        if (auto w = base::WriteAll(fd->get(), forward, "the console socket"); !w.ok()) {
          detach_reason = "the VM closed its console";
          break;
        }
      }
      if (detach) {
        break;
      }
    }
  }
  std::cerr << (tty ? "\r\n" : "\n") << "Console " << detach_reason << "." << (tty ? "\r\n" : "\n");
  return 0;
}

// What /proc/<pid>/fdinfo says about an inherited tun fd: "iff:\t<tap name>".
std::string TapNameOf(int pid, int fd) {
  auto text = base::ReadFile("/proc/" + std::to_string(pid) + "/fdinfo/" + std::to_string(fd), 1 << 16);
  if (!text.ok()) {
    return "";
  }
  size_t at = text->find("iff:");
  if (at == std::string::npos) {
    return "";
  }
  size_t start = text->find_first_not_of(" \t", at + 4);
  size_t end = text->find('\n', start);
  return start == std::string::npos ? "" : text->substr(start, end - start);
}

std::vector<std::string> ReadCmdline(int pid) {
  auto text = base::ReadFile("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20);
  return text.ok() ? base::SplitFields(*text, '\0') : std::vector<std::string>{};
}

int Debug(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = ParseArgs(args, {}, {"--json"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (parsed->positional.size() != 1) {
    return Fail("debug takes one pod (id, id prefix or name; see chrysctl debug --help)");
  }
  auto resolved = ResolvePodInfo(client, parsed->positional[0]);
  if (!resolved.ok()) {
    return Fail(resolved.error());
  }
  const v1::PodSandbox* pod = &resolved->pod;
  const json* info = &resolved->info;
  json vm = info->value("vm", json::object());
  int pid = vm.value("pid", 0);
  if (pid <= 0) {
    return Fail("pod " + ShortId(pod->id()) + " has no running VMM (state " + info->value("state", "?") + ")");
  }
  std::vector<std::string> argv;
  std::string source = "chrysd (/proc/" + std::to_string(pid) + "/cmdline)";
  if (vm.contains("commandLine") && vm["commandLine"].is_array()) {
    argv = vm["commandLine"].get<std::vector<std::string>>();
  } else {
    argv = ReadCmdline(pid);
    source = "/proc/" + std::to_string(pid) + "/cmdline";
  }
  if (argv.empty()) {
    return Fail("cannot read the command line of VMM pid " + std::to_string(pid) +
                " (run chrysctl as root on the node)");
  }
  std::string netns = info->value("netnsPath", "");
  std::string netns_name = netns.rfind("/run/netns/", 0) == 0 ? netns.substr(11) : "";
  std::vector<int> fds = InheritedFds(argv);
  json fd_notes = json::array();
  std::vector<std::string> taps;
  for (int fd : fds) {
    std::string tap = TapNameOf(pid, fd);
    fd_notes.push_back({{"fd", fd}, {"tap", tap}});
    if (!tap.empty() && std::find(taps.begin(), taps.end(), tap) == taps.end()) {
      taps.push_back(tap);
    }
  }
  std::vector<std::string> by_hand = taps.empty() ? argv : ReplaceTapFds(argv, taps);
  std::string prefix;
  if (!netns.empty()) {
    prefix = netns_name.empty() ? "nsenter --net=" + ShellQuote(netns) + " "
                                : "ip netns exec " + ShellQuote(netns_name) + " ";
  }
  if (parsed->options.count("--json") != 0) {
    std::cout << json{{"pod", pod->id()}, {"vmm", vm.value("vmm", "")}, {"pid", pid},           {"netns", netns},
                      {"argv", argv},     {"inheritedFds", fd_notes},   {"argvByHand", by_hand}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::cout << "# pod " << pod->id() << " (" << pod->metadata().namespace_() << "/" << pod->metadata().name() << "), "
            << vm.value("vmm", "?") << " pid " << pid << (netns.empty() ? "" : ", netns " + netns) << "\n"
            << "# command line as running, from " << source << ":\n"
            << FormatCommandLine(argv, prefix);
  if (vm.value("fromWarmPool", false)) {
    std::cout << "#\n# This VM was booted ahead of the pod (vmm.warm_pool_size): the command line keeps the warm VM's\n"
                 "# names and has no NIC. Claiming it renamed its run dir to the pod's and hot-plugged the pod's NIC\n"
                 "# (netdev_add tap + device_add virtio-net-pci on bridge hpbr0); to boot it by hand, add\n"
                 "# -netdev tap,id=net0,ifname=TAP,script=no,downscript=no -device virtio-net-pci,netdev=net0,mac=MAC\n"
                 "# with the pod's tap and MAC (ip -n " +
                     (netns_name.empty() ? std::string("<netns>") : netns_name) + " link).\n";
    // A pod sized above the pool's shape had vCPUs and a memory DIMM hot-plugged: -smp/-m above show the boot.
    if (std::find(argv.begin(), argv.end(), "-incoming") != argv.end()) {
      std::cout << "#\n# It is a clone of the VM template (vmm.vm_template): it started paused (-incoming defer) on a copy\n"
                   "# of the template's RAM (the memory-backend-file at /proc/self/fd/N), loaded the template's saved\n"
                   "# device state, then got the pod share hot-plugged. To boot it by hand instead, drop -incoming\n"
                   "# defer, use -object memory-backend-memfd,id=mem0,size=<-m size>,share=on for that object, and add\n"
                   "# -chardev socket,id=fs0,path=<run dir>/fs0.sock -device vhost-user-fs-pci,chardev=fs0,tag=chrys-pod\n"
                   "# with a virtiofsd serving the pod's shared directory on that socket.\n";
    }
    std::cout << "# The VM now has " << vm.value("vcpus", 0) << " vCPUs and " << vm.value("memoryMib", 0)
              << " MiB (booted as -smp/-m above, grown by CPU and DIMM hot-plug when the pod is larger); to boot the\n"
                 "# pod's shape by hand, use -smp "
              << vm.value("vcpus", 0) << " -m " << vm.value("memoryMib", 0) << "M.\n";
  }
  if (!fds.empty()) {
    std::cout << "#\n# inherited fds (opened by chrysd, passed to the VMM at start):\n";
    for (const auto& note : fd_notes) {
      std::string tap = note["tap"].get<std::string>();
      std::cout << "#   fd " << note["fd"].get<int>() << ": "
                << (tap.empty() ? "unknown (run as root to read /proc/" + std::to_string(pid) + "/fdinfo)"
                                : "a queue of tap " + tap)
                << "\n";
    }
    std::cout << "# A shell cannot hand these over: to run it by hand, let QEMU open the tap itself (ifname=...,\n"
                 "# queues=N instead of fds=...), inside the pod's netns, after stopping the pod (chrysctl stopp)\n"
                 "# and recreating the tap if the stop removed it"
              << (netns.empty() ? ".\n"
                                : " (ip -n " + netns_name + " tuntap add TAP mode tap multi_queue vnet_hdr).\n");
    if (!taps.empty()) {
      std::cout << "# With the tap opened by QEMU:\n" << FormatCommandLine(by_hand, prefix);
    }
  }
  if (vm.value("vmm", "") == "cloud-hypervisor") {
    std::cout << "#\n# Cloud Hypervisor gets the VM's configuration over its API socket, not the command line;\n"
                 "# see it with: curl --unix-socket <api socket> http://localhost/api/v1/vm.info\n";
  }
  std::cout << "#\n# The sockets it names (QMP, agent, console) belong to the running VM: give a copy its own paths.\n";
  return 0;
}

}  // namespace

void AddVmCommands(CommandTable& table) {
  table["ps"] = {"list pods and their VMs: handler, VMM, pid, vCPUs, memory, uptime",
                 "Usage: chrysctl ps [--namespace NS] [--name SUBSTR] [-q|--quiet] [--json]\n\n"
                 "Lists every pod sandbox with its VM: runtime handler, VMM kind, VMM pid, vCPUs, memory and\n"
                 "uptime (from the VMM process). -q prints only pod ids; --json prints the rows as JSON.\n"
                 "Containers: chrysctl containers.\n",
                 Ps};
  table["console"] = {"attach to a pod VM's serial console (Ctrl-] q detaches)",
                      "Usage: chrysctl console [--timeout SECONDS] POD\n\n"
                      "Connects the terminal to the serial console of the pod's VM (POD: id, id prefix or name).\n"
                      "The terminal is put in raw mode and restored on exit. Escape: Ctrl-] then q (or .)\n"
                      "detaches; Ctrl-] Ctrl-] sends a Ctrl-]. The console output is also kept in the pod's\n"
                      "console log. With piped input, the session ends when the input ends, or after\n"
                      "--timeout seconds of silence when given.\n",
                      Console};
  table["debug"] = {"print the VMM command line of a pod, to reproduce the VM by hand",
                    "Usage: chrysctl debug [--json] POD\n\n"
                    "Prints the exact command line of the pod's VMM (from /proc/<pid>/cmdline), shell-quoted,\n"
                    "prefixed with the command that enters the pod's network namespace; lists the file\n"
                    "descriptors it inherited (tap queues) and prints the variant that opens the tap by name.\n",
                    Debug};
}

}  // namespace chrys::cri::ctl
