"""Served images/s with camera-size JPEGs vs the model's forward pass alone, in one run.

For each model setting, a `clipserve serve` subprocess (default settings: fast decode, one
decode thread per CPU, embedding cache on) gets distinct 12 MP and 3 MP JPEGs (packaged
photos scaled up, with camera-like grain: tests/photos.py) in requests of ``--batch`` over
``--streams`` gRPC streams, ``--requests`` each (one in flight per stream, so the server holds
several requests at once and decodes one while the model runs another). Every request's
photos carry a fresh JPEG comment, so no two files sent are the same bytes and the cache
never answers (its hashing cost is included).
In between, this process runs the same model's forward pass alone on already-prepared
pixels (same batch size, same thread settings). Rounds alternate, so both see the same
machine; the ratio is per round. The profile columns split the server's CPU time: decode +
preprocess (``clipserve_prepare_cpu_seconds``) against the process total; and compare CPU
time per image, served (the server process) and model alone (this process): on a machine
shared with other work that ratio predicts the throughput ratio the server would reach with
the cores to itself better than wall-clock rates do.

    python benchmarks/bench_photos.py [--settings builtin:torch:float,ViT-B-32::random:onnx:int8]
        [--megapixels 12,3] [--photos 32] [--rounds 3] [--batch 32] [--streams 4] [--requests 4]

Also ``--scaling``: decode + preprocess of the 12 MP photos on 1 thread, on one thread per
CPU and on one process per CPU (is the GIL in the way?).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import struct
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_server import fixed_work  # noqa: E402

from clipserve.models.registry import load_model  # noqa: E402
from clipserve.models.runtime import available_cpus  # noqa: E402
from clipserve.wire import DocumentProto  # noqa: E402
from clipserve.wire.messages import new_request  # noqa: E402
from tests.compat.harness import serve_subprocess  # noqa: E402
from tests.photos import big_photos  # noqa: E402

DEFAULT_SETTINGS = "builtin:torch:float,ViT-B-32::random:onnx:int8"


def with_comment(jpeg: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment after its start marker: other bytes, same pixels."""
    body = tag.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def cpu_kind() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.*)", flags)
    isa = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX2" if "avx2" in flags else "?"
    return f"{name.group(1) if name else platform.processor()}, {available_cpus()} CPUs, {isa}"


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepare_cpu_seconds(http_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=30).text
    match = re.search(r'clipserve_prepare_cpu_seconds_total\{modality="image"\} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def model_only(model, pixels: np.ndarray, batches: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(images/s, CPU ms per image of this process: the model's threads included)."""
    time.sleep(0.5)  # let the server's idle threads settle
    model.forward_images(pixels)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        model.forward_images(pixels)
    images = batches * len(pixels)
    return images / (time.perf_counter() - started), (time.process_time() - cpu) * 1e3 / images


def served(server, photos: list[bytes], args: argparse.Namespace, round_tag: str):  # type: ignore[no-untyped-def]
    """(images/s, decode share of the server's CPU time, server CPU ms per image)."""

    def request(start: int):  # type: ignore[no-untyped-def]
        docs = [
            DocumentProto(
                id=f"{round_tag}-{start + k}",
                blob=with_comment(photos[(start + k) % len(photos)], f"{round_tag}-{start + k}"),
                mime_type="image/jpeg",
            )
            for k in range(args.batch)
        ]
        return new_request(docs, "/encode", {"drop_image_content": True})

    per_stream = args.requests
    cpu_before = process_cpu_seconds(server.process.pid)
    prepare_before = prepare_cpu_seconds(server.http_port)
    rate, _ = asyncio.run(
        fixed_work(
            server.grpc_port,
            args.streams,
            per_stream,
            request,
            args.batch,
            warmup=request(10_000_000),
        )
    )
    cpu = process_cpu_seconds(server.process.pid) - cpu_before
    prepare = prepare_cpu_seconds(server.http_port) - prepare_before
    images = (per_stream * args.streams + args.streams) * args.batch  # warm-ups included
    return rate, prepare / cpu if cpu else float("nan"), cpu * 1e3 / images


def bench_setting(setting: str, sizes: dict[float, list[bytes]], args: argparse.Namespace) -> list:  # type: ignore[type-arg]
    name, backend, precision = setting.rsplit(":", 2)
    model = load_model(name, backend=backend, precision=precision)
    model.warmup()
    first = next(iter(sizes.values()))
    pixels = np.stack([model.prepare_image(first[i % len(first)]) for i in range(args.batch)])
    flags = ["--model", name, "--backend", backend, "--precision", precision]
    flags += ["--protocols", "grpc,http", "--max-batch-size", str(args.batch)]
    rows = []
    with serve_subprocess(flags, ready_timeout=900) as server:
        for megapixels, photos in sizes.items():
            runs = []
            for index in range(args.rounds):
                model_rate, model_cpu = model_only(model, pixels, args.requests * args.streams)
                rate, share, served_cpu = served(server, photos, args, f"{megapixels}-{index}")
                runs.append((model_rate, rate, rate / model_rate, share, model_cpu, served_cpu))
                print(f"  {setting} {megapixels:g} MP round {index}: served {rate:.1f}, "
                      f"model alone {model_rate:.1f} images/s; CPU ms/image served "
                      f"{served_cpu:.0f}, model alone {model_cpu:.0f}; decode {share:.0%} of "
                      "server CPU", flush=True)  # fmt: skip
            medians = [statistics.median(column) for column in zip(*runs, strict=True)]
            rows.append((setting, megapixels, *medians))
    model.close()
    return rows


def scaling(photos: list[bytes]) -> None:
    from clipserve.models.hf.core.images import ImagePreprocessor

    prepare = ImagePreprocessor()
    cpus = available_cpus()
    rows = []
    for label, pool in (
        ("1 thread", ThreadPoolExecutor(1)),
        (f"{cpus} threads", ThreadPoolExecutor(cpus)),
        (f"{cpus} processes", ProcessPoolExecutor(cpus)),
    ):
        with pool:
            list(pool.map(prepare, photos[:cpus]))  # start the workers
            started = time.perf_counter()
            list(pool.map(prepare, photos))
            rows.append((label, len(photos) / (time.perf_counter() - started)))
    print(f"\ndecode + CLIP preprocessing of {len(photos)} 12 MP JPEGs ({cpus} CPUs)")
    print("| workers | images/s | vs 1 thread |\n|---|---|---|")
    for label, rate in rows:
        print(f"| {label} | {rate:.1f} | {rate / rows[0][1]:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="name:backend:precision,...")
    parser.add_argument("--megapixels", default="12,3")
    parser.add_argument("--photos", type=int, default=32, help="distinct photos per size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument(
        "--requests", type=int, default=4, help="requests per stream, one in flight per stream"
    )
    parser.add_argument("--scaling", action="store_true", help="only the threads/processes table")
    args = parser.parse_args()
    sizes = {float(mp): [data for _, data in big_photos(args.photos, float(mp))]
             for mp in args.megapixels.split(",")}  # fmt: skip
    for megapixels, photos in sizes.items():
        mean_mb = statistics.mean(len(p) for p in photos) / 1e6
        print(f"{len(photos)} photos of {megapixels:g} MP, {mean_mb:.1f} MB on average")
    if args.scaling:
        scaling(next(iter(sizes.values())))
        return
    load_before = os.getloadavg()[0]
    rows = []
    for setting in args.settings.split(","):
        rows += bench_setting(setting, sizes, args)
    load_after = os.getloadavg()[0]
    print(f"\n{cpu_kind()}; {time.strftime('%Y-%m-%d')}; 1-min load {load_before:.1f} -> "
          f"{load_after:.1f}; {args.requests} requests of {args.batch} on each of "
          f"{args.streams} gRPC streams; medians of {args.rounds} rounds")  # fmt: skip
    print(
        "| model | photos | model alone, images/s | served, images/s | served / model "
        "(target >= 0.8) | decode share of server CPU | CPU ms/image, model alone / served "
        "| CPU ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for setting, megapixels, alone, rate, ratio, share, model_cpu, served_cpu in rows:
        print(f"| {setting} | {megapixels:g} MP JPEG | {alone:.1f} | {rate:.1f} | "
              f"**{ratio:.2f}** | {share:.0%} | {model_cpu:.0f} / {served_cpu:.0f} | "
              f"{model_cpu / served_cpu:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
