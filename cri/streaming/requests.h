// Stream requests: what an Exec/Attach/PortForward RPC granted, kept behind a token until the client connects.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace chrys::cri::streaming {

struct ExecRequest {
  std::string container_id;
  std::string sandbox_id;
  std::vector<std::string> cmd;
  bool tty = false;
  bool stdin = false;
  bool stdout = true;
  bool stderr = true;
};

struct AttachRequest {
  std::string container_id;
  std::string sandbox_id;
  bool tty = false;
  bool stdin = false;
  bool stdout = true;
  bool stderr = true;
};

struct PortForwardRequest {
  std::string sandbox_id;
  std::vector<int32_t> ports;  // empty: the client names ports per stream
};

using StreamRequest = std::variant<ExecRequest, AttachRequest, PortForwardRequest>;

}  // namespace chrys::cri::streaming
