// AgentPool keeps one agent client per sandbox VM: readiness probes while booting, calls afterwards, reconnects.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/agent/agent_client.h"
#include "runtime/sandbox.h"

namespace chrys::cri {

class AgentPool final : public runtime::AgentConnector {
 public:
  base::Result<bool> Probe(const std::string& sandbox_id, const runtime::AgentEndpoint& endpoint) override;
  base::Status Shutdown(const std::string& sandbox_id, const runtime::AgentEndpoint& endpoint,
                        std::chrono::milliseconds timeout) override;
  void Forget(const std::string& sandbox_id) override;

  // The sandbox's client, reconnecting (bounded by `timeout`) when the old connection broke, e.g. after a restart.
  base::Result<std::shared_ptr<runtime::agent::AgentClient>> Get(
      const std::string& sandbox_id, const runtime::AgentEndpoint& endpoint,
      std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<runtime::agent::AgentClient>> clients_;
};

}  // namespace chrys::cri
