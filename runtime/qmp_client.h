// QmpClient: a small client of QEMU's QMP protocol over a unix socket (one command at a time, bounded reads).
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace chrys::runtime {

class QmpClient {
 public:
  QmpClient() = default;
  QmpClient(QmpClient&&) = default;
  QmpClient& operator=(QmpClient&&) = default;

  // Connects (retrying while the socket does not exist yet or refuses), reads the greeting and negotiates
  // capabilities, all within `timeout`.
  static base::Result<QmpClient> Connect(const std::string& socket_path, std::chrono::milliseconds timeout);

  bool connected() const { return fd_.valid(); }

  // Runs one command and returns its "return" value. A QMP error reply becomes an Error quoting its class and
  // description; anything that is not QMP (garbage, oversize, EOF) is an Error and drops the connection.
  base::Result<nlohmann::json> Execute(const std::string& command, const nlohmann::json& arguments,
                                       std::chrono::milliseconds timeout);
  // Execute with `fd` attached to the command (SCM_RIGHTS), as QMP's getfd and add-fd expect; QEMU keeps its
  // own copy.
  base::Result<nlohmann::json> ExecuteWithFd(const std::string& command, const nlohmann::json& arguments, int fd,
                                             std::chrono::milliseconds timeout);

  // Waits for an event named `name` whose data satisfies `match` (events seen earlier are kept and searched).
  base::Result<nlohmann::json> WaitEvent(const std::string& name,
                                         const std::function<bool(const nlohmann::json&)>& match,
                                         std::chrono::milliseconds timeout);

  // Events seen so far and not consumed by WaitEvent.
  size_t pending_events() const { return events_.size(); }

  static constexpr size_t kMaxMessageBytes = 1 << 20;

 private:
  using Clock = std::chrono::steady_clock;
  base::Result<nlohmann::json> ReadMessage(Clock::time_point deadline);
  // Writes `data`; `pass_fd` >= 0 rides along with its first byte.
  base::Status WriteAll(const std::string& data, Clock::time_point deadline, int pass_fd = -1);
  void Drop() { fd_.Reset(); }

  base::UniqueFd fd_;
  std::string buffer_;
  std::deque<nlohmann::json> events_;
  uint64_t next_id_ = 1;
  std::string socket_path_;
};

}  // namespace chrys::runtime
