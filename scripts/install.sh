#!/usr/bin/env bash
# Creates ./.venv and installs clipserve with the server, ray and test extras.
# torch is pinned to the CPU wheel here (the package itself only asks for a range).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[server,ray,test]"
