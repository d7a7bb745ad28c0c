// chrysctl pod and container commands, as crictl has them: runp, create, start, stop, rm, stopp, rmp, pods, ps,
// logs, exec, inspect, inspectp, and run (the whole pod → container → output → cleanup flow of the quick start).
// Config files are crictl's: the protobuf JSON (or YAML) of PodSandboxConfig / ContainerConfig.
#include <google/protobuf/util/json_util.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cri/ctl/commands.h"

namespace chrys::cri::ctl {
namespace {

namespace v1 = ::runtime::v1;
using Clock = std::chrono::steady_clock;

base::Result<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return base::NotFound("cannot read " + path);
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// YAML scalars become JSON strings, numbers or booleans as they read; protobuf JSON parsing then checks types.
nlohmann::json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& item : node) {
        out[item.first.as<std::string>()] = YamlToJson(item.second);
      }
      return out;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) {
        out.push_back(YamlToJson(item));
      }
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      if (node.Tag() == "!") {  // quoted: always a string
        return text;
      }
      if (text == "true" || text == "false") {
        return text == "true";
      }
      char* end = nullptr;
      long long number = std::strtoll(text.c_str(), &end, 10);
      if (!text.empty() && end != nullptr && *end == '\0') {
        return number;
      }
      return text;
    }
    default:
      return nullptr;
  }
}

// Reads a crictl-style config file (JSON, or YAML when it does not start with '{') into `message`.
base::Status LoadConfig(const std::string& path, google::protobuf::Message* message) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  size_t first = text.find_first_not_of(" \t\r\n");
  std::string json_text = text;
  if (first == std::string::npos) {
    return base::InvalidArgument(path + " is empty");
  }
  if (text[first] != '{') {
    try {
      json_text = YamlToJson(YAML::Load(text)).dump();
    } catch (const YAML::Exception& e) {
      return base::InvalidArgument(path + ": not JSON, and not YAML either: " + e.what());
    }
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json_text, message, options);
  if (!status.ok()) {
    return base::InvalidArgument(path + ": not a " + message->GetDescriptor()->name() + ": " + status.ToString());
  }
  return base::Status::Ok();
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = false;
  // SANDBOX_READY, CONTAINER_CREATED and exit code 0 are zero values: proto3 JSON would drop them.
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string ShortId(const std::string& id) {
  return id.substr(0, 13);
}

// crictl's one-letter flags, spelled out for ParseArgs (which only knows "--name" options).
base::Result<ParsedArgs> Parse(std::vector<std::string> args, const std::vector<std::string>& flags,
                               const std::vector<std::string>& switches = {}) {
  static const std::map<std::string, std::string> kShort = {
      {"-t", "--timeout"}, {"-r", "--runtime"}, {"-q", "--quiet"}, {"-a", "--all"}, {"-p", "--pod"}, {"-f", "--force"}};
  for (auto& arg : args) {
    if (auto it = kShort.find(arg); it != kShort.end()) {
      arg = it->second;
    }
  }
  return ParseArgs(args, flags, switches);
}

std::string Age(int64_t created_nanos) {
  int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  int64_t seconds = std::max<int64_t>(0, (now - created_nanos) / 1000000000);
  if (seconds < 60) {
    return std::to_string(seconds) + " seconds ago";
  }
  if (seconds < 3600) {
    return std::to_string(seconds / 60) + " minutes ago";
  }
  if (seconds < 86400) {
    return std::to_string(seconds / 3600) + " hours ago";
  }
  return std::to_string(seconds / 86400) + " days ago";
}

const char* PodStateName(v1::PodSandboxState state) {
  return state == v1::SANDBOX_READY ? "Ready" : "NotReady";
}

const char* ContainerStateName(v1::ContainerState state) {
  switch (state) {
    case v1::CONTAINER_CREATED:
      return "Created";
    case v1::CONTAINER_RUNNING:
      return "Running";
    case v1::CONTAINER_EXITED:
      return "Exited";
    default:
      return "Unknown";
  }
}

// --- the calls, each returning an Error that names the RPC ---

base::Status EnsureImage(CriClient& client, const std::string& image, bool pull) {
  v1::ImageStatusRequest req;
  req.mutable_image()->set_image(image);
  v1::ImageStatusResponse resp;
  auto status = client.images().ImageStatus(CriClient::Context().get(), req, &resp);
  if (!status.ok()) {
    return CriClient::CallError("ImageStatus", status);
  }
  if (resp.has_image()) {
    return base::Status::Ok();
  }
  if (!pull) {
    return base::NotFound("image " + image + " is not in the store (chrysctl pull or chrysctl import it first)");
  }
  v1::PullImageRequest pull_req;
  pull_req.mutable_image()->set_image(image);
  v1::PullImageResponse pulled;
  status = client.images().PullImage(CriClient::Context(std::chrono::hours(1)).get(), pull_req, &pulled);
  if (!status.ok()) {
    return CriClient::CallError("PullImage", status);
  }
  return base::Status::Ok();
}

base::Result<std::string> RunPod(CriClient& client, const v1::PodSandboxConfig& config, const std::string& handler) {
  if (!config.log_directory().empty()) {
    // kubelet creates the pod's log directory before RunPodSandbox; chrysctl does the same.
    std::string dir;
    std::stringstream parts(config.log_directory());
    std::string part;
    while (std::getline(parts, part, '/')) {
      if (part.empty()) {
        continue;
      }
      dir += "/" + part;
      ::mkdir(dir.c_str(), 0755);
    }
  }
  v1::RunPodSandboxRequest req;
  *req.mutable_config() = config;
  req.set_runtime_handler(handler);
  v1::RunPodSandboxResponse resp;
  auto status = client.runtime().RunPodSandbox(CriClient::Context(std::chrono::minutes(10)).get(), req, &resp);
  if (!status.ok()) {
    return CriClient::CallError("RunPodSandbox", status);
  }
  return resp.pod_sandbox_id();
}

base::Result<std::string> CreateContainer(CriClient& client, const std::string& pod_id,
                                          const v1::ContainerConfig& config, const v1::PodSandboxConfig& pod_config) {
  v1::CreateContainerRequest req;
  req.set_pod_sandbox_id(pod_id);
  *req.mutable_config() = config;
  *req.mutable_sandbox_config() = pod_config;
  v1::CreateContainerResponse resp;
  auto status = client.runtime().CreateContainer(CriClient::Context(std::chrono::minutes(10)).get(), req, &resp);
  if (!status.ok()) {
    return CriClient::CallError("CreateContainer", status);
  }
  return resp.container_id();
}

base::Status StartContainer(CriClient& client, const std::string& id) {
  v1::StartContainerRequest req;
  req.set_container_id(id);
  v1::StartContainerResponse resp;
  auto status = client.runtime().StartContainer(CriClient::Context(std::chrono::minutes(5)).get(), req, &resp);
  return status.ok() ? base::Status::Ok() : base::Status(CriClient::CallError("StartContainer", status));
}

base::Status StopContainer(CriClient& client, const std::string& id, int64_t timeout) {
  v1::StopContainerRequest req;
  req.set_container_id(id);
  req.set_timeout(timeout);
  v1::StopContainerResponse resp;
  auto status =
      client.runtime().StopContainer(CriClient::Context(std::chrono::seconds(timeout + 120)).get(), req, &resp);
  return status.ok() ? base::Status::Ok() : base::Status(CriClient::CallError("StopContainer", status));
}

base::Status RemoveContainer(CriClient& client, const std::string& id) {
  v1::RemoveContainerRequest req;
  req.set_container_id(id);
  v1::RemoveContainerResponse resp;
  auto status = client.runtime().RemoveContainer(CriClient::Context(std::chrono::minutes(2)).get(), req, &resp);
  return status.ok() ? base::Status::Ok() : base::Status(CriClient::CallError("RemoveContainer", status));
}

base::Status StopPod(CriClient& client, const std::string& id) {
  v1::StopPodSandboxRequest req;
  req.set_pod_sandbox_id(id);
  v1::StopPodSandboxResponse resp;
  auto status = client.runtime().StopPodSandbox(CriClient::Context(std::chrono::minutes(5)).get(), req, &resp);
  return status.ok() ? base::Status::Ok() : base::Status(CriClient::CallError("StopPodSandbox", status));
}

base::Status RemovePod(CriClient& client, const std::string& id) {
  v1::RemovePodSandboxRequest req;
  req.set_pod_sandbox_id(id);
  v1::RemovePodSandboxResponse resp;
  auto status = client.runtime().RemovePodSandbox(CriClient::Context(std::chrono::minutes(5)).get(), req, &resp);
  return status.ok() ? base::Status::Ok() : base::Status(CriClient::CallError("RemovePodSandbox", status));
}

base::Result<v1::ContainerStatusResponse> ContainerStatus(CriClient& client, const std::string& id, bool verbose) {
  v1::ContainerStatusRequest req;
  req.set_container_id(id);
  req.set_verbose(verbose);
  v1::ContainerStatusResponse resp;
  auto status = client.runtime().ContainerStatus(CriClient::Context().get(), req, &resp);
  if (!status.ok()) {
    return CriClient::CallError("ContainerStatus", status);
  }
  return resp;
}

// Writes the text of a CRI log file to stdout/stderr by stream (P pieces joined, F ends a line).
base::Status PrintLog(const std::string& path, int tail_lines) {
  CHRYS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  std::vector<std::pair<bool, std::string>> lines;  // (is stderr, one log line)
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t a = line.find(' ');
    size_t b = a == std::string::npos ? a : line.find(' ', a + 1);
    if (b == std::string::npos) {
      continue;
    }
    bool is_stderr = line.compare(a + 1, b - a - 1, "stderr") == 0;
    size_t c = line.find(' ', b + 1);
    std::string tag = line.substr(b + 1, c == std::string::npos ? std::string::npos : c - b - 1);
    std::string body = c == std::string::npos ? "" : line.substr(c + 1);
    lines.emplace_back(is_stderr, tag == "P" ? body : body + "\n");
  }
  size_t start = 0;
  if (tail_lines >= 0) {
    size_t full = 0;
    for (size_t i = lines.size(); i-- > 0;) {
      if (!lines[i].second.empty() && lines[i].second.back() == '\n' && ++full > static_cast<size_t>(tail_lines)) {
        start = i + 1;
        break;
      }
    }
  }
  for (size_t i = start; i < lines.size(); ++i) {
    (lines[i].first ? std::cerr : std::cout) << lines[i].second;
  }
  std::cout.flush();
  return base::Status::Ok();
}

// --- commands ---

int RunP(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {"--runtime"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (parsed->positional.size() != 1) {
    return Fail("runp takes one pod config file (see chrysctl runp --help)");
  }
  v1::PodSandboxConfig config;
  if (auto loaded = LoadConfig(parsed->positional[0], &config); !loaded.ok()) {
    return Fail(loaded.error());
  }
  std::string handler = parsed->options.count("--runtime") ? parsed->options["--runtime"] : "";
  auto id = RunPod(client, config, handler);
  if (!id.ok()) {
    return Fail(id.error());
  }
  std::cout << *id << "\n";
  return 0;
}

int Create(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {}, {"--no-pull"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (parsed->positional.size() != 3) {
    return Fail("create takes POD_ID CONTAINER_CONFIG POD_CONFIG (see chrysctl create --help)");
  }
  v1::ContainerConfig config;
  v1::PodSandboxConfig pod_config;
  if (auto loaded = LoadConfig(parsed->positional[1], &config); !loaded.ok()) {
    return Fail(loaded.error());
  }
  if (auto loaded = LoadConfig(parsed->positional[2], &pod_config); !loaded.ok()) {
    return Fail(loaded.error());
  }
  if (auto image = EnsureImage(client, config.image().image(), !parsed->options.count("--no-pull")); !image.ok()) {
    return Fail(image.error());
  }
  auto id = CreateContainer(client, parsed->positional[0], config, pod_config);
  if (!id.ok()) {
    return Fail(id.error());
  }
  std::cout << *id << "\n";
  return 0;
}

// Applies `action` to every id argument; stops at the first failure.
int ForEachId(const std::vector<std::string>& ids, const std::string& verb,
              const std::function<base::Status(const std::string&)>& action) {
  if (ids.empty()) {
    return Fail(verb + " takes one or more ids");
  }
  for (const auto& id : ids) {
    if (auto done = action(id); !done.ok()) {
      return Fail(done.error());
    }
    std::cout << id << "\n";
  }
  return 0;
}

int Start(CriClient& client, const std::vector<std::string>& args) {
  return ForEachId(args, "start", [&](const std::string& id) { return StartContainer(client, id); });
}

int Stop(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {"--timeout"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  int64_t timeout = 10;
  if (auto it = parsed->options.find("--timeout"); it != parsed->options.end()) {
    char* end = nullptr;
    timeout = std::strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end != '\0' || timeout < 0) {
      return Fail("--timeout takes a number of seconds, got '" + it->second + "'");
    }
  }
  return ForEachId(parsed->positional, "stop",
                   [&](const std::string& id) { return StopContainer(client, id, timeout); });
}

int Rm(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {}, {"--force"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  bool force = parsed->options.count("--force") > 0;
  return ForEachId(parsed->positional, "rm", [&](const std::string& id) -> base::Status {
    if (force) {
      CHRYS_RETURN_IF_ERROR(StopContainer(client, id, 0));
    }
    return RemoveContainer(client, id);
  });
}

int StopP(CriClient& client, const std::vector<std::string>& args) {
  return ForEachId(args, "stopp", [&](const std::string& id) { return StopPod(client, id); });
}

int RmP(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {}, {"--force"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  bool force = parsed->options.count("--force") > 0;
  return ForEachId(parsed->positional, "rmp", [&](const std::string& id) -> base::Status {
    if (force) {
      CHRYS_RETURN_IF_ERROR(StopPod(client, id));
    }
    return RemovePod(client, id);
  });
}

int Pods(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {"--name", "--namespace", "--state", "--id", "--label"}, {"--quiet"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  v1::ListPodSandboxRequest req;
  auto& options = parsed->options;
  if (options.count("--id")) {
    req.mutable_filter()->set_id(options["--id"]);
  }
  if (options.count("--state")) {
    std::string state = options["--state"];
    if (state != "ready" && state != "notready") {
      return Fail("--state takes ready or notready, got '" + state + "'");
    }
    req.mutable_filter()->mutable_state()->set_state(state == "ready" ? v1::SANDBOX_READY : v1::SANDBOX_NOTREADY);
  }
  if (options.count("--label")) {
    auto eq = options["--label"].find('=');
    if (eq == std::string::npos) {
      return Fail("--label takes KEY=VALUE");
    }
    (*req.mutable_filter()->mutable_label_selector())[options["--label"].substr(0, eq)] =
        options["--label"].substr(eq + 1);
  }
  v1::ListPodSandboxResponse resp;
  auto status = client.runtime().ListPodSandbox(CriClient::Context().get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("ListPodSandbox", status));
  }
  bool quiet = options.count("--quiet") > 0;
  if (!quiet) {
    std::cout << std::left << std::setw(15) << "POD ID" << std::setw(20) << "CREATED" << std::setw(10) << "STATE"
              << std::setw(24) << "NAME" << std::setw(16) << "NAMESPACE" << std::setw(9) << "ATTEMPT"
              << "RUNTIME\n";
  }
  for (const auto& pod : resp.items()) {
    if (options.count("--name") && pod.metadata().name().find(options["--name"]) == std::string::npos) {
      continue;
    }
    if (options.count("--namespace") && pod.metadata().namespace_() != options["--namespace"]) {
      continue;
    }
    if (quiet) {
      std::cout << pod.id() << "\n";
      continue;
    }
    std::cout << std::left << std::setw(15) << ShortId(pod.id()) << std::setw(20) << Age(pod.created_at())
              << std::setw(10) << PodStateName(pod.state()) << std::setw(24) << pod.metadata().name() << std::setw(16)
              << pod.metadata().namespace_() << std::setw(9) << pod.metadata().attempt() << pod.runtime_handler()
              << "\n";
  }
  return 0;
}

int Containers(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {"--pod", "--name", "--state", "--id", "--label"}, {"--all", "--quiet"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  auto& options = parsed->options;
  v1::ListContainersRequest req;
  if (options.count("--pod")) {
    req.mutable_filter()->set_pod_sandbox_id(options["--pod"]);
  }
  if (options.count("--id")) {
    req.mutable_filter()->set_id(options["--id"]);
  }
  bool all = options.count("--all") > 0;
  if (options.count("--state")) {
    std::string s = options["--state"];
    v1::ContainerState state = s == "created"   ? v1::CONTAINER_CREATED
                               : s == "running" ? v1::CONTAINER_RUNNING
                               : s == "exited"  ? v1::CONTAINER_EXITED
                                                : v1::CONTAINER_UNKNOWN;
    if (state == v1::CONTAINER_UNKNOWN && s != "unknown") {
      return Fail("--state takes created, running, exited or unknown, got '" + s + "'");
    }
    req.mutable_filter()->mutable_state()->set_state(state);
    all = true;
  }
  if (options.count("--label")) {
    auto eq = options["--label"].find('=');
    if (eq == std::string::npos) {
      return Fail("--label takes KEY=VALUE");
    }
    (*req.mutable_filter()->mutable_label_selector())[options["--label"].substr(0, eq)] =
        options["--label"].substr(eq + 1);
  }
  v1::ListContainersResponse resp;
  auto status = client.runtime().ListContainers(CriClient::Context().get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("ListContainers", status));
  }
  bool quiet = options.count("--quiet") > 0;
  if (!quiet) {
    std::cout << std::left << std::setw(15) << "CONTAINER" << std::setw(36) << "IMAGE" << std::setw(20) << "CREATED"
              << std::setw(10) << "STATE" << std::setw(20) << "NAME" << std::setw(9) << "ATTEMPT"
              << "POD ID\n";
  }
  for (const auto& c : resp.containers()) {
    if (!all && c.state() != v1::CONTAINER_RUNNING) {
      continue;
    }
    if (options.count("--name") && c.metadata().name().find(options["--name"]) == std::string::npos) {
      continue;
    }
    if (quiet) {
      std::cout << c.id() << "\n";
      continue;
    }
    std::cout << std::left << std::setw(15) << ShortId(c.id()) << std::setw(36) << c.image().image() << std::setw(20)
              << Age(c.created_at()) << std::setw(10) << ContainerStateName(c.state()) << std::setw(20)
              << c.metadata().name() << std::setw(9) << c.metadata().attempt() << ShortId(c.pod_sandbox_id()) << "\n";
  }
  return 0;
}

int Logs(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {"--tail"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (parsed->positional.size() != 1) {
    return Fail("logs takes one container id");
  }
  int tail = -1;
  if (parsed->options.count("--tail")) {
    char* end = nullptr;
    tail = static_cast<int>(std::strtol(parsed->options["--tail"].c_str(), &end, 10));
    if (*end != '\0' || tail < 0) {
      return Fail("--tail takes a number of lines");
    }
  }
  auto status = ContainerStatus(client, parsed->positional[0], false);
  if (!status.ok()) {
    return Fail(status.error());
  }
  if (status->status().log_path().empty()) {
    return Fail("container " + parsed->positional[0] + " has no log path");
  }
  if (auto printed = PrintLog(status->status().log_path(), tail); !printed.ok()) {
    return Fail(printed.error());
  }
  return 0;
}

int Exec(CriClient& client, const std::vector<std::string>& args) {
  // Options come before the container id; everything after the id is the command, flags included.
  int64_t timeout = 0;
  size_t i = 0;
  for (; i < args.size() && args[i].rfind("-", 0) == 0; ++i) {
    if ((args[i] == "--timeout" || args[i] == "-t") && i + 1 < args.size()) {
      char* end = nullptr;
      timeout = std::strtoll(args[i + 1].c_str(), &end, 10);
      if (*end != '\0' || timeout < 0) {
        return Fail("--timeout takes a number of seconds, got '" + args[i + 1] + "'");
      }
      ++i;
    } else if (args[i] == "--sync" || args[i] == "-s") {
      continue;  // exec is always synchronous (ExecSync)
    } else {
      return Fail("unknown option '" + args[i] + "'");
    }
  }
  if (args.size() < i + 2) {
    return Fail("exec takes a container id and a command (see chrysctl exec --help)");
  }
  v1::ExecSyncRequest req;
  req.set_container_id(args[i]);
  for (size_t j = i + 1; j < args.size(); ++j) {
    req.add_cmd(args[j]);
  }
  req.set_timeout(timeout);
  v1::ExecSyncResponse resp;
  auto deadline = timeout > 0 ? std::chrono::seconds(timeout + 30) : std::chrono::hours(24);
  auto status = client.runtime().ExecSync(CriClient::Context(deadline).get(), req, &resp);
  if (!status.ok()) {
    return Fail(CriClient::CallError("ExecSync", status));
  }
  std::cout << resp.stdout() << std::flush;
  std::cerr << resp.stderr() << std::flush;
  return resp.exit_code();
}

// The verbose status JSON with its "info" strings (JSON themselves) parsed, so the output is one JSON document.
std::string InspectJson(const google::protobuf::Message& message) {
  auto out = nlohmann::json::parse(ToJson(message), nullptr, false);
  if (out.is_object() && out.contains("info") && out["info"].is_object()) {
    for (auto& [key, value] : out["info"].items()) {
      if (value.is_string()) {
        auto parsed = nlohmann::json::parse(value.get<std::string>(), nullptr, false);
        if (!parsed.is_discarded()) {
          value = parsed;
        }
      }
    }
  }
  return out.dump(2);
}

// inspect takes a container id or a pod id: the container is tried first, as crictl inspect does.
int Inspect(CriClient& client, const std::vector<std::string>& args) {
  if (args.size() != 1) {
    return Fail("inspect takes one container or pod id");
  }
  auto status = ContainerStatus(client, args[0], true);
  if (status.ok()) {
    std::cout << InspectJson(*status) << "\n";
    return 0;
  }
  if (status.error().code() != base::ErrorCode::kNotFound) {
    return Fail(status.error());
  }
  auto pod = VerbosePodStatus(client, args[0]);
  if (!pod.ok()) {
    return Fail(status.error().message() + " (and no pod sandbox has that id either)");
  }
  std::cout << InspectJson(*pod) << "\n";
  return 0;
}

int InspectP(CriClient& client, const std::vector<std::string>& args) {
  if (args.size() != 1) {
    return Fail("inspectp takes one pod id");
  }
  auto pod = VerbosePodStatus(client, args[0]);
  if (!pod.ok()) {
    return Fail(pod.error());
  }
  std::cout << InspectJson(*pod) << "\n";
  return 0;
}

// run: image (found or pulled) → pod → container → started → exited → its log printed → everything removed.
// The exit code is the container's; a failing step undoes the earlier ones and exits 1.
int Run(CriClient& client, const std::vector<std::string>& args) {
  auto parsed = Parse(args, {"--runtime", "--timeout"}, {"--no-pull", "--keep"});
  if (!parsed.ok()) {
    return Fail(parsed.error());
  }
  if (parsed->positional.size() != 2) {
    return Fail("run takes CONTAINER_CONFIG POD_CONFIG (see chrysctl run --help)");
  }
  auto& options = parsed->options;
  int64_t timeout = 300;
  if (options.count("--timeout")) {
    char* end = nullptr;
    timeout = std::strtoll(options["--timeout"].c_str(), &end, 10);
    if (*end != '\0' || timeout <= 0) {
      return Fail("--timeout takes a positive number of seconds");
    }
  }
  std::string handler = options.count("--runtime") ? options["--runtime"] : "";
  bool keep = options.count("--keep") > 0;
  v1::ContainerConfig config;
  v1::PodSandboxConfig pod_config;
  if (auto loaded = LoadConfig(parsed->positional[0], &config); !loaded.ok()) {
    return Fail(loaded.error());
  }
  if (auto loaded = LoadConfig(parsed->positional[1], &pod_config); !loaded.ok()) {
    return Fail(loaded.error());
  }
  // The output is read back from the CRI log, so there must be one: a private directory unless the config has it.
  std::string own_log_dir;
  if (pod_config.log_directory().empty()) {
    char tmpl[] = "/tmp/chrysctl-run-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      return Fail(base::SystemError("mkdtemp /tmp/chrysctl-run-XXXXXX"));
    }
    own_log_dir = tmpl;
    pod_config.set_log_directory(own_log_dir);
  }
  if (config.log_path().empty()) {
    config.set_log_path(config.metadata().name() + ".log");
  }
  if (pod_config.metadata().uid().empty()) {
    auto now = std::chrono::system_clock::now().time_since_epoch().count();
    pod_config.mutable_metadata()->set_uid("chrysctl-run-" + std::to_string(now));
  }

  std::string pod_id;
  std::string container_id;
  auto cleanup = [&]() {
    if (keep) {
      return;
    }
    if (!container_id.empty()) {
      if (auto s = RemoveContainer(client, container_id); !s.ok()) {
        std::cerr << "chrysctl: cleanup: " << s.error().message() << "\n";
      }
    }
    if (!pod_id.empty()) {
      if (auto s = StopPod(client, pod_id); !s.ok()) {
        std::cerr << "chrysctl: cleanup: " << s.error().message() << "\n";
      }
      if (auto s = RemovePod(client, pod_id); !s.ok()) {
        std::cerr << "chrysctl: cleanup: " << s.error().message() << "\n";
      }
    }
    if (!own_log_dir.empty()) {
      std::string log = own_log_dir + "/" + config.log_path();
      std::remove(log.c_str());
      ::rmdir(own_log_dir.c_str());
    }
  };
  auto fail = [&](const base::Error& error) {
    cleanup();
    return Fail(error);
  };

  if (auto image = EnsureImage(client, config.image().image(), !options.count("--no-pull")); !image.ok()) {
    return fail(image.error());
  }
  auto started_at = Clock::now();
  auto pod = RunPod(client, pod_config, handler);
  if (!pod.ok()) {
    return fail(pod.error());
  }
  pod_id = *pod;
  std::cerr << "pod " << ShortId(pod_id) << " ready in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_at).count() << " ms\n";
  auto container = CreateContainer(client, pod_id, config, pod_config);
  if (!container.ok()) {
    return fail(container.error());
  }
  container_id = *container;
  if (auto s = StartContainer(client, container_id); !s.ok()) {
    return fail(s.error());
  }
  auto deadline = Clock::now() + std::chrono::seconds(timeout);
  v1::ContainerStatus last;
  while (true) {
    auto st = ContainerStatus(client, container_id, false);
    if (!st.ok()) {
      return fail(st.error());
    }
    last = st->status();
    if (last.state() == v1::CONTAINER_EXITED) {
      break;
    }
    if (Clock::now() > deadline) {
      return fail(base::DeadlineExceeded("container " + ShortId(container_id) + " still " +
                                         ContainerStateName(last.state()) + " after " + std::to_string(timeout) +
                                         " s (--timeout)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (auto printed = PrintLog(last.log_path(), -1); !printed.ok()) {
    return fail(printed.error());
  }
  std::cerr << "container " << ShortId(container_id) << " exited with code " << last.exit_code()
            << (last.reason().empty() ? "" : " (" + last.reason() + ")") << "\n";
  if (keep) {
    std::cerr << "kept: pod " << pod_id << ", container " << container_id << "\n";
  }
  cleanup();
  return last.exit_code() > 255 ? 255 : last.exit_code();
}

}  // namespace

void AddPodCommands(CommandTable& table) {
  table["runp"] = {"run a pod sandbox from a config file (as crictl runp)",
                   "Usage: chrysctl runp [--runtime HANDLER] POD_CONFIG\n\n"
                   "Runs a pod sandbox from a PodSandboxConfig in protobuf JSON or YAML (crictl's format) and\n"
                   "prints its id. Creates the config's log_directory first, as kubelet does.\n",
                   RunP};
  table["create"] = {"create a container in a pod (as crictl create)",
                     "Usage: chrysctl create [--no-pull] POD_ID CONTAINER_CONFIG POD_CONFIG\n\n"
                     "Creates a container from a ContainerConfig (JSON or YAML) in the pod; pulls the image when\n"
                     "it is not in the store unless --no-pull. Prints the container id.\n",
                     Create};
  table["start"] = {"start created containers", "Usage: chrysctl start CONTAINER_ID...\n", Start};
  table["stop"] = {"stop running containers",
                   "Usage: chrysctl stop [--timeout SECONDS] CONTAINER_ID...\n\n"
                   "Sends the stop signal, then SIGKILL after the timeout (default 10).\n",
                   Stop};
  table["rm"] = {"remove containers", "Usage: chrysctl rm [--force] CONTAINER_ID...\n\n--force stops them first.\n",
                 Rm};
  table["stopp"] = {"stop pod sandboxes", "Usage: chrysctl stopp POD_ID...\n", StopP};
  table["rmp"] = {"remove pod sandboxes", "Usage: chrysctl rmp [--force] POD_ID...\n\n--force stops them first.\n",
                  RmP};
  table["pods"] = {"list pod sandboxes",
                   "Usage: chrysctl pods [--id ID] [--name SUBSTR] [--namespace NS] [--state ready|notready]\n"
                   "                     [--label KEY=VALUE] [-q]\n",
                   Pods};
  table["containers"] = {
      "list containers (as crictl ps)",
      "Usage: chrysctl containers [-a] [--pod POD_ID] [--id ID] [--name SUBSTR]\n"
      "                           [--state created|running|exited|unknown] [--label KEY=VALUE] [-q]\n\n"
      "Only running containers unless -a (--all) or --state. -q (--quiet) prints only ids.\n"
      "(chrysctl ps lists the pod VMs.)\n",
      Containers};
  table["logs"] = {"print a container's log",
                   "Usage: chrysctl logs [--tail N] CONTAINER_ID\n\n"
                   "Prints the text of the container's CRI log: stdout lines to stdout, stderr lines to stderr.\n",
                   Logs};
  table["exec"] = {"run a command in a running container (ExecSync)",
                   "Usage: chrysctl exec [--timeout SECONDS] CONTAINER_ID COMMAND [ARG...]\n\n"
                   "Prints the command's stdout and stderr and exits with its exit code.\n",
                   Exec};
  table["inspect"] = {"a container's or pod's verbose status as JSON",
                      "Usage: chrysctl inspect CONTAINER_ID|POD_ID\n\n"
                      "Prints the verbose ContainerStatus (or, for a pod id, PodSandboxStatus) as one JSON document;\n"
                      "a pod's info.info.vm has the VM: VMM kind, pid, vCPUs, memory, console socket, command line.\n",
                      Inspect};
  table["inspectp"] = {"a pod sandbox's verbose status as JSON", "Usage: chrysctl inspectp POD_ID\n", InspectP};
  table["run"] = {"run a container in a new pod, print its output, remove both",
                  "Usage: chrysctl run [--runtime HANDLER] [--timeout SECONDS] [--no-pull] [--keep]\n"
                  "                    CONTAINER_CONFIG POD_CONFIG\n\n"
                  "Finds (or pulls) the image, runs the pod, creates and starts the container, waits for it to\n"
                  "exit (default at most 300 s), prints its log, then removes the container and the pod unless\n"
                  "--keep. Exits with the container's exit code. Without a log_directory in the pod config the\n"
                  "log goes to a private directory under /tmp, removed afterwards.\n",
                  Run};
}

base::Result<v1::PodSandboxStatusResponse> VerbosePodStatus(CriClient& client, const std::string& id) {
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(id);
  req.set_verbose(true);
  v1::PodSandboxStatusResponse resp;
  auto status = client.runtime().PodSandboxStatus(CriClient::Context().get(), req, &resp);
  if (!status.ok()) {
    return CriClient::CallError("PodSandboxStatus", status);
  }
  return resp;
}

}  // namespace chrys::cri::ctl
