"""Client throughput: the published clip-client 0.8.3 vs clipserve's client.

One `clipserve serve` subprocess on the zero-cost `hash` model, so the clients' own costs
dominate. 10,000 short texts, over grpc, http and websocket, at batch_size 64 and at each
client's default batch size (clip-client: 8). clip-client runs in its own venv through
tests/compat/driver.py; ours runs in this process. Each timed run follows a warm-up.

    python benchmarks/bench_vs_clip_client.py [--texts 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.compat.harness import (  # noqa: E402
    ensure_clip_client_venv,
    run_driver,
    serve_subprocess,
)

PROTOCOLS = ("grpc", "http", "websocket")
CLIP_CLIENT_DEFAULT_BATCH = 8


def url_for(scheme: str, server: Any) -> str:
    port = server.grpc_port if scheme == "grpc" else server.http_port
    return f"{scheme}://127.0.0.1:{port}"


def time_clip_client(server: Any, texts: list[str], out_dir: Path) -> dict[tuple[str, str], Any]:
    """(protocol, 'b64' | 'default') -> (texts/s, embeddings) for clip-client."""
    python = ensure_clip_client_venv()
    clients = {p: {"server": url_for(p, server)} for p in PROTOCOLS}
    ops: list[dict[str, Any]] = []
    for protocol in PROTOCOLS:
        ops.append({"name": f"{protocol}-warmup", "op": "encode", "client": protocol,
                    "content": texts[:256], "kwargs": {"batch_size": 64}})  # fmt: skip
        for label, batch in (("b64", 64), ("default", None)):
            kwargs = {"batch_size": batch} if batch else {}
            ops.append({"name": f"{protocol}-{label}", "op": "encode", "client": protocol,
                        "content": texts, "kwargs": kwargs, "timeout": 600})  # fmt: skip
    results = run_driver(python, clients, ops, out_dir, timeout=1800)
    timings = {}
    for protocol in PROTOCOLS:
        for label in ("b64", "default"):
            name = f"{protocol}-{label}"
            record = results.ok(name)
            timings[(protocol, label)] = (len(texts) / record["seconds"], results.embeddings(name))
    return timings


def time_ours(server: Any, texts: list[str]) -> dict[tuple[str, str], Any]:
    from clipserve.client import Client

    timings = {}
    for protocol in PROTOCOLS:
        client = Client(url_for(protocol, server))
        client.encode(texts[:256], batch_size=64)  # warm-up
        for label, batch in (("b64", 64), ("default", None)):
            kwargs = {"batch_size": batch} if batch else {}
            started = time.perf_counter()
            embeddings = client.encode(texts, **kwargs)
            elapsed = time.perf_counter() - started
            timings[(protocol, label)] = (len(texts) / elapsed, np.asarray(embeddings))
        close = getattr(client, "close", None)
        if callable(close):
            close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    args = parser.parse_args()
    texts = [f"short text number {i}" for i in range(args.texts)]
    with tempfile.TemporaryDirectory() as tmp, serve_subprocess(["--model", "hash"]) as server:
        theirs = time_clip_client(server, texts, Path(tmp) / "clip-client")
        ours = time_ours(server, texts)

    print(f"\nclip-client 0.8.3 vs clipserve client: {args.texts} short texts, hash model server")
    print(f"{'protocol':<10} {'batch':<18} {'clip-client/s':>14} {'ours/s':>10} {'ratio':>7}")
    worst = float("inf")
    for protocol in PROTOCOLS:
        for label, shown in (("b64", "64 / 64"), ("default", "8 / ours default")):
            their_rate, their_rows = theirs[(protocol, label)]
            our_rate, our_rows = ours[(protocol, label)]
            np.testing.assert_allclose(our_rows, their_rows, atol=1e-6)  # same answers
            ratio = our_rate / their_rate
            worst = min(worst, ratio)
            print(
                f"{protocol:<10} {shown:<18} {their_rate:>14.0f} {our_rate:>10.0f} {ratio:>6.2f}x"
            )
    print(f"lowest ratio: {worst:.2f}x (target >= 1.5x on every protocol)")


if __name__ == "__main__":
    main()
