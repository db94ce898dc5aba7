#!/usr/bin/env bash
# Creates ./.venv and installs clipserve (editable) with the server, docarray, test and docs extras.
#
# torch: the package itself asks only for a range; this script installs $CLIPSERVE_TORCH
# (default "torch==2.13.0") from pip's configured indexes. On plain PyPI that is the Linux
# CUDA build (torch plus several GB of NVIDIA wheels). For the CPU-only build (about 200 MB):
#   CLIPSERVE_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/install.sh
# or name a wheel file: CLIPSERVE_TORCH=/path/to/torch-2.13.0+cpu-cp311-...whl
#
# Nothing is installed when .venv was installed from the same pyproject.toml, this script and
# the same torch choice (the editable install follows code changes); CLIPSERVE_REINSTALL=1
# installs anyway.
set -euo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SCRIPT")/.."
PYTHON=${PYTHON:-python3}
TORCH=${CLIPSERVE_TORCH:-torch==2.13.0}
TORCH_INDEX=${CLIPSERVE_TORCH_INDEX:-}
STAMP=.venv/.clipserve-install-stamp
WANT="$(cat pyproject.toml "$SCRIPT" | sha256sum | cut -d' ' -f1) $TORCH $TORCH_INDEX"
if [ "${CLIPSERVE_REINSTALL:-0}" != 1 ] && [ -x .venv/bin/python ] \
    && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
    exit 0  # current
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [ -n "$TORCH_INDEX" ]; then
    python -m pip install -q --index-url "$TORCH_INDEX" "$TORCH"
else
    python -m pip install -q "$TORCH"
fi
python -m pip install -q -e ".[server,docarray,test,docs]"
echo "$WANT" > "$STAMP"
