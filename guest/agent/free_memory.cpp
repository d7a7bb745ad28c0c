#include "guest/agent/free_memory.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "base/file_util.h"

namespace chrys::guest {

base::Result<uint64_t> ReadMemFree() {
  CHRYS_ASSIGN_OR_RETURN(std::string meminfo, base::ReadFile("/proc/meminfo", 1 << 16));
  const char* at = std::strstr(meminfo.c_str(), "MemFree:");
  unsigned long long kib = 0;
  if (at == nullptr || std::sscanf(at, "MemFree: %llu kB", &kib) != 1) {
    return base::Internal("/proc/meminfo has no MemFree line");
  }
  return static_cast<uint64_t>(kib) * 1024;
}

base::Result<uint64_t> ZeroFreeMemory(uint64_t keep_free_bytes,
                                      const std::function<base::Result<uint64_t>()>& mem_free) {
  // Small chunks, MemFree checked after each: one mapping of the whole amount could push the guest into reclaim or
  // the OOM killer, whose first pick would be this process.
  constexpr size_t kChunk = 4 << 20;
  constexpr size_t kMaxChunks = 1 << 16;  // 256 GiB: a bound, far above any guest's memory
  struct Mapping {
    void* addr;
    size_t len;
  };
  std::vector<Mapping> mappings;
  uint64_t zeroed = 0;
  base::Status status = base::Status::Ok();
  while (mappings.size() < kMaxChunks) {
    auto free_now = mem_free();
    if (!free_now.ok()) {
      status = free_now.error();
      break;
    }
    if (*free_now < keep_free_bytes + kChunk) {
      break;
    }
    void* addr = ::mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (addr == MAP_FAILED) {
      break;  // no more to take: what was taken is zeroed all the same
    }
    mappings.push_back({addr, kChunk});
    zeroed += kChunk;
  }
  for (const auto& m : mappings) {
    ::munmap(m.addr, m.len);
  }
  if (!status.ok()) {
    return status.error().Wrap("zeroing free memory after " + std::to_string(zeroed >> 20) + " MiB");
  }
  return zeroed;
}

}  // namespace chrys::guest
