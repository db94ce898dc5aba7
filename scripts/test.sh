#!/usr/bin/env bash
# Installs clipserve with its test extras, then runs lint, the import contracts and the tests.
# The clip-client 0.8.3 compatibility tests build their own venv under .cache/ on first run;
# scripts/install-browser.sh adds Chromium for the browser tests (apt-get, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install-browser.sh
# qemu-user (>= 7.2 emulates AVX2) lets tests/models/test_int8_emulated.py run onnxruntime's
# AVX2 int8 kernels on any x86-64 machine; without it those tests are skipped with a reason
if ! command -v qemu-x86_64 >/dev/null && [ "$(uname -m)" = x86_64 ] && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q qemu-user || { apt-get update -q && apt-get install -y -q qemu-user; }; } \
        >/dev/null 2>&1 || echo "scripts/test.sh: could not install qemu-user" >&2
    # installed here, the emulated-AVX2 tests must run: a failed install fails them
    # instead of skipping them quietly
    export CLIPSERVE_REQUIRE_QEMU=${CLIPSERVE_REQUIRE_QEMU:-1}
fi
. .venv/bin/activate
export HF_HUB_DISABLE_TELEMETRY=1
# the browser (Chromium) and clipserve.js (Node) tests fail rather than skip when their
# tools are missing; set it to 0 to run the rest without them
export CLIPSERVE_REQUIRE_BROWSER=${CLIPSERVE_REQUIRE_BROWSER:-1}
ruff check .
lint-imports
python -m pytest "$@"
