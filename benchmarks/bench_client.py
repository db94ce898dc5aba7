"""Client throughput and memory against a zero-cost server (``hash`` model).

    python benchmarks/bench_client.py [--texts 10000] [--rss-texts 1000000]

Starts ``clipserve serve --model hash`` as a subprocess on loopback (so client and server
do not share a GIL), then prints a table: texts/s for our client on each protocol at
batch_size 64 and at the default batch size, and the client's peak RSS while encoding a
generator of short strings over gRPC (in a child process; results consumed by ``on_done``,
and again collected into one array with a small embedding dimension).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from clipserve import Client
from clipserve.client import DEFAULT_BATCH_SIZE


def start_server(model: str, folder: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    port_file = folder / f"ports-{model.replace(':', '_')}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipserve", "serve", "--model", model, "--host", "127.0.0.1",
         "--grpc-port", "0", "--http-port", "0", "--port-file", str(port_file),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.05)
    return proc, json.loads(port_file.read_text())


def throughput(url: str, texts: list[str], batch_size: int) -> float:
    with Client(url) as client:
        client.encode(texts[:256], batch_size=batch_size)  # connect + warm up
        started = time.perf_counter()
        out = client.encode(texts, batch_size=batch_size)
        elapsed = time.perf_counter() - started
    assert out.shape[0] == len(texts)
    return len(texts) / elapsed


def rss_child(url: str, count: int, collect: bool) -> None:
    """Runs in a child process: encode ``count`` strings from a generator, sample RSS."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            with open("/proc/self/statm") as handle:
                samples.append(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)

    threading.Thread(target=sample, daemon=True).start()
    seen = 0

    def on_done(response) -> None:
        nonlocal seen
        seen += len(response.ids)

    started = time.perf_counter()
    with Client(url) as client:
        texts = (f"short text {i}" for i in range(count))
        if collect:
            seen = client.encode(texts).shape[0]
        else:
            client.encode(texts, on_done=on_done)
    elapsed = time.perf_counter() - started
    stop.set()
    peak = vm_hwm_mb()
    quarter = len(samples) // 4 or 1
    print(json.dumps({"seen": seen, "seconds": elapsed, "peak_mb": peak,
                      "rss_q1_mb": max(samples[:quarter] or [0]),
                      "rss_last_mb": max(samples[-quarter:] or [0])}))  # fmt: skip


def vm_hwm_mb() -> float:
    """This process's peak RSS. (``ru_maxrss`` would do, except that Linux carries the
    forking parent's peak over an exec into it, so a child started from a big benchmark
    process reports the parent's peak.)"""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_rss(url: str, count: int, collect: bool) -> dict:
    here = str(Path(__file__).parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); from bench_client import rss_child; "
        f"rss_child({url!r}, {count}, {collect!r})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--rss-texts", type=int, default=1_000_000)
    args = parser.parse_args()
    texts = [f"a short sentence number {i}" for i in range(args.texts)]
    with tempfile.TemporaryDirectory() as tmp:
        proc, ports = start_server("hash", Path(tmp))
        try:
            urls = {"grpc": f"grpc://127.0.0.1:{ports['grpc']}",
                    "websocket": f"ws://127.0.0.1:{ports['http']}",
                    "http": f"http://127.0.0.1:{ports['http']}"}  # fmt: skip
            print(f"{args.texts} short texts, hash model, loopback (texts/s, higher is better)")
            default = f"batch {DEFAULT_BATCH_SIZE} (default)"
            print(f"{'protocol':<10} {'batch 64':>10} {default:>20}")
            for name, url in urls.items():
                at_64 = throughput(url, texts, 64)
                at_default = throughput(url, texts, DEFAULT_BATCH_SIZE)
                print(f"{name:<10} {at_64:>10,.0f} {at_default:>20,.0f}")
            if args.rss_texts:
                streamed = measure_rss(urls["grpc"], args.rss_texts, collect=False)
                print(f"\n{args.rss_texts:,} strings from a generator over gRPC, on_done "
                      f"(nothing kept): {streamed['seconds']:.1f}s, peak RSS "
                      f"{streamed['peak_mb']:.0f} MB (first quarter {streamed['rss_q1_mb']:.0f}"
                      f" MB, last quarter {streamed['rss_last_mb']:.0f} MB)")  # fmt: skip
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        if args.rss_texts:
            proc, ports = start_server("hash::16", Path(tmp))
            try:
                kept = measure_rss(f"grpc://127.0.0.1:{ports['grpc']}", args.rss_texts, True)
                print(
                    f"same, result collected into one [N, 16] array (hash::16): "
                    f"{kept['seconds']:.1f}s, peak RSS {kept['peak_mb']:.0f} MB"
                )
            finally:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
