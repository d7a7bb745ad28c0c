#include "runtime/grpc_agent_connector.h"

#include <sys/random.h>

#include <chrono>

namespace chrys::runtime {

using base::Result;
using base::Status;
using std::chrono::milliseconds;

agent::AgentEndpoint ToAgentEndpoint(const AgentEndpoint& endpoint) {
  switch (endpoint.kind) {
    case AgentChannelKind::kVhostVsock:
      return agent::AgentEndpoint::Vsock(endpoint.vsock_cid, endpoint.vsock_port);
    case AgentChannelKind::kHybridVsock:
      return agent::AgentEndpoint::HybridVsock(endpoint.socket_path, endpoint.vsock_port);
    case AgentChannelKind::kVirtioSerial:
      break;
  }
  return agent::AgentEndpoint::VirtioSerial(endpoint.socket_path);
}

Result<bool> GrpcAgentConnector::Probe(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                       milliseconds patience) {
  std::shared_ptr<agent::AgentClient> client;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = clients_.find(sandbox_id);
    if (it != clients_.end() && it->second->Healthy()) {
      client = it->second;
    }
  }
  if (!client) {
    auto connected = agent::AgentClient::Connect(ToAgentEndpoint(endpoint), options_);
    if (!connected.ok()) {
      return false;  // nothing listens yet: the VM is still booting
    }
    client = std::shared_ptr<agent::AgentClient>(std::move(connected).value());
  }
  // On virtio-serial a Ping sent while the guest boots waits in the channel and is answered the moment the agent
  // is up (why the caller's patience matters: see SandboxManager::Create).
  auto pong = client->Ping(patience);
  if (!pong.ok() || !pong->ready()) {
    std::lock_guard<std::mutex> lock(mu_);
    clients_.erase(sandbox_id);
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  clients_[sandbox_id] = client;
  return true;
}

Status GrpcAgentConnector::Shutdown(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                    milliseconds timeout) {
  std::shared_ptr<agent::AgentClient> client = Client(sandbox_id);
  if (!client) {
    auto connected = agent::AgentClient::Connect(ToAgentEndpoint(endpoint), options_);
    if (!connected.ok()) {
      return connected.error();
    }
    client = std::shared_ptr<agent::AgentClient>(std::move(connected).value());
  }
  // No grace for the containers: a pod's stop terminates them forcibly (CRI), after kubelet's StopContainer calls.
  return client->Shutdown(std::chrono::milliseconds(0), timeout);
}

Status GrpcAgentConnector::OnlineResources(const std::string& sandbox_id, const AgentEndpoint& endpoint, int vcpus,
                                           int added_memory_mib, milliseconds timeout) {
  CHRYS_ASSIGN_OR_RETURN(std::shared_ptr<agent::AgentClient> client, Get(sandbox_id, endpoint, timeout));
  auto online = client->OnlineResources(vcpus, added_memory_mib, timeout);
  if (!online.ok()) {
    return online.error();
  }
  return Status::Ok();
}

Result<bool> GrpcAgentConnector::Settled(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                         milliseconds patience) {
  CHRYS_ASSIGN_OR_RETURN(std::shared_ptr<agent::AgentClient> client, Get(sandbox_id, endpoint, patience));
  CHRYS_ASSIGN_OR_RETURN(agent::v1::PingResponse pong, client->Ping(patience));
  return pong.ready() && pong.settled();
}

Status GrpcAgentConnector::Resume(const std::string& sandbox_id, const AgentEndpoint& endpoint, milliseconds timeout) {
  CHRYS_ASSIGN_OR_RETURN(std::shared_ptr<agent::AgentClient> client, Get(sandbox_id, endpoint, timeout));
  std::string entropy(64, '\0');
  if (::getrandom(entropy.data(), entropy.size(), 0) != static_cast<ssize_t>(entropy.size())) {
    return base::SystemError("drawing entropy for the guest of " + sandbox_id);
  }
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto resumed = client->Resume(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count(), entropy);
  if (!resumed.ok()) {
    return resumed.error();
  }
  return Status::Ok();
}

Status GrpcAgentConnector::PrepareTemplate(const std::string& sandbox_id, const AgentEndpoint& endpoint,
                                           milliseconds timeout) {
  CHRYS_ASSIGN_OR_RETURN(std::shared_ptr<agent::AgentClient> client, Get(sandbox_id, endpoint, timeout));
  auto zeroed = client->PrepareTemplate(timeout);
  if (!zeroed.ok()) {
    return zeroed.error();
  }
  return Status::Ok();
}

void GrpcAgentConnector::Forget(const std::string& sandbox_id) {
  std::lock_guard<std::mutex> lock(mu_);
  clients_.erase(sandbox_id);
}

void GrpcAgentConnector::Rename(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mu_);
  auto node = clients_.extract(from);
  if (!node.empty()) {
    node.key() = to;
    clients_.insert(std::move(node));
  }
}

std::shared_ptr<agent::AgentClient> GrpcAgentConnector::Client(const std::string& sandbox_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = clients_.find(sandbox_id);
  return it == clients_.end() ? nullptr : it->second;
}

Result<std::shared_ptr<agent::AgentClient>> GrpcAgentConnector::Get(const std::string& sandbox_id,
                                                                    const AgentEndpoint& endpoint,
                                                                    milliseconds timeout) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = clients_.find(sandbox_id);
    if (it != clients_.end() && it->second->Healthy()) {
      return it->second;
    }
  }
  auto connected = agent::AgentClient::ConnectWhenReady(ToAgentEndpoint(endpoint), timeout, options_);
  if (!connected.ok()) {
    return connected.error().Wrap("agent of sandbox " + sandbox_id);
  }
  std::shared_ptr<agent::AgentClient> client(std::move(connected).value());
  std::lock_guard<std::mutex> lock(mu_);
  clients_[sandbox_id] = client;
  return client;
}

}  // namespace chrys::runtime
