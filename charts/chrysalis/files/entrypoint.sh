#!/bin/bash
# Entrypoint of the chrysalis DaemonSet container. Installs Chrysalis into the host root with
# deploy/install.sh, then either
#   mode host:   starts the host's chrysd.service through the host's systemd and stays up as a health check,
#   mode daemon: runs chrysd in this container (exec, so it gets the container's signals).
# Environment (set by the chart; defaults in brackets):
#   CHRYSALIS_MODE           host | daemon [host]
#   CHRYSALIS_HOST_ROOT      where the host's / is mounted [/host]
#   CHRYSALIS_BUNDLE         the image's bundle: deploy/install.sh, build/cri/, build/guest-image/ [/opt/chrysalis]
#   CHRYSALIS_INSTALL_SCRIPT install.sh to run [$CHRYSALIS_BUNDLE/deploy/install.sh]
#   CHRYSALIS_BUILD_DIR      build tree with cri/chrysd and cri/chrysctl [$CHRYSALIS_BUNDLE/build]
#   CHRYSALIS_CONFIG         config.yaml from the chart's ConfigMap [/etc/chrysalis-config/config.yaml]
#   CHRYSALIS_SOCKET         chrysd's CRI socket, as this container sees it [/run/chrysalis/chrysalis.sock]
#   CHRYSALIS_INSTALL_CNI    true | false: install the example CNI config on nodes without one [true]
#   CHRYSALIS_HOST_EXEC      command prefix that runs a command in the host (mode host) [nsenter -t 1 -m --]
#   CHRYSALIS_START_TIMEOUT  seconds to wait for the socket to answer after starting [300]
#   CHRYSALIS_CHECK_INTERVAL seconds between health checks in mode host [30]
set -euo pipefail

log() { echo "chrysalis-entrypoint: $*"; }
die() {
  echo "chrysalis-entrypoint: error: $*" >&2
  exit 1
}

mode=${CHRYSALIS_MODE:-host}
host_root=${CHRYSALIS_HOST_ROOT:-/host}
bundle=${CHRYSALIS_BUNDLE:-/opt/chrysalis}
install_script=${CHRYSALIS_INSTALL_SCRIPT:-$bundle/deploy/install.sh}
build_dir=${CHRYSALIS_BUILD_DIR:-$bundle/build}
config=${CHRYSALIS_CONFIG:-/etc/chrysalis-config/config.yaml}
socket=${CHRYSALIS_SOCKET:-/run/chrysalis/chrysalis.sock}
install_cni=${CHRYSALIS_INSTALL_CNI:-true}
read -r -a host_exec <<<"${CHRYSALIS_HOST_EXEC:-nsenter -t 1 -m --}"
start_timeout=${CHRYSALIS_START_TIMEOUT:-300}
check_interval=${CHRYSALIS_CHECK_INTERVAL:-30}
chrysctl=$build_dir/cri/chrysctl

case "$mode" in
  host | daemon) ;;
  *) die "CHRYSALIS_MODE is '$mode'; expected host or daemon" ;;
esac
[[ "$start_timeout" =~ ^[0-9]+$ ]] || die "CHRYSALIS_START_TIMEOUT is '$start_timeout'; expected whole seconds"
[[ "$check_interval" =~ ^[1-9][0-9]*$ ]] || die "CHRYSALIS_CHECK_INTERVAL is '$check_interval'; expected whole seconds"
[ -d "$host_root" ] || die "host root '$host_root' is not a directory (is the host's / mounted there?)"
[ -x "$install_script" ] || die "install script '$install_script' is missing from the image"

args=(--root "$host_root" --build-dir "$build_dir" --config "$config" --force-config)
[ "$install_cni" = true ] || args+=(--no-cni)
[ "$mode" = daemon ] && args+=(--no-unit)
log "installing into $host_root (mode $mode)"
"$install_script" "${args[@]}"

# Waits until chrysd answers on the socket, or fails naming the socket after the timeout.
wait_for_socket() {
  local deadline=$((SECONDS + start_timeout))
  until "$chrysctl" --socket "$socket" version >/dev/null 2>&1; do
    if [ -n "${1:-}" ] && ! kill -0 "$1" 2>/dev/null; then
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "chrysd did not answer on $socket within ${start_timeout}s"
    fi
    sleep 1
  done
  log "chrysd answers on $socket"
}

if [ "$mode" = daemon ]; then
  log "running chrysd in this container"
  exec "$build_dir/cri/chrysd" --config "$config"
fi

# mode host: the unit is installed; let the host's systemd (re)start it. Restarting chrysd is safe:
# KillMode=process leaves running VMs alone and chrysd adopts them again.
log "starting chrysd.service on the host"
"${host_exec[@]}" systemctl daemon-reload
"${host_exec[@]}" systemctl enable chrysd.service
"${host_exec[@]}" systemctl restart chrysd.service
wait_for_socket

# Stay up as the node's health check; the pod's probes run chrysctl too. On SIGTERM (pod deleted or
# upgraded) exit and leave chrysd.service running.
trap 'log "stopping; chrysd.service keeps running on the host"; exit 0' TERM INT
while true; do
  sleep "$check_interval" &
  wait $! || true
  if ! "$chrysctl" --socket "$socket" version >/dev/null 2>&1; then
    log "warning: chrysd does not answer on $socket"
  fi
done
