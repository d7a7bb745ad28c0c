// Host channel of chrys-agent: feeds connections from vsock or the virtio-serial port into the gRPC server.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "base/result.h"

namespace chrys::guest {

// Finds /dev/vportNpM whose sysfs name is `port_name`, waiting at most `timeout` for it to appear.
base::Result<std::string> FindVirtioPort(const std::string& port_name, std::chrono::milliseconds timeout);

// Whether a virtio vsock device is bound (so AF_VSOCK can reach the host).
bool HasVirtioVsock();

// Accepts AF_VSOCK connections on `port` forever and bridges each to a new connection to the agent's own
// gRPC unix socket `local_socket` (runs threads).
base::Status ServeVsock(const std::string& local_socket, uint32_t port);

// Serves the virtio-serial port at `device` (runs a thread). The port is one byte stream shared by
// successive host connections, so each host session is bridged to a new connection to `local_socket`:
// when the host side goes away (POLLHUP) that connection is closed and the next host gets a fresh one.
base::Status ServeVirtioSerial(const std::string& local_socket, const std::string& device);

}  // namespace chrys::guest
