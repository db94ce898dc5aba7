"""The GPU benchmark of issue 19: model only and served end to end, one markdown table.

Model only (this process): ViT-B/32 and ViT-L/14 with random weights in ``--precision``
(fp16 on CUDA), images/s and texts/s at each ``--batches`` size. An image batch is the
model's own prepared input (uint8 crops on CUDA: the host-to-device copy and the
normalisation are in the time, the decode is not); a text batch is 12-token sentences,
tokenised beforehand.

Served (a ``clipserve serve`` subprocess, the Python client over gRPC, ``--streams``
concurrent calls): distinct real photos (tests/photos.py: packaged photos scaled to 0.2 MP
and 12 MP with grain, each file with its own JPEG comment so the cache never answers) for
each ``--gpu-decode`` setting, and 12-token sentences. The served/model ratio compares the
0.2 MP rate with the model-only rate at the server's batch size, in the same run.

    python benchmarks/bench_gpu.py [--device cuda] [--quick] [--out DIR]

``--device cpu --quick`` is the dry run of the plumbing (its figures are CPU figures).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_photos import cpu_kind, with_comment  # noqa: E402

from clipserve import Client  # noqa: E402
from clipserve.models.registry import load_model  # noqa: E402
from tests.compat.harness import serve_subprocess  # noqa: E402
from tests.photos import encode, source_photos, upscaled  # noqa: E402

#: the issue's anchors
TARGET_B32_IMAGES = 1200.0  # images/s, ViT-B/32 model only (TensorRT, batch 128)
TARGET_12MP_SERVED = 430.0  # images/s served, 12 MP JPEGs (10x Infinity's 43/s)
TARGET_SERVED_RATIO = 0.8  # served / model only, small photos
ANCHOR_TEXTS = 1064.0  # texts/s, CLIP-as-service on a TITAN RTX
WORDS = ["red", "blue", "small", "large", "old", "new", "happy", "quiet", "bright", "dark",
         "cat", "dog", "house", "tree", "car", "boat", "river", "mountain", "city", "garden",
         "road", "window", "table", "chair"]  # fmt: skip


def sentences(count: int, seed: int = 0) -> list[str]:
    """Distinct sentences of 10 words: 12 tokens with the start and end tokens."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 10)) + f" {index}" for index in range(count)]


def photo_set(megapixels: float, count: int, bases: int, folder: Path) -> list[str]:
    """Paths of ``count`` distinct JPEG files (what the Python client sends, like
    clip-client) from ``bases`` packaged photos scaled to the size, in ``folder``."""
    originals = source_photos()
    made = [encode(upscaled(originals[i % len(originals)][1], megapixels, seed=i))
            for i in range(bases)]  # fmt: skip
    paths = []
    for index in range(count):
        path = folder / f"photo-{megapixels}-{index}.jpg"
        path.write_bytes(with_comment(made[index % bases], f"bench-{megapixels}-{index}"))
        paths.append(str(path))
    return paths


def timed(work, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Calls of ``work`` per second: one warm-up call, then calls for about ``seconds``."""
    work()
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < seconds:
        work()
        calls += 1
    return calls / (time.perf_counter() - started)


def model_only(args: argparse.Namespace, name: str, photos: list[str]) -> list[dict]:
    model = load_model(name, device=args.device, precision=args.precision)
    files = photos[: max(args.batches)]
    prepared = [model.prepare_image(Path(photo).read_bytes()) for photo in files]
    rows = []
    for batch in args.batches:
        pixels = model.collate_images([prepared[i % len(prepared)] for i in range(batch)])
        tokens = model.prepare_texts(sentences(batch))
        rows.append({
            "model": name, "batch": batch,
            "images": batch * timed(lambda p=pixels: model.forward_images(p), args.seconds),
            "texts": batch * timed(lambda t=tokens: model.forward_texts(t), args.seconds),
        })  # fmt: skip
        print(f"model only {name} batch {batch}: {rows[-1]['images']:.0f} images/s, "
              f"{rows[-1]['texts']:.0f} texts/s", flush=True)  # fmt: skip
    model.close()
    return rows


def served_rate(port: int, items: list, batch: int, streams: int) -> float:
    """Items/s through ``streams`` concurrent ``encode`` calls of the Python client."""
    shares = [items[index::streams] for index in range(streams)]
    clients = [Client(f"grpc://127.0.0.1:{port}") for _ in shares]
    for client in clients:  # warm: connection, first batches
        client.encode(items[: min(len(items), batch)], batch_size=batch)
    errors: list[BaseException] = []

    def run(client: Client, share: list) -> None:
        try:
            result = client.encode(share, batch_size=batch)
            assert len(result) == len(share)
        except BaseException as exc:  # reported below, so a failed run never prints a rate
            errors.append(exc)

    pairs = zip(clients, shares, strict=True)
    threads = [threading.Thread(target=run, args=pair) for pair in pairs]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    if errors:
        raise errors[0]
    return len(items) / elapsed


def served(args: argparse.Namespace, small: list[str], big: list[str]) -> list[dict]:
    rows = []
    for mode in args.gpu_decode:
        flags = ["--model", "ViT-B-32::random", "--device", args.device, "--precision",
                 args.precision, "--gpu-decode", mode, "--max-batch-size", str(args.serve_batch),
                 "--cache-mb", "0"]  # fmt: skip
        with serve_subprocess(flags, ready_timeout=600) as server:
            row = {"gpu_decode": mode}
            row["small"] = served_rate(server.grpc_port, small, args.client_batch, args.streams)
            row["big"] = served_rate(server.grpc_port, big, args.client_batch, args.streams)
            if mode == args.gpu_decode[0]:
                texts = sentences(args.texts, seed=1)
                row["texts"] = served_rate(server.grpc_port, texts, 256, args.streams)
        print(f"served gpu-decode {mode}: {row}", flush=True)
        rows.append(row)
    return rows


def rate(value: float) -> str:
    """A rate for the table: whole numbers, tenths below 100 (a CPU dry run's figures)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def verdict(value: float, target: float) -> str:
    return f"{'met' if value >= target else 'NOT met'} (target >= {target:g})"


def table(args: argparse.Namespace, models: list[dict], serving: list[dict]) -> str:
    machine = gpu_name() if args.device.startswith("cuda") else cpu_kind()
    dry = " (quick dry run: CPU figures, not records)" if args.quick else ""
    lines = [
        f"## GPU check: {machine}, {datetime.date.today()}, device {args.device}, "
        f"precision {args.precision}{dry}",
        "",
        f"Command: `{' '.join(sys.argv)}`; host: {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| model only | batch | images/s | texts/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['model']} | {r['batch']} | {rate(r['images'])} | {rate(r['texts'])} |"
              for r in models]  # fmt: skip
    lines += ["", "| served ViT-B-32, gpu-decode | 0.2 MP images/s | 12 MP images/s | "
              "texts/s |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for row in serving:
        texts = rate(row["texts"]) if "texts" in row else ""
        lines.append(
            f"| {row['gpu_decode']} | {rate(row['small'])} | {rate(row['big'])} | {texts} |"
        )
    b32 = [r for r in models if r["model"] == "ViT-B-32::random"]
    at_128 = max(b32, key=lambda r: (r["batch"] == 128, r["batch"]))
    at_serve = min(b32, key=lambda r: abs(r["batch"] - args.serve_batch))
    best_small = max(row["small"] for row in serving)
    best_big = max(row["big"] for row in serving)
    texts = serving[0]["texts"]
    lines += [
        "",
        "| target | measured | verdict |",
        "| --- | ---: | --- |",
        f"| ViT-B/32 images, model only, batch {at_128['batch']} | {rate(at_128['images'])}/s "
        f"| {verdict(at_128['images'], TARGET_B32_IMAGES)} |",
        f"| 12 MP JPEGs served (best gpu-decode) | {rate(best_big)}/s | "
        f"{verdict(best_big, TARGET_12MP_SERVED)} |",
        f"| served / model only, 0.2 MP (model at batch {at_serve['batch']}) | "
        f"{best_small / at_serve['images']:.2f} | "
        f"{verdict(best_small / at_serve['images'], TARGET_SERVED_RATIO)} |",
        f"| texts served (12 tokens) vs CLIP-as-service | {rate(texts)}/s | "
        f"{texts / ANCHOR_TEXTS:.3f}x its {ANCHOR_TEXTS:g}/s |",
    ]
    return "\n".join(lines) + "\n"


def gpu_name() -> str:
    import torch

    return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default=None, help="default: fp16 on CUDA, float on CPU")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a plumbing dry run")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="table directory")
    args = parser.parse_args()
    args.precision = args.precision or ("float" if args.device == "cpu" else "fp16")
    if args.quick:
        args.models, args.batches, args.seconds = ["ViT-B-32::random"], [2, 4], 0.5
        args.small_count, args.big_count, args.bases, args.texts = 8, 2, 2, 8
        args.serve_batch, args.client_batch, args.streams = 4, 2, 2
    else:
        args.models, args.batches, args.seconds = ["ViT-B-32::random", "ViT-L-14::random"], [
            32, 128, 512], 3.0  # fmt: skip
        args.small_count, args.big_count, args.bases, args.texts = 2048, 512, 8, 8192
        args.serve_batch, args.client_batch, args.streams = 128, 64, 8
    args.gpu_decode = ["auto", "on", "off"]
    with tempfile.TemporaryDirectory() as folder:
        small = photo_set(0.2, args.small_count, args.bases, Path(folder))
        big = photo_set(12.0, args.big_count, args.bases, Path(folder))
        models = [row for name in args.models for row in model_only(args, name, small)]
        serving = served(args, small, big)
    text = table(args, models, serving)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
