#!/usr/bin/env bash
# Quick start on a fresh Debian bookworm machine (as root): installs the dependencies, builds Chrysalis,
# starts chrysd on its embedded defaults, queries it over the CRI socket, and stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build

socket=/run/chrysalis/chrysalis.sock
log=$(mktemp /tmp/chrysd-quickstart.XXXXXX.log)
echo "== starting chrysd (embedded defaults, socket $socket, log $log)"
./build/cri/chrysd >"$log" 2>&1 &
chrysd_pid=$!
cleanup() {
  if kill -0 "$chrysd_pid" 2>/dev/null; then
    kill -TERM "$chrysd_pid"
    wait "$chrysd_pid" || true
  fi
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  [ -S "$socket" ] && break
  if ! kill -0 "$chrysd_pid" 2>/dev/null; then
    echo "chrysd exited early:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done

echo "== chrysctl version"
./build/cri/chrysctl --socket "$socket" version
echo "== chrysctl info"
./build/cri/chrysctl --socket "$socket" info
echo "== stopping chrysd"
cleanup
trap - EXIT
echo "quick start done"
