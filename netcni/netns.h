// NetnsHandle owns a named network namespace pinned by a bind mount under /run/netns (create, open, remove).
#pragma once

#include <functional>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace chrys::netcni {

inline constexpr const char* kDefaultNetnsDir = "/run/netns";

class NetnsHandle {
 public:
  NetnsHandle() = default;
  ~NetnsHandle();
  NetnsHandle(NetnsHandle&& other) noexcept = default;
  NetnsHandle& operator=(NetnsHandle&& other) noexcept;
  NetnsHandle(const NetnsHandle&) = delete;
  NetnsHandle& operator=(const NetnsHandle&) = delete;

  // Creates a fresh namespace pinned at <dir>/<name>. The returned handle owns it: destroying the handle
  // removes the namespace unless Keep() was called. kAlreadyExists when the name is taken.
  static base::Result<NetnsHandle> Create(const std::string& name, const std::string& dir = kDefaultNetnsDir);
  // Opens an existing namespace (e.g. after a restart) without taking ownership of its lifetime.
  static base::Result<NetnsHandle> Open(const std::string& name, const std::string& dir = kDefaultNetnsDir);
  // Unmounts and deletes <dir>/<name>; a missing namespace is not an error.
  static base::Status RemoveByName(const std::string& name, const std::string& dir = kDefaultNetnsDir);
  static bool Exists(const std::string& name, const std::string& dir = kDefaultNetnsDir);
  // A name is usable as a file name under the netns dir: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 200 bytes.
  static base::Status ValidateName(const std::string& name);

  // Removes the namespace now (idempotent) and closes the handle.
  base::Status Remove();
  // The namespace outlives this handle (the pod keeps running).
  void Keep() { owned_ = false; }

  bool valid() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }

 private:
  NetnsHandle(std::string name, std::string dir, base::UniqueFd fd, bool owned);

  std::string name_;
  std::string dir_;
  std::string path_;
  base::UniqueFd fd_;
  bool owned_ = false;
};

// Runs `fn` on a short-lived thread that has joined the network namespace `netns_fd`; the calling thread's
// namespace never changes. Sockets and /dev/net/tun fds opened inside `fn` stay bound to that namespace.
base::Status RunInNetns(int netns_fd, const std::function<base::Status()>& fn);

}  // namespace chrys::netcni
