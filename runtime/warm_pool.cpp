// The sandbox manager's warm pool: VMs booted ahead of demand and claimed by pods (see WarmPoolOptions).
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <thread>

#include "base/file_util.h"
#include "runtime/sandbox.h"
#include "runtime/sandbox_record.h"

namespace chrys::runtime {

using base::Result;
using base::Status;

namespace {

std::string NewWarmId() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(kWarmIdPrefix) + std::string(hex, 12);
}

bool IsPlainQemuHandler(const std::string& handler) {
  return handler.empty() || handler == "chrysalis" || handler == "chrysalis-qemu";
}

// How far a warm VM may grow: the host's memory (no pod VM can use more), in whole hot-plug blocks; 0 when it
// cannot be read (the VM then boots without room to grow).
int WarmMaxMemoryMib() {
  auto meminfo = base::ReadFile("/proc/meminfo", 1 << 16);
  if (!meminfo.ok()) {
    return 0;
  }
  long long kib = 0;
  if (std::sscanf(meminfo->c_str(), "MemTotal: %lld kB", &kib) != 1 || kib <= 0) {
    return 0;
  }
  long long mib = kib / 1024 / kHotplugMemoryBlockMib * kHotplugMemoryBlockMib;
  return static_cast<int>(std::min<long long>(mib, 1 << 22));
}

}  // namespace

bool SandboxManager::FitsWarmPool(const SandboxRequest& request, VmmKind kind) const {
  const WarmPoolOptions& pool = options_.warm_pool;
  // Confidential VMs are launched from their pod's measured plan; Cloud Hypervisor VMs cannot take a NIC later.
  return pool.size > 0 && kind == VmmKind::kQemu && IsPlainQemuHandler(request.handler) &&
         request.extra_cmdline.empty() && request.fs_shares.size() == 1 && request.fs_shares[0].tag == pool.share_tag &&
         !request.fs_shares[0].read_only && CanGrowTo(request.resources);
}

// A warm VM boots small and has room to grow (vCPUs up to sizing.max_vcpus, memory up to the host's in whole
// hot-plug blocks), never to shrink: inside the pod's cgroup, a VM larger than the pod was sized for could use more
// than the pod's limits allow.
bool SandboxManager::CanGrowTo(const PodResources& resources) const {
  int vcpus = VcpusFor(resources, options_.sizing);
  int memory = MemoryMibFor(resources, options_.sizing);
  int warm_vcpus = VcpusFor({}, options_.sizing);
  int warm_memory = WarmBootMemoryMib();
  if (vcpus == warm_vcpus && memory == warm_memory) {
    return true;
  }
  return vcpus >= warm_vcpus && vcpus <= std::max(warm_vcpus, options_.sizing.max_vcpus) && memory >= warm_memory &&
         (memory - warm_memory) % kHotplugMemoryBlockMib == 0 && memory <= WarmMaxMemoryMib();
}

// The default pod shape's memory less as many whole hot-plug blocks as leave one block above the overhead: the
// default shape (640 MiB: 256 + 3 blocks) and pods whose limits are whole blocks down to one (128Mi) take a warm VM by
// growing it, and an idle warm VM holds the least memory.
int SandboxManager::WarmBootMemoryMib() const {
  int full = MemoryMibFor({}, options_.sizing);
  int smallest = options_.sizing.overhead_memory_mib + kHotplugMemoryBlockMib;
  if (full <= smallest) {
    return full;
  }
  return full - (full - smallest) / kHotplugMemoryBlockMib * kHotplugMemoryBlockMib;
}

void SandboxManager::DiscardWarm(Sandbox& sb, const std::string& warm_id) {
  if (options_.agent) {
    options_.agent->Forget(sb.id);
    options_.agent->Forget(warm_id);
  }
  if (sb.vmm) {
    (void)sb.vmm->Kill();
  }
  for (const std::string& id : {warm_id, sb.id}) {
    (void)base::RemoveTree(SandboxRunDir(id));
    (void)base::RemoveTree(SandboxStateDir(id));
  }
  for (const auto& share : sb.spec.fs_shares) {
    if (options_.warm_pool.release_share) {
      (void)options_.warm_pool.release_share(share.host_dir);
    }
  }
}

std::optional<Result<SandboxStatus>> SandboxManager::ClaimWarm(const SandboxRequest& request, VmmKind kind) {
  if (!FitsWarmPool(request, kind)) {
    return std::nullopt;
  }
  std::shared_ptr<Sandbox> sb;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = warm_.begin(); it != warm_.end() && !sb; ++it) {
      // A VM still booting is locked by the refill thread (which takes mu_ only after unlocking it).
      if (it->second->mu.try_lock()) {
        bool ready = it->second->state == SandboxState::kReady;
        it->second->mu.unlock();
        if (ready) {
          sb = it->second;
          warm_.erase(it);
          break;
        }
      }
    }
    if (!sb) {
      ++pool_missed_;
    }
  }
  if (!sb) {
    // No warm VM is ready: restoring one from the template still beats a boot by seconds.
    sb = RestoreWarmNow(request);
    if (!sb) {
      return std::nullopt;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (sandboxes_.count(request.id) != 0 ||
        ::access((SandboxStateDir(request.id) + "/sandbox.json").c_str(), F_OK) == 0) {
      warm_[sb->id] = sb;
      return Result<SandboxStatus>(
          base::MakeError(base::ErrorCode::kAlreadyExists, "sandbox " + request.id + " already exists"));
    }
    sandboxes_[request.id] = sb;
    ++pool_claimed_;
  }
  pool_cv_.notify_all();  // the refill thread boots a replacement
  auto claim_start = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> sandbox_lock(sb->mu);
  const std::string warm_id = sb->id;
  auto forget_claim = [this, &request] {
    std::lock_guard<std::mutex> lock(mu_);
    sandboxes_.erase(request.id);
  };
  // A warm VM that died or cannot be moved is dropped; the pod boots its own as if the pool were empty.
  auto fall_back = [&](const std::string& why) -> std::optional<Result<SandboxStatus>> {
    DiscardWarm(*sb, warm_id);
    (void)::rmdir(SandboxStateDir(request.id).c_str());
    forget_claim();
    std::lock_guard<std::mutex> lock(mu_);
    pool_last_error_ = "claiming " + warm_id + " for " + request.id + ": " + why;
    return std::nullopt;
  };
  if (!sb->vmm || !sb->vmm->Alive()) {
    return fall_back("the warm VM exited");
  }
  VmLaunchSpec target = sb->spec;
  target.sandbox_id = request.id;
  target.run_dir = SandboxRunDir(request.id);
  target.console_log_path = SandboxStateDir(request.id) + "/console.log";
  target.netns_path = request.netns_path;
  target.cgroup_parent = request.cgroup_parent;
  target.cgroup_driver = request.cgroup_driver;
  if (Status dir = base::MakeDirs(SandboxStateDir(request.id), 0700); !dir.ok()) {
    return fall_back(dir.error().message());
  }
  if (Status moved = sb->vmm->Rehome(target); !moved.ok()) {
    return fall_back(moved.error().message());
  }
  if (options_.agent) {
    options_.agent->Rename(warm_id, request.id);
  }
  sb->id = request.id;
  sb->handler = request.handler;
  sb->spec = target;
  sb->state = SandboxState::kCreating;
  sb->error.clear();
  sb->from_warm_pool = true;
  // The pod's record names the VM from here on; the warm one goes. A crash in between leaves both, and Recover
  // removes both (the half-created pod and the warm VM, killed once).
  auto fail = [&](const base::Error& err) -> std::optional<Result<SandboxStatus>> {
    DiscardWarm(*sb, warm_id);
    forget_claim();
    return Result<SandboxStatus>(err);
  };
  if (Status persisted = Persist(*sb); !persisted.ok()) {
    return fail(persisted.error().Wrap("recording sandbox " + request.id));
  }
  (void)base::RemoveTree(SandboxStateDir(warm_id));
  // What the pod's size needs beyond the warm VM's is hot-plugged. When that fails the VM goes and the pod boots its
  // own, as if the pool were empty.
  int vcpus = VcpusFor(request.resources, options_.sizing);
  int memory = MemoryMibFor(request.resources, options_.sizing);
  if (vcpus != sb->spec.vcpus || memory != sb->spec.memory_mib) {
    int added_memory = memory - sb->spec.memory_mib;
    Status grown = sb->vmm->Grow(vcpus, memory, options_.hotplug_timeout);
    if (grown.ok() && options_.agent) {
      grown = options_.agent->OnlineResources(request.id, sb->vmm->agent_endpoint(), vcpus, added_memory,
                                              options_.hotplug_timeout);
    }
    if (!grown.ok()) {
      DiscardWarm(*sb, warm_id);
      forget_claim();
      std::lock_guard<std::mutex> lock(mu_);
      pool_last_error_ = "growing " + warm_id + " to " + std::to_string(vcpus) + " vCPUs and " +
                         std::to_string(memory) + " MiB for " + request.id + ": " + grown.error().message();
      return std::nullopt;
    }
    sb->spec.vcpus = vcpus;
    sb->spec.memory_mib = memory;
  }
  for (const auto& nic : request.interfaces) {
    if (Status plugged = sb->vmm->HotplugNic(nic, options_.hotplug_timeout); !plugged.ok()) {
      return fail(plugged.error().Wrap("sandbox " + request.id + " (a warm VM)"));
    }
  }
  sb->spec.interfaces = request.interfaces;
  sb->claim_time =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - claim_start);
  sb->state = SandboxState::kReady;
  if (Status persisted = Persist(*sb); !persisted.ok()) {
    return fail(persisted.error().Wrap("recording sandbox " + request.id));
  }
  return Result<SandboxStatus>(Snapshot(*sb));
}

// The warm VMs' request, share left out: the default pod shape's CPUs, WarmBootMemoryMib, room to grow.
SandboxRequest SandboxManager::WarmRequest(const std::string& id) const {
  SandboxRequest request;
  request.id = id;
  request.handler = "chrysalis-qemu";
  request.cgroup_parent = options_.warm_pool.cgroup_parent;
  request.cgroup_driver = CgroupDriver::kCgroupfs;
  // Sized by a memory limit that gives WarmBootMemoryMib once the overhead is added.
  request.resources.memory_bytes = static_cast<int64_t>(WarmBootMemoryMib() - options_.sizing.overhead_memory_mib)
                                   << 20;
  request.max_vcpus = options_.sizing.max_vcpus;
  // Room for hot-plugged memory above 4 GiB makes the guest kernel set up a 64 MiB bounce buffer (SWIOTLB) for
  // devices that cannot reach it, and zero it: 74 MiB more resident per warm VM (measured). Our virtio devices
  // address all 64 bits; confidential guests, which need the buffer, are never pooled.
  request.extra_cmdline = "swiotlb=noforce";
  request.max_memory_mib = WarmMaxMemoryMib();
  return request;
}

Status SandboxManager::BootWarm(Sandbox& sb, const SandboxRequest* for_pod) {
  const WarmPoolOptions& pool = options_.warm_pool;
  SandboxRequest request = WarmRequest(sb.id);
  if (for_pod != nullptr) {
    // Restored on the spot for a pod: under the pod's cgroup parent from the start, at its CPU weight (the pool's
    // parent has the lowest) and with the memory it touches charged to the pod.
    request.cgroup_parent = for_pod->cgroup_parent;
    request.cgroup_driver = for_pod->cgroup_driver;
  }
  std::shared_ptr<base::UniqueFd> template_memory;  // held until the launch copied it
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (template_state_ == "ready" && template_memory_) {
      template_memory = template_memory_;
      request.memory_fd = template_memory->get();
      request.restore_state_path = template_state_path_;
    }
  }
  std::string share_dir = pool.share_root + "/" + sb.id;
  request.fs_shares.push_back({pool.share_tag, share_dir, false});
  Status booted = pool.prepare_share ? pool.prepare_share(share_dir) : Status::Ok();
  if (booted.ok()) {
    // The refill thread's boot or restore records its VMM, so StopWarmPool can end it rather than wait out a
    // guest that does not answer (up to the boot timeout). Restores for pods run on RPC threads, several at once:
    // they neither take nor clear that one slot.
    BootingVmm* booting = for_pod == nullptr ? &warm_booting_ : nullptr;
    booted = Boot(sb, request, VmmKind::kQemu, booting);  // undoes itself
    if (booting != nullptr) {
      booting->Clear();
    }
  }
  if (!booted.ok() && pool.release_share) {
    (void)pool.release_share(share_dir);
  }
  if (!template_memory) {
    return booted;
  }
  bool drop = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    template_restore_failures_ = booted.ok() ? 0 : template_restore_failures_ + 1;
    drop = template_restore_failures_ >= kTemplateFailureLimit;
  }
  if (drop) {
    DropTemplate("failed: " + std::to_string(kTemplateFailureLimit) +
                 " restores in a row failed, the last with: " + booted.error().message());
  }
  return booted;
}

namespace {

// How often the agent logged the end of a host session on this console log ("host session on ... ended").
size_t CountSessionEnds(const std::string& console_log_path) {
  auto text = base::ReadFile(console_log_path, 1 << 20);
  if (!text.ok()) {
    return 0;
  }
  size_t count = 0;
  for (size_t at = text->find("host session on "); at != std::string::npos;
       at = text->find("host session on ", at + 1)) {
    size_t line_end = std::min(text->find('\n', at), text->size());
    if (text->find(" ended", at) < line_end) {
      ++count;
    }
  }
  return count;
}

}  // namespace

Status SandboxManager::MakeTemplate() {
  int memfd = static_cast<int>(::syscall(SYS_memfd_create, "chrys-template-ram", MFD_CLOEXEC));
  if (memfd < 0) {
    return base::SystemError("creating the template's memory (memfd_create)");
  }
  auto memory = std::make_shared<base::UniqueFd>(memfd);
  std::string state_path = options_.run_dir + "/vm-template.state";
  (void)base::RemoveFileIfExists(state_path);  // a previous chrysd's, useless without its memory
  auto sb = std::make_shared<Sandbox>();
  sb->id = NewWarmId() + kTemplateIdMark;
  sb->kind = VmmKind::kQemu;
  sb->handler = "chrysalis-qemu";
  SandboxRequest request = WarmRequest(sb->id);
  request.memory_fd = memory->get();
  std::lock_guard<std::mutex> sandbox_lock(sb->mu);
  // The template has no share: a vhost-user-fs device cannot be saved. Its clones get theirs after the restore.
  Status booted = Boot(*sb, request, VmmKind::kQemu, &warm_booting_);
  warm_booting_.Clear();
  if (!booted.ok()) {
    return booted.error().Wrap("booting the template VM");
  }
  // Saved once its start-up work is done, so no clone repeats it.
  auto deadline = std::chrono::steady_clock::now() + options_.warm_pool.template_settle_timeout;
  Status settled = base::DeadlineExceeded("the template VM did not settle within " +
                                          std::to_string(options_.warm_pool.template_settle_timeout.count()) + " ms");
  while (std::chrono::steady_clock::now() < deadline && !PoolStopping()) {
    auto done = options_.agent ? options_.agent->Settled(sb->id, sb->vmm->agent_endpoint(), std::chrono::seconds(2))
                               : Result<bool>(true);
    if (!done.ok()) {
      settled = done.error();
      break;
    }
    if (*done) {
      settled = Status::Ok();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (settled.ok() && options_.agent) {
    // Free guest memory is zeroed, so it reads as zero pages: clones skip them, and the template drops them below.
    settled = options_.agent->PrepareTemplate(sb->id, sb->vmm->agent_endpoint(), options_.hotplug_timeout);
    // The clones are reached afresh, so the host's session ends here, and the save waits until the agent has seen it
    // end (it logs so on the console). Saved mid-session, every clone resumed inside that session: the host's first
    // bytes were garbage to it, it dropped them, and the host's next connection stalled until the boot timed out.
    size_t ended_before = CountSessionEnds(sb->spec.console_log_path);
    options_.agent->Forget(sb->id);
    auto wait_until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (CountSessionEnds(sb->spec.console_log_path) <= ended_before &&
           std::chrono::steady_clock::now() < wait_until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (settled.ok()) {
    settled = sb->vmm->SaveState(state_path, options_.hotplug_timeout);
  }
  DiscardWarm(*sb, sb->id);
  if (settled.ok()) {
    auto punched = base::PunchZeroPages(memory->get());
    settled = punched.ok() ? Status::Ok() : Status(punched.error());
  }
  if (!settled.ok()) {
    (void)base::RemoveFileIfExists(state_path);
    return settled.error().Wrap("saving the template VM");
  }
  std::lock_guard<std::mutex> lock(mu_);
  template_memory_ = std::move(memory);
  template_state_path_ = state_path;
  template_state_ = "ready";
  template_restore_failures_ = 0;
  return Status::Ok();
}

std::shared_ptr<SandboxManager::Sandbox> SandboxManager::RestoreWarmNow(const SandboxRequest& for_pod) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (template_state_ != "ready" || pool_stopping_) {
      return nullptr;
    }
  }
  auto sb = std::make_shared<Sandbox>();
  sb->id = NewWarmId();
  sb->handler = "chrysalis-qemu";
  sb->kind = VmmKind::kQemu;
  Status restored = Status::Ok();
  {
    std::lock_guard<std::mutex> sandbox_lock(sb->mu);
    restored = BootWarm(*sb, &for_pod);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!restored.ok()) {
    pool_last_error_ = "restoring a VM from the template for a pod: " + restored.error().message();
    return nullptr;
  }
  ++pool_restored_on_demand_;
  return sb;
}

void SandboxManager::DropTemplate(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  template_memory_.reset();  // launches in flight keep their own reference
  if (!template_state_path_.empty()) {
    (void)base::RemoveFileIfExists(template_state_path_);
    template_state_path_.clear();
  }
  template_state_ = why.empty() ? "off" : why;
}

bool SandboxManager::PoolStopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return pool_stopping_;
}

void SandboxManager::StartWarmPool() {
  const WarmPoolOptions& pool = options_.warm_pool;
  if (pool.size <= 0 || refill_.joinable()) {
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pool_stopping_ = false;
  }
  refill_ = std::thread([this] { RefillWarmPool(); });
}

void SandboxManager::RefillWarmPool() {
  const WarmPoolOptions& pool = options_.warm_pool;
  if (pool.prepare_cgroup_parent) {
    if (Status prepared = pool.prepare_cgroup_parent(pool.cgroup_parent); !prepared.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      pool_last_error_ = "preparing the warm VMs' cgroup " + pool.cgroup_parent + ": " + prepared.error().message();
    }
  }
  if (pool.use_template) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      template_state_ = "pending";
    }
    if (Status made = MakeTemplate(); !made.ok()) {
      DropTemplate("failed: " + made.error().message());
      std::lock_guard<std::mutex> lock(mu_);
      pool_last_error_ = "making the VM template (warm VMs boot instead): " + made.error().message();
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  while (!pool_stopping_) {
    if (static_cast<int>(warm_.size()) >= pool.size) {
      pool_cv_.wait_for(lock, pool.health_check_interval);
      // Warm VMs that died are dropped here, and replaced on the next turn.
      std::vector<std::shared_ptr<Sandbox>> dead;
      for (auto it = warm_.begin(); it != warm_.end();) {
        bool gone = false;
        if (it->second->mu.try_lock()) {
          gone = it->second->state == SandboxState::kReady && (!it->second->vmm || !it->second->vmm->Alive());
          it->second->mu.unlock();
        }
        if (gone) {
          pool_last_error_ = "warm VM " + it->first + " exited while it waited";
          dead.push_back(it->second);
          it = warm_.erase(it);
        } else {
          ++it;
        }
      }
      lock.unlock();
      for (auto& sb : dead) {
        std::lock_guard<std::mutex> sandbox_lock(sb->mu);
        DiscardWarm(*sb, sb->id);
      }
      lock.lock();
      continue;
    }
    auto sb = std::make_shared<Sandbox>();
    sb->id = NewWarmId();
    sb->handler = "chrysalis-qemu";
    sb->kind = VmmKind::kQemu;
    warm_[sb->id] = sb;
    lock.unlock();

    Status booted = Status::Ok();
    {
      std::lock_guard<std::mutex> sandbox_lock(sb->mu);
      booted = BootWarm(*sb);
    }

    lock.lock();
    if (!booted.ok()) {
      warm_.erase(sb->id);
      if (!pool_stopping_) {
        pool_last_error_ = "booting warm VM " + sb->id + ": " + booted.error().message();
        pool_cv_.wait_for(lock, pool.retry_delay, [this] { return pool_stopping_; });
      }
    }
  }
}

void SandboxManager::StopWarmPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pool_stopping_ = true;
  }
  pool_cv_.notify_all();
  bool ran = refill_.joinable();
  if (refill_.joinable()) {
    // A boot in flight ends when its VMM dies: the agent channel closes and the readiness wait fails.
    warm_booting_.Kill();
    refill_.join();
  }
  std::map<std::string, std::shared_ptr<Sandbox>> warm;
  {
    std::lock_guard<std::mutex> lock(mu_);
    warm.swap(warm_);
  }
  for (auto& [id, sb] : warm) {
    std::lock_guard<std::mutex> sandbox_lock(sb->mu);
    DiscardWarm(*sb, id);
  }
  DropTemplate("");
  if (ran && options_.warm_pool.release_cgroup_parent) {
    options_.warm_pool.release_cgroup_parent(options_.warm_pool.cgroup_parent);
  }
}

WarmPoolStatus SandboxManager::warm_pool_status() {
  std::lock_guard<std::mutex> lock(mu_);
  WarmPoolStatus status;
  status.size = options_.warm_pool.size;
  for (const auto& [id, sb] : warm_) {
    // A VM being booted is locked by the refill thread.
    if (sb->mu.try_lock()) {
      (sb->state == SandboxState::kReady ? status.ready : status.booting)++;
      sb->mu.unlock();
    } else {
      status.booting++;
    }
  }
  status.claimed = pool_claimed_;
  status.missed = pool_missed_;
  status.restored_on_demand = pool_restored_on_demand_;
  status.template_state = template_state_;
  if (template_memory_) {
    struct stat st {};
    if (::fstat(template_memory_->get(), &st) == 0) {
      status.template_memory_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  status.last_error = pool_last_error_;
  return status;
}

}  // namespace chrys::runtime
