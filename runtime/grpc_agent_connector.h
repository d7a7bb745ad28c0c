// GrpcAgentConnector: the sandbox layer's link to chrys-agent through runtime/agent's AgentClient (readiness by
// Ping, shutdown by the agent's Shutdown call), keeping one client per sandbox for the CRI layer to use.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/agent/agent_client.h"
#include "runtime/sandbox.h"

namespace chrys::runtime {

// The agent client's endpoint for a VMM's agent channel.
agent::AgentEndpoint ToAgentEndpoint(const AgentEndpoint& endpoint);

class GrpcAgentConnector : public AgentConnector {
 public:
  explicit GrpcAgentConnector(agent::AgentClientOptions options = {}) : options_(options) {}

  base::Result<bool> Probe(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                           std::chrono::milliseconds patience) override;
  base::Status Shutdown(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                        std::chrono::milliseconds timeout) override;
  void Forget(const std::string& sandbox_id) override;
  void Rename(const std::string& from, const std::string& to) override;
  base::Result<bool> Settled(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                             std::chrono::milliseconds patience) override;
  base::Status Resume(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                      std::chrono::milliseconds timeout) override;
  base::Status PrepareTemplate(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                               std::chrono::milliseconds timeout) override;
  base::Status OnlineResources(const std::string& sandbox_id, const AgentEndpoint& endpoint, int vcpus,
                               int added_memory_mib, std::chrono::milliseconds timeout) override;

  // The connected client of a ready sandbox (owned by the connector; valid until Forget).
  std::shared_ptr<agent::AgentClient> Client(const std::string& sandbox_id);
  // The sandbox's client, dialling again (bounded by `timeout`) when there is none or the old connection broke,
  // e.g. after chrysd restarted and adopted the VM.
  base::Result<std::shared_ptr<agent::AgentClient>> Get(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                                        std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  agent::AgentClientOptions options_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<agent::AgentClient>> clients_;
};

}  // namespace chrys::runtime
