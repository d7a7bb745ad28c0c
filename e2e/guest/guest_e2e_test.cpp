// End to end: boots the built guest in QEMU (TCG), drives chrys-agent over virtio-serial with the host client.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/guest/qemu_guest.h"
#include "runtime/agent/agent_client.h"

namespace chrys::guest::testing {
namespace {

using runtime::agent::AgentClient;
using runtime::agent::AgentEndpoint;
namespace v1 = ::chrys::agent::v1;

constexpr const char* kLayerSerial = "sha256-0123456789ab";
constexpr const char* kScratchSerial = "scratch-e2e";
constexpr const char* kMac = "52:54:00:c4:11:5e";

class GuestE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/chrys-guest-e2e-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    work_dir_ = tmpl;
    auto layer = MakeBusyboxErofs(work_dir_ + "/rootfs", work_dir_ + "/layer.erofs");
    ASSERT_TRUE(layer.ok()) << layer.error().message();
    // A blank sparse scratch disk: the agent formats it.
    { std::ofstream f(work_dir_ + "/scratch.img"); }
    ASSERT_EQ(::truncate((work_dir_ + "/scratch.img").c_str(), 256 << 20), 0);
    auto options = OptionsFromManifest(CHRYS_GUEST_DIR, work_dir_);
    ASSERT_TRUE(options.ok()) << options.error().message();
    options->disks = {{work_dir_ + "/layer.erofs", kLayerSerial, true}, {work_dir_ + "/scratch.img", kScratchSerial}};
    options->nic_mac = kMac;
    guest_ = new QemuGuest();
    auto started = guest_->Start(*options);
    ASSERT_TRUE(started.ok()) << started.error().message();
    auto client =
        AgentClient::ConnectWhenReady(AgentEndpoint::VirtioSerial(guest_->agent_socket()), std::chrono::seconds(120));
    ASSERT_TRUE(client.ok()) << client.error().message() << "\nconsole:\n" << guest_->Console();
    client_ = client->release();
  }

  static void TearDownTestSuite() {
    if (client_ != nullptr) {
      auto s = client_->Shutdown(std::chrono::seconds(2), std::chrono::seconds(32));
      EXPECT_TRUE(s.ok()) << s.error().message();
      delete client_;
      client_ = nullptr;
    }
    if (guest_ != nullptr) {
      EXPECT_TRUE(guest_->WaitExit(std::chrono::seconds(30))) << "guest did not power off";
      delete guest_;  // kills QEMU if still running
      guest_ = nullptr;
    }
    (void)base::RemoveTree(work_dir_);
  }

  void SetUp() override { ASSERT_NE(client_, nullptr) << "guest did not boot"; }

  static v1::ContainerConfig Container(const std::string& id, const std::vector<std::string>& args) {
    v1::ContainerConfig c;
    c.set_id(id);
    c.mutable_rootfs()->add_layer_serials(kLayerSerial);
    c.mutable_rootfs()->set_scratch_serial(kScratchSerial);
    for (auto& a : args) {
      c.mutable_process()->add_args(a);
    }
    c.mutable_process()->add_env("GREETING=hello");
    return c;
  }

  static v1::ProcessRef Ref(const std::string& id, const std::string& exec = "") {
    v1::ProcessRef r;
    r.set_container_id(id);
    r.set_exec_id(exec);
    return r;
  }

  struct Output {
    std::string out;
    std::string err;
  };
  static Output ReadAll(const v1::ProcessRef& ref) {
    Output o;
    auto s = client_->ReadOutput(
        ref,
        [&](v1::OutputChunk::Stream stream, std::string_view data) {
          (stream == v1::OutputChunk::STDOUT ? o.out : o.err).append(data);
          return true;
        },
        std::chrono::seconds(120));
    EXPECT_TRUE(s.ok()) << s.error().message();
    return o;
  }

  static std::string ConsoleTail() {
    std::string c = guest_->Console();
    return c.size() > 4000 ? c.substr(c.size() - 4000) : c;
  }

  static inline std::string work_dir_;
  static inline QemuGuest* guest_ = nullptr;
  static inline AgentClient* client_ = nullptr;
};

TEST_F(GuestE2E, PingReportsReadyAgent) {
  auto ping = client_->Ping(std::chrono::seconds(10));
  ASSERT_TRUE(ping.ok()) << ping.error().message();
  EXPECT_TRUE(ping->ready());
  EXPECT_FALSE(ping->agent_version().empty());
  EXPECT_NE(ping->kernel_release().find("amd64"), std::string::npos);
  EXPECT_GT(ping->agent_rss_bytes(), 0u);
  EXPECT_GT(ping->boot_to_ready_ms(), 0u);
}

TEST_F(GuestE2E, SetupSandboxConfiguresHostnameDnsAndNic) {
  v1::SetupSandboxRequest req;
  req.set_hostname("pod-e2e");
  req.mutable_dns()->add_servers("10.0.2.3");
  req.mutable_dns()->add_searches("svc.cluster.local");
  auto* nic = req.add_interfaces();
  nic->set_mac(kMac);
  nic->set_name("eth0");
  auto* addr = nic->add_addresses();
  addr->set_address("10.0.2.15");
  addr->set_prefix_length(24);
  auto* addr6 = nic->add_addresses();
  addr6->set_address("fd00::15");
  addr6->set_prefix_length(64);
  auto* route = req.add_routes();
  route->set_destination("default");
  route->set_gateway("10.0.2.2");
  route->set_device("eth0");
  auto* routed = req.add_routes();  // every option a route can carry
  routed->set_destination("10.9.0.0/16");
  routed->set_gateway("10.0.2.2");
  routed->set_device("eth0");
  routed->set_source("10.0.2.15");
  routed->set_metric(50);
  auto* route6 = req.add_routes();
  route6->set_destination("fd01::/64");
  route6->set_gateway("fd00::2");
  auto* neighbor = req.add_neighbors();
  neighbor->set_address("10.0.2.2");
  neighbor->set_mac("02:00:00:00:00:02");
  neighbor->set_device("eth0");
  (*req.mutable_sysctls())["net.ipv4.ip_forward"] = "1";
  auto s = client_->SetupSandbox(req);
  ASSERT_TRUE(s.ok()) << s.error().message() << "\n" << ConsoleTail();

  // A container sees the sandbox's hostname, resolv.conf, addresses, routes and neighbours (it shares the VM's
  // network).
  auto c = Container("sandbox-check", {"sh", "-c",
                                       "hostname; cat /etc/resolv.conf; cat /proc/sys/net/ipv4/ip_forward; "
                                       "ip addr show dev eth0; ip route; ip -6 route; ip neigh"});
  ASSERT_TRUE(client_->CreateContainer(c).ok());
  ASSERT_TRUE(client_->StartContainer("sandbox-check").ok());
  Output o = ReadAll(Ref("sandbox-check"));
  EXPECT_NE(o.out.find("pod-e2e"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("nameserver 10.0.2.3"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("search svc.cluster.local"), std::string::npos) << o.out;
  for (const char* line : {"inet 10.0.2.15/24", "inet6 fd00::15/64", "default via 10.0.2.2 dev eth0",
                           "10.9.0.0/16 via 10.0.2.2 dev eth0", "src 10.0.2.15", "metric 50", "fd01::/64 via fd00::2",
                           "10.0.2.2 dev eth0 lladdr 02:00:00:00:00:02", "PERMANENT"}) {
    EXPECT_NE(o.out.find(line), std::string::npos) << line << " missing in:\n" << o.out;
  }
  auto exit = client_->WaitProcess(Ref("sandbox-check"), std::chrono::seconds(60));
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->exit_code(), 0) << o.err;
  EXPECT_TRUE(client_->DeleteContainer("sandbox-check", false).ok());

  // Bad MAC: a clear NOT_FOUND, nothing else changes.
  v1::SetupSandboxRequest bad;
  bad.add_interfaces()->set_mac("02:00:00:00:00:99");
  auto r = client_->SetupSandbox(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), base::ErrorCode::kNotFound) << r.error().message();
}

TEST_F(GuestE2E, RunsContainerFromErofsLayerWithOutputAndExitCode) {
  auto c =
      Container("run1", {"sh", "-c", "echo out-$GREETING; echo err-line >&2; echo data > /tmp/f; cat /tmp/f; exit 3"});
  auto pid = client_->CreateContainer(c);
  ASSERT_TRUE(pid.ok()) << pid.error().message() << "\n" << ConsoleTail();
  EXPECT_GT(*pid, 1u);
  auto listed = client_->ListContainers();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].state(), v1::ContainerInfo::CREATED);
  ASSERT_TRUE(client_->StartContainer("run1").ok());
  Output o = ReadAll(Ref("run1"));
  EXPECT_EQ(o.out, "out-hello\ndata\n");
  EXPECT_EQ(o.err, "err-line\n");
  auto exit = client_->WaitProcess(Ref("run1"), std::chrono::seconds(60));
  ASSERT_TRUE(exit.ok()) << exit.error().message();
  EXPECT_TRUE(exit->exited());
  EXPECT_EQ(exit->exit_code(), 3);
  EXPECT_FALSE(exit->oom_killed());
  auto deleted = client_->DeleteContainer("run1", false);
  EXPECT_TRUE(deleted.ok()) << deleted.error().message();
  auto again = client_->DeleteContainer("run1", false);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), base::ErrorCode::kNotFound);
}

TEST_F(GuestE2E, ExecStatsAndStop) {
  auto c = Container("long1", {"sleep", "1000"});
  c.mutable_resources()->set_memory_limit_bytes(64 << 20);
  c.mutable_resources()->set_pids_limit(64);
  ASSERT_TRUE(client_->CreateContainer(c).ok());
  ASSERT_TRUE(client_->StartContainer("long1").ok());

  v1::ProcessSpec exec;
  exec.add_args("sh");
  exec.add_args("-c");
  exec.add_args("echo exec-$GREETING; cat /proc/1/cmdline; echo; read line; echo got-$line; exit 7");
  exec.add_env("GREETING=from-exec");
  exec.set_stdin(true);
  auto exec_pid = client_->ExecProcess("long1", "e1", exec);
  ASSERT_TRUE(exec_pid.ok()) << exec_pid.error().message() << "\n" << ConsoleTail();
  ASSERT_TRUE(client_->WriteStdin(Ref("long1", "e1"), "ping\n", true).ok());
  Output o = ReadAll(Ref("long1", "e1"));
  EXPECT_NE(o.out.find("exec-from-exec"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("sleep"), std::string::npos) << "exec runs in the container's pid namespace: " << o.out;
  EXPECT_NE(o.out.find("got-ping"), std::string::npos) << o.out;
  auto exec_exit = client_->WaitProcess(Ref("long1", "e1"), std::chrono::seconds(60));
  ASSERT_TRUE(exec_exit.ok());
  EXPECT_EQ(exec_exit->exit_code(), 7);

  // A tty exec sees a terminal on its stdio and can be resized.
  v1::ProcessSpec tty;
  tty.add_args("sh");
  tty.add_args("-c");
  tty.add_args("test -t 1 && echo is-a-tty");
  tty.set_tty(true);
  tty.set_tty_rows(40);
  tty.set_tty_columns(100);
  ASSERT_TRUE(client_->ExecProcess("long1", "tty1", tty).ok());
  Output t = ReadAll(Ref("long1", "tty1"));
  EXPECT_NE(t.out.find("is-a-tty"), std::string::npos) << t.out;

  auto stats = client_->ContainerStats("long1");
  ASSERT_TRUE(stats.ok()) << stats.error().message();
  EXPECT_GT(stats->stats().memory_usage_bytes(), 0u);
  EXPECT_GT(stats->stats().cpu_usage_usec(), 0u);
  EXPECT_GE(stats->stats().pids_current(), 1u);
  auto sandbox = client_->SandboxStats();
  ASSERT_TRUE(sandbox.ok());
  EXPECT_GT(sandbox->memory_total_bytes(), 0u);
  EXPECT_EQ(sandbox->num_containers(), 1u);

  // Running containers are not deleted without force.
  auto refused = client_->DeleteContainer("long1", false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), base::ErrorCode::kFailedPrecondition);

  ASSERT_TRUE(client_->SignalProcess(Ref("long1"), SIGKILL).ok());
  auto exit = client_->WaitProcess(Ref("long1"), std::chrono::seconds(60));
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->signal(), SIGKILL);
  EXPECT_EQ(exit->exit_code(), 128 + SIGKILL);
  EXPECT_TRUE(client_->DeleteContainer("long1", false).ok());
}

TEST_F(GuestE2E, BadRequestsGetClearErrorsAndAgentSurvives) {
  auto bad_id = client_->StartContainer("../etc");
  ASSERT_FALSE(bad_id.ok());
  EXPECT_EQ(bad_id.error().code(), base::ErrorCode::kInvalidArgument);
  EXPECT_NE(bad_id.error().message().find("container_id"), std::string::npos);

  auto unknown = client_->StartContainer("no-such-container");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), base::ErrorCode::kNotFound);
  auto unknown_wait = client_->WaitProcess(Ref("nope"), std::chrono::seconds(5));
  ASSERT_FALSE(unknown_wait.ok());
  EXPECT_EQ(unknown_wait.error().code(), base::ErrorCode::kNotFound);

  // An oversized request is refused by the transport limit, not processed.
  auto huge = Container("huge", {"true"});
  huge.mutable_process()->add_env("BIG=" + std::string(2 << 20, 'x'));
  auto too_big = client_->CreateContainer(huge);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error().code(), base::ErrorCode::kResourceExhausted) << too_big.error().message();

  auto missing_layer = Container("nolayer", {"true"});
  missing_layer.mutable_rootfs()->set_layer_serials(0, "not-attached");
  missing_layer.mutable_rootfs()->clear_scratch_serial();
  // The agent waits a bounded time for hot-plugged disks, then says which serial is missing.
  auto no_layer = client_->CreateContainer(missing_layer);
  ASSERT_FALSE(no_layer.ok());
  EXPECT_NE(no_layer.error().message().find("not-attached"), std::string::npos) << no_layer.error().message();

  auto c = Container("nobinary", {"/bin/does-not-exist"});
  auto created = client_->CreateContainer(c);
  if (created.ok()) {
    // crun may only find out at start; either way the failure is reported, not hidden.
    auto started = client_->StartContainer("nobinary");
    auto exit = client_->WaitProcess(Ref("nobinary"), std::chrono::seconds(30));
    EXPECT_TRUE(!started.ok() || (exit.ok() && exit->exit_code() != 0));
    EXPECT_TRUE(client_->DeleteContainer("nobinary", true).ok());
  } else {
    EXPECT_NE(created.error().message().find("does-not-exist"), std::string::npos) << created.error().message();
    // Nothing is left behind: the id is free again.
    auto listed = client_->ListContainers();
    ASSERT_TRUE(listed.ok());
    EXPECT_TRUE(listed->empty());
  }
  auto ping = client_->Ping(std::chrono::seconds(10));
  ASSERT_TRUE(ping.ok()) << "agent died: " << ConsoleTail();
}

TEST_F(GuestE2E, OutputFloodIsStreamedWithBoundedBuffers) {
  constexpr size_t kBytes = 4 << 20;
  auto c = Container("flood", {"head", "-c", std::to_string(kBytes), "/dev/zero"});
  ASSERT_TRUE(client_->CreateContainer(c).ok());
  ASSERT_TRUE(client_->StartContainer("flood").ok());
  // Let the container fill the agent's buffers before anyone reads: it must block, not grow the agent.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto ping = client_->Ping(std::chrono::seconds(10));
  ASSERT_TRUE(ping.ok());
  EXPECT_LT(ping->agent_rss_bytes(), 64u << 20);
  size_t total = 0;
  auto s = client_->ReadOutput(
      Ref("flood"),
      [&](v1::OutputChunk::Stream, std::string_view data) {
        total += data.size();
        return true;
      },
      std::chrono::seconds(300));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(total, kBytes);
  auto exit = client_->WaitProcess(Ref("flood"), std::chrono::seconds(60));
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->exit_code(), 0);
  EXPECT_TRUE(client_->DeleteContainer("flood", false).ok());
}

// An OOM kill that leaves the container running (here an exec over the memory limit) reaches event watchers:
// the agent learns of it from the cgroup's memory.events notification, not by polling.
TEST_F(GuestE2E, OomKillInARunningContainerIsAnEvent) {
  auto c = Container("oom1", {"sleep", "1000"});
  c.mutable_resources()->set_memory_limit_bytes(32 << 20);
  ASSERT_TRUE(client_->CreateContainer(c).ok());
  ASSERT_TRUE(client_->StartContainer("oom1").ok());

  std::mutex mu;
  std::condition_variable cv;
  std::set<std::string> exited;  // exec ids seen exiting
  uint64_t oom_kills = 0;
  bool watch_done = false;
  // The watch shares the connection (one virtio-serial port, one HTTP/2 session) with the calls below.
  std::thread watcher([&] {
    (void)client_->WatchEvents(
        [&](const v1::Event& e) {
          std::lock_guard lock(mu);
          if (e.has_exited() && e.exited().process().container_id() == "oom1") {
            exited.insert(e.exited().process().exec_id());
          } else if (e.has_oom() && e.oom().container_id() == "oom1") {
            oom_kills = e.oom().oom_kills();
          }
          cv.notify_all();
          return oom_kills == 0;
        },
        std::chrono::seconds(180));
    std::lock_guard lock(mu);
    watch_done = true;
    cv.notify_all();
  });
  // A failed assertion returns early: the watch still ends (its first OOM event or its timeout) and is joined.
  struct Joiner {
    std::thread& thread;
    ~Joiner() {
      if (thread.joinable()) {
        thread.join();
      }
    }
  } joiner{watcher};
  // The watch is subscribed once it reports an exec's exit (an exit before the subscription is not replayed).
  bool subscribed = false;
  v1::ProcessSpec quick;
  quick.add_args("true");
  for (int i = 0; i < 30 && !subscribed; ++i) {
    std::string id = "warm" + std::to_string(i);
    ASSERT_TRUE(client_->ExecProcess("oom1", id, quick).ok());
    ASSERT_TRUE(client_->WaitProcess(Ref("oom1", id), std::chrono::seconds(60)).ok());
    std::unique_lock lock(mu);
    subscribed = cv.wait_for(lock, std::chrono::seconds(2), [&] { return exited.count(id) > 0 || watch_done; }) &&
                 exited.count(id) > 0;
  }
  EXPECT_TRUE(subscribed) << "the event watch never reported an exec's exit";

  // dd's 64 MiB buffer, filled from /dev/zero, cannot fit under the 32 MiB limit.
  v1::ProcessSpec hog;
  for (const char* a : {"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"}) {
    hog.add_args(a);
  }
  ASSERT_TRUE(client_->ExecProcess("oom1", "hog", hog).ok());
  auto hog_exit = client_->WaitProcess(Ref("oom1", "hog"), std::chrono::seconds(120));
  ASSERT_TRUE(hog_exit.ok()) << hog_exit.error().message();
  EXPECT_EQ(hog_exit->signal(), SIGKILL);
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::seconds(60), [&] { return oom_kills > 0 || watch_done; });
    EXPECT_GE(oom_kills, 1u) << "no OOM event for oom1\n" << ConsoleTail();
  }
  auto status = client_->ProcessStatus(Ref("oom1"));
  ASSERT_TRUE(status.ok());
  EXPECT_FALSE(status->exited()) << "the OOM killer took the exec, not the container's init";

  ASSERT_TRUE(client_->SignalProcess(Ref("oom1"), SIGKILL).ok());
  ASSERT_TRUE(client_->WaitProcess(Ref("oom1"), std::chrono::seconds(60)).ok());
  EXPECT_TRUE(client_->DeleteContainer("oom1", false).ok());
}

TEST_F(GuestE2E, HostReconnectGetsAFreshSession) {
  // chrysd restarting: drop the connection, dial again, the agent answers on a new HTTP/2 session.
  delete client_;
  client_ = nullptr;
  auto again =
      AgentClient::ConnectWhenReady(AgentEndpoint::VirtioSerial(guest_->agent_socket()), std::chrono::seconds(60));
  ASSERT_TRUE(again.ok()) << again.error().message() << "\n" << ConsoleTail();
  client_ = again->release();
  auto ping = client_->Ping(std::chrono::seconds(10));
  EXPECT_TRUE(ping.ok());
}

// The image: the same inputs give the same bytes, and crun with its libraries sits on the tools disk (the
// initramfs, loaded on every boot, only links there).
TEST(GuestImage, IsReproducibleAndKeepsCrunOnTheToolsDisk) {
  char tmpl[] = "/tmp/chrys-guest-image-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  base::CommandSpec build;
  build.argv = {CHRYS_GUEST_IMAGE_TOOL, "--agent", CHRYS_AGENT_BINARY, "--out", dir};
  build.timeout = std::chrono::seconds(300);
  auto built = base::RunCommand(build);
  ASSERT_TRUE(built.ok() && built->success()) << (built.ok() ? built->stderr_data : built.error().message());
  auto read_manifest = [](const std::string& d) {
    auto text = base::ReadFile(d + "/manifest.json", 1 << 20);
    return text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
  };
  nlohmann::json ours = read_manifest(CHRYS_GUEST_DIR);
  nlohmann::json again = read_manifest(dir);
  ASSERT_TRUE(again.contains("tools_disk")) << again.dump();
  EXPECT_EQ(again["tools_disk"]["serial"], "chrys-tools");
  EXPECT_EQ(again["tools_disk"]["sha256"], ours["tools_disk"]["sha256"]) << "tools disk not reproducible";
  EXPECT_EQ(again["initramfs"]["sha256"], ours["initramfs"]["sha256"]) << "initramfs not reproducible";
  EXPECT_EQ(again["tools_disk"]["bytes"], ours["tools_disk"]["bytes"]);

  // What the initramfs holds for crun and the libraries: links into /tools, no file of their own.
  base::CommandSpec list;
  list.argv = {"sh", "-c", "lz4 -dc \"$0\" | cpio -tv 2>/dev/null",
               dir + "/" + again["initramfs"]["file"].get<std::string>()};
  auto listed = base::RunCommand(list);
  ASSERT_TRUE(listed.ok() && listed->success());
  EXPECT_NE(listed->stdout_data.find("usr/bin/crun -> /tools/usr/bin/crun"), std::string::npos) << listed->stdout_data;
  EXPECT_NE(listed->stdout_data.find("lib64 -> /tools/lib64"), std::string::npos);
  EXPECT_EQ(listed->stdout_data.find("libc.so.6"), std::string::npos) << "a shared library is still in the initramfs";

  // And the tools disk has them (listed with the erofs tools, no mount needed).
  for (const auto& [directory, file] :
       {std::pair{"/usr/bin", "crun"}, std::pair{"/lib64", "ld-linux-x86-64.so.2"},
        std::pair{"/lib/x86_64-linux-gnu", "libc.so.6"}, std::pair{"/sbin", "mkfs.ext4"},
        std::pair{"/lib/x86_64-linux-gnu", "libsystemd.so.0"}}) {
    base::CommandSpec dump;
    dump.argv = {"dump.erofs", "--ls", std::string("--path=") + directory, dir + "/tools.erofs"};
    auto dumped = base::RunCommand(dump);
    ASSERT_TRUE(dumped.ok() && dumped->success());
    EXPECT_NE(dumped->stdout_data.find(file), std::string::npos) << directory << ":\n" << dumped->stdout_data;
  }
  // libsystemd is the stand-in, so the libraries only the real one needs are not there.
  std::string libraries = again["libraries"].dump();
  EXPECT_NE(libraries.find("/lib/x86_64-linux-gnu/libsystemd.so.0"), std::string::npos) << libraries;
  for (const char* dropped : {"libgcrypt", "liblzma", "libzstd", "liblz4", "libgpg-error"}) {
    EXPECT_EQ(libraries.find(dropped), std::string::npos) << dropped << " is still on the tools disk: " << libraries;
  }
  (void)base::RemoveTree(dir);
}

// The libsystemd stand-in satisfies every symbol and symbol version crun binds to: the dynamic loader refuses
// to start crun if one is missing. Checked with the host's crun, the same package the image copies.
TEST(GuestImage, CrunStartsWithTheLibsystemdStandIn) {
  char tmpl[] = "/tmp/chrys-systemd-stub-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  ASSERT_EQ(::symlink(CHRYS_SYSTEMD_STUB, (dir + "/libsystemd.so.0").c_str()), 0);
  base::CommandSpec crun;
  crun.argv = {"/usr/bin/crun", "--version"};
  crun.extra_env = {"LD_LIBRARY_PATH=" + dir, "LD_BIND_NOW=1"};  // bind every symbol now, not on first call
  auto ran = base::RunCommand(crun);
  base::CommandSpec ldd;
  ldd.argv = {"ldd", "/usr/bin/crun"};
  ldd.extra_env = {"LD_LIBRARY_PATH=" + dir};
  auto listed = base::RunCommand(ldd);
  (void)base::RemoveTree(dir);
  ASSERT_TRUE(ran.ok());
  EXPECT_TRUE(ran->success()) << ran->stderr_data;
  EXPECT_NE(ran->stdout_data.find("crun version"), std::string::npos) << ran->stdout_data;
  ASSERT_TRUE(listed.ok() && listed->success());
  EXPECT_NE(listed->stdout_data.find(dir + "/libsystemd.so.0"), std::string::npos) << listed->stdout_data;
  EXPECT_EQ(listed->stdout_data.find("libgcrypt"), std::string::npos) << listed->stdout_data;
}

}  // namespace
}  // namespace chrys::guest::testing
