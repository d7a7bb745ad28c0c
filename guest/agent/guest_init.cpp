#include "guest/agent/guest_init.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "base/file_util.h"
#include "base/text.h"
#include "base/unique_fd.h"
#include "guest/agent/log.h"
#include "guest/agent/storage.h"

namespace chrys::guest {
namespace {

base::Status MountOne(const char* source, const char* target, const char* type, unsigned long flags, const char* data) {
  ::mkdir(target, 0755);
  if (::mount(source, target, type, flags, data) != 0 && errno != EBUSY) {
    return base::SystemError(std::string("mount ") + type + " on " + target);
  }
  return base::Status::Ok();
}

}  // namespace

base::Status QuietIdleKernel() {
  const char* proactiveness = "/proc/sys/vm/compaction_proactiveness";
  // Absent on kernels before 5.9, which have no proactive compaction to turn off.
  if (::access(proactiveness, F_OK) != 0 && errno == ENOENT) {
    return base::Status::Ok();
  }
  return base::WriteInterfaceFile(proactiveness, "0");
}

base::Status MountBaseFilesystems() {
  // pivot_root(2) fails on the initramfs (rootfs has no parent mount). A bind mount of it moved onto "/"
  // does have one, and costs nothing, unlike copying the initramfs into a tmpfs.
  ::mkdir("/.chrys-root", 0755);
  if (::mount("/", "/.chrys-root", nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return base::SystemError("bind-mounting the initramfs root");
  }
  if (::chdir("/.chrys-root") != 0 || ::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0 || ::chroot(".") != 0 ||
      ::chdir("/") != 0) {
    return base::SystemError("moving the root bind mount onto /");
  }
  CHRYS_RETURN_IF_ERROR(MountOne("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr));
  CHRYS_RETURN_IF_ERROR(MountOne("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr));
  CHRYS_RETURN_IF_ERROR(MountOne("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"));
  CHRYS_RETURN_IF_ERROR(
      MountOne("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620,gid=5"));
  CHRYS_RETURN_IF_ERROR(MountOne("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"));
  CHRYS_RETURN_IF_ERROR(MountOne("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"));
  CHRYS_RETURN_IF_ERROR(MountOne("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"));
  CHRYS_RETURN_IF_ERROR(
      MountOne("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "nsdelegate"));
  // /dev/ptmx must point at the devpts instance for posix_openpt.
  ::unlink("/dev/ptmx");
  if (::symlink("pts/ptmx", "/dev/ptmx") != 0) {
    LogWarn("symlink /dev/ptmx: %s", std::strerror(errno));
  }
  (void)!::symlink("/proc/self/fd", "/dev/fd");
  ::mkdir("/etc", 0755);
  return base::Status::Ok();
}

base::Status RunMonotonicClockAhead() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  if (now.tv_sec >= 2) {
    return base::Status::Ok();
  }
  if (::unshare(CLONE_NEWTIME) != 0) {
    return base::SystemError("creating a time namespace (gRPC will wait until the guest has been up 2 s)");
  }
  // The offsets file and the time_for_children link both name the namespace just created, which no process
  // has entered yet: its offsets can still be set.
  base::UniqueFd offsets(::open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC));
  const std::string record = "monotonic " + std::to_string(kMonotonicLeadSeconds) + " 0\n";
  if (!offsets || ::write(offsets.get(), record.data(), record.size()) != static_cast<ssize_t>(record.size())) {
    return base::SystemError("setting the monotonic offset of the agent's time namespace");
  }
  base::UniqueFd ns(::open("/proc/self/ns/time_for_children", O_RDONLY | O_CLOEXEC));
  if (!ns || ::setns(ns.get(), CLONE_NEWTIME) != 0) {
    return base::SystemError("entering the agent's time namespace");
  }
  return base::Status::Ok();
}

GuestHardware ProbeGuestHardware() {
  GuestHardware hw;
  if (DIR* dir = ::opendir("/sys/bus/pci/devices")) {
    while (dirent* e = ::readdir(dir)) {
      if (e->d_name[0] == '.') {
        continue;
      }
      std::string base = std::string("/sys/bus/pci/devices/") + e->d_name + "/";
      auto vendor = base::ReadFile(base + "vendor", 64);
      auto device = base::ReadFile(base + "device", 64);
      if (vendor.ok() && device.ok() && vendor->rfind("0x1af4", 0) == 0 && device->rfind("0x1053", 0) == 0) {
        hw.virtio_vsock = true;
      }
    }
    ::closedir(dir);
  }
  if (DIR* dir = ::opendir("/sys/bus/platform/devices")) {
    while (dirent* e = ::readdir(dir)) {
      std::string name = e->d_name;
      hw.virtio_mmio =
          hw.virtio_mmio || name.rfind("LNRO0005", 0) == 0 || name.find("virtio_mmio") != std::string::npos;
    }
    ::closedir(dir);
  }
  auto cmdline = base::ReadFile("/proc/cmdline", 64 << 10);
  if (cmdline.ok() && cmdline->find("virtio_mmio.device=") != std::string::npos) {
    hw.virtio_mmio = true;
  }
  return hw;
}

namespace {

// "kernel/fs/erofs/erofs.ko.xz" -> "erofs"
std::string ModuleName(const std::string& module_path) {
  std::string name = module_path.substr(module_path.rfind('/') + 1);
  return name.substr(0, name.find('.'));
}

// The deferred modules: needed by requests, not by the host channel, so they load while the agent serves. The
// value is when, in the order a pod's setup asks for them: the NIC (SetupSandbox), then virtio-fs (the pod's shared
// directory), then block devices and container filesystems (CreateContainer, which comes after the host's own
// preparation of the container, so these load while the host works). No group depends on a later one.
const std::map<std::string, int>& DeferredModuleRanks() {
  static const std::map<std::string, int> kRanks = {
      {"failover", 0},   {"net_failover", 0}, {"virtio_net", 0}, {"fuse", 1},    {"virtiofs", 1},
      {"virtio_blk", 2}, {"libcrc32c", 2},    {"erofs", 2},      {"overlay", 2},
  };
  return kRanks;
}

}  // namespace

ModulePhase PhaseOfModule(const std::string& module_path, const GuestHardware& hardware) {
  std::string name = ModuleName(module_path);
  if (DeferredModuleRanks().count(name) != 0) {
    return ModulePhase::kDeferred;
  }
  if (name == "vsock" || name.rfind("vmw_vsock_", 0) == 0) {
    return hardware.virtio_vsock ? ModulePhase::kBoot : ModulePhase::kSkip;
  }
  if (name == "virtio_mmio") {
    return hardware.virtio_mmio ? ModulePhase::kBoot : ModulePhase::kSkip;
  }
  return ModulePhase::kBoot;
}

namespace {

std::mutex loader_mu;
std::condition_variable loader_cv;
// How far the loader thread got; kNotStarted also means "nothing to wait for" (the agent is not PID 1).
enum class LoaderState { kNotStarted, kLoadingBoot, kLoadingDeferred, kDone } loader_state = LoaderState::kNotStarted;
std::set<std::string> modules_tried;  // by name, whether or not they loaded

void NoteModuleTried(const std::string& module_path) {
  {
    std::lock_guard lock(loader_mu);
    modules_tried.insert(ModuleName(module_path));
  }
  loader_cv.notify_all();
}

void AdvanceLoader(LoaderState next) {
  {
    std::lock_guard lock(loader_mu);
    loader_state = next;
  }
  loader_cv.notify_all();
}

base::Status WaitForLoader(LoaderState reached, std::chrono::milliseconds timeout, const char* what) {
  std::unique_lock lock(loader_mu);
  if (!loader_cv.wait_for(lock, timeout,
                          [reached] { return loader_state == LoaderState::kNotStarted || loader_state >= reached; })) {
    return base::DeadlineExceeded(std::string("the guest's ") + what + " did not load within " +
                                  std::to_string(timeout.count()) + " ms");
  }
  return base::Status::Ok();
}

}  // namespace

void StartModuleLoader(const GuestHardware& hardware) {
  {
    std::lock_guard lock(loader_mu);
    if (loader_state != LoaderState::kNotStarted) {
      return;
    }
    loader_state = LoaderState::kLoadingBoot;
  }
  std::thread([hardware] {
    auto failed = LoadModules(ModulePhase::kBoot, hardware);
    if (!failed.empty()) {
      LogWarn("%zu boot modules failed to load", failed.size());
    }
    AdvanceLoader(LoaderState::kLoadingDeferred);
    // The deferred modules load while the host's first requests arrive: at nice 10 this thread yields to the
    // agent serving them. Under TCG the first Ping went from 114-145 ms after the host connected to 58-71 ms and the
    // sandbox was set up ~50 ms sooner; a request that needs a module still waits for it (WaitForModule).
    (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
    failed = LoadModules(ModulePhase::kDeferred, hardware);
    if (!failed.empty()) {
      LogWarn("%zu deferred modules failed to load", failed.size());
    }
    LogInfo("deferred modules loaded");
    AdvanceLoader(LoaderState::kDone);
  }).detach();
}

base::Status WaitForBootModules(std::chrono::milliseconds timeout) {
  return WaitForLoader(LoaderState::kLoadingDeferred, timeout, "boot modules (virtio PCI, console)");
}

base::Status WaitForModule(const std::string& name, std::chrono::milliseconds timeout) {
  std::unique_lock lock(loader_mu);
  if (!loader_cv.wait_for(lock, timeout, [&name] {
        return loader_state == LoaderState::kNotStarted || loader_state == LoaderState::kDone ||
               modules_tried.count(name) != 0;
      })) {
    return base::DeadlineExceeded("the guest's module " + name + " did not load within " +
                                  std::to_string(timeout.count()) + " ms");
  }
  return base::Status::Ok();
}

base::Status WaitForDeferredModules(std::chrono::milliseconds timeout) {
  return WaitForLoader(LoaderState::kDone, timeout,
                       "deferred modules (virtio block and net, erofs, overlay, fuse, virtiofs)");
}

namespace {

std::mutex support_mu;
std::condition_variable support_cv;
enum class SupportState { kNotStarted, kRunning, kDone } support_state = SupportState::kNotStarted;
base::Status support_result = base::Status::Ok();

base::Status MountGuestTools() {
  CHRYS_RETURN_IF_ERROR(WaitForDeferredModules(std::chrono::seconds(60)));
  auto disk = FindDiskBySerial(kGuestToolsSerial, std::chrono::seconds(20));
  if (!disk.ok()) {
    return base::NotFound(std::string("the guest tools disk (virtio-blk serial ") + kGuestToolsSerial +
                          ", with crun) is not attached to this VM: the host must plug the image's tools disk");
  }
  CHRYS_RETURN_IF_ERROR(WaitUntilReadable(*disk, std::chrono::seconds(10)));
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(kGuestToolsDir));
  if (::mount(disk->c_str(), kGuestToolsDir, "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID, nullptr) != 0) {
    return base::SystemError("mounting the guest tools disk " + *disk + " (erofs) on " + kGuestToolsDir);
  }
  return base::Status::Ok();
}

// Queues reads of every file on the tools disk (crun, its libraries, mkfs.ext4: ~4 MB) into the page cache. The
// reads run on the host's I/O thread while the guest goes on, so the first crun finds its pages in memory instead
// of faulting them in one by one from the disk.
void PrefetchGuestTools() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(kGuestToolsDir, ec)) {
    if (!entry.is_regular_file(ec)) {
      continue;
    }
    base::UniqueFd fd(::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.valid()) {
      (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_WILLNEED);  // advisory: a failure only costs speed
    }
  }
}

}  // namespace

void StartContainerSupport() {
  {
    std::lock_guard lock(support_mu);
    if (support_state != SupportState::kNotStarted) {
      return;
    }
    support_state = SupportState::kRunning;
  }
  std::thread([] {
    if (auto cgroups = EnableCgroupControllers(); !cgroups.ok()) {
      LogWarn("%s", cgroups.error().message().c_str());
    }
    base::Status mounted = MountGuestTools();
    if (mounted.ok()) {
      PrefetchGuestTools();
      LogInfo("guest tools mounted on %s", kGuestToolsDir);
    } else {
      LogWarn("%s", mounted.error().message().c_str());
    }
    {
      std::lock_guard lock(support_mu);
      support_result = mounted;
      support_state = SupportState::kDone;
    }
    support_cv.notify_all();
  }).detach();
}

bool ContainerSupportSettled() {
  std::lock_guard lock(support_mu);
  return support_state != SupportState::kRunning;
}

base::Status WaitForContainerSupport(std::chrono::milliseconds timeout) {
  std::unique_lock lock(support_mu);
  if (!support_cv.wait_for(lock, timeout, [] { return support_state != SupportState::kRunning; })) {
    return base::DeadlineExceeded(std::string("the guest tools disk was not mounted on ") + kGuestToolsDir +
                                  " within " + std::to_string(timeout.count()) + " ms");
  }
  return support_result;
}

std::vector<std::string> ModulesToLoad(const std::string& list_text, ModulePhase phase, const GuestHardware& hardware) {
  std::vector<std::string> order;
  for (std::string& rel : base::SplitFields(list_text, '\n')) {
    if (!rel.empty() && PhaseOfModule(rel, hardware) == phase) {
      order.push_back(std::move(rel));
    }
  }
  if (phase == ModulePhase::kDeferred) {
    // Stable: within a rank the list's dependency order stays.
    auto rank = [](const std::string& rel) { return DeferredModuleRanks().at(ModuleName(rel)); };
    std::stable_sort(order.begin(), order.end(),
                     [&rank](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
  }
  return order;
}

std::vector<std::string> LoadModules(ModulePhase phase, const GuestHardware& hardware) {
  std::vector<std::string> failed;
  utsname uts{};
  ::uname(&uts);
  std::string dir = std::string("/lib/modules/") + uts.release + "/";
  auto list = base::ReadFile(kModuleListPath, 1 << 20);
  if (!list.ok()) {
    LogWarn("no module list: %s", list.error().message().c_str());
    return failed;
  }
  for (const std::string& rel : ModulesToLoad(*list, phase, hardware)) {
    base::UniqueFd fd(::open((dir + rel).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      LogWarn("module %s: %s", rel.c_str(), std::strerror(errno));
      failed.push_back(rel);
    } else if (::syscall(SYS_finit_module, fd.get(), "", 0) != 0 && errno != EEXIST) {
      LogWarn("loading module %s: %s", rel.c_str(), std::strerror(errno));
      failed.push_back(rel);
    }
    NoteModuleTried(rel);
  }
  return failed;
}

base::Status EnableCgroupControllers() {
  auto available = base::ReadFile("/sys/fs/cgroup/cgroup.controllers", 4096);
  if (!available.ok()) {
    return available.error();
  }
  std::string enable;
  for (const char* c : {"cpu", "cpuset", "memory", "pids", "io"}) {
    if (available->find(c) != std::string::npos) {
      enable += std::string(enable.empty() ? "" : " ") + "+" + c;
    }
  }
  base::UniqueFd fd(::open("/sys/fs/cgroup/cgroup.subtree_control", O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.get(), enable.data(), enable.size()) < 0) {
    return base::SystemError("enabling cgroup controllers '" + enable + "'");
  }
  return base::Status::Ok();
}

std::vector<std::string> ModuleLoadOrder(const std::vector<std::string>& wanted,
                                         const std::vector<std::pair<std::string, std::vector<std::string>>>& deps) {
  std::map<std::string, std::vector<std::string>> graph(deps.begin(), deps.end());
  std::vector<std::string> order;
  std::set<std::string> placed;
  std::set<std::string> visiting;
  std::function<void(const std::string&)> visit = [&](const std::string& m) {
    if (placed.count(m) != 0 || visiting.count(m) != 0) {
      return;  // done, or a cycle (modules.dep has none; do not loop if it ever does)
    }
    visiting.insert(m);
    auto it = graph.find(m);
    if (it != graph.end()) {
      // modules.dep lists dependencies so that loading them right to left works.
      for (auto d = it->second.rbegin(); d != it->second.rend(); ++d) {
        visit(*d);
      }
    }
    visiting.erase(m);
    placed.insert(m);
    order.push_back(m);
  };
  for (const auto& w : wanted) {
    visit(w);
  }
  return order;
}

}  // namespace chrys::guest
