// Zeroing the guest's free memory before a template is saved, so that its clones copy only the pages in use.
#pragma once

#include <cstdint>
#include <functional>

#include "base/result.h"

namespace chrys::guest {

// Fills free memory through anonymous mappings, populated chunk by chunk (the kernel hands out zeroed pages), until
// MemFree falls to `keep_free_bytes`, then frees it all: the pages go back free and zero. Page cache is not
// touched (only MemFree is taken, never what reclaim could give). `mem_free` reads MemFree in bytes (a test passes
// its own). Returns the bytes zeroed.
base::Result<uint64_t> ZeroFreeMemory(uint64_t keep_free_bytes,
                                      const std::function<base::Result<uint64_t>()>& mem_free);

// MemFree from /proc/meminfo, in bytes.
base::Result<uint64_t> ReadMemFree();

}  // namespace chrys::guest
