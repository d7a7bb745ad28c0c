#include "e2e/hal/hal_vm.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"

namespace chrys::e2e::hal {

namespace {

// Kills and reaps the child if the run is abandoned (error or timeout).
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  pid_t pid() const { return pid_; }
  // Waits for the child; after this the guard owns nothing.
  int Wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    if (WIFEXITED(status)) {
      return WEXITSTATUS(status);
    }
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  }

 private:
  pid_t pid_;
};

std::string StripControl(const std::string& line) {
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == '\x1b') {  // skip ANSI escape sequences from the firmware console
      ++i;
      while (i < line.size() && !((line[i] >= 'A' && line[i] <= 'Z') || (line[i] >= 'a' && line[i] <= 'z'))) {
        ++i;
      }
      continue;
    }
    if (c == '\r') {
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

std::map<std::string, double> VmRun::Marks() const {
  std::map<std::string, double> marks;
  for (const ConsoleLine& line : lines) {
    size_t pos = line.text.find("CHRYS-HAL-MARK ");
    if (pos == std::string::npos) {
      continue;
    }
    std::istringstream in(line.text.substr(pos + 15));
    std::string name;
    double uptime = -1;
    in >> name >> uptime;
    if (!name.empty() && marks.count(name) == 0) {
      marks[name] = uptime;
    }
  }
  return marks;
}

std::optional<double> VmRun::HostTimeOf(const std::string& needle) const {
  for (const ConsoleLine& line : lines) {
    if (line.text.find(needle) != std::string::npos) {
      return line.host_seconds;
    }
  }
  return std::nullopt;
}

std::optional<nlohmann::json> VmRun::Report() const {
  for (const ConsoleLine& line : lines) {
    size_t pos = line.text.find("CHRYS-HAL-REPORT ");
    if (pos != std::string::npos) {
      auto parsed = nlohmann::json::parse(line.text.substr(pos + 17), nullptr, false);
      if (!parsed.is_discarded()) {
        return parsed;
      }
    }
  }
  return std::nullopt;
}

std::optional<std::string> VmRun::Fatal() const {
  for (const ConsoleLine& line : lines) {
    size_t pos = line.text.find("CHRYS-HAL-FATAL: ");
    if (pos != std::string::npos) {
      return line.text.substr(pos + 17);
    }
  }
  return std::nullopt;
}

bool VmRun::Saw(const std::string& needle) const {
  return HostTimeOf(needle).has_value();
}

std::string VmRun::Tail(size_t count) const {
  std::string out;
  size_t start = lines.size() > count ? lines.size() - count : 0;
  for (size_t i = start; i < lines.size(); ++i) {
    out += lines[i].text + "\n";
  }
  return out;
}

base::Result<VmRun> RunVmToExit(const std::vector<std::string>& argv, std::chrono::seconds timeout,
                                const std::string& console_log) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return base::SystemError("pipe2");
  }
  base::UniqueFd read_end(fds[0]);
  base::UniqueFd write_end(fds[1]);
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const std::string& a : argv) {
    cargv.push_back(const_cast<char*>(a.c_str()));
  }
  cargv.push_back(nullptr);
  auto start = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid < 0) {
    return base::SystemError("fork");
  }
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::execvp(cargv[0], cargv.data());
    ::_exit(127);
  }
  ChildGuard child(pid);
  write_end.Reset();

  std::ofstream log;
  if (!console_log.empty()) {
    log.open(console_log, std::ios::trunc);
  }
  VmRun run;
  std::string partial;
  auto deadline = start + timeout;
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  auto emit = [&](const std::string& raw) {
    std::string text = StripControl(raw);
    if (log) {
      log << text << "\n";
    }
    run.lines.push_back({elapsed(), text});
  };
  char buf[4096];
  while (true) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      run.timed_out = true;
      break;
    }
    int wait_ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count());
    pollfd pfd{read_end.get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, std::min(wait_ms, 1000));
    if (ready < 0 && errno != EINTR) {
      return base::SystemError("poll");
    }
    if (ready <= 0) {
      continue;
    }
    ssize_t n = ::read(read_end.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;  // QEMU closed its stdout: it is exiting
    }
    partial.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = partial.find('\n')) != std::string::npos) {
      emit(partial.substr(0, nl));
      partial.erase(0, nl + 1);
    }
  }
  if (!partial.empty()) {
    emit(partial);
  }
  if (run.timed_out) {
    ::kill(child.pid(), SIGKILL);
  }
  run.exit_status = child.Wait();
  run.host_seconds = elapsed();
  return run;
}

base::Result<VmDir> PrepareVmDir(const std::string& dir, const std::string& disk_image, const std::string& init_conf) {
  VmDir vm;
  vm.dir = dir;
  vm.disk = dir + "/disk.img";
  vm.ovmf_vars = dir + "/OVMF_VARS.fd";
  vm.env_dir = dir + "/env";
  vm.certs_dir = dir + "/certs";
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(vm.env_dir));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(vm.certs_dir));
  if (vm.disk != disk_image) {
    base::CommandSpec cp;
    cp.argv = {"cp", "--sparse=always", disk_image, vm.disk};
    CHRYS_ASSIGN_OR_RETURN(base::CommandResult copied, base::RunCommand(cp));
    if (!copied.success()) {
      return base::Internal("cp disk image: " + copied.stderr_data);
    }
  }
  CHRYS_ASSIGN_OR_RETURN(std::string vars, base::ReadFile(kOvmfVars));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(vm.ovmf_vars, vars));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(vm.env_dir + "/init.conf", init_conf));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(vm.certs_dir + "/ca.pem", "test CA\n"));
  return vm;
}

runtime::confidential::CvmLaunchConfig TcgLaunchConfig(const VmDir& vm, bool direct_boot,
                                                       const guest::hal::HalArtifacts& image,
                                                       const std::string& roothash) {
  runtime::confidential::CvmLaunchConfig c;
  c.tee = runtime::confidential::TeeKind::kNone;
  c.accel = "tcg";
  c.vcpus = 1;
  c.memory_mib = 1024;
  c.disk_image = vm.disk;
  c.env_share_dir = vm.env_dir;
  c.certs_share_dir = vm.certs_dir;
  c.serial = "stdio";
  c.no_reboot = true;
  c.nodefaults = true;  // no default NIC/VGA: only what the HAL needs
  if (direct_boot) {
    c.boot = runtime::confidential::BootMode::kMeasuredDirect;
    c.kernel = image.kernel;
    c.initrd = image.initramfs;
    c.roothash = roothash;
  } else {
    c.ovmf_code = kOvmfCode;
    c.ovmf_vars = vm.ovmf_vars;
  }
  return c;
}

base::Result<CocosLuksHeader> ReadCocosLuksHeader(const std::string& disk, const guest::hal::DiskLayout& layout,
                                                  const std::string& scratch_dir) {
  const guest::hal::PartitionSpec& cocos = layout.partitions.at(3);
  std::string header = scratch_dir + "/cocos-header.img";
  base::CommandSpec dd;
  dd.argv = {"dd",
             "if=" + disk,
             "of=" + header,
             "bs=1M",
             "count=16",
             "iflag=skip_bytes",
             "skip=" + std::to_string(cocos.offset_bytes()),
             "status=none"};
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult copied, base::RunCommand(dd));
  if (!copied.success()) {
    return base::Internal("dd of the cocos header: " + copied.stderr_data);
  }
  base::CommandSpec dump;
  dump.argv = {"cryptsetup", "luksDump", "--dump-json-metadata", header};
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult result, base::RunCommand(dump));
  base::CommandSpec uuid;
  uuid.argv = {"cryptsetup", "luksUUID", header};
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult uuid_result, base::RunCommand(uuid));
  (void)base::RemoveFileIfExists(header);
  if (!result.success() || !uuid_result.success()) {
    return base::NotFound("no LUKS2 header on the cocos partition: " +
                          base::Tail(result.stderr_data + uuid_result.stderr_data, 300));
  }
  auto metadata = nlohmann::json::parse(result.stdout_data, nullptr, false);
  if (metadata.is_discarded() || !metadata.contains("keyslots")) {
    return base::Internal("cryptsetup luksDump printed no LUKS2 JSON metadata: " + base::Tail(result.stdout_data, 300));
  }
  CocosLuksHeader parsed;
  parsed.keyslots = metadata["keyslots"].size();
  parsed.uuid = uuid_result.stdout_data;
  while (!parsed.uuid.empty() && (parsed.uuid.back() == '\n' || parsed.uuid.back() == ' ')) {
    parsed.uuid.pop_back();
  }
  return parsed;
}

base::Result<bool> FileRangeContains(const std::string& file, uint64_t offset, uint64_t length,
                                     const std::string& needle) {
  base::UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return base::SystemError("open " + file);
  }
  std::vector<char> buf((4 << 20) + needle.size());
  uint64_t pos = offset;
  size_t carry = 0;
  while (pos < offset + length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(4 << 20, offset + length - pos));
    ssize_t n = ::pread(fd.get(), buf.data() + carry, want, static_cast<off_t>(pos));
    if (n < 0) {
      return base::SystemError("read " + file);
    }
    if (n == 0) {
      break;
    }
    std::string_view view(buf.data(), carry + static_cast<size_t>(n));
    if (view.find(needle) != std::string_view::npos) {
      return true;
    }
    carry = std::min(needle.size() - 1, view.size());
    std::memmove(buf.data(), view.data() + view.size() - carry, carry);
    pos += static_cast<uint64_t>(n);
  }
  return false;
}

}  // namespace chrys::e2e::hal
