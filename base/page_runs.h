// ForEachPageRun: the data of a sparse file (a memfd holding guest RAM), walked as runs of zero and non-zero pages.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace chrys::base {

inline constexpr size_t kPageBytes = 4096;

inline bool PageIsZero(const char* page, size_t len) {
  const char* end = page + len;
  for (; page + sizeof(uint64_t) <= end; page += sizeof(uint64_t)) {
    uint64_t word;
    std::memcpy(&word, page, sizeof word);
    if (word != 0) {
      return false;
    }
  }
  for (; page < end; ++page) {
    if (*page != 0) {
      return false;
    }
  }
  return true;
}

// Reads the allocated extents of `fd` (holes are skipped: SEEK_DATA/SEEK_HOLE) into `buffer`, and calls
// on_run(file_offset, bytes, length, zero) for each run of consecutive pages that are all zero or all not.
// on_run returns 0 or an errno, which ends the walk. Returns 0 or the errno that ended it. Allocates nothing and
// makes only async-signal-safe calls, so a forked child of a threaded process may use it.
template <typename OnRun>
int ForEachPageRun(int fd, char* buffer, size_t buffer_size, OnRun&& on_run) {
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size < 0) {
    return errno;
  }
  off_t offset = 0;
  while (offset < size) {
    off_t data = ::lseek(fd, offset, SEEK_DATA);
    if (data < 0) {
      return errno == ENXIO ? 0 : errno;  // ENXIO: no data after offset
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) {
      return errno;
    }
    while (data < hole) {
      size_t want = static_cast<size_t>(hole - data) < buffer_size ? static_cast<size_t>(hole - data) : buffer_size;
      ssize_t got = ::pread(fd, buffer, want, data);
      if (got < 0 && errno == EINTR) {
        continue;
      }
      if (got <= 0) {
        return got < 0 ? errno : EIO;
      }
      size_t end = static_cast<size_t>(got);
      for (size_t at = 0; at < end;) {
        size_t len = end - at < kPageBytes ? end - at : kPageBytes;
        bool zero = PageIsZero(buffer + at, len);
        size_t run = len;
        while (at + run < end) {
          size_t next = end - at - run < kPageBytes ? end - at - run : kPageBytes;
          if (PageIsZero(buffer + at + run, next) != zero) {
            break;
          }
          run += next;
        }
        if (int err = on_run(data + static_cast<off_t>(at), buffer + at, run, zero); err != 0) {
          return err;
        }
        at += run;
      }
      data += got;
    }
    offset = hole;
  }
  return 0;
}

}  // namespace chrys::base
