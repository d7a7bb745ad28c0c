#include "e2e/runtime/test_guest.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "runtime/process.h"

namespace chrys::runtime::testing {

using base::Result;
using base::Status;

std::string FindCloudKernel() {
  DIR* d = ::opendir("/boot");
  if (d == nullptr) {
    return "";
  }
  std::string best;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("vmlinuz-", 0) == 0 && name.find("-cloud-amd64") != std::string::npos && name > best) {
      best = name;
    }
  }
  ::closedir(d);
  return best.empty() ? "" : "/boot/" + best;
}

namespace {

// Module load order matters: each after the ones it needs.
const char* kModules[] = {
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "drivers/char/virtio_console",
    "drivers/block/virtio_blk",
    "lib/libcrc32c",
    "fs/erofs/erofs",
    "fs/fuse/fuse",
    "fs/fuse/virtiofs",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
};

const char* kInitHead = R"SH(#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
)SH";

// The agent: one command per line, "<id> CMD args", reply "<id> ...".
const char* kAgentLoop = R"SH(
port=""
while [ -z "$port" ]; do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name 2>/dev/null)" = chrys.agent ] && port=/dev/${p##*/}
  done
  [ -z "$port" ] && sleep 0.1
done
finddev() {
  i=0
  while [ $i -lt 100 ]; do
    for d in /sys/block/vd*; do
      [ -e "$d/serial" ] && [ "$(cat $d/serial)" = "$1" ] && { echo ${d##*/}; return; }
    done
    sleep 0.1; i=$((i+1))
  done
}
serve() {
  while read -r id cmd a b; do
    case "$cmd" in
      PING) echo "$id PONG" ;;
      NICS) echo "$id OUT $(cat /sys/class/net/eth0/address 2>/dev/null) $(ls /sys/class/net/eth0/queues 2>/dev/null | tr '\n' ' ')" ;;
      RUN)
        dev=$(finddev $a)
        if [ -z "$dev" ]; then echo "$id ERR no disk with serial $a"; continue; fi
        mkdir -p /mnt/$a
        mountpoint -q /mnt/$a || mount -t erofs -o ro /dev/$dev /mnt/$a 2>/dev/null
        echo "$id OUT $(sh /mnt/$a/$b 2>&1 | tr '\n' ' ')" ;;
      WRITE)
        dev=$(finddev $a)
        if [ -z "$dev" ]; then echo "$id ERR no disk with serial $a"; continue; fi
        echo "$b" | dd of=/dev/$dev bs=512 count=1 conv=sync 2>/dev/null
        echo "$id OUT $(dd if=/dev/$dev bs=512 count=1 2>/dev/null | tr -d '\000')" ;;
      GONE)
        umount /mnt/$a 2>/dev/null
        echo "$id OUT $(for d in /sys/block/vd*; do [ -e $d/serial ] && cat $d/serial; done | grep -c "^$a\$")" ;;
      FSREAD)
        mkdir -p /mnt/fs-$a
        mountpoint -q /mnt/fs-$a || mount -t virtiofs $a /mnt/fs-$a 2>/dev/null
        echo "$id OUT $(cat /mnt/fs-$a/$b 2>&1)" ;;
      SHUTDOWN) echo "$id BYE"; sync; poweroff -f ;;
      *) echo "$id ERR unknown command" ;;
    esac
  done
}
exec 3<>$port
while true; do serve <&3 >&3; sleep 0.1; done
)SH";

}  // namespace

Result<std::string> BuildTestInitramfs(const std::string& dir, const std::string& kernel_version, GuestFlavor flavor) {
  std::string root = dir + "/root";
  (void)base::RemoveTree(root);
  for (const char* sub : {"/bin", "/proc", "/sys", "/dev", "/mnt", "/lib/modules"}) {
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(root + sub));
  }
  CHRYS_ASSIGN_OR_RETURN(std::string busybox, base::ReadFile("/bin/busybox", 8 << 20));
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(root + "/bin/busybox", busybox, 0755));
  std::string order;
  for (const char* m : kModules) {
    std::string src = "/lib/modules/" + kernel_version + "/kernel/" + m + ".ko";
    auto data = base::ReadFile(src, 16 << 20);
    if (!data.ok()) {
      continue;  // built into this kernel
    }
    std::string name = std::string(m).substr(std::string(m).rfind('/') + 1);
    CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(root + "/lib/modules/" + name + ".ko", *data, 0644));
    order += name + "\n";
  }
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(root + "/modules.order", order));
  std::string init = kInitHead;
  init += std::string("echo ") + kGuestUpMarker + "\n";
  switch (flavor) {
    case GuestFlavor::kAgent:
      init += kAgentLoop;
      break;
    case GuestFlavor::kMarkerOnly:
      init += "poweroff -f\n";
      break;
    case GuestFlavor::kNeverReady:
      init += "echo this guest never serves its agent\nwhile true; do sleep 10; done\n";
      break;
  }
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(root + "/init", init, 0755));
  std::string out = dir + "/initramfs.cpio.gz";
  base::CommandSpec cmd;
  cmd.argv = {"/bin/sh", "-c", "cd '" + root + "' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > '" + out + "'"};
  cmd.timeout = std::chrono::seconds(60);
  CHRYS_ASSIGN_OR_RETURN(auto res, base::RunCommand(cmd));
  if (!res.success()) {
    return base::Internal("building initramfs: " + res.DescribeExit() + ": " + res.stderr_data);
  }
  return out;
}

namespace {

Result<base::UniqueFd> ConnectUnix(const std::string& path) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return base::SystemError("connecting " + path);
  }
  return fd;
}

}  // namespace

Result<std::string> LineAgentConnector::Call(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                             const std::string& command, std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  Conn& conn = conns_[sandbox_id];
  if (!conn.fd.valid()) {
    CHRYS_ASSIGN_OR_RETURN(conn.fd, ConnectUnix(endpoint.socket_path));
    conn.buffer.clear();
  }
  std::string id = std::to_string(next_id_++);
  std::string line = id + " " + command + "\n";
  if (::send(conn.fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    conn.fd.Reset();
    return base::Unavailable("agent socket write failed");
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    size_t nl;
    while ((nl = conn.buffer.find('\n')) != std::string::npos) {
      std::string reply = conn.buffer.substr(0, nl);
      conn.buffer.erase(0, nl + 1);
      if (reply.rfind(id + " ", 0) == 0) {
        return reply.substr(id.size() + 1);
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return base::DeadlineExceeded("agent did not answer " + command);
    }
    pollfd pfd{conn.fd.get(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
      continue;
    }
    char buf[4096];
    ssize_t n = ::recv(conn.fd.get(), buf, sizeof buf, 0);
    if (n <= 0) {
      conn.fd.Reset();
      return base::Unavailable("agent connection closed");
    }
    conn.buffer.append(buf, static_cast<size_t>(n));
  }
}

Result<bool> LineAgentConnector::Probe(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                       std::chrono::milliseconds) {
  auto reply = Call(sandbox_id, endpoint, "PING", std::chrono::milliseconds(300));
  return reply.ok() && *reply == "PONG";
}

Status LineAgentConnector::Shutdown(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                    std::chrono::milliseconds timeout) {
  auto reply = Call(sandbox_id, endpoint, "SHUTDOWN", timeout);
  if (!reply.ok()) {
    return reply.error();
  }
  return Status::Ok();
}

void LineAgentConnector::Forget(const std::string& sandbox_id) {
  std::lock_guard<std::mutex> lock(mu_);
  conns_.erase(sandbox_id);
}

base::Status LineAgentConnector::OnlineResources(const std::string& sandbox_id, const AgentEndpoint&, int, int,
                                                 std::chrono::milliseconds) {
  return base::MakeError(
      base::ErrorCode::kUnimplemented,
      "sandbox " + sandbox_id + ": the line-protocol test guest cannot online hot-plugged resources");
}

base::Result<bool> LineAgentConnector::Settled(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                               std::chrono::milliseconds patience) {
  return Probe(sandbox_id, endpoint, patience);
}

base::Status LineAgentConnector::Resume(const std::string& sandbox_id, const AgentEndpoint&,
                                        std::chrono::milliseconds) {
  return base::MakeError(base::ErrorCode::kUnimplemented,
                         "sandbox " + sandbox_id + ": the line-protocol test guest cannot set its clock or reseed");
}

base::Status LineAgentConnector::PrepareTemplate(const std::string& sandbox_id, const AgentEndpoint&,
                                                 std::chrono::milliseconds) {
  return base::MakeError(base::ErrorCode::kUnimplemented,
                         "sandbox " + sandbox_id + ": the line-protocol test guest is never a template");
}

void LineAgentConnector::Rename(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mu_);
  auto node = conns_.extract(from);
  if (!node.empty()) {
    node.key() = to;
    conns_.insert(std::move(node));
  }
}

Result<std::unique_ptr<TestNetns>> TestNetns::Create(const std::string& name, int queues) {
  base::CommandSpec add;
  add.argv = {"ip", "netns", "add", name};
  CHRYS_ASSIGN_OR_RETURN(auto res, base::RunCommand(add));
  if (!res.success()) {
    return base::Internal("ip netns add " + name + ": " + res.stderr_data);
  }
  auto ns = std::unique_ptr<TestNetns>(new TestNetns());
  ns->name_ = name;
  ns->path_ = "/run/netns/" + name;
  CHRYS_ASSIGN_OR_RETURN(ns->queues_, OpenTapQueues(ns->path_, "tap0", queues));
  return ns;
}

Result<std::vector<base::UniqueFd>> OpenTapQueues(const std::string& netns_path, const std::string& tap_name,
                                                  int queues) {
  // Open the queues from a thread that joined the namespace; the fds keep working from anywhere.
  std::vector<base::UniqueFd> out;
  Status opened = Status::Ok();
  std::thread worker([&] {
    base::UniqueFd target(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!target.valid() || ::unshare(CLONE_FS) != 0 || ::setns(target.get(), CLONE_NEWNET) != 0) {
      opened = base::SystemError("joining " + netns_path);
      return;
    }
    for (int q = 0; q < queues; ++q) {
      base::UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
      ifreq ifr{};
      std::strncpy(ifr.ifr_name, tap_name.c_str(), IFNAMSIZ - 1);
      ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
      if (!fd.valid() || ::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
        opened = base::SystemError("TUNSETIFF " + tap_name);
        return;
      }
      out.push_back(std::move(fd));
    }
  });
  worker.join();
  if (!opened.ok()) {
    return opened.error();
  }
  return out;
}

TestNetns::~TestNetns() {
  queues_.clear();
  base::CommandSpec del;
  del.argv = {"ip", "netns", "delete", name_};
  (void)base::RunCommand(del);
}

std::vector<int> TestNetns::queue_fds() const {
  std::vector<int> out;
  for (const auto& q : queues_) {
    out.push_back(q.get());
  }
  return out;
}

Result<std::string> BuildErofsImage(const std::string& work_dir, const std::string& name,
                                    const std::map<std::string, std::string>& files) {
  std::string src = work_dir + "/" + name + ".src";
  (void)base::RemoveTree(src);
  CHRYS_RETURN_IF_ERROR(base::MakeDirs(src));
  for (const auto& [file, content] : files) {
    size_t slash = file.rfind('/');
    if (slash != std::string::npos) {
      CHRYS_RETURN_IF_ERROR(base::MakeDirs(src + "/" + file.substr(0, slash)));
    }
    CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(src + "/" + file, content, 0755));
  }
  std::string image = work_dir + "/" + name + ".erofs";
  base::CommandSpec mk;
  mk.argv = {"mkfs.erofs", "--quiet", image, src};
  CHRYS_ASSIGN_OR_RETURN(auto res, base::RunCommand(mk));
  if (!res.success()) {
    return base::Internal("mkfs.erofs: " + res.DescribeExit() + ": " + res.stderr_data);
  }
  return image;
}

std::vector<pid_t> ProcessesMentioning(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) {
    return out;
  }
  while (dirent* e = ::readdir(d)) {
    pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0 || pid == ::getpid()) {
      continue;
    }
    auto cmdline = base::ReadFile("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20);
    if (cmdline.ok() && cmdline->find(needle) != std::string::npos && ProcessRunning(pid)) {
      out.push_back(pid);
    }
  }
  ::closedir(d);
  return out;
}

}  // namespace chrys::runtime::testing
