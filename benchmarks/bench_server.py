"""Server benchmarks on the builtin model (CPU).

(a) Dynamic batching: C concurrent gRPC streams, each sending one short text per request
    in a closed loop, against a server batching up to 32 vs one with max_batch_size=1.
(b) End-to-end images: real photos (JPEG and PNG) in requests of 32 over a few concurrent
    streams through the server, vs the model layer in this process decoding,
    preprocessing (same number of threads as the server's preprocess workers) and running
    forward on the same bytes.

Servers run as `clipserve serve` subprocesses so client and server don't share a GIL; they
run one at a time so they don't compete for the CPU.

    python benchmarks/bench_server.py [--seconds 10] [--clients 32] [--streams 3] [--requests 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipserve.wire import GRPC_METHOD, DataRequestProto, DocumentProto  # noqa: E402
from clipserve.wire.messages import is_error, new_request  # noqa: E402
from tests.compat.harness import serve_subprocess  # noqa: E402

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]


def load_photos() -> list[tuple[bytes, str]]:
    """Real photos as (file bytes, mime type): six pictures, each as JPEG and PNG."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    arrays += list(load_sample_images().images)
    photos = []
    for array in arrays:
        for fmt, mime in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, fmt)
            photos.append((buffer.getvalue(), mime))
    return photos


def text_request(index: int) -> DataRequestProto:
    doc = DocumentProto(id=f"t{index}", text=f"a short sentence number {index}")
    return new_request([doc], "/encode", {"drop_image_content": True})


def image_request(photos: list[tuple[bytes, str]], start: int, size: int) -> DataRequestProto:
    docs = []
    for offset in range(size):
        blob, mime = photos[(start + offset) % len(photos)]
        docs.append(DocumentProto(id=f"i{start + offset}", blob=blob, mime_type=mime))
    return new_request(docs, "/encode", {"drop_image_content": True})


async def closed_loop(
    port: int,
    streams: int,
    seconds: float,
    make_request: Callable[[int], DataRequestProto],
    docs_per_request: int,
    warmup_s: float = 2.0,
) -> tuple[float, list[float]]:
    """`streams` gRPC streams, each with one request in flight at a time.
    Returns (documents per second over the measured window, request latencies in ms)."""
    latencies: list[float] = []
    completed = 0
    measuring = False
    stop = asyncio.Event()

    async def one_stream(stream_index: int, channel: grpc.aio.Channel) -> None:
        nonlocal completed
        call = channel.stream_stream(
            GRPC_METHOD,
            request_serializer=DataRequestProto.SerializeToString,
            response_deserializer=DataRequestProto.FromString,
        )()
        counter = stream_index * 1_000_000
        while not stop.is_set():
            request = make_request(counter)
            counter += docs_per_request
            started = time.perf_counter()
            await call.write(request)
            reply = await call.read()
            if reply is grpc.aio.EOF or is_error(reply):
                raise RuntimeError(f"bad reply: {reply}")
            if measuring:
                latencies.append((time.perf_counter() - started) * 1000)
                completed += docs_per_request
        await call.done_writing()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        tasks = [asyncio.create_task(one_stream(i, channel)) for i in range(streams)]
        await asyncio.sleep(warmup_s)
        measuring, started = True, time.perf_counter()
        await asyncio.sleep(seconds)
        measuring = False
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
    return completed / elapsed, latencies


async def fixed_work(
    port: int,
    streams: int,
    per_stream: int,
    make_request: Callable[[int], DataRequestProto],
    docs_per_request: int,
    warmup: DataRequestProto,
) -> tuple[float, list[float]]:
    """Each of `streams` gRPC streams sends `per_stream` requests one after another (after
    one warm-up request each). Returns (documents per second from the first send to the
    last reply, request latencies in ms). Exact counts: no partial-window error."""
    latencies: list[float] = []

    async def one_stream(stream_index: int, channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream(
            GRPC_METHOD,
            request_serializer=DataRequestProto.SerializeToString,
            response_deserializer=DataRequestProto.FromString,
        )()
        await call.write(warmup)
        await call.read()
        await warmed.wait()  # every stream starts timed work together
        for k in range(per_stream):
            started = time.perf_counter()
            await call.write(make_request((stream_index * per_stream + k) * docs_per_request))
            reply = await call.read()
            if reply is grpc.aio.EOF or is_error(reply):
                raise RuntimeError(f"bad reply: {reply}")
            latencies.append((time.perf_counter() - started) * 1000)
        await call.done_writing()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
        warmed = asyncio.Barrier(streams + 1)
        tasks = [asyncio.create_task(one_stream(i, channel)) for i in range(streams)]
        await warmed.wait()
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return streams * per_stream * docs_per_request / elapsed, latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def thread_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def bench_batching(clients: int, seconds: float, threads: int) -> None:
    rows = []
    for label, flags in (
        ("batching (max 32)", []),
        ("max_batch_size=1", ["--max-batch-size", "1"]),
    ):
        args = ["--model", "builtin", "--protocols", "grpc", *flags]
        with serve_subprocess(args, env=thread_env(threads)) as server:
            rate, latencies = asyncio.run(
                closed_loop(server.grpc_port, clients, seconds, text_request, 1)
            )
        rows.append((label, rate, percentile(latencies, 50), percentile(latencies, 99)))
    print(f"\n(a) dynamic batching: {clients} concurrent gRPC clients, 1 short text per request,")
    print(f"    {threads} torch thread(s) in the server")
    print(f"{'server':<20} {'texts/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, rate, p50, p99 in rows:
        print(f"{label:<20} {rate:>9.1f} {p50:>8.1f} {p99:>8.1f}")
    print(f"ratio batching / unbatched: {rows[0][1] / rows[1][1]:.2f}x (target >= 3x)")


def load_builtin_model(threads: int) -> Any:
    import torch

    from clipserve.models.registry import load_model

    torch.set_num_threads(threads)
    model = load_model("builtin")
    model.warmup()
    return model


def model_layer_images(
    model: Any, blobs: list[bytes], batch: int, batches: int, workers: int
) -> float:
    """The model layer alone on the same bytes: decode+preprocess on `workers` threads,
    then forward, one batch after another. Returns images per second."""
    with ThreadPoolExecutor(workers) as pool:
        model.forward_images(np.stack(list(pool.map(model.prepare_image, blobs[:1]))))
        started = time.perf_counter()
        for k in range(batches):
            chunk = [blobs[(k * batch + i) % len(blobs)] for i in range(batch)]
            model.forward_images(np.stack(list(pool.map(model.prepare_image, chunk))))
        elapsed = time.perf_counter() - started
    return batches * batch / elapsed


async def engine_images(
    model: Any, blobs: list[bytes], batch: int, per_caller: int, workers: int, callers: int
) -> float:
    """The same model behind clipserve's Engine in this process (what the server runs,
    minus network and protocol work): `callers` concurrent callers, `per_caller` calls each."""
    from clipserve.engine.engine import Engine
    from clipserve.engine.items import ImageItem

    async def caller(index: int) -> None:
        for k in range(per_caller):
            start = (index * per_caller + k) * batch
            await engine.encode([ImageItem(blobs[(start + i) % len(blobs)]) for i in range(batch)])

    engine = Engine(model, max_batch_size=32, preprocess_workers=workers)
    await engine.start()
    try:
        await engine.encode([ImageItem(blobs[0])])
        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        elapsed = time.perf_counter() - started
    finally:
        await engine.stop()
    return callers * per_caller * batch / elapsed


def bench_images(streams: int, per_stream: int, batch: int, workers: int, threads: int) -> None:
    photos = load_photos()
    blobs = [blob for blob, _ in photos]
    served, latencies = served_fixed_work(
        ["--preprocess-workers", str(workers)],
        threads,
        streams,
        per_stream,
        lambda start: image_request(photos, start, batch),
        batch,
        warmup=image_request(photos, 0, 1),
    )
    model = load_builtin_model(threads)
    layer = model_layer_images(model, blobs, batch, streams * per_stream, workers)
    engine = asyncio.run(engine_images(model, blobs, batch, per_stream, workers, streams))
    mean_kib = statistics.mean(len(b) for b in blobs) / 1024
    total = streams * per_stream * batch
    print(
        f"\n(b) end-to-end images: {len(photos)} real photos (JPEG+PNG, mean {mean_kib:.0f} KiB),"
    )
    print(
        f"    {total} images per path in requests of {batch}; {streams} concurrent streams/callers;"
    )
    print(f"    {workers} preprocess threads and {threads} torch thread(s) everywhere")
    print(f"{'path':<40} {'images/s':>9} {'server / it':>12}")
    print(f"{'through the server (gRPC, subprocess)':<40} {served:>9.2f}")
    for label, rate in (("model layer in-process (sequential)", layer),
                        ("Engine in-process (pipelined)", engine)):  # fmt: skip
        print(f"{label:<40} {rate:>9.2f} {served / rate:>11.2f}x")
    print("target: server / model-only >= 0.9")
    print(f"server request latency p50 {percentile(latencies, 50):.0f} ms")


def sentence(index: int) -> str:
    return f"a photo of thing number {index} on a table"


def texts_request(start: int, size: int) -> DataRequestProto:
    docs = [DocumentProto(id=f"t{start + i}", text=sentence(start + i)) for i in range(size)]
    return new_request(docs, "/encode", {"drop_image_content": True})


def served_fixed_work(
    extra_flags: list[str],
    threads: int,
    streams: int,
    per_stream: int,
    make_request: Callable[[int], DataRequestProto],
    docs_per_request: int,
    warmup: DataRequestProto,
) -> tuple[float, list[float]]:
    """`fixed_work` against a fresh `clipserve serve` subprocess on the built-in model."""
    flags = ["--model", "builtin", "--protocols", "grpc", *extra_flags]
    with serve_subprocess(flags, env=thread_env(threads)) as server:
        return asyncio.run(
            fixed_work(
                server.grpc_port, streams, per_stream, make_request, docs_per_request, warmup
            )
        )


def bench_texts(streams: int, per_stream: int, batch: int, threads: int) -> None:
    """(c) end-to-end texts: the same sentences through the server vs `encode_texts` of the
    model layer in-process, in batches of the same size."""
    served, latencies = served_fixed_work(
        [],
        threads,
        streams,
        per_stream,
        lambda start: texts_request(start, batch),
        batch,
        warmup=texts_request(0, 1),
    )
    model = load_builtin_model(threads)
    total = streams * per_stream * batch
    texts = [sentence(i) for i in range(total)]
    model.encode_texts(texts[:batch])
    started = time.perf_counter()
    for k in range(0, total, batch):
        model.encode_texts(texts[k : k + batch])
    layer = total / (time.perf_counter() - started)
    print(f"\n(c) end-to-end texts: {total} sentences in requests of {batch}; {streams} streams")
    print(f"{'path':<40} {'texts/s':>9} {'server / it':>12}")
    print(f"{'through the server (gRPC, subprocess)':<40} {served:>9.1f}")
    print(f"{'model layer in-process (sequential)':<40} {layer:>9.1f} {served / layer:>11.2f}x")
    print("target: server / model-only >= 0.85")
    print(f"server request latency p50 {percentile(latencies, 50):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="images per request")
    parser.add_argument("--requests", type=int, default=2, help="image requests per stream")
    parser.add_argument("--workers", type=int, default=2, help="preprocess threads")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads, same for server and in-process (1 is steadiest on a "
        "shared 2-core machine)",
    )
    parser.add_argument("--text-requests", type=int, default=20, help="text requests per stream")
    parser.add_argument("--text-batch", type=int, default=64, help="sentences per request")
    parser.add_argument("--only", choices=["batching", "images", "texts"], default=None)
    args = parser.parse_args()
    # Before torch is imported here: OpenMP reads it once, for every thread (the
    # preprocessing workers included), as it does in the server subprocesses.
    os.environ.update(thread_env(args.threads))
    if args.only in (None, "batching"):
        bench_batching(args.clients, args.seconds, args.threads)
    if args.only in (None, "images"):
        bench_images(args.streams, args.requests, args.batch, args.workers, args.threads)
    if args.only in (None, "texts"):
        bench_texts(args.streams, args.text_requests, args.text_batch, args.threads)


if __name__ == "__main__":
    main()
