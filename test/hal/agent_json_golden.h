// The agent.json chrysd renders for a one-NIC pod, shared by the renderer's and the parser's tests so the two
// sides of guest/hal/ENV_SHARE.md cannot drift apart.
#pragma once

namespace chrys::test {

inline constexpr const char* kGoldenAgentJson = R"({
  "channel": {
    "kind": "serial"
  },
  "container_storage": "/var/lib/chrys",
  "dns": {
    "options": [
      "ndots:5"
    ],
    "searches": [
      "default.svc.cluster.local"
    ],
    "servers": [
      "10.96.0.10"
    ]
  },
  "hostname": "web-0",
  "interfaces": [
    {
      "addresses": [
        "10.88.0.7/16"
      ],
      "mac": "02:42:0a:58:00:07",
      "mtu": 1500,
      "name": "eth0",
      "routes": [
        {
          "dst": "0.0.0.0/0",
          "gateway": "10.88.0.1"
        }
      ]
    }
  ],
  "sandbox_id": "pod1",
  "sysctls": {
    "net.ipv4.ip_unprivileged_port_start": "0"
  },
  "version": 1
}
)";

}  // namespace chrys::test
