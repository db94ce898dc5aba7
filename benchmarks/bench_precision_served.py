"""Served images/s of a CLIP model in each backend and precision, end to end.

Each setting runs as its own `clipserve serve` subprocess (one at a time, so they do not
compete for the CPU): torch float32, torch bf16 (where the CPU has bf16 instructions), onnx
float32 and onnx int8. The same real photos (JPEG and PNG) go in requests of ``--batch``
over ``--streams`` concurrent gRPC streams, so decoding and preprocessing are included.

    python benchmarks/bench_precision_served.py [--model ViT-B-32::random] [--requests 4]
        [--settings onnx:float,onnx:int8]

The first onnx run exports the model (a minute or so) and the first int8 run quantizes it;
both are cached, and a warm-up request is sent before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_server import fixed_work, image_request, load_photos, percentile  # noqa: E402

from tests.compat.harness import serve_subprocess  # noqa: E402

SETTINGS = [("torch", "float"), ("torch", "bf16"), ("onnx", "float"), ("onnx", "int8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32::random")
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--requests", type=int, default=4, help="image requests per stream")
    parser.add_argument("--batch", type=int, default=32, help="images per request")
    parser.add_argument(
        "--settings", help="comma-separated backend:precision pairs (default: all four)"
    )
    args = parser.parse_args()
    photos = load_photos()
    settings = SETTINGS
    if args.settings:
        settings = [tuple(pair.split(":", 1)) for pair in args.settings.split(",")]
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        settings = [setting for setting in SETTINGS if setting[1] != "bf16"]
    rows = []
    for backend, precision in settings:
        flags = ["--model", args.model, "--backend", backend, "--precision", precision]
        with serve_subprocess([*flags, "--protocols", "grpc"], ready_timeout=900) as server:
            rate, latencies = asyncio.run(
                fixed_work(
                    server.grpc_port,
                    args.streams,
                    args.requests,
                    lambda start: image_request(photos, start, args.batch),
                    args.batch,
                    warmup=image_request(photos, 0, args.batch),
                )
            )
        rows.append((backend, precision, rate, percentile(latencies, 50)))
        print(f"  {backend} {precision}: {rate:.1f} images/s", flush=True)
    total = args.streams * args.requests * args.batch
    print(f"\n{args.model}: {total} images per setting in requests of {args.batch} over ")
    print(f"{args.streams} gRPC streams, through `clipserve serve` (decode + preprocess included)")
    base = rows[0][2]
    print(f"{'backend':<8} {'precision':<10} {'images/s':>9} {'vs torch float':>15} {'p50 ms':>8}")
    for backend, precision, rate, p50 in rows:
        print(f"{backend:<8} {precision:<10} {rate:>9.1f} {rate / base:>14.2f}x {p50:>8.0f}")


if __name__ == "__main__":
    main()
