// PhaseTimer: times the consecutive phases of one operation and renders them as "a 12 ms, b 3 ms" for a log line.
#pragma once

#include <chrono>
#include <string>

namespace chrys::base {

class PhaseTimer {
 public:
  // Closes the phase running since construction or the previous End, under `name`.
  void End(const std::string& name) {
    auto now = std::chrono::steady_clock::now();
    Append(name + " " + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - start_).count()) +
           " ms");
    start_ = now;
  }
  // Adds free text (a detail of the phase just ended) without starting a new phase.
  void Note(const std::string& text) { summary_ += text; }
  const std::string& summary() const { return summary_; }

 private:
  void Append(const std::string& part) { summary_ += (summary_.empty() ? "" : ", ") + part; }

  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::string summary_;
};

}  // namespace chrys::base
