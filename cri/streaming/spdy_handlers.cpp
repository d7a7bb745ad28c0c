#include "cri/streaming/spdy_handlers.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "cri/streaming/port_forward.h"

namespace chrys::cri::streaming {

namespace {

using Clock = std::chrono::steady_clock;

struct CommandStreams {
  uint32_t error = 0;
  uint32_t stdin = 0;
  uint32_t stdout = 0;
  uint32_t stderr = 0;
  uint32_t resize = 0;
};

// Remote-command channels over SPDY streams. NextEvent reads the connection (one reader at a time).
class SpdyCommandChannels : public CommandChannels {
 public:
  SpdyCommandChannels(Connection& connection, SpdySession& session, CommandStreams streams, std::deque<SpdyEvent> early)
      : connection_(connection), session_(session), streams_(streams), pending_(std::move(early)) {}

  base::Status WriteOutput(OutputStream stream, std::string_view data) override {
    uint32_t id = stream == OutputStream::kStdout ? streams_.stdout : streams_.stderr;
    if (id == 0) {
      return base::Status::Ok();  // the client did not ask for this stream
    }
    return session_.Send(id, data);
  }
  base::Status WriteError(std::string_view data) override { return session_.Send(streams_.error, data); }

  ClientEvent NextEvent() override {
    while (true) {
      if (!resizes_.empty()) {
        ClientEvent event = std::move(resizes_.front());
        resizes_.pop_front();
        return event;
      }
      SpdyEvent ev;
      if (!pending_.empty()) {
        ev = std::move(pending_.front());
        pending_.pop_front();
      } else {
        ev = session_.Next();
      }
      switch (ev.kind) {
        case SpdyEvent::kData:
          if (ev.stream_id == streams_.stdin && streams_.stdin != 0) {
            ClientEvent event = ClientEvent::Make(ClientEvent::kStdin);
            event.data = std::move(ev.data);
            return event;
          }
          if (ev.stream_id == streams_.resize && streams_.resize != 0) {
            if (auto st = TakeResizes(ev.data); !st.ok()) {
              session_.GoAway(spdy::kGoAwayProtocolError);
              return Gone(st.error().message());
            }
          }
          continue;  // data on a stream the server only writes: ignored, as kubelet does
        case SpdyEvent::kStreamEnd:
          if (ev.stream_id == streams_.stdin && streams_.stdin != 0) {
            return ClientEvent::Make(ClientEvent::kStdinClosed);
          }
          continue;
        case SpdyEvent::kNewStream:
          session_.Reset(ev.stream_id, spdy::kRstRefusedStream);  // every stream this session needs is open
          continue;
        case SpdyEvent::kTimeout:
          continue;
        case SpdyEvent::kGone:
          return Gone(ev.error);
      }
    }
  }

  void Finish() override {
    for (uint32_t id : {streams_.stdout, streams_.stderr, streams_.error, streams_.stdin, streams_.resize}) {
      if (id != 0) {
        session_.CloseStream(id);
      }
    }
    std::unique_lock lock(mu_);
    // Give the client a moment to close the connection itself, so the last data is not lost to a reset.
    if (!cv_.wait_for(lock, std::chrono::seconds(2), [&] { return reader_done_; })) {
      lock.unlock();
      session_.GoAway(spdy::kGoAwayOk);
      connection_.Shutdown();
    }
  }

 private:
  // Resize messages are JSON objects, one after another (newline-separated as Go's encoder writes them).
  base::Status TakeResizes(std::string_view data) {
    resize_buffer_.append(data);
    if (resize_buffer_.size() > 4096) {
      return base::InvalidArgument("resize stream: message longer than 4 KiB");
    }
    while (!resize_buffer_.empty()) {
      size_t end = resize_buffer_.find('\n');
      std::string message = end == std::string::npos ? resize_buffer_ : resize_buffer_.substr(0, end);
      if (end == std::string::npos && !nlohmann::json::accept(message)) {
        return base::Status::Ok();  // incomplete: wait for more
      }
      resize_buffer_.erase(0, end == std::string::npos ? std::string::npos : end + 1);
      if (message.find_first_not_of(" \t\r") == std::string::npos) {
        continue;
      }
      CHRYS_ASSIGN_OR_RETURN(auto size, ParseResize(message));
      ClientEvent event = ClientEvent::Make(ClientEvent::kResize);
      event.width = size.first;
      event.height = size.second;
      resizes_.push_back(std::move(event));
    }
    return base::Status::Ok();
  }

  ClientEvent Gone(std::string error) {
    {
      std::lock_guard lock(mu_);
      reader_done_ = true;
    }
    cv_.notify_all();
    ClientEvent event = ClientEvent::Make(ClientEvent::kGone);
    event.error = std::move(error);
    return event;
  }

  Connection& connection_;
  SpdySession& session_;
  const CommandStreams streams_;
  std::deque<SpdyEvent> pending_;
  std::deque<ClientEvent> resizes_;
  std::string resize_buffer_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool reader_done_ = false;
};

void EndSession(Connection& connection, SpdySession& session) {
  session.GoAway(spdy::kGoAwayOk);
  // Let the client read what was sent before the socket goes.
  auto deadline = Clock::now() + std::chrono::seconds(2);
  while (!session.gone()) {
    SpdyEvent ev = session.Next(deadline);
    if (ev.kind == SpdyEvent::kTimeout || ev.kind == SpdyEvent::kGone) {
      break;
    }
  }
  connection.Shutdown();
}

}  // namespace

void ServeSpdyCommand(Connection& connection, SpdySession& session, StreamRuntime& runtime,
                      const StreamRequest& request, CommandProtocol protocol,
                      std::chrono::milliseconds stream_creation_timeout) {
  bool tty = false;
  bool want_stdin = false;
  bool want_stdout = false;
  bool want_stderr = false;
  if (const auto* exec = std::get_if<ExecRequest>(&request)) {
    tty = exec->tty;
    want_stdin = exec->stdin;
    want_stdout = exec->stdout;
    want_stderr = exec->stderr && !exec->tty;
  } else {
    const auto& attach = std::get<AttachRequest>(request);
    tty = attach.tty;
    want_stdin = attach.stdin;
    want_stdout = attach.stdout;
    want_stderr = attach.stderr && !attach.tty;
  }
  bool want_resize = tty && protocol >= CommandProtocol::kV3;

  CommandStreams streams;
  std::deque<SpdyEvent> early;
  auto deadline = Clock::now() + stream_creation_timeout;
  auto complete = [&] {
    return streams.error != 0 && (!want_stdin || streams.stdin != 0) && (!want_stdout || streams.stdout != 0) &&
           (!want_stderr || streams.stderr != 0) && (!want_resize || streams.resize != 0);
  };
  while (!complete()) {
    SpdyEvent ev = session.Next(deadline);
    if (ev.kind == SpdyEvent::kGone) {
      return;
    }
    if (ev.kind == SpdyEvent::kTimeout) {
      std::string message = "timed out waiting for the client to create its streams";
      if (streams.error != 0) {
        session.Send(streams.error, protocol >= CommandProtocol::kV4 ? FailureStatusJson(message) : message).ok();
      }
      spdlog::info("stream: SPDY session: {}", message);
      EndSession(connection, session);
      return;
    }
    if (ev.kind != SpdyEvent::kNewStream) {
      early.push_back(std::move(ev));
      continue;
    }
    std::string type = spdy::HeaderValue(ev.headers, "streamtype");
    uint32_t* slot = type == "error"    ? &streams.error
                     : type == "stdin"  ? &streams.stdin
                     : type == "stdout" ? &streams.stdout
                     : type == "stderr" ? &streams.stderr
                     : type == "resize" ? &streams.resize
                                        : nullptr;
    if (slot == nullptr || *slot != 0) {
      session.Reset(ev.stream_id, spdy::kRstProtocolError);
      spdlog::info("stream: SPDY stream {} with unexpected or repeated streamType \"{}\"", ev.stream_id, type);
      continue;
    }
    *slot = ev.stream_id;
  }

  base::Result<std::unique_ptr<StreamProcess>> opened = std::holds_alternative<ExecRequest>(request)
                                                            ? runtime.StartExec(std::get<ExecRequest>(request))
                                                            : runtime.Attach(std::get<AttachRequest>(request));
  if (!opened.ok()) {
    const std::string& message = opened.error().message();
    session.Send(streams.error, protocol >= CommandProtocol::kV4 ? FailureStatusJson(message) : message, true).ok();
    EndSession(connection, session);
    return;
  }
  SpdyCommandChannels channels(connection, session, streams, std::move(early));
  RunRemoteCommand(**opened, channels, protocol);
}

namespace {

// One forwarded connection's client side: a data stream and an error stream.
class SpdyPortSide : public PortClientSide {
 public:
  SpdyPortSide(SpdySession& session, uint32_t data_id, uint32_t error_id)
      : session_(session), data_id_(data_id), error_id_(error_id) {}
  bool WriteData(std::string_view data) override { return session_.Send(data_id_, data).ok(); }
  void WriteError(std::string_view message) override { session_.Send(error_id_, message).ok(); }
  void CloseData() override {
    session_.CloseStream(data_id_);
    session_.CloseStream(error_id_);
  }

 private:
  SpdySession& session_;
  const uint32_t data_id_;
  const uint32_t error_id_;
};

struct StreamPair {
  int32_t port = 0;
  uint32_t data_id = 0;
  uint32_t error_id = 0;
  Clock::time_point created;
  bool client_done = false;
  std::unique_ptr<SpdyPortSide> side;
  std::unique_ptr<ForwardedConnection> forward;
};

}  // namespace

void ServeSpdyPortForward(Connection& connection, SpdySession& session, StreamRuntime& runtime,
                          const PortForwardRequest& request, std::chrono::milliseconds stream_creation_timeout) {
  std::map<std::string, StreamPair> pairs;    // by requestID
  std::map<uint32_t, std::string> by_stream;  // data or error stream id -> requestID
  constexpr size_t kMaxPairs = 128;
  auto refuse = [&](uint32_t id, const std::string& why) {
    spdlog::info("stream: port-forward stream {} refused: {}", id, why);
    session.Reset(id, spdy::kRstRefusedStream);
  };
  std::string gone_reason;
  while (true) {
    SpdyEvent ev = session.Next(Clock::now() + std::chrono::seconds(1));
    if (ev.kind == SpdyEvent::kGone) {
      gone_reason = ev.error;
      break;
    }
    if (ev.kind == SpdyEvent::kNewStream) {
      std::string type = spdy::HeaderValue(ev.headers, "streamtype");
      auto port = ParsePort(spdy::HeaderValue(ev.headers, "port"));
      if (type != "data" && type != "error") {
        refuse(ev.stream_id, "streamType \"" + type + "\" (want data or error)");
        continue;
      }
      if (!port.ok()) {
        refuse(ev.stream_id, port.error().message());
        continue;
      }
      if (!request.ports.empty() &&
          std::find(request.ports.begin(), request.ports.end(), *port) == request.ports.end()) {
        if (type == "error") {
          session
              .Send(ev.stream_id, "port " + std::to_string(*port) + " was not granted by the PortForward request", true)
              .ok();
        } else {
          refuse(ev.stream_id, "port not granted");
        }
        continue;
      }
      // Older clients send no requestID: their data stream follows its error stream (ids two apart).
      std::string id = spdy::HeaderValue(ev.headers, "requestid");
      if (id.empty()) {
        id = "#" + std::to_string(type == "error" ? ev.stream_id : ev.stream_id - 2);
      }
      auto it = pairs.find(id);
      if (it == pairs.end()) {
        if (pairs.size() >= kMaxPairs) {
          refuse(ev.stream_id, "too many forwarded connections on one session");
          continue;
        }
        it = pairs.emplace(id, StreamPair{}).first;
        it->second.port = *port;
        it->second.created = Clock::now();
      }
      StreamPair& pair = it->second;
      uint32_t& slot = type == "data" ? pair.data_id : pair.error_id;
      if (slot != 0 || pair.port != *port) {
        refuse(ev.stream_id, "repeated " + type + " stream or another port for request " + id);
        continue;
      }
      slot = ev.stream_id;
      by_stream[ev.stream_id] = id;
      if (pair.data_id != 0 && pair.error_id != 0) {
        pair.side = std::make_unique<SpdyPortSide>(session, pair.data_id, pair.error_id);
        pair.forward = std::make_unique<ForwardedConnection>(pair.port, *pair.side);
        pair.forward->Start(runtime, request);
      }
      continue;
    }
    if (ev.kind == SpdyEvent::kData || ev.kind == SpdyEvent::kStreamEnd) {
      auto s = by_stream.find(ev.stream_id);
      if (s == by_stream.end()) {
        continue;
      }
      StreamPair& pair = pairs[s->second];
      if (ev.stream_id != pair.data_id) {
        continue;  // the client closing its side of the error stream, as kubectl does at once
      }
      if (ev.kind == SpdyEvent::kData) {
        if (pair.forward) {
          pair.forward->FromClient(ev.data);
        }
      } else {
        pair.client_done = true;
        if (pair.forward) {
          ev.reset ? pair.forward->Abort() : pair.forward->ClientDone();
        }
      }
    }
    // Housekeeping: pairs never completed in time, and connections finished in both directions.
    auto now = Clock::now();
    for (auto it = pairs.begin(); it != pairs.end();) {
      StreamPair& pair = it->second;
      bool expired = !pair.forward && now - pair.created > stream_creation_timeout;
      bool finished = pair.forward && pair.forward->pod_done() && pair.client_done;
      if (!expired && !finished) {
        ++it;
        continue;
      }
      if (expired) {
        if (pair.error_id != 0) {
          session.Send(pair.error_id, "timed out waiting for the data and error streams of request " + it->first, true)
              .ok();
        }
        if (pair.data_id != 0) {
          session.Reset(pair.data_id, spdy::kRstCancel);
        }
      } else {
        pair.forward->Join();
      }
      by_stream.erase(pair.data_id);
      by_stream.erase(pair.error_id);
      it = pairs.erase(it);
    }
  }
  if (!gone_reason.empty()) {
    spdlog::info("stream: port-forward session ended: {}", gone_reason);
  }
  // The client cannot read anymore: every connection goes (the agent closes the pod sockets).
  for (auto& [id, pair] : pairs) {
    if (pair.forward) {
      pair.forward->Abort();
    }
  }
  for (auto& [id, pair] : pairs) {
    if (pair.forward) {
      pair.forward->Join();
    }
  }
  session.GoAway(spdy::kGoAwayOk);
  connection.Shutdown();
}

}  // namespace chrys::cri::streaming
