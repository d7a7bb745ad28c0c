// Host channel of chrys-agent: feeds connections from vsock or the virtio-serial port into the gRPC server.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "base/result.h"

namespace grpc {
class Server;
}

namespace chrys::guest {

// Finds /dev/vportNpM whose sysfs name is `port_name`, waiting at most `timeout` for it to appear.
base::Result<std::string> FindVirtioPort(const std::string& port_name, std::chrono::milliseconds timeout);

// Whether a virtio vsock device is bound (so AF_VSOCK can reach the host).
bool HasVirtioVsock();

// Accepts AF_VSOCK connections on `port` forever, each one a new gRPC connection (runs a thread).
base::Status ServeVsock(grpc::Server* server, uint32_t port);

// Serves the virtio-serial port at `device` (runs a thread). The port is one byte stream shared by
// successive host connections, so it is bridged to a socketpair per host session: when the host side
// goes away (POLLHUP) that gRPC connection is dropped and the next host connection gets a fresh one.
base::Status ServeVirtioSerial(grpc::Server* server, const std::string& device);

}  // namespace chrys::guest
