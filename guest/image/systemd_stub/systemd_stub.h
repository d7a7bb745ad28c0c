// The libsystemd.so.0 stand-in the image builder puts beside crun in the tools image (libsystemd_stub.c), its
// bytes embedded into the builder at build time.
#pragma once

#include <cstddef>

namespace chrys::guest {

inline constexpr const char* kSystemdSoname = "libsystemd.so.0";
extern const unsigned char kSystemdStub[];
extern const size_t kSystemdStubSize;

}  // namespace chrys::guest
