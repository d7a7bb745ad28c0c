#include "netcni/cni_result.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "netcni/cni_config.h"

namespace chrys::netcni {
namespace {

using base::InvalidArgument;
using nlohmann::json;

base::Result<std::string> GetString(const json& obj, const char* key, const std::string& where, bool required) {
  if (!obj.contains(key)) {
    if (required) {
      return InvalidArgument(where + "." + key + " is missing");
    }
    return std::string();
  }
  if (!obj[key].is_string()) {
    return InvalidArgument(where + "." + key + " must be a string, got " + obj[key].dump());
  }
  return obj[key].get<std::string>();
}

base::Result<uint64_t> GetUnsigned(const json& obj, const char* key, const std::string& where, uint64_t max) {
  if (!obj.contains(key)) {
    return uint64_t{0};
  }
  const json& v = obj[key];
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
    return InvalidArgument(where + "." + key + " must be a non-negative integer, got " + v.dump());
  }
  uint64_t n = v.get<uint64_t>();
  if (n > max) {
    return InvalidArgument(where + "." + key + " = " + std::to_string(n) + " is out of range (max " +
                           std::to_string(max) + ")");
  }
  return n;
}

base::Result<std::vector<std::string>> GetStringList(const json& obj, const char* key, const std::string& where) {
  std::vector<std::string> out;
  if (!obj.contains(key)) {
    return out;
  }
  if (!obj[key].is_array()) {
    return InvalidArgument(where + "." + key + " must be a list of strings");
  }
  for (const auto& v : obj[key]) {
    if (!v.is_string()) {
      return InvalidArgument(where + "." + key + " must be a list of strings, got " + v.dump());
    }
    out.push_back(v.get<std::string>());
  }
  return out;
}

bool ValidMac(const std::string& mac) {
  // Ethernet (6 octets) or InfiniBand (20 octets) hardware addresses.
  size_t octets = (mac.size() + 1) / 3;
  if ((octets != 6 && octets != 20) || mac.size() != octets * 3 - 1) {
    return false;
  }
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i % 3 == 2 ? mac[i] != ':' : !std::isxdigit(static_cast<unsigned char>(mac[i]))) {
      return false;
    }
  }
  return true;
}

std::string Lower(std::string s) {
  for (auto& c : s) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

}  // namespace

int IpFamily(const std::string& address) {
  unsigned char buf[16];
  if (::inet_pton(AF_INET, address.c_str(), buf) == 1) {
    return 4;
  }
  if (::inet_pton(AF_INET6, address.c_str(), buf) == 1) {
    return 6;
  }
  return 0;
}

base::Result<Cidr> ParseCidr(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos) {
    return InvalidArgument("\"" + text + "\" is not in CIDR notation (address/prefix)");
  }
  Cidr out;
  out.address = text.substr(0, slash);
  out.family = IpFamily(out.address);
  if (out.family == 0) {
    return InvalidArgument("\"" + text + "\" does not start with a valid IP address");
  }
  const std::string prefix = text.substr(slash + 1);
  if (prefix.empty() || prefix.size() > 3 || prefix.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument("\"" + text + "\" has an invalid prefix length");
  }
  out.prefix_len = std::stoi(prefix);
  int max = out.family == 4 ? 32 : 128;
  if (out.prefix_len > max) {
    return InvalidArgument("\"" + text + "\" has prefix length " + prefix + ", more than " + std::to_string(max));
  }
  return out;
}

bool CidrContains(const std::string& network, int prefix_len, const std::string& address) {
  int family = IpFamily(network);
  if (family == 0 || family != IpFamily(address)) {
    return false;
  }
  unsigned char a[16] = {};
  unsigned char b[16] = {};
  int af = family == 4 ? AF_INET : AF_INET6;
  ::inet_pton(af, network.c_str(), a);
  ::inet_pton(af, address.c_str(), b);
  for (int bit = 0; bit < prefix_len; ++bit) {
    int mask = 0x80 >> (bit % 8);
    if ((a[bit / 8] & mask) != (b[bit / 8] & mask)) {
      return false;
    }
  }
  return true;
}

base::Result<CniResult> ParseCniResult(const json& doc, const std::string& origin) {
  auto bad = [&origin](const base::Error& e) {
    return InvalidArgument("CNI result from " + origin + ": " + e.message());
  };
  auto bad_text = [&origin](const std::string& what) {
    return InvalidArgument("CNI result from " + origin + ": " + what);
  };
  if (!doc.is_object()) {
    return bad_text("must be a JSON object, got " + doc.dump().substr(0, 200));
  }
  CniResult out;
  out.raw = doc;
  auto version = GetString(doc, "cniVersion", "result", true);
  if (!version.ok()) {
    return bad(version.error());
  }
  out.cni_version = *version;
  const auto& supported = SupportedCniVersions();
  if (std::find(supported.begin(), supported.end(), out.cni_version) == supported.end()) {
    return bad_text("cniVersion \"" + out.cni_version + "\" is not supported");
  }
  const bool legacy = CompareCniVersions(out.cni_version, "1.0.0") < 0;

  if (doc.contains("interfaces")) {
    if (!doc["interfaces"].is_array()) {
      return bad_text("interfaces must be a list");
    }
    for (size_t i = 0; i < doc["interfaces"].size(); ++i) {
      const json& item = doc["interfaces"][i];
      const std::string where = "interfaces[" + std::to_string(i) + "]";
      if (!item.is_object()) {
        return bad_text(where + " must be an object");
      }
      CniInterface itf;
      auto name = GetString(item, "name", where, true);
      auto mac = GetString(item, "mac", where, false);
      auto sandbox = GetString(item, "sandbox", where, false);
      auto socket = GetString(item, "socketPath", where, false);
      auto pci = GetString(item, "pciID", where, false);
      auto mtu = GetUnsigned(item, "mtu", where, 65535);
      for (const auto* r : {&name, &mac, &sandbox, &socket, &pci}) {
        if (!r->ok()) {
          return bad(r->error());
        }
      }
      if (!mtu.ok()) {
        return bad(mtu.error());
      }
      if (name->empty() || name->size() > 15 || name->find('/') != std::string::npos) {
        return bad_text(where + ".name \"" + *name + "\" is not a valid interface name");
      }
      if (!mac->empty() && !ValidMac(*mac)) {
        return bad_text(where + ".mac \"" + *mac + "\" is not a hardware address");
      }
      itf.name = *name;
      itf.mac = Lower(*mac);
      itf.sandbox = *sandbox;
      itf.socket_path = *socket;
      itf.pci_id = *pci;
      itf.mtu = static_cast<uint32_t>(*mtu);
      out.interfaces.push_back(std::move(itf));
    }
  }

  if (doc.contains("ips")) {
    if (!doc["ips"].is_array()) {
      return bad_text("ips must be a list");
    }
    for (size_t i = 0; i < doc["ips"].size(); ++i) {
      const json& item = doc["ips"][i];
      const std::string where = "ips[" + std::to_string(i) + "]";
      if (!item.is_object()) {
        return bad_text(where + " must be an object");
      }
      auto address = GetString(item, "address", where, true);
      if (!address.ok()) {
        return bad(address.error());
      }
      auto cidr = ParseCidr(*address);
      if (!cidr.ok()) {
        return bad_text(where + ".address: " + cidr.error().message());
      }
      CniIp ip;
      ip.family = cidr->family;
      ip.address = cidr->address;
      ip.prefix_len = cidr->prefix_len;
      auto gateway = GetString(item, "gateway", where, false);
      if (!gateway.ok()) {
        return bad(gateway.error());
      }
      if (!gateway->empty() && IpFamily(*gateway) != ip.family) {
        return bad_text(where + ".gateway \"" + *gateway + "\" is not an IPv" + std::to_string(ip.family) + " address");
      }
      ip.gateway = *gateway;
      if (legacy && item.contains("version")) {
        auto v = GetString(item, "version", where, false);
        if (!v.ok()) {
          return bad(v.error());
        }
        if (*v != std::to_string(ip.family)) {
          return bad_text(where + ".version \"" + *v + "\" does not match address " + *address);
        }
      }
      if (item.contains("interface")) {
        auto index = GetUnsigned(item, "interface", where, UINT32_MAX);
        if (!index.ok()) {
          return bad(index.error());
        }
        if (*index >= out.interfaces.size()) {
          return bad_text(where + ".interface = " + std::to_string(*index) + " is out of range (" +
                          std::to_string(out.interfaces.size()) + " interfaces)");
        }
        ip.interface = static_cast<size_t>(*index);
      }
      out.ips.push_back(std::move(ip));
    }
  }

  if (doc.contains("routes")) {
    if (!doc["routes"].is_array()) {
      return bad_text("routes must be a list");
    }
    for (size_t i = 0; i < doc["routes"].size(); ++i) {
      const json& item = doc["routes"][i];
      const std::string where = "routes[" + std::to_string(i) + "]";
      if (!item.is_object()) {
        return bad_text(where + " must be an object");
      }
      auto dst = GetString(item, "dst", where, true);
      if (!dst.ok()) {
        return bad(dst.error());
      }
      auto cidr = ParseCidr(*dst);
      if (!cidr.ok()) {
        return bad_text(where + ".dst: " + cidr.error().message());
      }
      CniRoute route;
      route.family = cidr->family;
      route.dst = cidr->address;
      route.dst_prefix_len = cidr->prefix_len;
      auto gw = GetString(item, "gw", where, false);
      if (!gw.ok()) {
        return bad(gw.error());
      }
      if (!gw->empty() && IpFamily(*gw) != route.family) {
        return bad_text(where + ".gw \"" + *gw + "\" is not an IPv" + std::to_string(route.family) + " address");
      }
      route.gw = *gw;
      auto mtu = GetUnsigned(item, "mtu", where, 65535);
      auto advmss = GetUnsigned(item, "advmss", where, 65535);
      auto priority = GetUnsigned(item, "priority", where, UINT32_MAX);
      auto table = GetUnsigned(item, "table", where, UINT32_MAX);
      auto scope = GetUnsigned(item, "scope", where, 255);
      for (const auto* r : {&mtu, &advmss, &priority, &table, &scope}) {
        if (!r->ok()) {
          return bad(r->error());
        }
      }
      route.mtu = static_cast<uint32_t>(*mtu);
      route.advmss = static_cast<uint32_t>(*advmss);
      route.priority = static_cast<uint32_t>(*priority);
      route.table = static_cast<uint32_t>(*table);
      if (item.contains("scope")) {
        route.scope = static_cast<uint8_t>(*scope);
      }
      out.routes.push_back(std::move(route));
    }
  }

  if (doc.contains("dns")) {
    const json& dns = doc["dns"];
    if (!dns.is_object()) {
      return bad_text("dns must be an object");
    }
    auto servers = GetStringList(dns, "nameservers", "dns");
    auto search = GetStringList(dns, "search", "dns");
    auto options = GetStringList(dns, "options", "dns");
    auto domain = GetString(dns, "domain", "dns", false);
    for (const auto* r : {&servers, &search, &options}) {
      if (!r->ok()) {
        return bad(r->error());
      }
    }
    if (!domain.ok()) {
      return bad(domain.error());
    }
    for (const auto& server : *servers) {
      if (IpFamily(server) == 0) {
        return bad_text("dns.nameservers entry \"" + server + "\" is not an IP address");
      }
    }
    out.dns.nameservers = *servers;
    out.dns.search = *search;
    out.dns.options = *options;
    out.dns.domain = *domain;
  }
  return out;
}

base::Result<CniResult> ParseCniResultText(const std::string& text, const std::string& origin) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    return InvalidArgument("CNI result from " + origin + " is not valid JSON (" + e.what() +
                           "): " + text.substr(0, 200));
  }
  return ParseCniResult(doc, origin);
}

}  // namespace chrys::netcni
