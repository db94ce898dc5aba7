"""What the embedding cache saves on repeated work, through `clipserve serve` and the client.

(a) rank: ``--queries`` photos, each ranked against the same ``--captions`` captions
    (``Client.rank``; every query carries all the captions as its matches), with the cache
    off (``--cache-mb 0``) and on (the default);
(b) a re-run: a job of ``--texts`` sentences and ``--images`` distinct photos, sent twice to
    one server (cache on: the second run is all hits), and once more after a restart of a
    server keeping its cache on disk (``--cache-disk-dir``).

    python benchmarks/bench_cache.py [--model builtin] [--queries 100] [--captions 1000]
        [--texts 9000] [--images 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_photos import cpu_kind, with_comment  # noqa: E402
from docarray import Document  # noqa: E402
from PIL import Image  # noqa: E402

from clipserve import Client  # noqa: E402
from tests.compat.harness import serve_subprocess  # noqa: E402
from tests.photos import encode, source_photos  # noqa: E402

SUBJECTS = ["a cat", "a dog", "a rocket", "coffee", "an astronaut", "a flower", "a city"]
PLACES = ["on a table", "in space", "at night", "in the snow", "on a beach", "indoors"]


def captions(count: int) -> list[str]:
    return [f"a photo of {SUBJECTS[i % 7]} {PLACES[i // 7 % 6]}, number {i}" for i in range(count)]


def photos(count: int) -> list[bytes]:
    """``count`` distinct small JPEGs (the packaged photos, each with its own comment)."""
    base = [encode(Image.fromarray(array)) for _, array in source_photos()[2:]]
    return [with_comment(base[i % len(base)], f"photo {i}") for i in range(count)]


def timed(run) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def rank_job(url: str, queries: list[bytes], texts: list[str]) -> None:
    docs = [Document(blob=q, matches=[Document(text=t) for t in texts]) for q in queries]
    with Client(url, timeout=None) as client:
        client.rank(docs, batch_size=max(1, 2000 // (len(texts) + 1)))


def encode_job(url: str, texts: list[str], images: list[bytes]) -> None:
    with Client(url, timeout=None) as client:
        client.encode(texts)
        if images:
            client.encode([Document(blob=image) for image in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=9000)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    flags = ["--model", args.model, "--protocols", "grpc"]
    load_before = os.getloadavg()[0]
    rows = []
    queries, texts = photos(args.queries), captions(args.captions)
    job_texts = captions(args.texts + args.captions)[args.captions :]
    job_images = photos(args.images + args.queries)[args.queries :]
    seconds = {}
    for label, extra in (("off", ["--cache-mb", "0"]), ("on", [])):
        with serve_subprocess(flags + extra, ready_timeout=900) as server:
            url = f"grpc://127.0.0.1:{server.grpc_port}"
            seconds[label] = timed(lambda url=url: rank_job(url, queries, texts))
        print(f"  rank, cache {label}: {seconds[label]:.1f} s", flush=True)
    rows.append((f"rank {args.queries} photos x the same {args.captions} captions",
                 seconds["off"], seconds["on"]))  # fmt: skip
    job = f"job of {args.texts} texts + {args.images} photos"
    with tempfile.TemporaryDirectory() as disk:
        disk_flags = flags + ["--cache-disk-dir", disk]
        with serve_subprocess(disk_flags, ready_timeout=900) as server:
            url = f"grpc://127.0.0.1:{server.grpc_port}"
            first = timed(lambda: encode_job(url, job_texts, job_images))
            again = timed(lambda: encode_job(url, job_texts, job_images))
        print(f"  {job}: {first:.1f} s, re-run {again:.1f} s", flush=True)
        with serve_subprocess(disk_flags, ready_timeout=900) as server:
            url = f"grpc://127.0.0.1:{server.grpc_port}"
            restarted = timed(lambda: encode_job(url, job_texts, job_images))
        print(f"  {job} after a restart (disk cache): {restarted:.1f} s", flush=True)
    rows.append((f"{job}, re-run on the same server", first, again))
    rows.append((f"{job}, re-run after a restart (disk tier)", first, restarted))
    print(f"\n{cpu_kind()}; {time.strftime('%Y-%m-%d')}; model {args.model}; 1-min load "
          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| work | without cache, s | with cache, s | speed-up |\n|---|---|---|---|")
    for label, without, with_cache in rows:
        print(f"| {label} | {without:.1f} | {with_cache:.1f} | **{without / with_cache:.1f}x** |")


if __name__ == "__main__":
    main()
