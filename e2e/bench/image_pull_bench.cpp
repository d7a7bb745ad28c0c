// Cold pull of a ~200 MiB, 5-layer image from a local docker-registry: chrysd (CRI PullImage over its socket:
// download, verify, unpack, EROFS image per layer) against containerd 1.6 (`ctr images pull`, which downloads
// and unpacks), same image, same registry, same run; chrysd's RSS is sampled during the pull. The image-store
// library alone is measured too, in a child process so that its peak RSS (VmHWM) is its own.
//
//   image_pull_bench [--layer-mib N] [--rounds N]
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "e2e/cri/chrysd_process.h"
#include "e2e/fixtures/child_process.h"
#include "e2e/fixtures/temp_dir.h"
#include "e2e/fixtures/test_image.h"
#include "e2e/fixtures/test_registry.h"
#include "imagestore/image_store.h"

namespace chrys::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// "VmHWM:   12345 kB" → bytes.
int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::istringstream s(line.substr(field.size() + 1));
      int64_t kb = 0;
      s >> kb;
      return kb * 1024;
    }
  }
  return -1;
}

// The child: opens a store, pulls, prints one JSON line with its memory figures.
int PullChild(const std::string& root, const std::string& registry, const std::string& ref) {
  imagestore::ImageStoreConfig config;
  config.root = root;
  config.registry.hosts[registry].insecure = true;
  auto store = imagestore::ImageStore::Open(config);
  if (!store.ok()) {
    std::cerr << store.error().message() << "\n";
    return 1;
  }
  int64_t rss_before = ProcStatusBytes("VmRSS");
  auto image = (*store)->Pull(ref);
  if (!image.ok()) {
    std::cerr << image.error().message() << "\n";
    return 1;
  }
  struct rusage children {};
  ::getrusage(RUSAGE_CHILDREN, &children);
  struct rusage self {};
  ::getrusage(RUSAGE_SELF, &self);
  auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  json out = {{"rss_before", rss_before},
              {"hwm", ProcStatusBytes("VmHWM")},
              {"children_max_rss", static_cast<int64_t>(children.ru_maxrss) * 1024},
              {"cpu_user", secs(self.ru_utime)},
              {"cpu_sys", secs(self.ru_stime)},
              {"children_cpu", secs(children.ru_utime) + secs(children.ru_stime)},
              {"layers", image->layers.size()},
              {"size", image->size}};
  std::cout << out.dump() << std::endl;
  return 0;
}

base::Result<base::CommandResult> Run(std::vector<std::string> argv, std::chrono::seconds timeout) {
  base::CommandSpec spec;
  spec.argv = std::move(argv);
  spec.timeout = timeout;
  return base::RunCommand(spec);
}

base::Status RunOk(std::vector<std::string> argv, std::chrono::seconds timeout) {
  std::string what = argv[0];
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult r, Run(std::move(argv), timeout));
  if (!r.success()) {
    return base::Internal(what + " " + r.DescribeExit() + ": " + base::Tail(r.stderr_data + r.stdout_data));
  }
  return base::Status::Ok();
}

struct ContainerdRun {
  double seconds = 0;
};

base::Result<double> ContainerdPull(const std::string& dir, const std::string& ref) {
  std::string config = dir + "/config.toml";
  std::string sock = dir + "/containerd.sock";
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(
      config, "version = 2\nroot = \"" + dir + "/root\"\nstate = \"" + dir +
                  "/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"" + sock +
                  "\"\n[ttrpc]\n  address = \"" + sock +
                  ".ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n"));
  CHRYS_ASSIGN_OR_RETURN(e2e::ChildProcess daemon,
                         e2e::ChildProcess::Start({"containerd", "--config", config, "--root", dir + "/root", "--state",
                                                   dir + "/state", "--address", sock},
                                                  dir + "/containerd.log"));
  auto until = Clock::now() + std::chrono::seconds(30);
  while (true) {
    auto r = Run({"ctr", "--address", sock, "version"}, std::chrono::seconds(5));
    if (r.ok() && r->success()) {
      break;
    }
    if (Clock::now() > until || !daemon.running()) {
      auto log = base::ReadFile(dir + "/containerd.log");
      return base::Unavailable("containerd did not come up: " + (log.ok() ? base::Tail(*log) : ""));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto start = Clock::now();
  CHRYS_RETURN_IF_ERROR(RunOk({"ctr", "--address", sock, "-n", "bench", "images", "pull", "--plain-http", ref},
                              std::chrono::seconds(600)));
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // Snapshots are overlay mounts' lowerdirs only (nothing mounted by a pull); stop the daemon before removal.
  daemon.Stop();
  return seconds;
}

// VmRSS of `pid` in bytes, or -1.
int64_t RssOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::atoll(line.c_str() + 6) * 1024;
    }
  }
  return -1;
}

struct ChrysdRun {
  double seconds = 0;
  int64_t rss_before = 0;
  int64_t rss_peak = 0;
};

// A fresh chrysd (own state root) pulls through the CRI ImageService; its RSS is sampled every 5 ms meanwhile.
base::Result<ChrysdRun> ChrysdPull(const std::string& registry, const std::string& ref) {
  e2e::ChrysdProcess chrysd({"--log-level", "info"});
  CHRYS_RETURN_IF_ERROR(base::WriteFileAtomic(
      chrysd.dir() + "/config.yaml", "images:\n  registries:\n    \"" + registry + "\":\n      insecure: true\n"));
  if (!chrysd.Start()) {
    return base::Unavailable("chrysd did not start: " + chrysd.Output());
  }
  ChrysdRun run;
  run.rss_before = RssOf(chrysd.pid());
  std::atomic<bool> done{false};
  std::atomic<int64_t> peak{run.rss_before};
  std::thread sampler([&] {
    while (!done) {
      int64_t now = RssOf(chrysd.pid());
      if (now > peak) {
        peak = now;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  auto stub = chrysd.ImageStub();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  runtime::v1::PullImageRequest req;
  req.mutable_image()->set_image(ref);
  runtime::v1::PullImageResponse resp;
  auto start = Clock::now();
  grpc::Status st = stub->PullImage(&ctx, req, &resp);
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  done = true;
  sampler.join();
  run.rss_peak = peak;
  chrysd.Stop();
  if (!st.ok()) {
    return base::Internal("chrysd PullImage: " + st.error_message());
  }
  return run;
}

struct OurRun {
  double seconds = 0;
  json child;
};

base::Result<OurRun> OurPull(const std::string& self, const std::string& root, const std::string& registry,
                             const std::string& ref) {
  auto start = Clock::now();
  CHRYS_ASSIGN_OR_RETURN(base::CommandResult r,
                         Run({self, "--pull-child", root, registry, ref}, std::chrono::seconds(600)));
  OurRun run;
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!r.success()) {
    return base::Internal("our pull " + r.DescribeExit() + ": " + base::Tail(r.stderr_data));
  }
  run.child = json::parse(r.stdout_data, nullptr, false);
  if (!run.child.is_object()) {
    return base::Internal("our pull printed no figures: " + r.stdout_data);
  }
  return run;
}

int Main(int argc, char** argv) {
  int layer_mib = 40;
  int rounds = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--pull-child" && i + 3 < argc) {
      return PullChild(argv[i + 1], argv[i + 2], argv[i + 3]);
    }
    if (a == "--layer-mib" && i + 1 < argc) {
      layer_mib = std::atoi(argv[++i]);
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else {
      std::cerr << "usage: image_pull_bench [--layer-mib N] [--rounds N]\n";
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::cerr << "image_pull_bench: run as root (containerd, mounts, owners)\n";
    return 2;
  }
  char self[4096] = {0};
  if (::readlink("/proc/self/exe", self, sizeof self - 1) <= 0) {
    return 1;
  }
  auto registry = e2e::TestRegistry::Start();
  if (!registry.ok()) {
    std::cerr << registry.error().message() << "\n";
    return 1;
  }
  e2e::TempDir work("chrys-pull-bench");
  auto layout = e2e::OciLayoutWriter::Create(work.path() + "/layout");
  if (!layout.ok()) {
    return 1;
  }
  // Five layers: busybox plus incompressible data in a few files each, like application layers.
  std::vector<e2e::BlobDesc> layers;
  uint64_t layer_bytes = static_cast<uint64_t>(layer_mib) << 20;
  for (int l = 0; l < 5; ++l) {
    std::vector<e2e::TarEntry> entries;
    if (l == 0) {
      entries = e2e::BusyboxLayerEntries();
    }
    std::string dir = "data" + std::to_string(l);
    entries.push_back(e2e::TarEntry::Dir(dir));
    for (int f = 0; f < 8; ++f) {
      entries.push_back(e2e::TarEntry::Random(dir + "/blob" + std::to_string(f), layer_bytes / 8, l * 100 + f + 1));
    }
    for (int f = 0; f < 200; ++f) {
      entries.push_back(e2e::TarEntry::File(dir + "/small" + std::to_string(f) + ".txt",
                                            "file " + std::to_string(f) + " of layer " + std::to_string(l) + "\n"));
    }
    auto d = layout->AddLayer(entries);
    if (!d.ok()) {
      std::cerr << d.error().message() << "\n";
      return 1;
    }
    layers.push_back(*d);
  }
  auto manifest = layout->AddImage(layers, e2e::ImageSpec{});
  if (!manifest.ok() || !layout->WriteIndexJson({{*manifest, "big"}}).ok()) {
    return 1;
  }
  int64_t total = 0;
  for (const auto& l : layers) {
    total += l.size;
  }
  std::string host = (*registry)->host();
  std::string ref = host + "/bench/big:v1";
  auto pushed = e2e::PushWithSkopeo({work.path() + "/layout", "big", ref, false, "", ""});
  if (!pushed.ok()) {
    std::cerr << pushed.error().message() << "\n";
    return 1;
  }

  std::vector<double> ours;
  std::vector<double> theirs;
  std::vector<double> rss_growth;
  std::vector<double> hwm;
  std::vector<double> mkfs_rss;
  std::vector<double> cpu;
  std::vector<double> mkfs_cpu;
  std::vector<double> daemon_seconds;
  std::vector<double> daemon_growth;
  std::vector<double> daemon_peak;
  for (int round = 0; round < rounds; ++round) {
    std::string cdir = work.path() + "/containerd" + std::to_string(round);
    std::string sdir = work.path() + "/store" + std::to_string(round);
    if (!base::MakeDirs(cdir).ok()) {
      return 1;
    }
    auto c = ContainerdPull(cdir, ref);
    if (!c.ok()) {
      std::cerr << c.error().message() << "\n";
      return 1;
    }
    auto o = OurPull(self, sdir, host, ref);
    if (!o.ok()) {
      std::cerr << o.error().message() << "\n";
      return 1;
    }
    auto d = ChrysdPull(host, ref);
    if (!d.ok()) {
      std::cerr << d.error().message() << "\n";
      return 1;
    }
    daemon_seconds.push_back(d->seconds);
    daemon_growth.push_back(static_cast<double>(d->rss_peak - d->rss_before) / (1 << 20));
    daemon_peak.push_back(static_cast<double>(d->rss_peak) / (1 << 20));
    theirs.push_back(*c);
    ours.push_back(o->seconds);
    cpu.push_back(o->child["cpu_user"].get<double>() + o->child["cpu_sys"].get<double>());
    mkfs_cpu.push_back(o->child["children_cpu"].get<double>());
    int64_t before = o->child["rss_before"].get<int64_t>();
    int64_t peak = o->child["hwm"].get<int64_t>();
    rss_growth.push_back(static_cast<double>(peak - before) / (1 << 20));
    hwm.push_back(static_cast<double>(peak) / (1 << 20));
    mkfs_rss.push_back(static_cast<double>(o->child["children_max_rss"].get<int64_t>()) / (1 << 20));
    (void)base::RemoveTree(cdir);
    (void)base::RemoveTree(sdir);
  }
  auto best = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
  auto worst = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
  auto median_of_ratios = [&](const std::vector<double>& v) {
    std::vector<double> ratios;
    for (size_t i = 0; i < v.size(); ++i) {
      ratios.push_back(v[i] / theirs[i]);
    }
    std::sort(ratios.begin(), ratios.end());
    return ratios[ratios.size() / 2];
  };
  double ratio = best(daemon_seconds) / best(theirs);
  double median_ratio = median_of_ratios(daemon_seconds);
  double library_ratio = best(ours) / best(theirs);
  std::printf("image pull: 5 layers, %.1f MiB compressed, local docker-registry, %d round(s), best of rounds\n",
              static_cast<double>(total) / (1 << 20), rounds);
  std::printf("%-44s %12s %12s\n", "", "chrysd", "containerd");
  std::printf("%-44s %12.2f %12.2f\n", "cold pull until usable, CRI PullImage (s)", best(daemon_seconds),
              best(theirs));
  std::printf("%-44s %12.2f %12s\n", "wall-time ratio, best/best (target <= 0.70)", ratio, "1.00");
  std::printf("%-44s %12.2f %12s\n", "wall-time ratio, median of rounds", median_ratio, "1.00");
  std::printf("%-44s %12.1f %12s\n", "chrysd RSS growth, worst (MiB, <= 30)", worst(daemon_growth), "-");
  std::printf("%-44s %12.1f %12s\n", "chrysd peak RSS (MiB)", worst(daemon_peak), "-");
  std::printf("%-44s %12.2f %12s\n", "image-store library alone, best (s)", best(ours), "-");
  std::printf("%-44s %12.2f %12s\n", "library wall-time ratio, best/best", library_ratio, "1.00");
  std::printf("%-44s %12.1f %12s\n", "pulling process RSS growth, worst (MiB, <= 30)", worst(rss_growth), "-");
  std::printf("%-44s %12.1f %12s\n", "pulling process peak RSS (MiB)", worst(hwm), "-");
  std::printf("%-44s %12.1f %12s\n", "largest mkfs.erofs child RSS (MiB)", worst(mkfs_rss), "-");
  std::printf("%-44s %12.2f %12s\n", "pulling process CPU, user+sys (s)", best(cpu), "-");
  std::printf("%-44s %12.2f %12s\n", "mkfs.erofs children CPU (s)", best(mkfs_cpu), "-");
  json out = {{"bench", "image_pull"},
              {"layers", 5},
              {"compressed_bytes", total},
              {"rounds", rounds},
              {"chrysd_seconds", daemon_seconds},
              {"chrysd_rss_growth_mib", daemon_growth},
              {"chrysd_peak_rss_mib", daemon_peak},
              {"library_seconds", ours},
              {"library_wall_ratio", library_ratio},
              {"containerd_seconds", theirs},
              {"wall_ratio", ratio},
              {"wall_ratio_median", median_ratio},
              {"cpu_seconds", cpu},
              {"mkfs_cpu_seconds", mkfs_cpu},
              {"rss_growth_mib", rss_growth},
              {"peak_rss_mib", hwm},
              {"mkfs_child_max_rss_mib", mkfs_rss}};
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace
}  // namespace chrys::bench

int main(int argc, char** argv) {
  return chrys::bench::Main(argc, argv);
}
