// The CNI ADD result (spec versions 0.3.x, 0.4.0, 1.0.0, 1.1.0) parsed into checked, typed fields.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::netcni {

struct CniInterface {
  std::string name;
  std::string mac;      // lower-case "aa:bb:cc:dd:ee:ff"; empty when the plugin gave none
  uint32_t mtu = 0;     // 0: not reported
  std::string sandbox;  // netns path for interfaces inside the pod, empty for host-side ones
  std::string socket_path;
  std::string pci_id;
};

struct CniIp {
  int family = 4;       // 4 or 6
  std::string address;  // without prefix
  int prefix_len = 0;
  std::string gateway;              // empty when none
  std::optional<size_t> interface;  // index into CniResult::interfaces
};

struct CniRoute {
  int family = 4;
  std::string dst;  // network address without prefix
  int dst_prefix_len = 0;
  std::string gw;  // empty: use the gateway of the matching ip
  uint32_t mtu = 0;
  uint32_t advmss = 0;
  uint32_t priority = 0;
  uint32_t table = 0;
  std::optional<uint8_t> scope;
};

struct CniDns {
  std::vector<std::string> nameservers;
  std::string domain;
  std::vector<std::string> search;
  std::vector<std::string> options;
};

struct CniResult {
  std::string cni_version;
  std::vector<CniInterface> interfaces;
  std::vector<CniIp> ips;
  std::vector<CniRoute> routes;
  CniDns dns;
  nlohmann::json raw;  // as the plugin printed it: passed on as prevResult and cached
};

// Parses and validates a result. Every field is checked (types, address syntax, prefix lengths, interface
// indexes, MAC syntax, numeric ranges); the error says which field of which plugin's output is wrong.
base::Result<CniResult> ParseCniResult(const nlohmann::json& doc, const std::string& origin);
base::Result<CniResult> ParseCniResultText(const std::string& text, const std::string& origin);

// Splits "10.1.0.5/24" into address, family and prefix; used for results and runtime inputs alike.
struct Cidr {
  int family = 4;
  std::string address;
  int prefix_len = 0;
};
base::Result<Cidr> ParseCidr(const std::string& text);
// 4 or 6 for a valid bare IP address, 0 otherwise.
int IpFamily(const std::string& address);
// True when `address` lies in `network`/`prefix_len` (same family).
bool CidrContains(const std::string& network, int prefix_len, const std::string& address);

}  // namespace chrys::netcni
