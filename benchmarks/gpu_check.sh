#!/usr/bin/env bash
# Issue 19's check on a lent GPU, in one command of at most 10 minutes: installs the carried
# wheels (.whl/, made here by benchmarks/gpu_wheels.sh), runs the CUDA tests (tests/gpu) and
# the benchmark (benchmarks/bench_gpu.py), and leaves in $OUT: gpu_table.md (the table),
# gpu_tests.log, gpu_bench.log and the GPU's nvidia-smi line.
#
# On the device tool, from the checkout (the lead's, after merging the gpu branch):
#   bash benchmarks/gpu_wheels.sh          # here, once: fills .whl/ (about 1 MiB)
#   run  command: "bash benchmarks/gpu_check.sh"   carry: [".whl"]   timeout_s: 600
# Dry run of the plumbing on a CPU (figures are CPU figures, not records):
#   CLIPSERVE_GPU_WHEELS=none CLIPSERVE_GPU_BENCH_TIMEOUT=1800 PYTHON=.venv/bin/python \
#       bash benchmarks/gpu_check.sh --device cpu --quick
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/clipserve-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
PY=${PYTHON:-python3}
# the wheels are built for the device's Python 3.12; CLIPSERVE_GPU_WHEELS=none skips them
WHEELS=${CLIPSERVE_GPU_WHEELS:-.whl}
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/clipserve-site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/clipserve-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader | tee "$OUT/gpu_smi.txt"
$PY -c "import torch, clipserve; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'GPU' if torch.cuda.is_available() else 'no GPU')" || exit 1
# the tests first (about 2 minutes on a GPU), then the benchmark; both always run
timeout 240 $PY -m pytest tests/gpu -q -rs -p no:cacheprovider -o addopts="" 2>&1 \
    | tee "$OUT/gpu_tests.log"
tests=${PIPESTATUS[0]}
# 330 s leaves the tests their time within the device tool's 10 minutes; a dry run on a
# busy CPU may need more (CLIPSERVE_GPU_BENCH_TIMEOUT)
timeout "${CLIPSERVE_GPU_BENCH_TIMEOUT:-330}" $PY benchmarks/bench_gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
bench=${PIPESTATUS[0]}
echo "gpu_check.sh: tests exit $tests, benchmark exit $bench; table in $OUT/gpu_table.md"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
