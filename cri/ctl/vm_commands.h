// Pieces of chrysctl's VM commands (ps, console, debug) that tests exercise without a VM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace chrys::cri::ctl {

// The console's escape sequence, as telnet/virsh have it: Ctrl-] then q (or .) detaches; Ctrl-] Ctrl-] sends one
// Ctrl-]; Ctrl-] followed by anything else sends both bytes.
class ConsoleEscape {
 public:
  static constexpr char kEscape = 0x1d;  // Ctrl-]

  // Filters what the user typed: returns the bytes to send to the guest; sets `detach` when the sequence ends
  // the session (bytes after it are dropped).
  std::string Feed(const std::string& typed, bool* detach);

 private:
  bool pending_ = false;
};

// "3d4h", "5m12s", "42s".
std::string FormatUptime(int64_t seconds);

// The VMM command line laid out for a shell: one option (and its value) per line, each word quoted as needed.
std::string FormatCommandLine(const std::vector<std::string>& argv, const std::string& prefix = "");

// The fds a QEMU command line expects to inherit ("fds=3:4" of -netdev tap, "fd=N"), ascending.
std::vector<int> InheritedFds(const std::vector<std::string>& argv);

// Rewrites every "-netdev tap,...,fds=A:B,..." to open the named tap itself (ifname=TAP,script=no,
// downscript=no,queues=N), given the tap name for each netdev in order; vhost= and other options are kept.
std::vector<std::string> ReplaceTapFds(const std::vector<std::string>& argv, const std::vector<std::string>& taps);

}  // namespace chrys::cri::ctl
