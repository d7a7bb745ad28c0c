#!/usr/bin/env bash
# The test command: installs the dependencies, builds everything, and runs the unit tests (test/) and the
# end-to-end tests of the real stack (e2e/, as root) with ctest. Ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build
# Unit tests in parallel; the e2e tests one at a time, since several of them check that the whole host is left
# clean (no netns, VMM, mount) and would see each other's pods.
ctest --test-dir build --output-on-failure --timeout 300 -j2 -L unit
ctest --test-dir build --output-on-failure --timeout 900 -L e2e
