"""In-process benchmark of dynamic batching (no sockets).

N concurrent callers each send one short sentence at a time, as fast as answers come back,
for a fixed time; the same load runs with dynamic batching and with ``max_batch_size=1``
(no batching). Prints one table row per setting.

    python benchmarks/bench_batching.py [--model builtin] [--seconds 5] [--callers 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from clipserve.engine import Engine, Metrics, TextItem
from clipserve.models.base import EmbeddingModel
from clipserve.models.registry import load_model

SENTENCES = [
    "a photo of a cat",
    "a dog running on the beach",
    "two people riding bicycles",
    "a bowl of fruit on a table",
    "the city skyline at night",
    "a red car parked on the street",
    "children playing football",
    "a mountain covered in snow",
]


@dataclass
class Result:
    label: str
    items: int
    seconds: float
    latencies: list[float]
    batches: int

    @property
    def throughput(self) -> float:
        return self.items / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_load(
    model: EmbeddingModel, label: str, *, callers: int, seconds: float, **engine_options: float
) -> Result:
    engine = Engine(model, metrics=Metrics(CollectorRegistry()), **engine_options)
    latencies: list[float] = []
    async with engine:
        deadline = time.perf_counter() + seconds

        async def caller(index: int) -> None:
            turn = 0
            while time.perf_counter() < deadline:
                text = f"{SENTENCES[(index + turn) % len(SENTENCES)]} #{index}"
                started = time.perf_counter()
                (outcome,) = await engine.encode([TextItem(text)])
                latencies.append(time.perf_counter() - started)
                if isinstance(outcome, Exception):
                    raise outcome
                turn += 1

        began = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        elapsed = time.perf_counter() - began
    return Result(label, len(latencies), elapsed, latencies, engine.stats["text"].batches)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    model = load_model(args.model)
    model.warmup()
    settings = [
        ("no batching (max_batch_size=1)", {"max_batch_size": 1}),
        (
            f"dynamic (max_batch_size={args.max_batch_size}, max_wait_ms={args.max_wait_ms:g})",
            {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms},
        ),
    ]
    results = [
        await run_load(model, label, callers=args.callers, seconds=args.seconds, **options)
        for label, options in settings
    ]
    print(f"model={model.name} callers={args.callers} seconds={args.seconds:g}, one text per call")
    header = f"{'setting':<48} {'items/s':>9} {'mean batch':>10} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        mean_batch = r.items / max(r.batches, 1)
        print(
            f"{r.label:<48} {r.throughput:>9.1f} {mean_batch:>10.1f} "
            f"{statistics.median(r.latencies) * 1000:>8.1f} {r.percentile(0.99):>8.1f}"
        )
    speedup = results[1].throughput / results[0].throughput
    print(f"speed-up from dynamic batching: {speedup:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
