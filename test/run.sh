#!/usr/bin/env bash
# The test command: installs the dependencies, builds everything, and runs the unit tests (test/) and the
# end-to-end tests of the real stack (e2e/, as root) with ctest. Ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build
ctest --test-dir build --output-on-failure --timeout 900 -j2
