"""int8 recipes compared: accuracy (on this CPU or an emulated one) and speed (this CPU).

For each tower (the tests' tiny random CLIP, ViT-B/32 with random weights, the built-in
model's text tower) and each candidate recipe (``int8_setup.CANDIDATES``): the smallest
cosine with the float32 embeddings on the tests' texts and photos, and the items/s against
float32 (best of ``--repeats``, interleaved, with a pause before each timed run).

    python benchmarks/bench_int8.py [--models tiny,builtin,ViT-B-32::random] [--batch 16]
        [--repeats 3] [--recipes old,7bit,...] [--emulate Haswell]

``--emulate CPU`` runs the int8 graphs under ``qemu-x86_64 -cpu CPU`` (accuracy only: the
float32 reference is computed on this CPU): onnxruntime then takes that CPU's kernels, e.g.
the AVX2 u8 x s8 kernel that saturates int16 pairs. Expect minutes for ViT-B/32.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from int8_setup import (
    CANDIDATES,
    MODELS,
    Tower,
    int8_twin,
    load_towers,
    machine_line,
    run_graphs,
    short_name,
)
from rich.console import Console
from rich.table import Table

from clipserve.models.quantize import Recipe
from clipserve.models.runtime import configured_threads, physical_cores
from tests.models.precision_testkit import cosines

SETTLE_S = 0.5


def accuracy(
    towers: list[Tower], recipes: list[Recipe], cache_dir: Path, work: Path, emulate: str | None
) -> tuple[dict[tuple[str, str], float], dict]:
    """Min cosine of each (tower, recipe) with float32; and the report of the CPU they ran on."""
    reference, _ = run_graphs([(t.graph, t.feeds, t.label) for t in towers], work / "float")
    runs = [
        (int8_twin(tower, recipe, cache_dir), tower.feeds, f"{tower.label}|{recipe.name}")
        for tower in towers
        for recipe in recipes
    ]
    outputs, report = run_graphs(runs, work / "int8", emulate)
    worst = {}
    for tower in towers:
        for recipe in recipes:
            got = outputs[f"{tower.label}|{recipe.name}"]
            worst[(tower.label, recipe.name)] = float(cosines(got, reference[tower.label]).min())
    return worst, report


def speed(
    towers: list[Tower], recipes: list[Recipe], cache_dir: Path, repeats: int
) -> dict[tuple[str, str], float]:
    """Items/s of each (tower, "float" or recipe), in this process, on this CPU."""
    import onnxruntime as ort

    from clipserve.models.runtime import session_setup

    options, providers = session_setup("cpu", configured_threads() or physical_cores())
    rates = {}
    for tower in towers:
        graphs = {"float": tower.graph}
        graphs.update({r.name: int8_twin(tower, r, cache_dir) for r in recipes})
        sessions = {
            name: ort.InferenceSession(str(graph), options, providers=providers)
            for name, graph in graphs.items()
        }
        for session in sessions.values():
            session.run(None, tower.timing)  # warm-up
        best = dict.fromkeys(sessions, float("inf"))
        for _ in range(repeats):
            for name, session in sessions.items():
                time.sleep(SETTLE_S)  # let the previous run's spinning threads go to sleep
                started = time.perf_counter()
                session.run(None, tower.timing)
                best[name] = min(best[name], time.perf_counter() - started)
        for name, seconds in best.items():
            rates[(tower.label, name)] = tower.timing_items / seconds
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--recipes", default=",".join(CANDIDATES), help="keys of CANDIDATES")
    parser.add_argument("--batch", type=int, default=16, help="items per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--emulate", default=None, help="qemu CPU model, e.g. Haswell")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache/clipserve-bench")
    args = parser.parse_args()
    console = Console(width=160)
    towers = load_towers(args.models.split(","), args.batch, args.cache_dir)
    recipes = [CANDIDATES[key] for key in args.recipes.split(",")]
    with tempfile.TemporaryDirectory() as work:
        worst, report = accuracy(towers, recipes, args.cache_dir, Path(work), args.emulate)
    labels = [tower.label for tower in towers]
    table = Table(title=f"min cosine with float32 - {machine_line(report, args.emulate)}")
    table.add_column("recipe")
    for label in labels:
        table.add_column(label, justify="right")
    for recipe in recipes:
        table.add_row(
            short_name(recipe), *(f"{worst[(label, recipe.name)]:.4f}" for label in labels)
        )
    console.print(table)
    if args.emulate:
        return  # speed under emulation means nothing
    rates = speed(towers, recipes, args.cache_dir, args.repeats)
    title = (
        f"items/s (x float32), batch {args.batch}, best of {args.repeats} - "
        f"{machine_line(report, None)}"
    )
    table = Table(title=title)
    table.add_column("precision")
    for label in labels:
        table.add_column(label, justify="right")
    for name, shown in [("float", "float32"), *((r.name, short_name(r)) for r in recipes)]:
        cells = []
        for label in labels:
            rate, base = rates[(label, name)], rates[(label, "float")]
            cells.append(f"{rate:.1f} ({rate / base:.2f}x)")
        table.add_row(shown, *cells)
    console.print(table)
    import onnxruntime

    console.print(f"CLIP texts padded to 77 tokens, built-in captions as they come; "
                  f"onnxruntime {onnxruntime.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()
