// ProcessIo: a container or exec process's stdio as the agent holds it: stdin writer, bounded output buffers.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace chrys::guest {

// A copy-only reader of an OutputBuffer (attach): it sees the bytes that arrive after it subscribed, without
// taking them from the buffer's own reader (the CRI log). Bounded: a tap that falls `capacity` bytes behind is
// cut off (overflowed) instead of slowing the process or the log.
class OutputTap {
 public:
  explicit OutputTap(size_t capacity) : capacity_(capacity) {}

  // Takes up to `max` bytes, waiting at most `wait`. Returns false once nothing more will come: the stream
  // ended and was drained, the tap overflowed, or Close() was called.
  bool Take(std::string& out, size_t max, std::chrono::milliseconds wait);
  bool overflowed();
  // Ends the tap from the reader's side (the attach client went away).
  void Close();

 private:
  friend class OutputBuffer;
  void Push(const char* data, size_t size);
  void End();

  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string data_;
  bool ended_ = false;
  bool overflowed_ = false;
};

// "Something happened on one of these streams" (bytes, an end, a new reader), for a reader of both stdout and
// stderr to sleep on the two at once: an idle container's reader then wakes only for its rare liveness check
// (under emulation a polling loop per stream made each idle pod VM burn ~5% of a host core).
class OutputActivity {
 public:
  uint64_t Seen();
  void Signal();
  // Returns once something happened after `seen`, or after `wait`.
  void WaitAfter(uint64_t seen, std::chrono::milliseconds wait);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t events_ = 0;
};

// One output stream: a reader thread moves bytes from the pipe into a bounded buffer; when the buffer is
// full the thread stops reading, so the writing process blocks instead of the agent growing (backpressure).
class OutputBuffer {
 public:
  // `activity`, when given, is signalled on every append and at the end of the stream.
  explicit OutputBuffer(size_t capacity, OutputActivity* activity = nullptr)
      : capacity_(capacity), activity_(activity) {}
  ~OutputBuffer();
  OutputBuffer(const OutputBuffer&) = delete;
  OutputBuffer& operator=(const OutputBuffer&) = delete;

  // Starts draining `fd` (taken over). EIO counts as end of stream (a pty whose slave side closed).
  void StartReading(base::UniqueFd fd);
  // Appends directly (tests, and messages the agent itself adds).
  void Append(const char* data, size_t size);
  void MarkEof();

  // Takes up to `max` bytes, waiting at most `wait` for data. Returns false when the stream ended and is
  // drained (nothing more will ever come).
  bool Take(std::string& out, size_t max, std::chrono::milliseconds wait);
  // Puts bytes that could not be delivered back at the front.
  void PutBack(const std::string& data);
  bool Drained();
  size_t size();

  // Subscribes a copy-only reader; an ended stream gives an already ended tap.
  std::shared_ptr<OutputTap> Tap(size_t capacity);
  void Untap(const std::shared_ptr<OutputTap>& tap);

 private:
  void SignalActivity() {
    if (activity_ != nullptr) {
      activity_->Signal();
    }
  }

  const size_t capacity_;
  OutputActivity* const activity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string data_;
  bool eof_ = false;
  std::vector<std::shared_ptr<OutputTap>> taps_;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  base::UniqueFd wake_;  // eventfd: the destructor wakes the reader thread out of its poll
};

class ProcessIo {
 public:
  // Output buffers hold this much per stream before the process is slowed down.
  static constexpr size_t kBufferBytes = 256 << 10;

  // Pipes for stdout/stderr (and stdin when wanted), or one pty for a tty process.
  static base::Result<std::unique_ptr<ProcessIo>> Create(bool tty, bool stdin, uint32_t rows, uint32_t columns);
  ~ProcessIo();

  // The child's ends; close them (ReleaseChildEnds) once the process has them.
  int child_stdin() const { return child_stdin_.get(); }
  int child_stdout() const { return child_stdout_.get(); }
  int child_stderr() const { return child_stderr_.get(); }
  // Closes our copies of the child's ends and starts the readers.
  void StartAfterSpawn();

  bool tty() const { return tty_; }
  OutputBuffer& stdout_buffer() { return stdout_; }
  OutputBuffer& stderr_buffer() { return stderr_; }
  // Signalled by both buffers and by NewReader.
  OutputActivity& activity() { return activity_; }

  base::Status WriteStdin(const std::string& data, bool eof, std::chrono::milliseconds timeout);
  base::Status Resize(uint32_t rows, uint32_t columns);
  // Hands out a new reader generation; older readers see theirs is stale and stop.
  uint64_t NewReader() {
    uint64_t generation = ++reader_generation_;
    activity_.Signal();  // the reader it replaces stops now, not at its next timeout
    return generation;
  }
  bool IsCurrentReader(uint64_t generation) const { return reader_generation_.load() == generation; }

 private:
  ProcessIo() : stdout_(kBufferBytes, &activity_), stderr_(kBufferBytes, &activity_) {}

  bool tty_ = false;
  std::mutex stdin_mu_;
  base::UniqueFd stdin_writer_;  // pipe write end, or the pty master (dup)
  base::UniqueFd pty_master_;    // for resize
  base::UniqueFd child_stdin_;
  base::UniqueFd child_stdout_;
  base::UniqueFd child_stderr_;
  base::UniqueFd stdout_reader_;
  base::UniqueFd stderr_reader_;
  OutputActivity activity_;  // before the buffers, which point at it
  OutputBuffer stdout_;
  OutputBuffer stderr_;
  std::atomic<uint64_t> reader_generation_{0};
};

}  // namespace chrys::guest
