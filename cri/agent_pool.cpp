#include "cri/agent_pool.h"

namespace chrys::cri {

using runtime::agent::AgentClient;

namespace {

// The VMM layer describes the channel with its own endpoint type; the client library with another.
runtime::agent::AgentEndpoint ToClientEndpoint(const runtime::AgentEndpoint& endpoint) {
  switch (endpoint.kind) {
    case runtime::AgentChannelKind::kVhostVsock:
      return runtime::agent::AgentEndpoint::Vsock(endpoint.vsock_cid, endpoint.vsock_port);
    case runtime::AgentChannelKind::kHybridVsock:
      return runtime::agent::AgentEndpoint::HybridVsock(endpoint.socket_path, endpoint.vsock_port);
    case runtime::AgentChannelKind::kVirtioSerial:
      break;
  }
  return runtime::agent::AgentEndpoint::VirtioSerial(endpoint.socket_path);
}

}  // namespace

base::Result<bool> AgentPool::Probe(const std::string& sandbox_id, const runtime::AgentEndpoint& endpoint) {
  std::shared_ptr<AgentClient> client;
  {
    std::lock_guard lock(mutex_);
    auto it = clients_.find(sandbox_id);
    if (it != clients_.end() && it->second->Healthy()) {
      client = it->second;
    }
  }
  if (!client) {
    auto connected = AgentClient::Connect(ToClientEndpoint(endpoint));
    if (!connected.ok()) {
      return false;  // the VMM's socket is not there yet: still booting
    }
    client = std::shared_ptr<AgentClient>(std::move(connected).value());
  }
  auto pong = client->Ping(std::chrono::milliseconds(500));
  if (!pong.ok()) {
    return false;
  }
  std::lock_guard lock(mutex_);
  clients_[sandbox_id] = client;
  return true;
}

base::Status AgentPool::Shutdown(const std::string& sandbox_id, const runtime::AgentEndpoint& endpoint,
                                 std::chrono::milliseconds timeout) {
  auto client = Get(sandbox_id, endpoint, std::min(timeout, std::chrono::milliseconds(2000)));
  if (!client.ok()) {
    return client.error();
  }
  return (*client)->Shutdown(timeout);
}

void AgentPool::Forget(const std::string& sandbox_id) {
  std::lock_guard lock(mutex_);
  clients_.erase(sandbox_id);
}

base::Result<std::shared_ptr<AgentClient>> AgentPool::Get(const std::string& sandbox_id,
                                                          const runtime::AgentEndpoint& endpoint,
                                                          std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(mutex_);
    auto it = clients_.find(sandbox_id);
    if (it != clients_.end() && it->second->Healthy()) {
      return it->second;
    }
  }
  auto connected = AgentClient::ConnectWhenReady(ToClientEndpoint(endpoint), timeout);
  if (!connected.ok()) {
    return connected.error().Wrap("agent of sandbox " + sandbox_id);
  }
  std::shared_ptr<AgentClient> client(std::move(connected).value());
  std::lock_guard lock(mutex_);
  clients_[sandbox_id] = client;
  return client;
}

}  // namespace chrys::cri
