#include "e2e/guest/qemu_guest.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "runtime/guest_manifest.h"
#include "runtime/qemu_cpu.h"

extern char** environ;

namespace chrys::guest::testing {

base::Result<QemuGuestOptions> OptionsFromManifest(const std::string& guest_dir, const std::string& work_dir) {
  CHRYS_ASSIGN_OR_RETURN(runtime::GuestImageFiles files, runtime::ReadGuestManifest(guest_dir));
  QemuGuestOptions o;
  o.kernel = files.kernel;
  o.initrd = files.initramfs;
  o.cmdline = files.cmdline;
  if (files.tools_disk) {
    o.tools_disk = GuestDisk{files.tools_disk->path, files.tools_disk->serial, true};
  }
  o.work_dir = work_dir;
  return o;
}

base::Status MakeBusyboxErofs(const std::string& staging_dir, const std::string& image_path) {
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(staging_dir + "/bin"));
  for (const char* d : {"proc", "sys", "dev", "etc", "tmp", "root"}) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(staging_dir + "/" + d));
  }
  CHRYS_ASSIGN_OR_RETURN(std::string busybox, base::ReadFile("/bin/busybox", 64 << 20));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(staging_dir + "/bin/busybox", busybox, 0755));
  for (const char* applet : {"sh", "echo", "cat", "sleep", "ls", "head", "yes", "test", "id", "hostname", "true",
                             "false", "dd", "env", "tty", "wc", "seq"}) {
    std::string link = staging_dir + "/bin/" + applet;
    ::unlink(link.c_str());
    if (::symlink("busybox", link.c_str()) != 0) {
      return base::SystemError("symlink " + link);
    }
  }
  base::CommandSpec spec;
  spec.argv = {"mkfs.erofs", "--quiet", "--all-root", "-T0", image_path, staging_dir};
  spec.timeout = std::chrono::seconds(60);
  CHRYS_ASSIGN_OR_RETURN(auto result, base::RunCommand(spec));
  if (!result.success()) {
    return base::Internal("mkfs.erofs " + result.DescribeExit() + ": " + base::Tail(result.stderr_data));
  }
  return base::Status::Ok();
}

QemuGuest::~QemuGuest() {
  Kill();
}

base::Status QemuGuest::Start(const QemuGuestOptions& o) {
  agent_socket_ = o.work_dir + "/agent.sock";
  console_log_ = o.work_dir + "/console.log";
  ::unlink(agent_socket_.c_str());
  // A guest started again in the same work dir must not see the last one's console before QEMU truncates it.
  ::unlink(console_log_.c_str());
  argv_ = {"qemu-system-x86_64",
           "-machine",
           "q35,accel=tcg",
           "-cpu",
           runtime::kTcgCpuModel,
           "-m",
           std::to_string(o.memory_mib),
           "-smp",
           std::to_string(o.cpus),
           "-display",
           "none",
           "-monitor",
           "none",
           "-no-reboot",
           "-nodefaults",
           "-kernel",
           o.kernel,
           "-initrd",
           o.initrd,
           "-append",
           o.cmdline,
           "-serial",
           "file:" + console_log_};
  if (!o.firmware.empty()) {
    argv_.insert(argv_.end(), {"-bios", o.firmware});
  }
  if (o.agent_channel) {
    argv_.insert(argv_.end(), {"-chardev", "socket,id=agent,path=" + agent_socket_ + ",server=on,wait=off", "-device",
                               "virtio-serial-pci", "-device", "virtserialport,chardev=agent,name=chrys.agent"});
  }
  std::vector<GuestDisk> disks = o.disks;
  if (o.tools_disk) {
    disks.insert(disks.begin(), *o.tools_disk);
  }
  int n = 0;
  for (const auto& d : disks) {
    std::string id = "disk" + std::to_string(n++);
    argv_.insert(
        argv_.end(),
        {"-drive", "file=" + d.path + ",if=none,id=" + id + ",format=raw" + (d.read_only ? ",readonly=on" : ""),
         "-device", "virtio-blk-pci,drive=" + id + ",serial=" + d.serial});
  }
  if (!o.nic_mac.empty()) {
    argv_.insert(argv_.end(),
                 {"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,mac=" + o.nic_mac});
  }
  std::vector<char*> argv;
  for (auto& a : argv_) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  if (rc != 0) {
    return base::SystemError("spawning qemu-system-x86_64", rc);
  }
  pid_ = pid;
  // The chardev socket appears once QEMU is up.
  for (int i = 0; i < 500 && ::access(agent_socket_.c_str(), F_OK) != 0; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return base::Internal("qemu exited right away; command line wrong?");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return base::Status::Ok();
}

bool QemuGuest::WaitExit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) {
    return true;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void QemuGuest::Kill() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
}

std::string QemuGuest::Console() const {
  auto text = base::ReadFile(console_log_, 16 << 20);
  return text.ok() ? *text : "";
}

}  // namespace chrys::guest::testing
