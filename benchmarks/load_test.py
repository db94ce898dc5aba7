"""Load test: many concurrent clients over gRPC, HTTP and WebSocket against one server.

Starts ``clipserve serve`` as a subprocess on 127.0.0.1 (ports chosen by the OS), takes a
single-request reference embedding for every input, then runs ``--clients`` concurrent
clients for ``--seconds``. Each client loops: a request of 1-4 documents (sentences and
real photos mixed), over its protocol (gRPC stream, HTTP JSON, HTTP protobuf, WebSocket),
and checks every embedding in the reply against the reference for that input, so any mix-up
between clients or documents counts as an error. Server RSS is sampled every second from
/proc/<pid>/status. Prints one table; exits 1 on any error.

    python benchmarks/load_test.py [--seconds 60] [--warmup 10] [--clients 64] [--model builtin]
                                   [--photo-megapixels 12]

``--photo-megapixels 12`` sends the photos as 12 MP JPEGs instead of small ones: each real
photo scaled up to 12 MP with a little noise added (so the files are 2-4 MB, like a
camera's, not the few hundred KB a smooth upscale compresses to), quality 90.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import websockets
from PIL import Image
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipserve.wire import GRPC_METHOD, WS_SUBPROTOCOL, DataRequestProto, DocumentProto  # noqa: E402
from clipserve.wire.json_codec import request_to_json  # noqa: E402
from clipserve.wire.messages import new_request  # noqa: E402
from clipserve.wire.ndarray import read_ndarray  # noqa: E402
from tests.server_process import wait_for_ports  # noqa: E402

PROTOCOLS = ("grpc", "http-json", "http-proto", "websocket")
SENTENCES = [
    "a photo of a cat", "a dog running on the beach", "two people riding bicycles",
    "a bowl of fruit on a table", "the city skyline at night", "a red car on the street",
    "children playing football", "a mountain covered in snow", "an astronaut in a suit",
    "a cup of coffee", "a pagoda in a garden", "a flower in bloom",
]  # fmt: skip
REQUEST_TIMEOUT_S = 120.0
TOLERANCE = 1e-3  # unit vectors: a mixed-up embedding is off by far more


def photos(max_side: int = 320, megapixels: float | None = None) -> dict[str, bytes]:
    """Real photos (scikit-image, scikit-learn) as JPEG files of moderate size, or scaled
    up to ``megapixels`` (with light noise, so they compress like camera photos)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    arrays = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(),
              "china": china, "flower": flower}  # fmt: skip
    noise = np.random.default_rng(0)
    out = {}
    for name, array in arrays.items():
        image = Image.fromarray(array)
        if megapixels:
            scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
            size = (round(image.width * scale), round(image.height * scale))
            big = np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
            big += noise.normal(0, 4, big.shape).astype(np.int16)
            image = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
        else:
            image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out[name] = buffer.getvalue()
    return out


@dataclass
class Inputs:
    docs: dict[str, DocumentProto]  # key -> a document (without id)
    reference: dict[str, np.ndarray] = field(default_factory=dict)


def build_inputs(megapixels: float | None = None) -> Inputs:
    docs = {f"text:{t}": DocumentProto(text=t) for t in SENTENCES}
    for name, blob in photos(megapixels=megapixels).items():
        docs[f"image:{name}"] = DocumentProto(blob=blob)
    return Inputs(docs)


# --- the server --------------------------------------------------------------------------


class Server:
    def __init__(self, model: str, folder: Path, extra: list[str]) -> None:
        port_file = folder / "ports.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clipserve", "serve", "--model", model, "--host", "127.0.0.1",
             "--grpc-port", "0", "--http-port", "0", "--port-file", str(port_file),
             "--log-level", "warning", *extra],
        )  # fmt: skip
        try:
            self.ports = wait_for_ports(self.proc, port_file, timeout_s=300)
        except RuntimeError as exc:
            self.stop()
            raise SystemExit(f"the server did not start: {exc}") from None

    def rss_mib(self, field: str = "VmRSS") -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def peak_mib(self) -> float:
        return self.rss_mib("VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- one request over each protocol -------------------------------------------------------


class Connection:
    """One client's connection for its protocol (kept open across requests)."""

    def __init__(self, protocol: str, ports: dict[str, int]) -> None:
        self.protocol = protocol
        self.ports = ports
        self.channel: grpc.aio.Channel | None = None
        self.http: httpx.AsyncClient | None = None
        self.ws: websockets.ClientConnection | None = None

    async def open(self) -> None:
        if self.protocol == "grpc":
            options = [("grpc.max_receive_message_length", 64 << 20)]
            self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.ports['grpc']}", options)
        elif self.protocol.startswith("http"):
            self.http = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{self.ports['http']}", timeout=REQUEST_TIMEOUT_S
            )
        else:
            self.ws = await connect(
                f"ws://127.0.0.1:{self.ports['http']}",
                subprotocols=[websockets.Subprotocol(WS_SUBPROTOCOL)],
                max_size=64 << 20,
            )

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.http is not None:
            await self.http.aclose()
        if self.ws is not None:
            await self.ws.close()

    async def send(self, request: DataRequestProto) -> list[tuple[str, np.ndarray | None]]:
        """(id, embedding) per document of the reply; raises on any failure."""
        if self.protocol == "grpc":
            assert self.channel is not None
            call = self.channel.stream_stream(
                GRPC_METHOD,
                request_serializer=DataRequestProto.SerializeToString,
                response_deserializer=DataRequestProto.FromString,
            )
            replies = [r async for r in call(iter([request]), timeout=REQUEST_TIMEOUT_S)]
            reply = replies[0]
        elif self.protocol == "http-proto":
            assert self.http is not None
            response = await self.http.post(
                "/post",
                content=request.SerializeToString(),
                headers={"content-type": "application/x-protobuf",
                         "accept": "application/x-protobuf"},
            )  # fmt: skip
            response.raise_for_status()
            reply = DataRequestProto.FromString(response.content)
        elif self.protocol == "http-json":
            assert self.http is not None
            response = await self.http.post("/post", json=request_to_json(request))
            response.raise_for_status()
            body = response.json()
            if body["header"]["status"].get("code"):
                raise RuntimeError(body["header"]["status"].get("description"))
            return [
                (d["id"], None if d["embedding"] is None else np.asarray(d["embedding"], "f4"))
                for d in body["data"]
            ]
        else:
            assert self.ws is not None
            await self.ws.send(request.SerializeToString())
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                reply = DataRequestProto.FromString(await self.ws.recv())
        if reply.header.status.code:
            raise RuntimeError(reply.header.status.description)
        return [(d.id, read_ndarray(d.embedding)) for d in reply.data.docs.docs]


def make_request(inputs: Inputs, keys: list[str], tag: str) -> DataRequestProto:
    docs = []
    for index, key in enumerate(keys):
        doc = DocumentProto()
        doc.CopyFrom(inputs.docs[key])
        doc.id = f"{tag}-{index}"
        docs.append(doc)
    return new_request(docs, endpoint="/encode", request_id=tag)


async def take_references(inputs: Inputs, ports: dict[str, int]) -> None:
    connection = Connection("grpc", ports)
    await connection.open()
    try:
        for key in inputs.docs:
            ((_, embedding),) = await connection.send(make_request(inputs, [key], "ref"))
            assert embedding is not None
            inputs.reference[key] = embedding
    finally:
        await connection.close()


# --- the load ------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (end time, seconds)
    documents: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    warmup_requests: int = 0


async def client_loop(
    number: int,
    protocol: str,
    inputs: Inputs,
    ports: dict[str, int],
    window: tuple[float, float],
    stats: Stats,
) -> None:
    """Requests until the window closes; only those started inside it are counted."""
    counted_from, deadline = window
    rng = random.Random(number)
    keys = list(inputs.docs)
    connection = Connection(protocol, ports)
    await connection.open()
    sequence = 0
    try:
        while time.monotonic() < deadline:
            chosen = rng.choices(keys, k=rng.randint(1, 4))
            tag = f"c{number}-{sequence}"
            sequence += 1
            started = time.monotonic()
            try:
                docs = await connection.send(make_request(inputs, chosen, tag))
            except Exception as exc:  # every failure is a finding
                stats.errors.append(f"{protocol} {tag}: {type(exc).__name__}: {exc}"[:300])
                await connection.close()
                connection = Connection(protocol, ports)
                await connection.open()
                continue
            ended = time.monotonic()
            if started < counted_from:  # warm-up: checked below, not timed
                stats.warmup_requests += 1
            else:
                stats.latencies.append((ended, ended - started))
                stats.requests[protocol] += 1
                stats.documents += len(docs)
            expected_ids = [f"{tag}-{i}" for i in range(len(chosen))]
            if [doc_id for doc_id, _ in docs] != expected_ids:
                stats.errors.append(f"{protocol} {tag}: ids {[d for d, _ in docs]}")
                continue
            for (doc_id, embedding), key in zip(docs, chosen, strict=True):
                if embedding is None or not np.allclose(
                    embedding, inputs.reference[key], atol=TOLERANCE
                ):
                    stats.errors.append(f"{protocol} {doc_id}: embedding differs for {key}")
    finally:
        await connection.close()


async def sample_rss(
    server: Server,
    window: tuple[float, float],
    samples: list[tuple[float, float]],
    decoding: list[float],
) -> None:
    """RSS every second; also the server's decoded pixels in flight, from /metrics."""
    await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
    url = f"http://127.0.0.1:{server.ports['http']}/metrics"
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < window[1]:
            samples.append((time.monotonic(), server.rss_mib()))
            with contextlib.suppress(httpx.HTTPError, ValueError):
                decoding.append(_gauge((await http.get(url)).text, "clipserve_decoding_pixels"))
            await asyncio.sleep(1.0)


def _gauge(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise ValueError(name)


def _rss_summary(samples: list[float]) -> str:
    return f"{statistics.fmean(samples):.0f} MiB ({min(samples):.0f}-{max(samples):.0f})"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def run(args: argparse.Namespace, server: Server, inputs: Inputs) -> int:
    await take_references(inputs, server.ports)
    stats = Stats()
    rss: list[tuple[float, float]] = []
    decoding: list[float] = []
    started = time.monotonic() + args.warmup
    deadline = started + args.seconds
    window = (started, deadline)
    clients = [
        client_loop(n, PROTOCOLS[n % len(PROTOCOLS)], inputs, server.ports, window, stats)
        for n in range(args.clients)
    ]
    await asyncio.wait_for(
        asyncio.gather(sample_rss(server, window, rss, decoding), *clients),
        timeout=args.warmup + args.seconds + REQUEST_TIMEOUT_S + 30,
    )
    elapsed = max(stats.latencies)[0] - started if stats.latencies else args.seconds
    latencies = [seconds for _, seconds in stats.latencies]
    window = min(20.0, args.seconds / 3)
    first = [mib for t, mib in rss if t - started <= window]
    last = [mib for t, mib in rss if deadline - t <= window]
    rows = [
        ("clients (grpc/http-json/http-proto/ws)",
         f"{args.clients} ({'/'.join(str(stats.requests[p]) for p in PROTOCOLS)} requests)"),
        ("warm-up (not counted, still checked)", f"{args.warmup:.0f} s, "
                                                 f"{stats.warmup_requests} requests"),
        ("measured duration", f"{elapsed:.1f} s"),
        ("requests", f"{len(latencies)} ({len(latencies) / elapsed:.1f}/s)"),
        ("documents", f"{stats.documents} ({stats.documents / elapsed:.1f}/s)"),
        ("latency p50 / p99", f"{percentile(latencies, 0.5) * 1000:.0f} ms / "
                              f"{percentile(latencies, 0.99) * 1000:.0f} ms"),
        ("errors (failures + mismatches)", str(len(stats.errors))),
        (f"server RSS first {window:.0f} s (mean, min-max)", _rss_summary(first)),
        (f"server RSS last {window:.0f} s (mean, min-max)", _rss_summary(last)),
        ("server RSS growth (mean last - mean first)",
         f"{statistics.fmean(last) - statistics.fmean(first):+.0f} MiB"),
        ("server RSS every 10 s", " ".join(f"{mib:.0f}" for _, mib in rss[::10]) + " MiB"),
        ("server RSS peak (VmHWM)", f"{server.peak_mib():.0f} MiB"),
        ("decoded pixels in flight, max of 1 s samples",
         f"{max(decoding, default=0) / 1e6:.1f} MP"),
        ("load average 1/5 min at the end", "{:.2f} / {:.2f}".format(*os.getloadavg()[:2])),
    ]  # fmt: skip
    sizes = [len(doc.blob) / 2**20 for doc in inputs.docs.values() if doc.blob]
    photo = f"{args.photo_megapixels:g} MP" if args.photo_megapixels else "up to 320 px"
    rows.insert(1, ("photos", f"{len(sizes)} JPEGs, {photo}, "
                              f"{min(sizes):.2f}-{max(sizes):.2f} MiB each"))  # fmt: skip
    print(f"\nload test: model {args.model}, {os.cpu_count()} CPUs, loopback")
    print("| metric | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    for error in stats.errors[:10]:
        print("ERROR", error)
    return 1 if stats.errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds not counted")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--photo-megapixels", type=float, default=None,
                        help="send the photos as JPEGs of this many MP (e.g. 12)")  # fmt: skip
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra flag for clipserve serve (repeatable)")  # fmt: skip
    args = parser.parse_args()
    inputs = build_inputs(args.photo_megapixels)
    with tempfile.TemporaryDirectory() as folder:
        server = Server(args.model, Path(folder), args.server_arg)
        try:
            code = asyncio.run(run(args, server, inputs))
        finally:
            server.stop()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
