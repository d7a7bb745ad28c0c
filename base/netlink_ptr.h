// Owning pointers for libnl objects (sockets, addresses, route/link/qdisc/... objects), freed by the matching put.
// Header only: it needs libnl's headers, which only its users (netcni on the host, the guest agent) have.
#pragma once

#include <netlink/addr.h>
#include <netlink/object.h>
#include <netlink/socket.h>

#include <memory>

namespace chrys::base {

struct NlSockFree {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct NlAddrFree {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
// Every rtnl_* object (rtnl_link, rtnl_qdisc, rtnl_cls, rtnl_addr, rtnl_route, rtnl_neigh) is an nl_object.
struct NlObjectFree {
  template <typename T>
  void operator()(T* o) const {
    nl_object_put(OBJ_CAST(o));
  }
};

using NlSockPtr = std::unique_ptr<nl_sock, NlSockFree>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrFree>;
template <typename T>
using NlObjectPtr = std::unique_ptr<T, NlObjectFree>;

}  // namespace chrys::base
