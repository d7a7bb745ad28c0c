// The gRPC server options of chrysd's CRI socket, in one place for chrysd and for the benchmark peer that must
// serve exactly as chrysd does (e2e/bench/grpc_floor.cpp).
#pragma once

#include <grpcpp/server_builder.h>

namespace chrys::cri {

// CRI messages (ListContainers with many entries, large ExecSync output) exceed gRPC's 4 MiB default.
inline constexpr int kCriMaxMessageBytes = 16 * 1024 * 1024;

inline void ApplyCriServerOptions(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(kCriMaxMessageBytes);
  builder.SetMaxSendMessageSize(kCriMaxMessageBytes);
  // No bandwidth-delay probing: on a local socket it only adds a PING and its ACK to each call that carries a
  // request message (two more wakeups per RPC), and CRI requests are small. Measured with ContainerStatus in a
  // loop: p99 0.29-0.43 ms without it, 0.43-2.06 ms with it.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
}

}  // namespace chrys::cri
