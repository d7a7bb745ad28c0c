#include "netcni/tap_link.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/pkt_cls.h>
#include <linux/tc_act/tc_mirred.h>
#include <netlink/cache.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/action.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/link.h>
#include <netlink/route/link/inet6.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/tc.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "base/netlink_ptr.h"
#include "netcni/netns.h"

namespace chrys::netcni {
namespace {

using base::Status;

struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using NlSock = base::NlSockPtr;
using Link = base::NlObjectPtr<rtnl_link>;
using Qdisc = base::NlObjectPtr<rtnl_qdisc>;
using Cls = base::NlObjectPtr<rtnl_cls>;
using Cache = std::unique_ptr<nl_cache, CacheDeleter>;

constexpr uint32_t kIngressHandle = TC_HANDLE(0xffff, 0);
constexpr uint32_t kFilterPrio = 49152;

bool IsNotFound(int nl_err) {
  int e = nl_err < 0 ? -nl_err : nl_err;
  return e == NLE_OBJ_NOTFOUND || e == NLE_NODEV;
}

base::Error NlError(const std::string& what, int nl_err) {
  int e = nl_err < 0 ? -nl_err : nl_err;
  base::ErrorCode code = base::ErrorCode::kInternal;
  if (IsNotFound(e)) {
    code = base::ErrorCode::kNotFound;
  } else if (e == NLE_EXIST) {
    code = base::ErrorCode::kAlreadyExists;
  } else if (e == NLE_PERM) {
    code = base::ErrorCode::kPermissionDenied;
  }
  return base::MakeError(code, what + ": " + nl_geterror(e));
}

// A netlink route socket opened inside the namespace stays bound to it, so the rest runs on our thread.
base::Result<NlSock> RouteSocketIn(int netns_fd) {
  NlSock sock;
  Status st = RunInNetns(netns_fd, [&]() -> Status {
    NlSock s(nl_socket_alloc());
    if (!s) {
      return base::Internal("nl_socket_alloc failed");
    }
    int err = nl_connect(s.get(), NETLINK_ROUTE);
    if (err < 0) {
      return NlError("connect netlink route socket in the pod netns", err);
    }
    sock = std::move(s);
    return Status::Ok();
  });
  if (!st.ok()) {
    return st.error();
  }
  return sock;
}

// nullptr with ok status when the link does not exist.
base::Result<Link> GetLink(nl_sock* sock, const std::string& name) {
  rtnl_link* link = nullptr;
  int err = rtnl_link_get_kernel(sock, 0, name.c_str(), &link);
  if (err < 0) {
    if (IsNotFound(err)) {
      return Link();
    }
    return NlError("look up link " + name, err);
  }
  return Link(link);
}

std::string MacOf(rtnl_link* link) {
  nl_addr* addr = rtnl_link_get_addr(link);
  if (addr == nullptr) {
    return "";
  }
  char buf[64];
  nl_addr2str(addr, buf, sizeof buf);
  return buf;
}

// A qdisc of `kind` on `ifindex` under `parent` (handle 0: the kernel picks one).
base::Result<Qdisc> MakeQdisc(int ifindex, uint32_t parent, uint32_t handle, const char* kind) {
  Qdisc qdisc(rtnl_qdisc_alloc());
  if (!qdisc) {
    return base::Internal("rtnl_qdisc_alloc failed");
  }
  rtnl_tc_set_ifindex(TC_CAST(qdisc.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(qdisc.get()), parent);
  if (handle != 0) {
    rtnl_tc_set_handle(TC_CAST(qdisc.get()), handle);
  }
  int err = rtnl_tc_set_kind(TC_CAST(qdisc.get()), kind);
  if (err < 0) {
    return NlError(std::string("select ") + kind + " qdisc", err);
  }
  return qdisc;
}

Status AddIngressQdisc(nl_sock* sock, int ifindex, const std::string& dev) {
  CHRYS_ASSIGN_OR_RETURN(Qdisc qdisc, MakeQdisc(ifindex, TC_H_INGRESS, kIngressHandle, "ingress"));
  int err = rtnl_qdisc_add(sock, qdisc.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err < 0) {
    return NlError("add ingress qdisc on " + dev, err);
  }
  return Status::Ok();
}

// A multi-queue tap has 256 tx queues (the most a tap can take), and bringing it up gives each one a pfifo_fast
// qdisc with three rings of txqueuelen slots: ~30 MiB zeroed per pod at txqueuelen 5000, which made 20 pod
// networks at once cost ~120 ms each beyond the plugins. The tap never stops its queue (it drops into its own
// per-queue ring, sized by the same txqueuelen), so a qdisc there only adds a copy of that queue: the tap gets
// "noqueue" as its root while still down, and no default qdisc is ever built.
Status AddRootNoqueue(nl_sock* sock, int ifindex, const std::string& dev) {
  CHRYS_ASSIGN_OR_RETURN(Qdisc qdisc, MakeQdisc(ifindex, TC_H_ROOT, 0, "noqueue"));
  int err = rtnl_qdisc_add(sock, qdisc.get(), NLM_F_CREATE | NLM_F_REPLACE);
  if (err < 0) {
    return NlError("set the root qdisc of " + dev + " to noqueue", err);
  }
  return Status::Ok();
}

Status DeleteIngressQdisc(nl_sock* sock, int ifindex, const std::string& dev) {
  CHRYS_ASSIGN_OR_RETURN(Qdisc qdisc, MakeQdisc(ifindex, TC_H_INGRESS, kIngressHandle, "ingress"));
  int err = rtnl_qdisc_delete(sock, qdisc.get());
  // No qdisc there is what we want; the kernel says ENOENT or EINVAL depending on version.
  if (err < 0 && !IsNotFound(err) && -err != NLE_INVAL && err != -NLE_MSGTYPE_NOSUPPORT) {
    return NlError("delete ingress qdisc on " + dev, err);
  }
  return Status::Ok();
}

// Match-all u32 on `from`'s ingress with a mirred egress redirect to `to_ifindex`.
Status AddRedirect(nl_sock* sock, int from_ifindex, const std::string& from, int to_ifindex, const std::string& to) {
  Cls cls(rtnl_cls_alloc());
  if (!cls) {
    return base::Internal("rtnl_cls_alloc failed");
  }
  rtnl_tc_set_ifindex(TC_CAST(cls.get()), from_ifindex);
  rtnl_tc_set_parent(TC_CAST(cls.get()), kIngressHandle);
  int err = rtnl_tc_set_kind(TC_CAST(cls.get()), "u32");
  if (err < 0) {
    return NlError("select u32 classifier", err);
  }
  rtnl_cls_set_protocol(cls.get(), ETH_P_ALL);
  rtnl_cls_set_prio(cls.get(), kFilterPrio);
  // One key with value 0 and mask 0 at offset 0: every packet matches.
  if ((err = rtnl_u32_add_key_uint32(cls.get(), 0, 0, 0, 0)) < 0 || (err = rtnl_u32_set_cls_terminal(cls.get())) < 0) {
    return NlError("build u32 selector", err);
  }
  rtnl_act* act = rtnl_act_alloc();
  if (act == nullptr) {
    return base::Internal("rtnl_act_alloc failed");
  }
  if ((err = rtnl_tc_set_kind(TC_CAST(act), "mirred")) < 0 ||
      (err = rtnl_mirred_set_action(act, TCA_EGRESS_REDIR)) < 0 ||
      (err = rtnl_mirred_set_policy(act, TC_ACT_STOLEN)) < 0 ||
      (err = rtnl_mirred_set_ifindex(act, static_cast<uint32_t>(to_ifindex))) < 0) {
    rtnl_act_put(act);
    return NlError("build mirred action", err);
  }
  err = rtnl_u32_add_action(cls.get(), act);
  if (err < 0) {
    rtnl_act_put(act);
    return NlError("attach mirred action", err);
  }
  // libnl versions differ on whether add_action takes its own reference; drop ours only if it did.
  if (nl_object_get_refcnt(OBJ_CAST(act)) > 1) {
    rtnl_act_put(act);
  }
  err = rtnl_cls_add(sock, cls.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err < 0) {
    return NlError("add redirect filter " + from + " -> " + to, err);
  }
  return Status::Ok();
}

std::vector<RedirectFilter> ReadFilters(nl_sock* sock, int ifindex) {
  std::vector<RedirectFilter> out;
  nl_cache* raw = nullptr;
  if (rtnl_cls_alloc_cache(sock, ifindex, kIngressHandle, &raw) < 0) {
    return out;
  }
  Cache cache(raw);
  for (nl_object* obj = nl_cache_get_first(cache.get()); obj != nullptr; obj = nl_cache_get_next(obj)) {
    auto* cls = reinterpret_cast<rtnl_cls*>(obj);
    const char* kind = rtnl_tc_get_kind(TC_CAST(cls));
    if (kind == nullptr || std::strcmp(kind, "u32") != 0) {
      continue;
    }
    rtnl_act* act = rtnl_u32_get_action(cls);
    if (act == nullptr) {
      continue;  // the u32 hash table root, not a rule
    }
    RedirectFilter f;
    f.classifier = kind;
    uint32_t val = 1;
    uint32_t mask = 1;
    int off = -1;
    int offmask = 0;
    f.match_all = rtnl_u32_get_key(cls, 0, &val, &mask, &off, &offmask) == 0 && mask == 0;
    const char* act_kind = rtnl_tc_get_kind(TC_CAST(act));
    f.action = act_kind != nullptr ? act_kind : "";
    if (f.action == "mirred") {
      f.mirred_action = rtnl_mirred_get_action(act);
      f.policy = rtnl_mirred_get_policy(act);
      f.target_ifindex = static_cast<int>(rtnl_mirred_get_ifindex(act));
    }
    out.push_back(f);
  }
  return out;
}

bool HasIngressQdisc(nl_sock* sock, int ifindex) {
  nl_cache* raw = nullptr;
  if (rtnl_qdisc_alloc_cache(sock, &raw) < 0) {
    return false;
  }
  Cache cache(raw);
  Qdisc q(rtnl_qdisc_get_by_parent(cache.get(), ifindex, TC_H_INGRESS));
  if (!q) {
    return false;
  }
  const char* kind = rtnl_tc_get_kind(TC_CAST(q.get()));
  return kind != nullptr && std::strcmp(kind, "ingress") == 0;
}

// The kind of `ifindex`'s root qdisc; empty when it has none that netlink reports.
std::string RootQdiscKind(nl_sock* sock, int ifindex) {
  nl_cache* raw = nullptr;
  if (rtnl_qdisc_alloc_cache(sock, &raw) < 0) {
    return "";
  }
  Cache cache(raw);
  Qdisc q(rtnl_qdisc_get_by_parent(cache.get(), ifindex, TC_H_ROOT));
  const char* kind = q ? rtnl_tc_get_kind(TC_CAST(q.get())) : nullptr;
  return kind != nullptr ? kind : "";
}

// The tun driver's own attributes (IFLA_INFO_DATA of kind "tun"), which libnl does not decode.
struct TunInfo {
  std::string kind;
  bool is_tap = false, pi = false, vnet_hdr = false, multi_queue = false, persist = false;
  uint32_t num_queues = 0;
  bool seen = false;
};

int ParseTunInfo(nl_msg* msg, void* arg) {
  auto* info = static_cast<TunInfo*>(arg);
  nlattr* tb[IFLA_MAX + 1];
  if (nlmsg_parse(nlmsg_hdr(msg), sizeof(ifinfomsg), tb, IFLA_MAX, nullptr) < 0) {
    return NL_SKIP;
  }
  info->seen = true;
  if (tb[IFLA_LINKINFO] == nullptr) {
    return NL_OK;
  }
  nlattr* li[IFLA_INFO_MAX + 1];
  if (nla_parse_nested(li, IFLA_INFO_MAX, tb[IFLA_LINKINFO], nullptr) < 0) {
    return NL_SKIP;
  }
  if (li[IFLA_INFO_KIND] != nullptr) {
    info->kind = nla_get_string(li[IFLA_INFO_KIND]);
  }
  if (info->kind != "tun" || li[IFLA_INFO_DATA] == nullptr) {
    return NL_OK;
  }
  nlattr* td[IFLA_TUN_MAX + 1];
  if (nla_parse_nested(td, IFLA_TUN_MAX, li[IFLA_INFO_DATA], nullptr) < 0) {
    return NL_SKIP;
  }
  auto flag = [&td](int attr) { return td[attr] != nullptr && nla_get_u8(td[attr]) != 0; };
  info->is_tap = td[IFLA_TUN_TYPE] != nullptr && nla_get_u8(td[IFLA_TUN_TYPE]) == IFF_TAP;
  info->pi = flag(IFLA_TUN_PI);
  info->vnet_hdr = flag(IFLA_TUN_VNET_HDR);
  info->multi_queue = flag(IFLA_TUN_MULTI_QUEUE);
  info->persist = flag(IFLA_TUN_PERSIST);
  info->num_queues = td[IFLA_TUN_NUM_QUEUES] != nullptr ? nla_get_u32(td[IFLA_TUN_NUM_QUEUES]) : 0;
  return NL_OK;
}

base::Result<TunInfo> ReadTunInfo(nl_sock* sock, int ifindex) {
  std::unique_ptr<nl_msg, void (*)(nl_msg*)> msg(nlmsg_alloc_simple(RTM_GETLINK, 0), nlmsg_free);
  if (!msg) {
    return base::Internal("nlmsg_alloc failed");
  }
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0) {
    return base::Internal("nlmsg_append failed");
  }
  int err = nl_send_auto(sock, msg.get());
  if (err < 0) {
    return NlError("send RTM_GETLINK", err);
  }
  TunInfo info;
  nl_cb* sock_cb = nl_socket_get_cb(sock);
  nl_cb* cb = nl_cb_clone(sock_cb);
  nl_cb_put(sock_cb);
  if (cb == nullptr) {
    return base::Internal("nl_cb_clone failed");
  }
  nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, ParseTunInfo, &info);
  err = nl_recvmsgs(sock, cb);
  nl_cb_put(cb);
  if (err < 0) {
    return NlError("read link attributes", err);
  }
  // libnl asks for an ACK on every request; consume it so the next request on this socket stays in step.
  err = nl_wait_for_ack(sock);
  if (err < 0) {
    return NlError("read link attributes ack", err);
  }
  if (!info.seen) {
    return base::Internal("no reply to RTM_GETLINK for ifindex " + std::to_string(ifindex));
  }
  return info;
}

// Opens `queues` fds on tap `name` (created by the first when it does not exist). Must run in the netns,
// because /dev/net/tun binds each open file to the namespace of the opener.
base::Result<std::vector<base::UniqueFd>> OpenTunQueues(const std::string& name, int queues, bool make_persistent) {
  std::vector<base::UniqueFd> fds;
  for (int i = 0; i < queues; ++i) {
    base::UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!fd) {
      return base::SystemError("open /dev/net/tun");
    }
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
      base::Error e = base::SystemError("TUNSETIFF " + name + " (queue " + std::to_string(i) + " of " +
                                        std::to_string(queues) + ")");
      if (make_persistent && !fds.empty()) {
        (void)::ioctl(fds.front().get(), TUNSETPERSIST, 0);  // closing the fds now deletes the tap
      }
      return e;
    }
    if (make_persistent && i == 0 && ::ioctl(fd.get(), TUNSETPERSIST, 1) != 0) {
      return base::SystemError("TUNSETPERSIST " + name);
    }
    fds.push_back(std::move(fd));
  }
  return fds;
}

Status ChangeLink(nl_sock* sock, rtnl_link* link, const std::string& name, uint32_t mtu, uint32_t txqlen, bool set_up) {
  Link change(rtnl_link_alloc());
  if (!change) {
    return base::Internal("rtnl_link_alloc failed");
  }
  if (mtu != 0) {
    rtnl_link_set_mtu(change.get(), mtu);
  }
  if (txqlen != 0) {
    rtnl_link_set_txqlen(change.get(), txqlen);
  }
  if (set_up) {
    rtnl_link_set_flags(change.get(), IFF_UP);
  } else {
    rtnl_link_unset_flags(change.get(), IFF_UP);
  }
  int err = rtnl_link_change(sock, link, change.get(), 0);
  if (err < 0) {
    return NlError("configure link " + name, err);
  }
  return Status::Ok();
}

// 0 with ok status when no link of that name exists in the socket's namespace.
base::Result<int> IfIndexOf(int sock_fd, const std::string& name) {
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(sock_fd, SIOCGIFINDEX, &ifr) != 0) {
    if (errno == ENODEV) {
      return 0;
    }
    return base::SystemError("look up link " + name);
  }
  return ifr.ifr_ifindex;
}

struct VethFacts {
  int ifindex = 0;
  uint32_t mtu = 0;
  std::string mac;  // aa:bb:cc:dd:ee:ff
};

base::Result<VethFacts> ReadVethFacts(int sock_fd, const std::string& name) {
  VethFacts facts;
  CHRYS_ASSIGN_OR_RETURN(facts.ifindex, IfIndexOf(sock_fd, name));
  if (facts.ifindex == 0) {
    return base::NotFound("pod interface " + name + " does not exist in the pod network namespace");
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(sock_fd, SIOCGIFMTU, &ifr) != 0) {
    return base::SystemError("read the MTU of " + name);
  }
  facts.mtu = static_cast<uint32_t>(ifr.ifr_mtu);
  if (::ioctl(sock_fd, SIOCGIFHWADDR, &ifr) != 0) {
    return base::SystemError("read the MAC address of " + name);
  }
  if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
    return base::FailedPrecondition("pod interface " + name + " is not an Ethernet link (hardware type " +
                                    std::to_string(ifr.ifr_hwaddr.sa_family) + ")");
  }
  char mac[18];
  const auto* b = reinterpret_cast<const unsigned char*>(ifr.ifr_hwaddr.sa_data);
  std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
  facts.mac = mac;
  return facts;
}

// One RTM_NEWLINK for the still-down tap: MTU, txqueuelen and no IPv6 addresses. The tap is a pure L2 pipe
// to the guest: without a link-local address, bringing it up skips DAD and router solicitations. A kernel
// without IPv6 refuses the inet6 part; then the rest is applied alone.
Status ConfigureDownTap(nl_sock* sock, int ifindex, const std::string& name, uint32_t mtu, uint32_t txqlen) {
  Link target(rtnl_link_alloc());
  Link change(rtnl_link_alloc());
  if (!target || !change) {
    return base::Internal("rtnl_link_alloc failed");
  }
  rtnl_link_set_ifindex(target.get(), ifindex);
  rtnl_link_set_name(target.get(), name.c_str());
  rtnl_link_set_mtu(change.get(), mtu);
  rtnl_link_set_txqlen(change.get(), txqlen);
  const bool with_inet6 = rtnl_link_inet6_set_addr_gen_mode(change.get(), rtnl_link_inet6_str2addrgenmode("none")) == 0;
  int err = rtnl_link_change(sock, target.get(), change.get(), 0);
  if (err < 0 && with_inet6) {
    Link plain(rtnl_link_alloc());
    if (!plain) {
      return base::Internal("rtnl_link_alloc failed");
    }
    rtnl_link_set_mtu(plain.get(), mtu);
    rtnl_link_set_txqlen(plain.get(), txqlen);
    err = rtnl_link_change(sock, target.get(), plain.get(), 0);
  }
  if (err < 0) {
    return NlError("configure tap " + name, err);
  }
  return Status::Ok();
}

Status SetIndexUp(nl_sock* sock, int ifindex, const std::string& name) {
  Link target(rtnl_link_alloc());
  Link change(rtnl_link_alloc());
  if (!target || !change) {
    return base::Internal("rtnl_link_alloc failed");
  }
  rtnl_link_set_ifindex(target.get(), ifindex);
  rtnl_link_set_name(target.get(), name.c_str());
  rtnl_link_set_flags(change.get(), IFF_UP);
  int err = rtnl_link_change(sock, target.get(), change.get(), 0);
  if (err < 0) {
    return NlError("bring up " + name, err);
  }
  return Status::Ok();
}

Status ValidateIfName(const std::string& name, const char* what) {
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos ||
      name.find(' ') != std::string::npos) {
    return base::InvalidArgument(std::string(what) + " \"" + name + "\" is not a valid interface name (1..15 bytes)");
  }
  return Status::Ok();
}

}  // namespace

TapLink::~TapLink() {
  if (owned_ && netns_fd_) {
    (void)Remove(netns_fd_.get(), tap_name_, veth_name_);
  }
}

TapLink& TapLink::operator=(TapLink&& other) noexcept {
  if (this != &other) {
    if (owned_ && netns_fd_) {
      (void)Remove(netns_fd_.get(), tap_name_, veth_name_);
    }
    netns_fd_ = std::move(other.netns_fd_);
    tap_name_ = std::move(other.tap_name_);
    veth_name_ = std::move(other.veth_name_);
    guest_mac_ = std::move(other.guest_mac_);
    mtu_ = other.mtu_;
    queue_fds_ = std::move(other.queue_fds_);
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

base::Result<TapLink> TapLink::Create(int netns_fd, const TapLinkSpec& spec) {
  CHRYS_RETURN_IF_ERROR(ValidateIfName(spec.veth_name, "veth name"));
  CHRYS_RETURN_IF_ERROR(ValidateIfName(spec.tap_name, "tap name"));
  if (spec.queues < 1 || spec.queues > 256) {
    return base::InvalidArgument("tap queue count must be 1..256 (one per vCPU), got " + std::to_string(spec.queues));
  }
  TapLink link;
  link.netns_fd_.Reset(::fcntl(netns_fd, F_DUPFD_CLOEXEC, 0));
  if (!link.netns_fd_) {
    return base::SystemError("dup netns fd");
  }
  link.tap_name_ = spec.tap_name;
  link.veth_name_ = spec.veth_name;

  // One trip into the namespace (a thread each) for the socket and the queues. Link facts come from ioctls
  // on the netns-bound socket: they read under RCU, while every netlink request queues on the global rtnl
  // lock that a node starting many pods at once contends for.
  NlSock sock;
  VethFacts veth;
  Status opened = RunInNetns(netns_fd, [&]() -> Status {
    NlSock s(nl_socket_alloc());
    if (!s) {
      return base::Internal("nl_socket_alloc failed");
    }
    if (int err = nl_connect(s.get(), NETLINK_ROUTE); err < 0) {
      return NlError("connect netlink route socket in the pod netns", err);
    }
    sock = std::move(s);
    CHRYS_ASSIGN_OR_RETURN(veth, ReadVethFacts(nl_socket_get_fd(sock.get()), spec.veth_name));
    CHRYS_ASSIGN_OR_RETURN(int existing_index, IfIndexOf(nl_socket_get_fd(sock.get()), spec.tap_name));
    if (existing_index != 0) {
      return base::MakeError(base::ErrorCode::kAlreadyExists,
                             "tap " + spec.tap_name + " already exists in the pod network namespace");
    }
    CHRYS_ASSIGN_OR_RETURN(link.queue_fds_, OpenTunQueues(spec.tap_name, spec.queues, /*make_persistent=*/true));
    return Status::Ok();
  });
  if (!opened.ok()) {
    return opened.error();
  }
  link.mtu_ = veth.mtu;
  link.guest_mac_ = veth.mac;
  const int ioctl_fd = nl_socket_get_fd(sock.get());
  link.owned_ = true;  // from here on, leaving early removes the tap and the qdiscs

  CHRYS_ASSIGN_OR_RETURN(int tap_index, IfIndexOf(ioctl_fd, spec.tap_name));
  if (tap_index == 0) {
    return base::Internal("tap " + spec.tap_name + " vanished right after creation");
  }
  // The tap gets its qdisc while still down: an ingress qdisc added to a link that is up deactivates the link
  // first, which can wait for an RCU grace period with rtnl held. (The veth is up already; the gain of adding
  // its qdisc before the filters, hoping its wait covers theirs, was not measurable on a loaded machine.)
  CHRYS_RETURN_IF_ERROR(ConfigureDownTap(sock.get(), tap_index, spec.tap_name, link.mtu_, spec.tx_queue_len));
  CHRYS_RETURN_IF_ERROR(AddRootNoqueue(sock.get(), tap_index, spec.tap_name));
  CHRYS_RETURN_IF_ERROR(AddIngressQdisc(sock.get(), tap_index, spec.tap_name));
  CHRYS_RETURN_IF_ERROR(AddIngressQdisc(sock.get(), veth.ifindex, spec.veth_name));
  CHRYS_RETURN_IF_ERROR(AddRedirect(sock.get(), veth.ifindex, spec.veth_name, tap_index, spec.tap_name));
  CHRYS_RETURN_IF_ERROR(AddRedirect(sock.get(), tap_index, spec.tap_name, veth.ifindex, spec.veth_name));
  CHRYS_RETURN_IF_ERROR(SetIndexUp(sock.get(), tap_index, spec.tap_name));
  return link;
}

Status TapLink::Remove(int netns_fd, const std::string& tap_name, const std::string& veth_name) {
  CHRYS_ASSIGN_OR_RETURN(NlSock sock, RouteSocketIn(netns_fd));
  // The veth's redirect goes first so no packet is sent towards a tap that is going away.
  CHRYS_ASSIGN_OR_RETURN(Link veth, GetLink(sock.get(), veth_name));
  if (veth) {
    CHRYS_RETURN_IF_ERROR(DeleteIngressQdisc(sock.get(), rtnl_link_get_ifindex(veth.get()), veth_name));
  }
  CHRYS_ASSIGN_OR_RETURN(Link tap, GetLink(sock.get(), tap_name));
  if (tap) {
    int err = rtnl_link_delete(sock.get(), tap.get());
    if (err < 0 && !IsNotFound(err)) {
      return NlError("delete tap " + tap_name, err);
    }
  }
  return Status::Ok();
}

base::Result<std::vector<base::UniqueFd>> TapLink::OpenQueues(int netns_fd, const std::string& tap_name, int queues) {
  CHRYS_RETURN_IF_ERROR(ValidateIfName(tap_name, "tap name"));
  if (queues < 1 || queues > 256) {
    return base::InvalidArgument("tap queue count must be 1..256, got " + std::to_string(queues));
  }
  CHRYS_ASSIGN_OR_RETURN(NlSock sock, RouteSocketIn(netns_fd));
  CHRYS_ASSIGN_OR_RETURN(Link tap, GetLink(sock.get(), tap_name));
  if (!tap) {
    // Without this check TUNSETIFF would quietly create a new, unwired tap.
    return base::NotFound("tap " + tap_name + " does not exist in the pod network namespace");
  }
  std::vector<base::UniqueFd> fds;
  Status st = RunInNetns(netns_fd, [&]() -> Status {
    CHRYS_ASSIGN_OR_RETURN(fds, OpenTunQueues(tap_name, queues, /*make_persistent=*/false));
    return Status::Ok();
  });
  if (!st.ok()) {
    return st.error();
  }
  return fds;
}

Status TapLink::SetLinkUp(int netns_fd, const std::string& name, bool up) {
  CHRYS_RETURN_IF_ERROR(ValidateIfName(name, "link name"));
  CHRYS_ASSIGN_OR_RETURN(NlSock sock, RouteSocketIn(netns_fd));
  CHRYS_ASSIGN_OR_RETURN(Link link, GetLink(sock.get(), name));
  if (!link) {
    return base::NotFound("link " + name + " does not exist in the pod network namespace");
  }
  return ChangeLink(sock.get(), link.get(), name, 0, 0, up);
}

base::Result<TapLinkState> TapLink::Inspect(int netns_fd, const std::string& tap_name, const std::string& veth_name) {
  CHRYS_ASSIGN_OR_RETURN(NlSock sock, RouteSocketIn(netns_fd));
  TapLinkState state;
  CHRYS_ASSIGN_OR_RETURN(Link tap, GetLink(sock.get(), tap_name));
  if (tap) {
    state.tap_exists = true;
    state.tap_ifindex = rtnl_link_get_ifindex(tap.get());
    state.tap_mtu = rtnl_link_get_mtu(tap.get());
    state.tap_tx_queue_len = rtnl_link_get_txqlen(tap.get());
    state.tap_up = (rtnl_link_get_flags(tap.get()) & IFF_UP) != 0;
    CHRYS_ASSIGN_OR_RETURN(TunInfo tun, ReadTunInfo(sock.get(), state.tap_ifindex));
    state.tap_kind = tun.kind;
    state.tun_is_tap = tun.is_tap;
    state.tun_pi = tun.pi;
    state.tun_vnet_hdr = tun.vnet_hdr;
    state.tun_multi_queue = tun.multi_queue;
    state.tun_persist = tun.persist;
    state.tun_num_queues = tun.num_queues;
    state.tap_ingress_qdisc = HasIngressQdisc(sock.get(), state.tap_ifindex);
    state.tap_root_qdisc = RootQdiscKind(sock.get(), state.tap_ifindex);
    state.tap_filters = ReadFilters(sock.get(), state.tap_ifindex);
  }
  CHRYS_ASSIGN_OR_RETURN(Link veth, GetLink(sock.get(), veth_name));
  if (veth) {
    state.veth_exists = true;
    state.veth_ifindex = rtnl_link_get_ifindex(veth.get());
    state.veth_mtu = rtnl_link_get_mtu(veth.get());
    state.veth_mac = MacOf(veth.get());
    state.veth_up = (rtnl_link_get_flags(veth.get()) & IFF_UP) != 0;
    state.veth_ingress_qdisc = HasIngressQdisc(sock.get(), state.veth_ifindex);
    state.veth_filters = ReadFilters(sock.get(), state.veth_ifindex);
  }
  return state;
}

}  // namespace chrys::netcni
