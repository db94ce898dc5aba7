"""Client throughput: the published clip-client 0.8.3 vs clipserve's client.

One `clipserve serve` subprocess on the zero-cost `hash` model, so the clients' own costs
dominate. 10,000 short texts, over grpc, http and websocket, at batch_size 64 and at each
client's default batch size (clip-client: 8, ours: 128). clip-client runs in its own venv
through tests/compat/driver.py; ours runs in this process. The two alternate for a few
rounds (the machine is shared, so load drifts) and the median per cell is reported; every
timed run follows a warm-up, and both clients must return the same embeddings.

    python benchmarks/bench_vs_clip_client.py [--texts 10000] [--rounds 3]
        [--protocols grpc,websocket]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.compat.harness import (  # noqa: E402
    ensure_clip_client_venv,
    run_driver,
    serve_subprocess,
)

PROTOCOLS = ("grpc", "http", "websocket")
#: (texts/s or None, embeddings or None, error, client CPU seconds or None)
Timing = tuple[float | None, np.ndarray | None, str, float | None]
#: (label, batch_size passed to encode; None: each client's own default)
BATCHES = (("b64", 64), ("default", None))


def url_for(scheme: str, server: Any) -> str:
    port = server.grpc_port if scheme == "grpc" else server.http_port
    return f"{scheme}://127.0.0.1:{port}"


def clip_client_round(
    python: Path, server: Any, texts: list[str], out_dir: Path, protocols: list[str]
) -> dict[tuple[str, str], Timing]:
    """One timed run per (protocol, batch) with clip-client: (texts/s, rows, error)."""
    clients = {p: {"server": url_for(p, server)} for p in protocols}
    ops: list[dict[str, Any]] = []
    for protocol in protocols:
        ops.append({"name": f"{protocol}-warmup", "op": "encode", "client": protocol,
                    "content": texts[:256], "kwargs": {"batch_size": 64}})  # fmt: skip
        for label, batch in BATCHES:
            kwargs = {"batch_size": batch} if batch else {}
            ops.append({"name": f"{protocol}-{label}", "op": "encode", "client": protocol,
                        "content": texts, "kwargs": kwargs, "timeout": 600})  # fmt: skip
    results = run_driver(python, clients, ops, out_dir, timeout=3600)
    timings = {}
    for protocol in protocols:
        for label, _ in BATCHES:
            record = results[f"{protocol}-{label}"]
            if record["ok"]:
                rows = results.embeddings(f"{protocol}-{label}")
                rate = len(texts) / record["seconds"]
                timings[(protocol, label)] = (rate, rows, "", record["cpu_seconds"])
            else:
                error = f"{record['error_type']}: {record['error']}"[:300]
                timings[(protocol, label)] = (None, None, error, None)
    return timings


def ours_round(
    server: Any, texts: list[str], protocols: list[str]
) -> dict[tuple[str, str], Timing]:
    from clipserve.client import Client

    timings = {}
    for protocol in protocols:
        client = Client(url_for(protocol, server))
        client.encode(texts[:256], batch_size=64)  # warm-up
        for label, batch in BATCHES:
            kwargs = {"batch_size": batch} if batch else {}
            started, cpu_started = time.perf_counter(), time.process_time()
            rows = np.asarray(client.encode(texts, **kwargs))
            rate = len(texts) / (time.perf_counter() - started)
            timings[(protocol, label)] = (rate, rows, "", time.process_time() - cpu_started)
        client.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; median kept")
    parser.add_argument(
        "--protocols",
        default=",".join(PROTOCOLS),
        help="comma-separated subset of " + "/".join(PROTOCOLS),
    )
    args = parser.parse_args()
    protocols = [p for p in args.protocols.split(",") if p]
    if unknown := set(protocols) - set(PROTOCOLS):
        parser.error(f"unknown protocols: {sorted(unknown)}")
    texts = [f"short text number {i}" for i in range(args.texts)]
    python = ensure_clip_client_venv()
    theirs: dict[tuple[str, str], list[float]] = {}
    ours: dict[tuple[str, str], list[float]] = {}
    their_cpu: dict[tuple[str, str], list[float]] = {}
    our_cpu: dict[tuple[str, str], list[float]] = {}
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, serve_subprocess(["--model", "hash"]) as server:
        for round_index in range(args.rounds):
            their_round = clip_client_round(
                python, server, texts, Path(tmp) / f"r{round_index}", protocols
            )
            our_round = ours_round(server, texts, protocols)
            for key, (rate, rows, error, cpu) in their_round.items():
                if rate is None:
                    errors.append(f"round {round_index} clip-client {key}: {error}")
                    continue
                theirs.setdefault(key, []).append(rate)
                their_cpu.setdefault(key, []).append(cpu * 1000 / len(texts) * 1000)
                # same answers from both clients
                np.testing.assert_allclose(our_round[key][1], rows, atol=1e-6)
            for key, (rate, _, _, cpu) in our_round.items():
                ours.setdefault(key, []).append(rate)
                our_cpu.setdefault(key, []).append(cpu * 1000 / len(texts) * 1000)

    print(f"\nclip-client 0.8.3 vs clipserve client: {args.texts} short texts, hash-model server,")
    print(f"median of {args.rounds} alternating rounds (texts/s)")
    header = f"{'protocol':<10} {'batch (theirs / ours)':<22} {'clip-client':>11} {'ours':>8}"
    print(f"{header} {'ratio':>7}   client CPU ms/1k texts: theirs  ours")
    worst = float("inf")
    for protocol in protocols:
        for label, shown in (("b64", "64 / 64"), ("default", "8 / 128 (defaults)")):
            their_rates, our_rates = theirs.get((protocol, label)), ours[(protocol, label)]
            if not their_rates:
                print(f"{protocol:<10} {shown:<22} {'failed':>11} {median(our_rates):>8.0f}")
                continue
            ratio = median(our_rates) / median(their_rates)
            worst = min(worst, ratio)
            key = (protocol, label)
            cpu = f"{median(their_cpu[key]):>6.0f} {median(our_cpu[key]):>5.0f}"
            print(
                f"{protocol:<10} {shown:<22} {median(their_rates):>11.0f} "
                f"{median(our_rates):>8.0f} {ratio:>6.2f}x   {'':>23}{cpu}"
            )
    print(f"lowest ratio: {worst:.2f}x (target >= 1.5x on every protocol)")
    print("(client CPU: process CPU time of each client process during the timed encode)")
    for error in errors:
        print("clip-client failure:", error)


if __name__ == "__main__":
    main()
