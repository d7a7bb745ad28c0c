// Minimal logging for chrys-agent: timestamped lines on the console (stderr), no extra libraries.
#pragma once

#include <cstring>

namespace chrys::guest {

void LogInfo(const char* format, ...) __attribute__((format(printf, 1, 2)));
void LogWarn(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace chrys::guest
