#!/usr/bin/env bash
# Quick start on a fresh Debian bookworm machine (as root, no registry access needed): installs the dependencies,
# builds Chrysalis and the guest (kernel + initramfs with the agent) into /var/lib/chrysalis/guest, starts chrysd
# on a private CNI network, imports a small demo image built from Debian's busybox-static, runs one pod with one
# container through the CRI socket, prints what that container printed (the kernel and machine it saw: a QEMU
# VM), then removes the pod, stops chrysd and deletes the network. Exits non-zero, naming the step, on failure.
#
# Environment: CHRYS_BUILD_DIR (default ./build), CHRYS_ACCEL (auto|kvm|tcg, default auto),
#              CHRYS_SKIP_DEPS=1 to skip deploy/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

build=${CHRYS_BUILD_DIR:-$repo/build}
accel=${CHRYS_ACCEL:-auto}
guest_dir=/var/lib/chrysalis/guest
socket=/run/chrysalis/chrysalis.sock
cni_dir=/run/chrysalis/quickstart-cni
bridge=chrys-qs0
subnet=10.199.77.0/24
image_ref=localhost/chrysalis/demo:latest
work=$(mktemp -d /tmp/chrysalis-quickstart.XXXXXX)
log=$work/chrysd.log
chrysctl=$build/cri/chrysctl
chrysd_pid=
step=setup

step() {
  step=$1
  echo "== $step"
}

# Removes what the quick start made; with a non-zero status, says which step failed and keeps chrysd's log.
teardown() {
  local rc=$1
  set +e
  if [ -n "$chrysd_pid" ] && kill -0 "$chrysd_pid" 2>/dev/null; then
    # Pods whose containers failed half-way are still there when the run step failed: remove them first.
    for pod in $("$chrysctl" --socket "$socket" pods -q --label app=chrysalis-quickstart 2>/dev/null); do
      "$chrysctl" --socket "$socket" rmp --force "$pod" >/dev/null
    done
    kill -TERM "$chrysd_pid"
    wait "$chrysd_pid" 2>/dev/null
  fi
  ip link del "$bridge" 2>/dev/null
  rm -rf "$cni_dir"
  if [ "$rc" -ne 0 ]; then
    echo "quick start FAILED at step: $step (exit $rc)" >&2
    if [ -s "$log" ]; then
      echo "--- last lines of chrysd's log ($log) ---" >&2
      tail -n 40 "$log" >&2
      echo "--- the whole log stays in $work ---" >&2
    fi
  else
    rm -rf "$work"
  fi
  set -e
}
trap 'rc=$?; teardown "$rc"; exit "$rc"' EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart.sh: run as root (VMs, network namespaces, CNI)" >&2
  exit 1
fi

if [ "${CHRYS_SKIP_DEPS:-0}" != 1 ]; then
  step "installing dependencies (deploy/install-deps.sh)"
  deploy/install-deps.sh
fi

step "building chrysd, chrysctl, the guest agent and the guest image builder ($build)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target chrysd chrysctl chrys-agent chrys-guest-image

step "building the guest into $guest_dir"
agent=$build/guest/agent/chrys-agent
if [ -f "$guest_dir/manifest.json" ] && [ "$guest_dir/manifest.json" -nt "$agent" ] &&
  [ "$guest_dir/manifest.json" -nt "$build/guest/image/chrys-guest-image" ]; then
  echo "up to date"
else
  "$build/guest/image/chrys-guest-image" --agent "$agent" --out "$guest_dir"
fi

step "writing a private CNI network ($cni_dir: bridge $bridge, $subnet; /etc/cni/net.d is not touched)"
mkdir -p "$cni_dir/ipam"
cat >"$cni_dir/10-quickstart.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "chrysalis-quickstart",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$cni_dir/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF

step "starting chrysd (socket $socket, log $log)"
mkdir -p /run/chrysalis
"$build/cri/chrysd" --socket "$socket" --log-level info \
  --set "cni.conf_dir=$cni_dir" --set "vmm.guest_dir=$guest_dir" --set "vmm.accel=$accel" >"$log" 2>&1 &
chrysd_pid=$!
for _ in $(seq 1 300); do
  if ! kill -0 "$chrysd_pid" 2>/dev/null; then
    echo "chrysd exited during start" >&2
    exit 1
  fi
  if [ -S "$socket" ] && "$chrysctl" --socket "$socket" version >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
"$chrysctl" --socket "$socket" version

step "building the demo image from busybox-static and importing it as $image_ref"
deploy/demo/build-demo-image.sh "$work/demo-image" "$image_ref"
"$chrysctl" --socket "$socket" import --name "$image_ref" "$work/demo-image"

step "running a pod with one container (chrysctl run: RunPodSandbox, CreateContainer, StartContainer, logs)"
cat >"$work/pod.json" <<EOF
{
  "metadata": {"name": "quickstart", "namespace": "default", "uid": "quickstart-$$", "attempt": 0},
  "hostname": "chrysalis-quickstart",
  "log_directory": "$work/logs",
  "labels": {"app": "chrysalis-quickstart"}
}
EOF
cat >"$work/container.json" <<EOF
{
  "metadata": {"name": "hello"},
  "image": {"image": "$image_ref"},
  "log_path": "hello.log"
}
EOF
echo "--- the container's output ---"
"$chrysctl" --socket "$socket" run --no-pull --timeout 600 "$work/container.json" "$work/pod.json"
echo "--- the host, for comparison ---"
echo "host kernel:  $(cat /proc/version)"
echo "host machine: $(cat /sys/class/dmi/id/sys_vendor 2>/dev/null || echo unknown) $(cat /sys/class/dmi/id/product_name 2>/dev/null)"
echo "host cpus:    $(nproc)"

step "cleaning up (pod removed by chrysctl run; stopping chrysd, deleting $bridge)"
trap - EXIT
teardown 0
echo "quick start done: the container above ran in its own VM"
