// stream_bench: chrysd's streaming server beside its peers, measured in the same run on one pod VM.
//   - Port-forward download throughput (WebSocket and SPDY, through chrysd and the agent's PortForward stream)
//     beside a direct TCP connection from the host to the same server in the guest over the pod network
//     (host → bridge → veth → TC redirect → tap → guest).
//   - Exec round trip: a line written to a running exec's stdin (`cat`) until it comes back on stdout, through
//     the streaming server (WebSocket v5); beside an agent round trip through chrysd (CRI ContainerStats →
//     agent ContainerStats → back), so "added" is what the streaming path costs on top of reaching the agent.
// Also the guest CPU each path costs per MiB (user/sys/softirq/idle from the guest's /proc/stat: idle shows
// whether a path is bound by the guest's CPU or by waiting).
// Prints a table and one JSON line. Flags: --mib N (per download, default 32) --rounds N (default 3)
//   --round-trips N (default 200) --guest DIR (another built guest, for an A/B of two agents)
#include <arpa/inet.h>
#include <grpcpp/client_context.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cri/streaming/websocket.h"
#include "e2e/pods/pod_env.h"
#include "e2e/streaming/spdy_test_client.h"

namespace chrys::e2e {
namespace {

using Clock = std::chrono::steady_clock;
namespace ws = cri::streaming::ws;
constexpr int kSourcePort = 7001;

double Median(std::vector<double> v) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double Percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

base::UniqueFd Dial(const std::string& ip, int port) {
  base::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{30, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    fd.Reset();
  }
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

std::string PathOf(const std::string& url) {
  return url.substr(url.find('/', url.find("//") + 2));
}
int PortOf(const std::string& url) {
  return std::stoi(url.substr(url.find(':', url.find("//") + 2) + 1));
}

// A minimal WebSocket client: upgrade, masked binary sends, frame reads.
class Ws {
 public:
  bool Connect(const std::string& url, const std::string& protocol) {
    fd_ = Dial("127.0.0.1", PortOf(url));
    if (!fd_) {
      return false;
    }
    std::string req = "GET " + PathOf(url) +
                      " HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Protocol: " +
                      protocol + "\r\n\r\n";
    ::send(fd_.get(), req.data(), req.size(), MSG_NOSIGNAL);
    while (buffer_.find("\r\n\r\n") == std::string::npos) {
      if (!Fill()) {
        return false;
      }
    }
    bool ok = buffer_.compare(9, 3, "101") == 0;
    buffer_.erase(0, buffer_.find("\r\n\r\n") + 4);
    return ok;
  }
  void Send(uint8_t channel, const std::string& data) {
    std::string frame = ws::EncodeFrame(ws::kBinary, std::string(1, static_cast<char>(channel)) + data, true, 7u);
    ::send(fd_.get(), frame.data(), frame.size(), MSG_NOSIGNAL);
  }
  std::optional<ws::Frame> Next() {
    while (true) {
      auto parsed = ws::ParseFrame(buffer_, 1 << 24, false);
      if (!parsed.ok()) {
        return std::nullopt;
      }
      if (parsed->has_value()) {
        buffer_.erase(0, (*parsed)->consumed);
        return std::move((*parsed)->frame);
      }
      if (!Fill()) {
        return std::nullopt;
      }
    }
  }

 private:
  bool Fill() {
    char chunk[1 << 16];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    if (n <= 0) {
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }
  base::UniqueFd fd_;
  std::string buffer_;
};

struct Bench {
  PodEnv* env = nullptr;
  std::string pod_id;
  std::string pod_ip;
  std::string cat_container;
  size_t bytes = 0;

  std::string PortForwardUrl() {
    v1::PortForwardRequest request;
    request.set_pod_sandbox_id(pod_id);
    request.add_port(kSourcePort);
    v1::PortForwardResponse response;
    grpc::ClientContext ctx;
    auto status = env->runtime().PortForward(&ctx, request, &response);
    return status.ok() ? response.url() : "";
  }

  // MB/s of one download of `bytes` over a direct TCP connection to the pod IP; 0 on failure.
  double Direct() {
    auto start = Clock::now();
    base::UniqueFd fd = Dial(pod_ip, kSourcePort);
    if (!fd) {
      return 0;
    }
    std::vector<char> buf(1 << 16);
    size_t got = 0;
    while (true) {
      ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
      if (n <= 0) {
        break;
      }
      got += static_cast<size_t>(n);
    }
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    return got == bytes ? static_cast<double>(got) / s / 1e6 : 0;
  }

  double WebSocket() {
    std::string url = PortForwardUrl();
    auto start = Clock::now();
    Ws client;
    if (url.empty() || !client.Connect(url + "?port=" + std::to_string(kSourcePort), "v4.channel.k8s.io")) {
      return 0;
    }
    size_t got = 0;
    bool prefix_seen = false;
    while (got < bytes) {
      auto frame = client.Next();
      if (!frame || frame->opcode == ws::kClose) {
        break;
      }
      if (frame->payload.empty() || frame->payload[0] != 0) {
        continue;
      }
      size_t n = frame->payload.size() - 1;
      if (!prefix_seen) {
        n -= std::min<size_t>(n, 2);  // the channel's port prefix
        prefix_seen = true;
      }
      got += n;
    }
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    return got == bytes ? static_cast<double>(got) / s / 1e6 : 0;
  }

  double Spdy() {
    std::string url = PortForwardUrl();
    auto start = Clock::now();
    cri::streaming::testing::SpdyTestClient client;
    if (url.empty() || client.Connect(PortOf(url), PathOf(url), "portforward.k8s.io", false, 60000) != 101) {
      return 0;
    }
    std::string port = std::to_string(kSourcePort);
    uint32_t error = client.OpenStream({{"streamtype", "error"}, {"port", port}, {"requestid", "0"}});
    client.Send(error, "", true);
    uint32_t data = client.OpenStream({{"streamtype", "data"}, {"port", port}, {"requestid", "0"}});
    size_t got = 0;
    while (got < bytes) {
      auto frame = client.Next();
      if (!frame) {
        break;
      }
      if (!frame->control && frame->stream_id == data) {
        got += frame->payload.size();
      }
    }
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    return got == bytes ? static_cast<double>(got) / s / 1e6 : 0;
  }

  // Guest CPU time so far in jiffies: user, system, softirq, idle (the first line of the guest's /proc/stat, read
  // with ExecSync in the idle container); zeros when it cannot be read.
  std::array<double, 4> GuestCpu() {
    v1::ExecSyncRequest request;
    request.set_container_id(cat_container);
    request.add_cmd("head");
    request.add_cmd("-n1");
    request.add_cmd("/proc/stat");
    request.set_timeout(30);
    v1::ExecSyncResponse response;
    grpc::ClientContext ctx;
    std::array<double, 4> out{};
    if (!env->runtime().ExecSync(&ctx, request, &response).ok()) {
      return out;
    }
    std::istringstream line(response.stdout());
    std::string cpu;
    double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0;
    if (line >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq) {
      out = {user + nice, system + irq, softirq, idle + iowait};
    }
    return out;
  }

  // Runs `download` and adds the guest CPU it cost (ms per MiB: user, system, softirq) to `cost`.
  double Costed(const std::function<double()>& download, std::array<std::vector<double>, 4>& cost) {
    auto before = GuestCpu();
    double mbps = download();
    auto after = GuestCpu();
    double mib = static_cast<double>(bytes) / (1 << 20);
    for (size_t i = 0; i < 4; ++i) {
      cost[i].push_back((after[i] - before[i]) * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK)) / mib);
    }
    return mbps;
  }

  // Round trips of one line through an exec's stdin and stdout, in µs.
  std::vector<double> ExecRoundTrips(int n) {
    v1::ExecRequest request;
    request.set_container_id(cat_container);
    request.add_cmd("cat");
    request.set_stdin(true);
    request.set_stdout(true);
    request.set_stderr(true);
    v1::ExecResponse response;
    grpc::ClientContext ctx;
    std::vector<double> out;
    if (!env->runtime().Exec(&ctx, request, &response).ok()) {
      return out;
    }
    Ws client;
    if (!client.Connect(response.url(), "v5.channel.k8s.io")) {
      return out;
    }
    for (int i = 0; i < n + 5; ++i) {
      std::string line = "round-trip-" + std::to_string(i) + "\n";
      auto start = Clock::now();
      client.Send(0, line);
      std::string got;
      while (got.find(line) == std::string::npos) {
        auto frame = client.Next();
        if (!frame || frame->opcode == ws::kClose) {
          return out;
        }
        if (!frame->payload.empty() && frame->payload[0] == 1) {
          got += frame->payload.substr(1);
        }
      }
      if (i >= 5) {  // the first few warm the path up
        out.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      }
    }
    client.Send(255, std::string(1, '\0'));  // v5: close stdin; cat exits
    return out;
  }

  std::vector<double> AgentRoundTrips(int n) {
    std::vector<double> out;
    for (int i = 0; i < n + 5; ++i) {
      v1::ContainerStatsRequest request;
      request.set_container_id(cat_container);
      v1::ContainerStatsResponse response;
      grpc::ClientContext ctx;
      auto start = Clock::now();
      if (!env->runtime().ContainerStats(&ctx, request, &response).ok()) {
        return out;
      }
      if (i >= 5) {
        out.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      }
    }
    return out;
  }
};

int Main(int argc, char** argv) {
  int mib = 32;
  int rounds = 3;
  int round_trips = 200;
  std::vector<std::string> chrysd_args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    int value = std::atoi(argv[i + 1]);
    if (flag == "--guest") {
      chrysd_args = {"--set", std::string("vmm.guest_dir=") + argv[i + 1]};
    } else if (flag == "--mib") {
      mib = value;
    } else if (flag == "--rounds") {
      rounds = value;
    } else if (flag == "--round-trips") {
      round_trips = value;
    }
  }
  auto env = PodEnv::Create(chrysd_args);
  if (!env.ok()) {
    std::fprintf(stderr, "setup: %s\n", env.error().message().c_str());
    return 1;
  }
  Bench bench;
  bench.env = env->get();
  bench.bytes = static_cast<size_t>(mib) << 20;
  v1::PodSandboxConfig pod_config = (*env)->PodConfig("stream-bench");
  auto pod = (*env)->RunPod(pod_config);
  if (!pod.ok()) {
    std::fprintf(stderr, "pod: %s\n", pod.error().message().c_str());
    return 1;
  }
  bench.pod_id = *pod;
  auto status = (*env)->PodStatus(*pod);
  bench.pod_ip = status.ok() ? status->network().ip() : "";
  auto start_container = [&](const std::string& name, const std::vector<std::string>& args) -> std::string {
    auto config = (*env)->ContainerConfig(name, args);
    auto id = (*env)->CreateContainer(*pod, config, pod_config);
    if (!id.ok() || !(*env)->StartContainer(*id).ok()) {
      return "";
    }
    return *id;
  };
  std::string source = start_container("source", {"nc", "-ll", "-p", std::to_string(kSourcePort), "-e", "head", "-c",
                                                  std::to_string(bench.bytes), "/dev/zero"});
  bench.cat_container = start_container("idle", {"sleep", "3600"});
  if (source.empty() || bench.cat_container.empty()) {
    std::fprintf(stderr, "containers did not start\n");
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));  // nc listening

  std::vector<double> direct, websocket, spdy;
  // Guest CPU per MiB moved, per path: what the guest's single vCPU spends is what bounds throughput under TCG.
  std::array<std::vector<double>, 4> direct_cpu, websocket_cpu, spdy_cpu;
  for (int r = 0; r < rounds; ++r) {  // interleaved, so drift in the machine's load hits all three alike
    direct.push_back(bench.Costed([&] { return bench.Direct(); }, direct_cpu));
    websocket.push_back(bench.Costed([&] { return bench.WebSocket(); }, websocket_cpu));
    spdy.push_back(bench.Costed([&] { return bench.Spdy(); }, spdy_cpu));
  }
  std::vector<double> exec_rt = bench.ExecRoundTrips(round_trips);
  std::vector<double> agent_rt = bench.AgentRoundTrips(round_trips);
  (*env)->StopPod(*pod).ok();
  (*env)->RemovePod(*pod).ok();

  double d = Median(direct), w = Median(websocket), s = Median(spdy);
  double e50 = Median(exec_rt), a50 = Median(agent_rt);
  std::printf("stream_bench: pod %s, %d MiB per download, %d rounds, %d round trips (TCG guest)\n",
              bench.pod_ip.c_str(), mib, rounds, round_trips);
  std::printf("%-44s %12s %12s\n", "measure", "value", "vs peer");
  std::printf("%-44s %9.1f MB/s %12s\n", "direct TCP host -> pod IP (peer)", d, "1.00x");
  std::printf("%-44s %9.1f MB/s %11.2fx\n", "port-forward WebSocket v4", w, d > 0 ? w / d : 0);
  std::printf("%-44s %9.1f MB/s %11.2fx\n", "port-forward SPDY portforward.k8s.io", s, d > 0 ? s / d : 0);
  auto cpu_row = [](const char* what, const std::array<std::vector<double>, 4>& cost) {
    std::printf("%-44s %6.1f user %6.1f sys %6.1f softirq %6.1f idle\n", what, Median(cost[0]), Median(cost[1]),
                Median(cost[2]), Median(cost[3]));
  };
  std::printf("guest CPU ms per MiB moved (median):\n");
  cpu_row("  direct TCP", direct_cpu);
  cpu_row("  port-forward WebSocket", websocket_cpu);
  cpu_row("  port-forward SPDY", spdy_cpu);
  std::printf("%-44s %9.0f us p50 %6.0f us p99\n", "agent round trip via CRI ContainerStats (peer)", a50,
              Percentile(agent_rt, 0.99));
  std::printf("%-44s %9.0f us p50 %6.0f us p99\n", "exec stdin->stdout round trip (WebSocket)", e50,
              Percentile(exec_rt, 0.99));
  std::printf("%-44s %9.0f us (target <= 2000)\n", "exec round trip added over agent round trip", e50 - a50);
  nlohmann::json out = {
      {"bench", "stream"},
      {"mib_per_download", mib},
      {"direct_mbps", direct},
      {"portforward_ws_mbps", websocket},
      {"portforward_spdy_mbps", spdy},
      {"ws_vs_direct", d > 0 ? w / d : 0},
      {"spdy_vs_direct", d > 0 ? s / d : 0},
      {"exec_round_trip_us_p50", e50},
      {"exec_round_trip_us_p99", Percentile(exec_rt, 0.99)},
      {"agent_round_trip_us_p50", a50},
      {"agent_round_trip_us_p99", Percentile(agent_rt, 0.99)},
      {"exec_added_us_p50", e50 - a50},
      {"guest_cpu_ms_per_mib",
       {{"direct", {Median(direct_cpu[0]), Median(direct_cpu[1]), Median(direct_cpu[2]), Median(direct_cpu[3])}},
        {"websocket",
         {Median(websocket_cpu[0]), Median(websocket_cpu[1]), Median(websocket_cpu[2]), Median(websocket_cpu[3])}},
        {"spdy", {Median(spdy_cpu[0]), Median(spdy_cpu[1]), Median(spdy_cpu[2]), Median(spdy_cpu[3])}},
        {"fields", {"user", "sys", "softirq", "idle"}}}}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace chrys::e2e

int main(int argc, char** argv) {
  return chrys::e2e::Main(argc, argv);
}
