"""What the int8 benchmarks share (bench_int8.py, int8_layers.py): the towers measured (the
tests' tiny random CLIP, ViT-B/32 with random weights, the built-in model's text tower), their
float graphs and inputs, the candidate recipes, and running graphs here or on an emulated CPU.

Graphs run in a separate process, ``tests/models/emulated_runs.py``, either directly or under
``qemu-x86_64 -cpu <model>``: onnxruntime then sees the emulated CPUID and takes the kernels
that CPU would (qemu >= 7.2 emulates AVX2; speed under emulation means nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clipserve.models.quantize import RECIPE, Recipe, int8_graph  # noqa: E402
from tests.models.precision_testkit import CAPTIONS, PHOTOS, TEXTS  # noqa: E402

RUNNER = REPO / "tests" / "models" / "emulated_runs.py"
MODELS = ("tiny", "ViT-B-32::random", "builtin")
#: the recipes compared, by a short key: "old" is the one before issue 10, "7bit" the one in use
CANDIDATES = {
    "old": Recipe("8-bit s8, per channel (old)", reduce_range=False),
    "7bit": RECIPE,
    "8bit-tensor": Recipe("8-bit s8, per tensor", per_channel=False, reduce_range=False),
    "7bit-tensor": Recipe("7-bit s8, per tensor", per_channel=False),
    "u8": Recipe("8-bit u8, per channel", weights="u8", reduce_range=False),
}


def short_name(recipe: Recipe) -> str:
    return "7-bit s8, per channel (in use)" if recipe == RECIPE else recipe.name


@dataclass
class Tower:
    """One tower of one model: its float graph, the tests' inputs and a timing batch."""

    model: str
    tower: str
    graph: Path
    feeds: dict[str, np.ndarray]
    timing: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} {self.tower}"

    @property
    def timing_items(self) -> int:
        return len(next(iter(self.timing.values())))


def load_towers(models: list[str], batch: int, cache_dir: Path) -> list[Tower]:
    """Float graphs (exported once into ``cache_dir``) and inputs of each model's towers."""
    towers: list[Tower] = []
    for name in models:
        if name == "builtin":
            towers.append(_builtin_text(batch, cache_dir))
        else:
            towers.extend(_clip_towers(name, batch, cache_dir))
    return towers


def _clip_towers(name: str, batch: int, cache_dir: Path) -> list[Tower]:
    from clipserve.models.registry import load_model
    from tests.models.clip_testkit import save_tiny_clip

    if name == "tiny":
        source = cache_dir / "tiny-clip"
        if not (source / "config.json").is_file():
            save_tiny_clip(source)
        name = str(source)
    model = load_model(name, backend="onnx", cache_dir=cache_dir)
    label = "tiny" if name.endswith("tiny-clip") else name
    texts = model.prepare_texts(TEXTS)
    photos = np.stack([model.prepare_image(photo) for photo in PHOTOS])
    many = model.tokenizer([TEXTS[i % 2] for i in range(batch)], pad_to=77)
    return [
        Tower(label, "text", model.graphs[0], {"input_ids": texts.input_ids},
              {"input_ids": many.input_ids}),
        Tower(label, "image", model.graphs[1], {"pixel_values": photos},
              {"pixel_values": photos[np.arange(batch) % len(photos)]}),
    ]  # fmt: skip


def _builtin_text(batch: int, cache_dir: Path) -> Tower:
    from clipserve.models.builtin.model import BuiltinModel

    model = BuiltinModel(backend="onnx")
    captions = model.prepare_texts(CAPTIONS)
    many = model.prepare_texts([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])
    feeds = {"input_ids": captions.input_ids, "attention_mask": captions.attention_mask}
    timing = {"input_ids": many.input_ids, "attention_mask": many.attention_mask}
    return Tower("builtin", "text", model.onnx_files[0], feeds, timing)


def int8_twin(tower: Tower, recipe: Recipe, cache_dir: Path) -> Path:
    return int8_graph(tower.graph, cache_dir, recipe)


def run_graphs(
    runs: list[tuple[Path, dict[str, np.ndarray], str]],
    work: Path,
    emulate: str | None = None,
    every_output: bool = False,
) -> tuple[dict[str, np.ndarray], dict]:
    """Run each (graph, feeds, key) in one separate process, on this CPU or under qemu with
    ``-cpu emulate``; returns the outputs by key and that CPU's ``cpu_report``."""
    work.mkdir(parents=True, exist_ok=True)
    arrays, specs = {}, []
    for index, (graph, feeds, key) in enumerate(runs):
        names = {}
        for name, value in feeds.items():
            arrays[f"{index}/{name}"] = value
            names[name] = f"{index}/{name}"
        specs.append({"graph": str(graph), "feeds": names, "output": key,
                      "every_output": every_output})  # fmt: skip
    np.savez(work / "inputs.npz", **arrays)
    job = {"inputs": str(work / "inputs.npz"), "outputs": str(work / "outputs.npz"),
           "report": str(work / "cpu.json"), "runs": specs}  # fmt: skip
    (work / "job.json").write_text(json.dumps(job))
    command = [sys.executable, str(RUNNER), str(work / "job.json")]
    if emulate:
        qemu = shutil.which("qemu-x86_64")
        if qemu is None:
            raise SystemExit("--emulate needs qemu-x86_64 (apt-get install qemu-user, >= 7.2)")
        command = [qemu, "-cpu", emulate, *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"graph runner failed:\n{done.stderr[-4000:]}")
    return dict(np.load(work / "outputs.npz")), json.loads((work / "cpu.json").read_text())


def machine_line(report: dict, emulate: str | None) -> str:
    """The CPU, date and load, as the benchmark tables name them."""
    where = f"emulated by qemu -cpu {emulate}: " if emulate else ""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{where}{report['name']} ({report['kind']}), {os.cpu_count()} CPUs, load {load}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
