// The QEMU CPU model of TCG (software-emulated) guests, shared by every QEMU launch and its benchmark peers.
#pragma once

namespace chrys::runtime {

// "max" without ERMS/FSRM. With those flags the guest kernel copies memory with `rep movsb`, which TCG emulates
// one byte per iteration; without them it uses 8-byte string moves or unrolled loops. Measured under TCG: boot
// to agent ready -16% (guest uptime 2147 -> 1798 ms), and less guest system time per byte through the agent
// channel. KVM guests use "host" and keep the flags (hardware runs them fast).
inline constexpr const char* kTcgCpuModel = "max,erms=off,fsrm=off";

}  // namespace chrys::runtime
