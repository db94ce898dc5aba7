#!/usr/bin/env bash
# Creates (or reuses) the venv holding the published clip-client 0.8.3 for the compatibility
# tests and benchmarks. It never shares a venv with clipserve. Idempotent: a venv whose
# marker file exists is reused at once. Prints the venv's python path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CLIP_CLIENT_VENV:-.cache/clip-client-venv}
PYTHON=${PYTHON:-python3}
MARKER="$VENV/.clip-client-0.8.3-ready"

if [ ! -f "$MARKER" ]; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    # Pins that keep pip's resolver fast; jina>=3.27.1 breaks the client's HTTP path.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "clip-client==0.8.3" "jina==3.27.0" \
        "pydantic<2" "fastapi<0.100" "protobuf<5" "numpy<2" "urllib3<2" \
        "opentelemetry-api==1.19.0" "opentelemetry-sdk==1.19.0" \
        "opentelemetry-exporter-otlp==1.19.0" \
        "opentelemetry-exporter-otlp-proto-grpc==1.19.0" \
        "opentelemetry-exporter-otlp-proto-http==1.19.0" \
        "opentelemetry-exporter-otlp-proto-common==1.19.0" \
        "opentelemetry-proto==1.19.0" \
        "opentelemetry-exporter-prometheus==0.40b0" \
        "opentelemetry-semantic-conventions==0.40b0" \
        "opentelemetry-instrumentation==0.40b0" \
        "opentelemetry-instrumentation-grpc==0.40b0" \
        "opentelemetry-instrumentation-aiohttp-client==0.40b0" \
        "opentelemetry-instrumentation-fastapi==0.40b0" \
        "opentelemetry-instrumentation-asgi==0.40b0" \
        "opentelemetry-util-http==0.40b0"
    NO_VERSION_CHECK=1 "$VENV/bin/python" -c "import clip_client; assert clip_client.__version__ == '0.8.3'"
    touch "$MARKER"
fi
echo "$(cd "$VENV" && pwd)/bin/python"
