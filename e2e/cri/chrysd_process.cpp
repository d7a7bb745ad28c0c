#include "e2e/cri/chrysd_process.h"

#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "base/file_util.h"

namespace chrys::e2e {

using Clock = std::chrono::steady_clock;

ChrysdProcess::ChrysdProcess(std::vector<std::string> extra_args) : extra_args_(std::move(extra_args)) {
  char tmpl[] = "/tmp/chrys-e2e-XXXXXX";
  if (::mkdtemp(tmpl) != nullptr) {
    dir_ = tmpl;
  }
}

ChrysdProcess::~ChrysdProcess() {
  if (pid_ > 0) {
    Kill();
  }
  // CHRYS_E2E_KEEP_LOGS=DIR keeps each chrysd's log (a bench's or a test's) as DIR/chrysd-<pid>-<dir>.log: the
  // directory with everything else goes, and a slow pod in a benchmark fails nothing that would print it.
  if (const char* keep = std::getenv("CHRYS_E2E_KEEP_LOGS"); keep != nullptr && *keep != '\0') {
    std::string kept = std::string(keep) + "/chrysd-" + std::to_string(::getpid()) + "-" +
                       std::filesystem::path(dir_).filename().string() + ".log";
    std::error_code failed;
    std::filesystem::create_directories(keep, failed);
    if (!failed) {
      std::filesystem::copy_file(log_path(), kept, std::filesystem::copy_options::overwrite_existing, failed);
    }
    std::fprintf(stderr, "chrysd's log %s %s%s\n", failed ? "could not be kept as" : "kept as", kept.c_str(),
                 failed ? (": " + failed.message()).c_str() : "");
  }
  std::filesystem::remove_all(dir_);
}

std::vector<std::string> ChrysdProcess::Args() const {
  std::vector<std::string> args = {CHRYSD_BINARY, "--config", dir_ + "/config.yaml", "--socket", socket(),
                                   "--state-dir", state_dir(), "--run-dir", dir_ + "/run", "--log-level", "debug",
                                   // No warm VMs unless a test asks (a later --set wins): each would boot beside
                                   // the test's own VMs and stay outside the pods the test checks.
                                   "--set", "vmm.warm_pool_size=0"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  return args;
}

void ChrysdProcess::Launch() {
  if (!std::filesystem::exists(dir_ + "/config.yaml")) {
    base::WriteFileAtomic(dir_ + "/config.yaml", "# test config: embedded defaults\n").ok();
  }
  std::vector<std::string> args = Args();
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  std::string out_path = log_path();
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
}

int ChrysdProcess::WaitExit(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1000;
}

bool ChrysdProcess::Start(std::chrono::seconds timeout) {
  Launch();
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    if (std::filesystem::exists(socket())) {
      auto stub = RuntimeStub();
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      runtime::v1::VersionRequest req;
      runtime::v1::VersionResponse resp;
      if (stub->Version(&ctx, req, &resp).ok()) {
        return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

int ChrysdProcess::RunToExit(std::chrono::seconds timeout) {
  Launch();
  int code = WaitExit(timeout);
  if (code == -1000) {
    Kill();
    return -1;
  }
  return code;
}

int ChrysdProcess::Stop(std::chrono::seconds timeout) {
  if (pid_ <= 0) {
    return -1;
  }
  ::kill(pid_, SIGTERM);
  int code = WaitExit(timeout);
  if (code == -1000) {
    Kill();
    return -SIGKILL;
  }
  return code;
}

void ChrysdProcess::Kill() {
  if (pid_ <= 0) {
    return;
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string ChrysdProcess::Output() const {
  auto text = base::ReadFile(log_path());
  return text.ok() ? *text : "";
}

std::unique_ptr<runtime::v1::RuntimeService::Stub> ChrysdProcess::RuntimeStub() const {
  return runtime::v1::RuntimeService::NewStub(
      grpc::CreateChannel("unix://" + socket(), grpc::InsecureChannelCredentials()));
}

std::unique_ptr<runtime::v1::ImageService::Stub> ChrysdProcess::ImageStub() const {
  return runtime::v1::ImageService::NewStub(
      grpc::CreateChannel("unix://" + socket(), grpc::InsecureChannelCredentials()));
}

}  // namespace chrys::e2e
