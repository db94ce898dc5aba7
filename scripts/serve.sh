#!/usr/bin/env bash
# Installs clipserve into ./.venv unless it is current (see install.sh) and serves the
# built-in offline model: gRPC on :51000, HTTP + WebSocket on :51001. Extra arguments go to
# `clipserve serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/clipserve serve "$@"
