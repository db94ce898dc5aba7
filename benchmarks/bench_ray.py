"""Ray path benchmarks: what the cluster hop costs, and whether routing and front-ends scale.

overhead  built-in model, texts and images: the single-process server vs the same model as
          one Ray replica behind one front-end (``--ray local``). Target: Ray/single >= 0.85.
scaling   the ``sleep::<ms>`` model (hash embeddings after a fixed sleep per batch of up to
          32, almost no CPU: a stand-in for an accelerator) on 1, 2, 4, 8 replicas, through
          one front-end and through two. Efficiency = items/s / (replicas x items/s of 1).
          Target: >= 0.8 at 8 replicas.
ceiling   the ``hash`` model (no compute) on two replicas: how many documents/s one
          front-end can move, next to the single-process server on the same load.

Servers and front-ends run as ``clipserve serve`` subprocesses; the load comes from client
processes (our Client over gRPC, one stream each, ``--prefetch`` requests in flight), which
start together and count the items answered in ``--seconds``.

    python benchmarks/bench_ray.py overhead [--seconds 15]
    python benchmarks/bench_ray.py scaling [--batch-ms 100] [--replicas 1,2,4,8] [--frontends 1,2]
    python benchmarks/bench_ray.py ceiling [--clients 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.compat.harness import ServerProcess, serve_subprocess  # noqa: E402

TEXT_BATCH, IMAGE_BATCH = 32, 16


# ---- load: client processes that start together -------------------------------------------


def _photos() -> list[bytes]:
    from PIL import Image
    from skimage import data

    photos = []
    for array in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket()):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def _client(url: str, kind: str, batch: int, prefetch: int, seconds: float, ready: Any,
            start: Any, results: Any) -> None:  # fmt: skip
    from docarray import Document

    from clipserve import Client

    if kind == "images":
        inputs: list[Any] = [Document(blob=b) for b in _photos() * (4 * batch // 4)]
    else:
        inputs = [f"benchmark sentence {i} with a few more words" for i in range(batch * 16)]
    with Client(url, prefetch=prefetch, timeout=600) as client:
        client.encode(inputs[:batch], batch_size=batch)  # connect and warm up
        ready.put(True)
        start.wait()
        began, count = time.monotonic(), 0
        while time.monotonic() - began < seconds:
            client.encode(inputs, batch_size=batch)
            count += len(inputs)
        results.put((count, began, time.monotonic()))


def run_load(urls: list[str], *, clients: int, seconds: float, kind: str = "texts",
             batch: int = TEXT_BATCH, prefetch: int = 8) -> float:  # fmt: skip
    """Items per second answered by ``clients`` processes spread over ``urls``."""
    context = mp.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    processes = [
        context.Process(
            target=_client,
            args=(urls[i % len(urls)], kind, batch, prefetch, seconds, ready, start, results),
        )
        for i in range(clients)
    ]
    for process in processes:
        process.start()
    for _ in processes:  # every client connected and warmed up: start the clock together
        ready.get(timeout=600)
    start.set()
    counts = [results.get(timeout=seconds * 10 + 300) for _ in processes]
    for process in processes:
        process.join()
    total = sum(c for c, _, _ in counts)
    return total / (max(e for _, _, e in counts) - min(b for _, b, _ in counts))


# ---- servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def server(
    args: list[str], log_name: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A ``clipserve serve`` subprocess, without the embedding cache: the loads repeat
    their inputs, and these benchmarks measure the path to the model, not the cache."""
    log = Path(tempfile.gettempdir()) / f"bench-ray-{log_name}.log"
    args = [*args, "--log-level", "warning", "--cache-mb", "0"]
    with serve_subprocess(args, log_file=log, env=env) as process:
        yield process


def grpc_url(process: ServerProcess) -> str:
    return f"grpc://127.0.0.1:{process.grpc_port}"


@contextlib.contextmanager
def local_cluster(cpus: int) -> Iterator[str]:
    """A one-machine Ray cluster on loopback (this process is its head); its GCS address."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        serve.shutdown()
        ray.shutdown()


# ---- the three benchmarks -----------------------------------------------------------------


def overhead(opts: argparse.Namespace) -> None:
    # the same inference threads on both sides: torch's own count in the single process,
    # OMP_NUM_THREADS = num_cpus in the Ray replica (Ray sets it)
    threads = {"OMP_NUM_THREADS": str(opts.threads)}
    single = ["--model", "builtin"]
    on_ray = [*single, "--ray", "local", "--ray-num-cpus", str(opts.threads)]
    rows = []
    for kind, batch in (("texts", 64), ("images", IMAGE_BATCH)):
        best = {"single process": 0.0, "Ray path": 0.0}
        for _ in range(opts.rounds):  # interleaved, best of each: the machine is shared
            for name, args in (("single process", single), ("Ray path", on_ray)):
                with server(args, name.replace(" ", "-"), threads) as process:
                    rate = run_load([grpc_url(process)], clients=opts.clients, kind=kind,
                                    batch=batch, seconds=opts.seconds)  # fmt: skip
                best[name] = max(best[name], rate)
        rows.append((kind, best["single process"], best["Ray path"]))
    print(f"\n{opts.threads} inference thread(s) each, {opts.clients} client processes")
    print("| built-in model | single process items/s | Ray path items/s | Ray / single |")
    print("|---|---|---|---|")
    for kind, one, ray_rate in rows:
        print(f"| {kind} | {one:.0f} | {ray_rate:.0f} | {ray_rate / one:.2f} |")


def scaling(opts: argparse.Namespace) -> None:
    model = f"sleep::{opts.batch_ms:g}"
    replicas = [int(n) for n in opts.replicas.split(",")]
    frontends = [int(n) for n in opts.frontends.split(",")]
    per_replica = 32 / (opts.batch_ms / 1000)
    rates: dict[tuple[int, int], float] = {}
    with local_cluster(cpus=64) as address:
        for count in replicas:
            deploy = ["--model", model, "--ray", address, "--replicas", str(count),
                      "--ray-num-cpus", "1", "--ray-deploy", "replace",
                      *chunk_config(opts.chunk)]  # fmt: skip
            with server(deploy, "fe1") as first:
                for fronts in frontends:
                    with contextlib.ExitStack() as stack:
                        procs = [first]
                        attach = ["--model", model, "--ray", address, "--ray-deploy", "attach",
                                  *chunk_config(opts.chunk)]  # fmt: skip
                        for index in range(1, fronts):
                            procs.append(stack.enter_context(server(attach, f"fe{index + 1}")))
                        clients = max(opts.clients, 2 * fronts)
                        # enough requests in flight for 4 calls on every replica
                        prefetch = max(8, 4 * count // clients + 1)
                        rates[(count, fronts)] = run_load(
                            [grpc_url(p) for p in procs], clients=clients,
                            seconds=opts.seconds, prefetch=prefetch,
                        )  # fmt: skip
    print(f"\n{model}: {opts.batch_ms:g} ms per batch of up to 32 = {per_replica:.0f} items/s "
          f"per replica at best; {opts.chunk or 32} items per call")  # fmt: skip
    head = " | ".join(
        f"{f} front-end{'s' if f > 1 else ''} items/s | efficiency" for f in frontends
    )
    print(f"| replicas | {head} |")
    print("|---" * (1 + 2 * len(frontends)) + "|")
    for count in replicas:
        cells = []
        for fronts in frontends:
            rate, base = rates[(count, fronts)], rates[(replicas[0], fronts)] / replicas[0]
            cells.append(f"{rate:.0f} | {rate / (count * base):.2f}")
        print(f"| {count} | " + " | ".join(cells) + " |")


def chunk_config(items: int | None) -> list[str]:
    """``--config`` with ``ray.chunk_items`` (items per call; default one batch)."""
    if not items:
        return []
    path = Path(tempfile.gettempdir()) / f"bench-ray-chunk-{items}.yaml"
    path.write_text(f"ray:\n  address: local\n  chunk_items: {items}\n")
    return ["--config", str(path)]


def ceiling(opts: argparse.Namespace) -> None:
    ray_args = ["--model", "hash", "--ray", "local", "--replicas", "2", "--ray-num-cpus", "0.5"]
    setups = [("single process", ["--model", "hash"])]
    for chunk in [int(c) for c in opts.chunks.split(",")]:
        setups.append((f"Ray path, 1 front-end, 2 replicas, {chunk} items per call",
                       [*ray_args, *chunk_config(chunk)]))  # fmt: skip
    results = []
    for name, args in setups:
        with server(args, name.split(",")[0].replace(" ", "-")) as process:
            load = run_load([grpc_url(process)], clients=opts.clients, seconds=opts.seconds,
                            prefetch=16)  # fmt: skip
        results.append((name, load))
    print("\n| hash model, texts in requests of 32 | documents/s |")
    print("|---|---|")
    for name, rate in results:
        print(f"| {name} | {rate:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("overhead", "scaling", "ceiling"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=3, help="load processes")
    parser.add_argument("--rounds", type=int, default=2, help="overhead: interleaved rounds")
    parser.add_argument("--threads", type=int, default=1, help="overhead: inference threads")
    parser.add_argument("--batch-ms", type=float, default=100.0, help="scaling: sleep per batch")
    parser.add_argument("--replicas", default="1,2,4,8", help="scaling: replica counts")
    parser.add_argument("--frontends", default="1,2", help="scaling: front-end counts")
    parser.add_argument("--chunks", default="32,128", help="ceiling: items per call to try")
    parser.add_argument("--chunk", type=int, default=None, help="scaling: items per call")
    opts = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"# bench_ray {opts.what} - {time.strftime('%Y-%m-%d')} - {os.cpu_count()} cores "
          f"({cpu}) - load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    {"overhead": overhead, "scaling": scaling, "ceiling": ceiling}[opts.what](opts)
    print(f"(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
