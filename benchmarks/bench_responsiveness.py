"""How fast clipserve notices faults and refuses work: the timings tests once asserted.

    python benchmarks/bench_responsiveness.py [--rounds 3] [--builtin]

The tests check these behaviours without clocks (the error raised, the work dropped, the
order of events); this script measures how long each takes and prints one table: the
median and slowest of ``--rounds`` runs beside the bound the tests used to assert. Servers
run on loopback: a ``clipserve serve --model hash`` subprocess for the killed-server row,
in-process servers with a deliberately slow ``hash`` model for the rest. ``--builtin``
adds the built-in model's 1 MB sentence (loads the model: ~1 GB, tens of seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipserve import Client  # noqa: E402
from clipserve.errors import ClipServeError  # noqa: E402
from clipserve.models.hashing import HashModel  # noqa: E402
from clipserve.server.app import loopback_config, running_server  # noqa: E402
from clipserve.server.uri_fetch import fetch_uri  # noqa: E402
from clipserve.server.uri_policy import UriPolicy  # noqa: E402
from tests.server_process import HashServerProcess  # noqa: E402

SCHEMES = ("grpc", "http", "ws")


class SlowHash(HashModel):
    """The hash model with ``delay_s`` of pretend compute per text batch."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def forward_texts(self, tokens: Any) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().forward_texts(tokens)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def killed_server_noticed(folder: Path, scheme: str) -> float:
    """Seconds from SIGKILL to the client's ServerUnavailableError (no retries)."""
    server = HashServerProcess(Path(tempfile.mkdtemp(dir=folder)))  # its own port files
    server.start()
    killed_at: list[float] = []

    def items() -> Iterator[str]:
        for i in range(100_000):
            if i == 300:
                killed_at.append(time.perf_counter())
                server.kill()
            yield f"text {i}"

    client = Client(server.url(scheme), connect_timeout=2)
    with client, contextlib.suppress(ClipServeError):
        client.encode(items(), batch_size=10, prefetch=8)
    return time.perf_counter() - killed_at[0]


def unreachable_noticed(scheme: str) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def attempt() -> None:
        client = Client(f"{scheme}://127.0.0.1:{port}", connect_timeout=2)
        with client, contextlib.suppress(ClipServeError):
            client.encode(["hello"])

    return timed(attempt)


async def overload(url: str) -> tuple[float, float]:
    """24 concurrent 4-text requests at a queue of 8 on a slow model: the median refusal's
    latency and the slowest served request's."""
    body = {"data": [{"text": f"t{i}"} for i in range(4)]}
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=32)) as http:

        async def one() -> tuple[int, float]:
            started = time.perf_counter()
            response = await http.post(url, json=body)
            return response.status_code, time.perf_counter() - started

        results = await asyncio.gather(*(one() for _ in range(24)))
    refused = [seconds for status, seconds in results if status == 429]
    served = [seconds for status, seconds in results if status == 200]
    return statistics.median(refused or [float("nan")]), max(served or [float("nan")])


def slow_origin() -> tuple[str, ThreadingHTTPServer]:
    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(3)
            with contextlib.suppress(OSError):  # the fetch gave up long ago
                self.send_response(200)
                self.send_header("Content-Length", "1")
                self.end_headers()
                self.wfile.write(b"x")

        def log_message(self, *args: object) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{site.server_address[1]}/slow", site


async def fetch_timeout(url: str) -> float:
    policy = UriPolicy(enabled=True, allowed_schemes=("http",), allow_private=True, timeout_s=0.5)
    started = time.perf_counter()
    with contextlib.suppress(ClipServeError):
        await fetch_uri(url, policy)
    return time.perf_counter() - started


async def answer_after_vanished_clients(base: str, client: Client) -> float:
    """Four HTTP clients queue 4 x 512 texts and hang up; then one small request."""
    body = ('{"data": [' + ",".join(f'{{"text": "v {i}"}}' for i in range(512)) + "]}").encode()
    head = (
        f"POST /post HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    port = int(base.rsplit(":", 1)[1])
    writers = []
    for _ in range(4):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        await writer.drain()
        writers.append(writer)
    await asyncio.sleep(0.5)  # let the work queue up (a benchmark may wait on the clock)
    for writer in writers:
        writer.close()
    started = time.perf_counter()
    await client.aencode(["after"])
    return time.perf_counter() - started


async def overlap(client: Client) -> float:
    """How much longer 'encode 3000 texts' and 'other work needing the loop every 10 ms'
    take together than the longer of them alone, as a share of the shorter (0: perfect
    overlap; 1: one after the other)."""
    texts = ["hello world"] * 3000

    async def other_work(ticks: int) -> float:
        began = time.perf_counter()
        for _ in range(ticks):
            await asyncio.sleep(0.01)
        return time.perf_counter() - began

    began = time.perf_counter()
    await client.aencode(texts, batch_size=8)
    encode_alone = time.perf_counter() - began
    ticks = max(50, round(encode_alone / 0.01))
    other_alone = await other_work(ticks)
    began = time.perf_counter()
    await asyncio.gather(other_work(ticks), client.aencode(texts, batch_size=8))
    both = time.perf_counter() - began
    longer, shorter = max(other_alone, encode_alone), min(other_alone, encode_alone)
    return (both - longer) / shorter


def megabyte_sentence() -> float:
    from clipserve.models.registry import load_model

    model = load_model("builtin")
    huge = "a photo of a cat sitting on a mat. " * 20 + "lorem ipsum " * 90_000
    model.encode_texts(["warm up"])
    return timed(lambda: model.encode_texts([huge, "short"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--builtin", action="store_true", help="add the 1 MB sentence row")
    args = parser.parse_args()
    rows: list[tuple[str, list[float], str]] = []
    with tempfile.TemporaryDirectory() as folder:
        for scheme in SCHEMES:
            seconds = [killed_server_noticed(Path(folder), scheme) for _ in range(args.rounds)]
            rows.append((f"killed server noticed ({scheme})", seconds, "< 5 s"))
    for scheme in SCHEMES:
        seconds = [unreachable_noticed(scheme) for _ in range(args.rounds)]
        rows.append((f"unreachable server noticed ({scheme})", seconds, "< 5 s"))

    origin, site = slow_origin()
    fetches = [asyncio.run(fetch_timeout(origin)) for _ in range(args.rounds)]
    rows.append(("URI fetch, timeout 0.5 s, origin 3 s", fetches, "< 2 s"))
    site.shutdown()

    tiny = loopback_config(max_batch_size=4, max_queue_items=8, max_queue_wait_s=0.0)
    refused, served = [], []
    with running_server(tiny, model=SlowHash(0.15)) as server:
        for _ in range(args.rounds):
            r, s = asyncio.run(overload(server.urls["http"] + "/post"))
            refused.append(r)
            served.append(s)
    rows.append(("overload: median refusal (HTTP 429)", refused, "< 0.5 s"))
    rows.append(("overload: slowest served request", served, "> slowest refusal"))

    slow = loopback_config(max_batch_size=8, max_queue_items=100_000, shutdown_grace_s=1.0)
    with running_server(slow, model=SlowHash(0.05)) as server:

        async def after() -> float:
            async with Client(server.urls["http"]) as client:
                return await answer_after_vanished_clients(server.urls["http"], client)

        rows.append(("answer after 4 HTTP clients vanished",
                     [asyncio.run(after()) for _ in range(args.rounds)], "< 2 s"))  # fmt: skip

    with running_server(loopback_config()) as server:

        async def overlapped() -> float:
            async with Client(server.urls["grpc"]) as client:
                return await overlap(client)

        shares = [asyncio.run(overlapped()) for _ in range(args.rounds)]
        rows.append(("aencode + other work: extra time / shorter", shares, "< 0.6 (ratio)"))

    if args.builtin:
        rows.append(("builtin: encode a 1 MB sentence",
                     [megabyte_sentence() for _ in range(args.rounds)], "< 5 s"))  # fmt: skip

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), cpu)
    avx512 = "AVX-512" if "avx512f" in Path("/proc/cpuinfo").read_text() else "AVX2"
    print(f"# {cpu} ({avx512}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"python {' '.join(sys.argv)}")  # fmt: skip
    print("| what | median | slowest | the old test bound |\n|---|---|---|---|")
    for name, values, bound in rows:
        unit = "" if "ratio" in bound else " s"
        print(f"| {name} | {statistics.median(values):.2f}{unit} | {max(values):.2f}{unit} "
              f"| {bound} |")  # fmt: skip


if __name__ == "__main__":
    main()
