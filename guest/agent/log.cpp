#include "guest/agent/log.h"

#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace chrys::guest {
namespace {

void Emit(const char* level, const char* format, va_list args) {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  char line[1024];
  int n = std::snprintf(line, sizeof(line), "[%5ld.%03ld] chrys-agent %s: ", static_cast<long>(ts.tv_sec),
                        ts.tv_nsec / 1000000, level);
  if (n > 0 && static_cast<size_t>(n) < sizeof(line)) {
    std::vsnprintf(line + n, sizeof(line) - static_cast<size_t>(n), format, args);
  }
  std::fprintf(stderr, "%s\n", line);
}

}  // namespace

void LogInfo(const char* format, ...) {
  va_list args;
  va_start(args, format);
  Emit("info", format, args);
  va_end(args);
}

void LogWarn(const char* format, ...) {
  va_list args;
  va_start(args, format);
  Emit("warn", format, args);
  va_end(args);
}

}  // namespace chrys::guest
