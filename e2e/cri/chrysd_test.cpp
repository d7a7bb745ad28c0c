// chrysd as a process: the CRI socket, the runtime-information RPCs, config errors, restarts and state.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <filesystem>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "e2e/cri/chrysd_process.h"

namespace chrys::e2e {
namespace {

namespace v1 = runtime::v1;

grpc::ClientContext* WithDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return &ctx;
}

TEST(ChrysdTest, VersionStatusAndRuntimeConfig) {
  ChrysdProcess chrysd;
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  auto stub = chrysd.RuntimeStub();

  grpc::ClientContext vctx;
  v1::VersionResponse version;
  ASSERT_TRUE(stub->Version(WithDeadline(vctx), v1::VersionRequest(), &version).ok());
  EXPECT_EQ(version.runtime_name(), "chrysalis");
  EXPECT_EQ(version.runtime_api_version(), "v1");
  EXPECT_EQ(version.version(), "0.1.0");
  EXPECT_FALSE(version.runtime_version().empty());

  grpc::ClientContext sctx;
  v1::StatusRequest sreq;
  sreq.set_verbose(true);
  v1::StatusResponse status;
  ASSERT_TRUE(stub->Status(WithDeadline(sctx), sreq, &status).ok());
  ASSERT_EQ(status.status().conditions_size(), 2);
  for (const auto& c : status.status().conditions()) {
    EXPECT_TRUE(c.type() == "RuntimeReady" || c.type() == "NetworkReady") << c.type();
    if (!c.status()) {
      EXPECT_FALSE(c.reason().empty()) << c.type();
      EXPECT_FALSE(c.message().empty()) << c.type();
    }
  }
  ASSERT_TRUE(status.info().contains("config"));
  auto config = nlohmann::json::parse(status.info().at("config"));
  EXPECT_EQ(config["socket"], chrysd.socket());
  EXPECT_EQ(config["state_dir"], chrysd.state_dir());
  EXPECT_GE(status.runtime_handlers_size(), 2);

  grpc::ClientContext rctx;
  v1::RuntimeConfigResponse rc;
  ASSERT_TRUE(stub->RuntimeConfig(WithDeadline(rctx), v1::RuntimeConfigRequest(), &rc).ok());
  EXPECT_EQ(rc.linux().cgroup_driver(), v1::CGROUPFS);
}

TEST(ChrysdTest, CgroupDriverFromConfig) {
  ChrysdProcess chrysd({"--cgroup-driver", "systemd"});
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  grpc::ClientContext ctx;
  v1::RuntimeConfigResponse rc;
  ASSERT_TRUE(chrysd.RuntimeStub()->RuntimeConfig(WithDeadline(ctx), v1::RuntimeConfigRequest(), &rc).ok());
  EXPECT_EQ(rc.linux().cgroup_driver(), v1::SYSTEMD);
}

TEST(ChrysdTest, SocketModeAndRemovalOnSigterm) {
  ChrysdProcess chrysd;
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  struct stat st {};
  ASSERT_EQ(::stat(chrysd.socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660U);
  EXPECT_EQ(chrysd.Stop(), 0) << chrysd.Output();
  EXPECT_FALSE(std::filesystem::exists(chrysd.socket()));
  EXPECT_NE(chrysd.Output().find("chrysd stopped"), std::string::npos);
}

TEST(ChrysdTest, SigtermWithAnOpenEventStreamStopsWithinTheGrace) {
  // A grace far longer than the wait below: chrysd must not spend it on a stream that never ends by itself.
  ChrysdProcess chrysd({"--set", "shutdown_grace_seconds=300"});
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  auto stub = chrysd.RuntimeStub();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub->GetContainerEvents(&ctx, v1::GetEventsRequest());
  // A reader as kubelet has: it waits for events until the stream ends.
  auto drained = std::async(std::launch::async, [&] {
    v1::ContainerEventResponse event;
    while (reader->Read(&event)) {
    }
    return reader->Finish();
  });
  // The stream is open once the server has seen it; a unary call after it proves the server is serving.
  grpc::ClientContext vctx;
  v1::VersionResponse version;
  ASSERT_TRUE(stub->Version(WithDeadline(vctx), v1::VersionRequest(), &version).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Exit code 0 (not -SIGKILL): it exited on its own within the bound, well inside its 300 s grace.
  EXPECT_EQ(chrysd.Stop(std::chrono::seconds(30)), 0) << chrysd.Output();
  ASSERT_EQ(drained.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  grpc::Status status = drained.get();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST(ChrysdTest, StaleSocketIsReplaced) {
  ChrysdProcess chrysd;
  ASSERT_TRUE(base::MakeDirs(chrysd.dir() + "/run").ok());
  {
    // A bound but dead socket, as a crashed chrysd leaves it.
    base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", chrysd.socket().c_str());
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  ASSERT_TRUE(std::filesystem::exists(chrysd.socket()));
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  EXPECT_NE(chrysd.Output().find("replacing stale socket"), std::string::npos);
}

TEST(ChrysdTest, SecondChrysdOnLiveSocketRefuses) {
  ChrysdProcess first;
  ASSERT_TRUE(first.Start()) << first.Output();
  // Same socket and state, different private dir for the second one's log.
  ChrysdProcess second({"--socket", first.socket(), "--state-dir", first.state_dir()});
  int code = second.RunToExit();
  EXPECT_NE(code, 0);
  std::string out = second.Output();
  EXPECT_NE(out.find("another chrysd (pid " + std::to_string(first.pid()) + ") is already serving " + first.socket()),
            std::string::npos)
      << out;
  // The first one still serves.
  grpc::ClientContext ctx;
  v1::VersionResponse version;
  EXPECT_TRUE(first.RuntimeStub()->Version(WithDeadline(ctx), v1::VersionRequest(), &version).ok());
}

TEST(ChrysdTest, PodCidrSurvivesRestartAndBadCidrRejected) {
  ChrysdProcess chrysd;
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  {
    grpc::ClientContext ctx;
    v1::UpdateRuntimeConfigRequest req;
    req.mutable_runtime_config()->mutable_network_config()->set_pod_cidr("10.88.0.0/33");
    v1::UpdateRuntimeConfigResponse resp;
    auto s = chrysd.RuntimeStub()->UpdateRuntimeConfig(WithDeadline(ctx), req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("pod_cidr"), std::string::npos) << s.error_message();
    EXPECT_FALSE(std::filesystem::exists(chrysd.state_dir() + "/state/runtime/config.json"));
  }
  {
    grpc::ClientContext ctx;
    v1::UpdateRuntimeConfigRequest req;
    req.mutable_runtime_config()->mutable_network_config()->set_pod_cidr("10.88.0.0/16");
    v1::UpdateRuntimeConfigResponse resp;
    ASSERT_TRUE(chrysd.RuntimeStub()->UpdateRuntimeConfig(WithDeadline(ctx), req, &resp).ok());
  }
  // A crash, not a clean stop: the record must already be on disk.
  chrysd.Kill();
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  grpc::ClientContext ctx;
  v1::StatusRequest req;
  req.set_verbose(true);
  v1::StatusResponse status;
  ASSERT_TRUE(chrysd.RuntimeStub()->Status(WithDeadline(ctx), req, &status).ok());
  auto info = nlohmann::json::parse(status.info().at("config"));
  EXPECT_EQ(info["pod_cidr"], "10.88.0.0/16");
}

TEST(ChrysdTest, CorruptRecordIsMovedAsideAndChrysdServes) {
  ChrysdProcess chrysd;
  std::string record_dir = chrysd.state_dir() + "/state/runtime";
  ASSERT_TRUE(base::MakeDirs(record_dir).ok());
  ASSERT_TRUE(base::WriteFileAtomic(record_dir + "/config.json", "{\"pod_cidr\": \"10.1.").ok());
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  EXPECT_FALSE(std::filesystem::exists(record_dir + "/config.json"));
  ASSERT_TRUE(std::filesystem::exists(record_dir + "/corrupt"));
  EXPECT_NE(chrysd.Output().find("is corrupt"), std::string::npos) << chrysd.Output();
  grpc::ClientContext ctx;
  v1::VersionResponse version;
  EXPECT_TRUE(chrysd.RuntimeStub()->Version(WithDeadline(ctx), v1::VersionRequest(), &version).ok());
}

TEST(ChrysdTest, ConfigErrorsStopTheStartNamingTheKey) {
  struct Case {
    const char* yaml;
    const char* expect;
  };
  const Case cases[] = {
      {"log:\n  levle: debug\n", "unknown key 'log.levle'"},
      {"log:\n  max_files: lots\n", "key 'log.max_files': expected an integer from 1 to 100, got 'lots'"},
      {"cgroup_driver: 7\n", "key 'cgroup_driver': expected one of cgroupfs, systemd, got '7'"},
      {"shutdown_grace_seconds: [1]\n", "key 'shutdown_grace_seconds': expected an integer"},
  };
  for (const auto& c : cases) {
    ChrysdProcess chrysd;
    ASSERT_TRUE(base::WriteFileAtomic(chrysd.dir() + "/config.yaml", c.yaml).ok());
    EXPECT_EQ(chrysd.RunToExit(), 2) << c.yaml;
    std::string out = chrysd.Output();
    EXPECT_NE(out.find(c.expect), std::string::npos) << out;
    EXPECT_NE(out.find(chrysd.dir() + "/config.yaml"), std::string::npos) << out;
    EXPECT_FALSE(std::filesystem::exists(chrysd.socket()));
  }
}

TEST(ChrysdTest, MissingExplicitConfigFileIsAnError) {
  ChrysdProcess chrysd({"--config", "/nonexistent/chrysalis.yaml"});
  EXPECT_EQ(chrysd.RunToExit(), 2);
  EXPECT_NE(chrysd.Output().find("/nonexistent/chrysalis.yaml"), std::string::npos) << chrysd.Output();
}

TEST(ChrysdTest, NotYetImplementedRpcsSayUnimplemented) {
  ChrysdProcess chrysd;
  ASSERT_TRUE(chrysd.Start()) << chrysd.Output();
  grpc::ClientContext ctx;
  v1::CheckpointContainerResponse resp;
  auto s = chrysd.RuntimeStub()->CheckpointContainer(WithDeadline(ctx), v1::CheckpointContainerRequest(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // The RPC is logged at debug level with its result code.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_NE(chrysd.Output().find("rpc /runtime.v1.RuntimeService/CheckpointContainer code 12"), std::string::npos)
      << chrysd.Output();
}

TEST(ChrysdTest, PrintConfigReflectsFileAndFlags) {
  ChrysdProcess chrysd({"--print-config", "--log-level", "warn"});
  ASSERT_TRUE(base::WriteFileAtomic(chrysd.dir() + "/config.yaml", "cni:\n  network_name: podnet\n").ok());
  EXPECT_EQ(chrysd.RunToExit(), 0);
  std::string out = chrysd.Output();
  EXPECT_NE(out.find("network_name: \"podnet\""), std::string::npos) << out;
  EXPECT_NE(out.find("level: \"warn\""), std::string::npos) << out;
}

}  // namespace
}  // namespace chrys::e2e
