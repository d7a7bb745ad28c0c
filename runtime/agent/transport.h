// Agent channel transports: how the host reaches chrys-agent's byte stream (virtio-serial, vsock, hybrid vsock).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace chrys::runtime::agent {

// The vsock port chrys-agent listens on (AF_VSOCK and Cloud Hypervisor hybrid vsock).
inline constexpr uint32_t kAgentVsockPort = 1024;
// The virtio-serial port name the VMM must give the agent channel (-device virtserialport,name=...).
inline constexpr const char* kAgentSerialPortName = "chrys.agent";

// Where the agent of one VM is reached.
struct AgentEndpoint {
  enum class Kind {
    kVirtioSerial,  // QEMU: unix socket of a `-chardev socket,server=on` behind a virtserialport
    kVsock,         // AF_VSOCK to (cid, port), vhost-vsock on QEMU
    kHybridVsock,   // Cloud Hypervisor: unix socket, then "CONNECT <port>\n" / "OK <n>\n"
  };
  Kind kind = Kind::kVirtioSerial;
  std::string socket_path;  // kVirtioSerial, kHybridVsock
  uint32_t cid = 0;         // kVsock
  uint32_t port = kAgentVsockPort;

  static AgentEndpoint VirtioSerial(std::string socket_path);
  static AgentEndpoint Vsock(uint32_t cid, uint32_t port = kAgentVsockPort);
  static AgentEndpoint HybridVsock(std::string socket_path, uint32_t port = kAgentVsockPort);

  // "virtio-serial:/run/...sock", "vsock:3:1024", "hybrid-vsock:/run/...sock:1024", for messages.
  std::string Describe() const;
};

// Opens one connected stream socket to the agent. Fails with kUnavailable when nothing listens (yet), so
// callers can retry while the VM boots; never waits longer than `timeout`.
base::Result<base::UniqueFd> ConnectTransport(const AgentEndpoint& endpoint, std::chrono::milliseconds timeout);

}  // namespace chrys::runtime::agent
