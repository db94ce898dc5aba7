"""Model-only throughput of each family's base size: torch float32, onnx float32, onnx int8.

    python benchmarks/bench_families.py [--families clip siglip ...] [--batch 16] [--repeats 3]

Each family runs in its own subprocess (so one family's memory is gone before the next
loads), on random weights (``ARCH::random``: they cost exactly what real ones do). The
three settings are timed interleaved (round-robin, best of N); models over 400M parameters
(MetaCLIP 2's 901k-token vocabulary, AltCLIP's ViT-L + XLM-R large) in two phases to keep
the peak memory lower: torch alone, then the float and int8 sessions. Texts are the short
captions of ``bench_models`` through the family's stand-in tokenizer (about 12 tokens;
SigLIP pads every text to 64). Prints a table and the markdown rows of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: family key -> the base size (the smallest published architecture)
BASE = {
    "clip": "ViT-B-32::random",
    "siglip": "ViT-B-16-SigLIP::random",
    "siglip2": "ViT-B-16-SigLIP2::random",
    "siglip2_naflex": "ViT-B-16-SigLIP2-NaFlex::random",
    "metaclip2": "ViT-B-32-worldwide::random",
    "chinese_clip": "CN-CLIP/ViT-B-16::random",
    "altclip": "AltCLIP/ViT-L-14::random",
}
MEASURES = ("images/s", "texts/s")
#: models up to this size (millions of parameters) time all three settings interleaved
INTERLEAVE_UP_TO_M = 400


def measure_one(key: str, batch: int, repeats: int, cache_dir: Path) -> dict[str, Any]:
    """Time one family's three settings; returns rates, cosines and the padded width."""
    import torch
    from skimage import data

    from benchmarks.bench_models import SHORT_TEXTS, cosines, interleaved_best
    from clipserve.models.hf.core.onnx_model import OnnxDualEncoder, onnx_from_torch
    from clipserve.models.registry import load_model
    from clipserve.models.runtime import configured_threads, physical_cores

    threads = configured_threads() or physical_cores()
    torch.set_num_threads(threads)
    name = BASE[key]
    model = load_model(name)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    pixels = np.stack([model.prepare_image(photos[i % 4]) for i in range(batch)])
    tokens = model.prepare_texts([SHORT_TEXTS[i % len(SHORT_TEXTS)] for i in range(batch)])
    result: dict[str, Any] = {"family": model.family, "model": name, "dim": model.dim}
    result["text_width"] = int(tokens.input_ids.shape[1])
    result["parameters_m"] = sum(p.numel() for p in model.model.parameters()) / 1e6
    torch_workloads = {
        ("images/s", "torch float32"): lambda m=model: m.forward_images(pixels),
        ("texts/s", "torch float32"): lambda m=model: m.forward_texts(tokens),
    }
    # big models: torch timed alone and dropped before the sessions exist (memory);
    # the others: all three settings interleaved, so load from elsewhere hits them alike
    result["interleaved"] = result["parameters_m"] <= INTERLEAVE_UP_TO_M
    best = {} if result["interleaved"] else interleaved_best(torch_workloads, repeats)
    started = time.perf_counter()
    exact = onnx_from_torch(model, cache_dir=cache_dir, threads=threads)
    if result["interleaved"]:
        workloads = dict(torch_workloads)
    else:
        del model, torch_workloads
        gc.collect()
        workloads = {}
    int8 = OnnxDualEncoder.from_directory(
        exact.directory, name=name, threads=threads, precision="int8", cache_dir=cache_dir
    )
    result["export_s"] = time.perf_counter() - started
    for label, session in (("onnx float32", exact), ("onnx int8", int8)):
        workloads[("images/s", label)] = lambda s=session: s.forward_images(pixels)
        workloads[("texts/s", label)] = lambda s=session: s.forward_texts(tokens)
    best.update(interleaved_best(workloads, repeats))
    result["rates"] = {f"{m}|{b}": batch / seconds for (m, b), seconds in best.items()}
    result["int8_cosine"] = {
        "images": float(cosines(exact.forward_images(pixels), int8.forward_images(pixels)).min()),
        "texts": float(cosines(exact.forward_texts(tokens), int8.forward_texts(tokens)).min()),
    }
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI" + (" + BF16" if "avx512_bf16" in flags else "")
    return "AVX2" if "avx2" in flags else "no AVX2"


def markdown(results: list[dict[str, Any]]) -> str:
    settings = ("torch float32", "onnx float32", "onnx int8")
    header = ["family", "base model (random weights)", "params", "text tokens", "interleaved"]
    header += [f"{m} {s}" for m in MEASURES for s in settings]
    header += ["int8 min cos (img / txt)", "peak RSS"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        rates = [f"{r['rates'][f'{m}|{s}']:.1f}" for m in MEASURES for s in settings]
        cos = r["int8_cosine"]
        cells = [r["family"], f"`{r['model']}`", f"{r['parameters_m']:.0f}M", str(r["text_width"])]
        cells.append("yes" if r["interleaved"] else "torch apart")
        cells += rates + [f"{cos['images']:.4f} / {cos['texts']:.4f}"]
        cells.append(f"{r['peak_rss_gb']:.1f} GB")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=list(BASE), default=list(BASE))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=list(BASE), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help="ONNX cache (default: a temp dir)")
    args = parser.parse_args()
    if args.one:  # child: one family, one JSON line on stdout
        cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="bench-families-"))
        print(json.dumps(measure_one(args.one, args.batch, args.repeats, cache)), flush=True)
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    load_before = os.getloadavg()
    results = []
    for key in args.families:
        with tempfile.TemporaryDirectory(prefix="bench-families-") as cache:
            command = [sys.executable, "-m", "benchmarks.bench_families", "--one", key]
            command += ["--batch", str(args.batch), "--repeats", str(args.repeats)]
            command += ["--cache-dir", args.cache_dir or cache]
            console.print(f"{key}: {BASE[key]} ...")
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                console.print(f"[red]{key} failed[/red]\n{done.stderr[-3000:]}")
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    load_after = os.getloadavg()
    title = (
        f"model-only, batch {args.batch}, best of {args.repeats}; {cpu_name()} ({cpu_flags()}), "
        f"{os.cpu_count()} CPUs; load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    table = Table(title=title)
    for column in ("family", "model", "measure", "torch float32", "onnx float32", "onnx int8"):
        table.add_column(column)
    for r in results:
        for m in MEASURES:
            rates = [f"{r['rates'][f'{m}|{s}']:.1f}" for s in ("torch float32", "onnx float32",
                                                               "onnx int8")]  # fmt: skip
            table.add_row(r["family"], r["model"], m, *rates)
    console.print(table)
    print(markdown(results))
    print(f"\n{time.strftime('%Y-%m-%d')}; {title}")


if __name__ == "__main__":
    main()
