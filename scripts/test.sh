#!/usr/bin/env bash
# Installs clipserve with its test extras, then runs lint, the import contracts and the tests.
# The clip-client 0.8.3 compatibility tests build their own venv under .cache/ on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_DISABLE_TELEMETRY=1
ruff check .
lint-imports
python -m pytest "$@"
