#!/usr/bin/env bash
# Installs every build, test and runtime dependency of Chrysalis from Debian bookworm packages.
# Idempotent: re-running only installs what is missing.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi

build_pkgs=(
  build-essential cmake ninja-build pkg-config git
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libabsl-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev
  libnl-3-dev libnl-route-3-dev
  libcurl4-openssl-dev libssl-dev
  libgtest-dev libgmock-dev googletest
  nlohmann-json3-dev libarchive-dev zlib1g-dev
  libcryptsetup-dev
  clang-format clang-tidy ccache
)
runtime_pkgs=(
  qemu-system-x86 qemu-utils qemu-system-common
  iproute2 containernetworking-plugins
  erofs-utils crun busybox-static cpio zstd lz4 kmod ca-certificates
  linux-image-cloud-amd64 linux-image-amd64
  cryptsetup-bin gdisk fdisk dosfstools mtools e2fsprogs ovmf grub-efi-amd64-bin
)
test_pkgs=(
  docker-registry skopeo openssl apache2-utils
  containerd socat procps
  golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev
)

missing=()
for p in "${build_pkgs[@]}" "${runtime_pkgs[@]}" "${test_pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps.sh: all dependencies present"
  exit 0
fi

echo "install-deps.sh: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Services shipped by these packages (registry, containerd) must not start on the host: the tests and
# benchmarks start their own copies on private sockets and ports.
policy_rc=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy_rc" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
  chmod 0755 "$policy_rc"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy_rc"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps.sh: done"
