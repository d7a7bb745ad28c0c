#include "cri/streaming/remote_command.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

namespace chrys::cri::streaming {

std::string ExitStatusJson(int exit_code) {
  nlohmann::json status = {{"kind", "Status"}, {"apiVersion", "v1"}, {"metadata", nlohmann::json::object()}};
  if (exit_code == 0) {
    status["status"] = "Success";
    return status.dump();
  }
  status["status"] = "Failure";
  status["message"] = "command terminated with non-zero exit code: exit status " + std::to_string(exit_code);
  status["reason"] = "NonZeroExitCode";
  status["details"] = {{"causes", {{{"reason", "ExitCode"}, {"message", std::to_string(exit_code)}}}}};
  return status.dump();
}

std::string FailureStatusJson(std::string_view message) {
  nlohmann::json status = {{"kind", "Status"},
                           {"apiVersion", "v1"},
                           {"metadata", nlohmann::json::object()},
                           {"status", "Failure"},
                           {"message", std::string(message)},
                           {"reason", "InternalError"}};
  return status.dump();
}

base::Result<std::pair<uint16_t, uint16_t>> ParseResize(std::string_view json) {
  auto parsed = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    return base::InvalidArgument("resize message is not a JSON object");
  }
  auto field = [&](const char* name) -> base::Result<uint16_t> {
    auto it = parsed.find(name);
    if (it == parsed.end() || !it->is_number_unsigned() || it->get<uint64_t>() > 0xFFFF) {
      return base::InvalidArgument(std::string("resize message: ") + name + " must be 0..65535");
    }
    return static_cast<uint16_t>(it->get<uint64_t>());
  };
  CHRYS_ASSIGN_OR_RETURN(uint16_t width, field("Width"));
  CHRYS_ASSIGN_OR_RETURN(uint16_t height, field("Height"));
  return std::pair{width, height};
}

void RunRemoteCommand(StreamProcess& process, CommandChannels& channels, CommandProtocol protocol) {
  std::atomic<bool> client_gone{false};
  std::atomic<bool> output_done{false};
  std::thread input([&] {
    while (true) {
      ClientEvent event = channels.NextEvent();
      switch (event.kind) {
        case ClientEvent::kStdin:
          if (auto st = process.WriteStdin(event.data); !st.ok()) {
            spdlog::debug("stream: stdin write: {}", st.error().message());
          }
          break;
        case ClientEvent::kStdinClosed:
          process.CloseStdin().ok();
          break;
        case ClientEvent::kResize:
          if (event.width > 0 && event.height > 0) {
            if (auto st = process.Resize(event.width, event.height); !st.ok()) {
              spdlog::debug("stream: resize: {}", st.error().message());
            }
          }
          break;
        case ClientEvent::kGone:
          if (!output_done) {
            if (!event.error.empty()) {
              spdlog::info("stream: client ended the session early: {}", event.error);
            }
            client_gone = true;
            process.Abort();
          }
          return;
      }
    }
  });

  auto sink = [&](OutputStream stream, std::string_view data) {
    return channels.WriteOutput(stream, data).ok() && !client_gone;
  };
  base::Status pumped = process.PumpOutput(sink);
  if (!client_gone) {
    std::string status;
    if (!pumped.ok()) {
      status =
          protocol >= CommandProtocol::kV4 ? FailureStatusJson(pumped.error().message()) : pumped.error().message();
    } else if (auto exit = process.Wait(); !exit.ok()) {
      status = protocol >= CommandProtocol::kV4 ? FailureStatusJson(exit.error().message()) : exit.error().message();
    } else if (protocol >= CommandProtocol::kV4) {
      status = ExitStatusJson(exit->exit_code);
    } else if (exit->exit_code != 0) {
      status = "command terminated with non-zero exit code: exit status " + std::to_string(exit->exit_code);
    }
    if (!status.empty()) {
      channels.WriteError(status).ok();
    }
  } else {
    process.Abort();
  }
  output_done = true;
  channels.Finish();
  input.join();
}

}  // namespace chrys::cri::streaming
