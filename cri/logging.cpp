#include "cri/logging.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <list>
#include <mutex>

#include "base/file_util.h"

namespace chrys::cri {
namespace {

using Clock = std::chrono::steady_clock;

struct InFlight {
  std::string method;
  Clock::time_point start;
};

// RPCs in flight, in start order; a list, so each interceptor's entry stays put until it erases it.
std::mutex in_flight_mutex;
std::list<InFlight> in_flight;

class RpcLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit RpcLogInterceptor(grpc::experimental::ServerRpcInfo* info) : method_(info->method()) {
    std::lock_guard lock(in_flight_mutex);
    entry_ = in_flight.insert(in_flight.end(), InFlight{method_, start_});
  }
  // gRPC deletes an RPC's interceptors when the RPC is done.
  ~RpcLogInterceptor() override {
    std::lock_guard lock(in_flight_mutex);
    in_flight.erase(entry_);
  }
  RpcLogInterceptor(const RpcLogInterceptor&) = delete;
  RpcLogInterceptor& operator=(const RpcLogInterceptor&) = delete;

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      auto micros = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start_).count();
      if (status.ok()) {
        spdlog::debug("rpc {} ok in {} us", method_, micros);
      } else if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED ||
                 status.error_code() == grpc::StatusCode::NOT_FOUND) {
        spdlog::debug("rpc {} code {} in {} us: {}", method_, static_cast<int>(status.error_code()), micros,
                      status.error_message());
      } else {
        spdlog::warn("rpc {} code {} in {} us: {}", method_, static_cast<int>(status.error_code()), micros,
                     status.error_message());
      }
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  Clock::time_point start_ = Clock::now();
  std::list<InFlight>::iterator entry_;
};

}  // namespace

std::vector<std::string> InFlightRpcs() {
  auto now = Clock::now();
  std::vector<std::string> out;
  std::lock_guard lock(in_flight_mutex);
  out.reserve(in_flight.size());
  for (const InFlight& rpc : in_flight) {
    out.push_back(rpc.method + " (" +
                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - rpc.start).count()) +
                  " ms)");
  }
  return out;
}

grpc::experimental::Interceptor* RpcLogInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RpcLogInterceptor(info);  // gRPC owns and deletes it
}

base::Status SetUpLogging(const LogConfig& config) {
  std::shared_ptr<spdlog::logger> logger;
  if (config.file.empty()) {
    logger = std::make_shared<spdlog::logger>("chrysd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  } else {
    std::string dir = std::filesystem::path(config.file).parent_path().string();
    CHRYS_RETURN_IF_ERROR(base::MakeDirs(dir, 0755));
    try {
      auto sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          config.file, static_cast<size_t>(config.max_size_mib) * 1024 * 1024, static_cast<size_t>(config.max_files));
      logger = std::make_shared<spdlog::logger>("chrysd", sink);
    } catch (const spdlog::spdlog_ex& e) {
      return base::Internal("open log file " + config.file + ": " + e.what());
    }
  }
  logger->set_level(spdlog::level::from_str(config.level));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%f%z %^%l%$ %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return base::Status::Ok();
}

}  // namespace chrys::cri
