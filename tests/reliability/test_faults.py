"""Faults: a server killed mid-stream, clients that vanish, a model that fails on one batch,
and overload. (Kill + restart with retries is covered by ``tests/client/test_retries.py``
on all three protocols; here: the client without retries fails fast on all three.)

The in-process servers wrap the real ``hash`` model in ``GatedModel``, which can be made
slow (so work queues up), held at a gate (so a test knows where its work is), and fails on
a marker text (an injected model fault). How fast faults are noticed and refused is
measured by ``benchmarks/bench_faults.py``, not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect

from clipserve import Client
from clipserve.engine.metrics import Metrics
from clipserve.errors import ServerUnavailableError
from clipserve.models.hashing import HashModel
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire import GRPC_METHOD, WS_SUBPROTOCOL, DataRequestProto, DocumentProto
from clipserve.wire.messages import new_request
from tests.reliability.gated import FAIL, GatedModel, engine_of, sample, texts_request
from tests.reliability.protocols import rss_bytes, send
from tests.waiting import FAILSAFE_S, eventually

# --- a killed server: the client fails fast --------------------------------------------------


@pytest.mark.parametrize("scheme", ["grpc", "http", "ws"])
def test_killed_server_makes_the_client_raise(server_process, scheme) -> None:
    """The client notices the broken connection itself: a ServerUnavailableError, not the
    ClientTimeoutError its (failsafe) timeout would raise had it kept waiting."""
    killed = threading.Event()

    def items() -> Iterator[str]:
        for i in range(100_000):
            if i == 300:
                killed.set()  # before: the client may notice first
                server_process.kill()
            yield f"text {i}"

    client = Client(server_process.url(scheme), connect_timeout=2, timeout=FAILSAFE_S)
    with client, pytest.raises(ServerUnavailableError, match="127.0.0.1") as info:
        client.encode(items(), batch_size=10, prefetch=8)
    assert killed.is_set(), f"failed before the kill: {info.value!r}"


# --- a client that disconnects: its queued work is dropped ----------------------------------


@pytest.fixture
def slow_server() -> Iterator[tuple[RunningServer, Metrics, GatedModel]]:
    model = GatedModel(delay_s=0.05)
    metrics = Metrics(CollectorRegistry())
    config = loopback_config(
        max_batch_size=8, max_queue_items=100_000, shutdown_grace_s=1.0,
        cache_mb=0,  # these tests watch the engine's own queue and the model's work
    )  # fmt: skip
    with running_server(config, model=model, metrics=metrics) as running:
        yield running, metrics, model


async def _grpc_then_vanish(port: int, requests: list[DataRequestProto], replies: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            GRPC_METHOD,
            request_serializer=DataRequestProto.SerializeToString,
            response_deserializer=DataRequestProto.FromString,
        )(iter(requests))
        for _ in range(replies):
            await call.read()
        call.cancel()


async def _ws_then_vanish(url: str, requests: list[DataRequestProto], replies: int) -> None:
    async with connect(url, subprotocols=[WS_SUBPROTOCOL], max_size=None) as ws:  # type: ignore[list-item]
        for request in requests:
            await ws.send(request.SerializeToString())
        for _ in range(replies):
            await ws.recv()
        ws.transport.abort()  # no close handshake: the client just goes away


@pytest.mark.parametrize("protocol", ["grpc", "websocket"])
async def test_disconnected_client_work_is_cancelled(slow_server, protocol) -> None:
    server, metrics, _ = slow_server
    requests = [texts_request(f"r{i}", 32) for i in range(64)]  # 2048 items, ~13 s of work
    if protocol == "grpc":
        await _grpc_then_vanish(server.grpc_port, requests, replies=2)
    else:
        await _ws_then_vanish(server.urls["ws"], requests, replies=2)

    def queue_empty() -> bool:
        return sample(metrics.queue_depth) == 0 and sample(metrics.items, outcome="cancelled") > 0

    await eventually(queue_empty, "the queue should empty after the client left")
    done = sample(metrics.items, outcome="ok") + sample(metrics.items, outcome="cancelled")
    assert sample(metrics.items, outcome="cancelled") > 1000, "most work was never done"
    assert done <= 2048
    answer = await send(server, "grpc", texts_request("after", 2))  # the server goes on
    assert not answer.failed, answer.message


async def test_memory_returns_to_baseline_after_clients_vanish(slow_server) -> None:
    server, metrics, _ = slow_server
    engine = engine_of(server)

    async def one_round(tag: str) -> int:  # 48 requests x 8 x 256 KiB = 96 MiB sent
        requests = [texts_request(f"{tag}{i}", 8, blob_kib=256) for i in range(48)]
        await _grpc_then_vanish(server.grpc_port, requests, replies=1)
        # every admitted item answered or dropped; then RSS once it has stopped falling
        # (the front-end drops the call's buffers as its cancellation completes)
        await eventually(lambda: not engine._admission.busy, "the engine should be idle")
        return await settled_rss()

    # three warm-up rounds: in a long test process the first rounds still grow malloc's
    # arenas (seen after two: +87 MiB in the next round, then +12, +12, 0)
    for tag in ("warm-1", "warm-2", "warm-3"):
        baseline = await one_round(tag)
    levels = [baseline] + [await one_round(tag) for tag in ("a", "b", "c", "d")]
    # Had anything kept a vanished client's data, four rounds would add ~4 x 96 MiB. The
    # allocator is noisy, so allow up to one round's worth, and take the lower of the last two.
    grown = min(levels[-2:]) - levels[0]
    mib = [round(level / 2**20) for level in levels]
    assert grown < 96 * 1024 * 1024, f"RSS after each round of vanished clients: {mib} MiB"


async def settled_rss(step: int = 4 * 1024 * 1024) -> int:
    """RSS (after a collection and ``malloc_trim``) once two readings 0.1 s apart differ by
    less than ``step``: memory the server still lets go of is not counted as kept."""
    readings = [-step]

    def settled() -> bool:
        gc.collect()
        _return_free_heap()  # so RSS shows what is still held, not what malloc keeps cached
        readings.append(rss_bytes())
        return abs(readings[-1] - readings[-2]) < step

    await eventually(settled, "RSS should settle", poll_s=0.1)
    return readings[-1]


def _return_free_heap() -> None:
    """glibc's ``malloc_trim``: give free heap pages back to the OS (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --- the model fails on one batch ----------------------------------------------------------


async def test_model_failure_fails_only_that_batch(slow_server) -> None:
    server, metrics, _ = slow_server
    failing = new_request(
        [DocumentProto(id="marker", text=FAIL), DocumentProto(id="neighbour", text="x")],
        request_id="failing",
    )
    images = new_request([DocumentProto(id="img", blob=b"\x89PNG any bytes")], request_id="img")
    # the image request runs concurrently in the other modality's queue
    answers = await asyncio.gather(send(server, "grpc", failing), send(server, "websocket", images))
    failed, image_answer = answers
    assert failed.failed and "2 of 2 documents failed" in failed.message
    assert "injected failure on the marker text" in failed.message
    assert "'marker'" in failed.message and "'neighbour'" in failed.message
    assert not image_answer.failed and image_answer.embedding("img") is not None
    for protocol in ("grpc", "http-json", "http-proto", "websocket"):  # still serving
        answer = await send(server, protocol, texts_request(f"after-{protocol}", 3))
        assert not answer.failed, answer.message
        expected = HashModel().encode_texts([f"after-{protocol} {i}" for i in range(3)])
        np.testing.assert_allclose(np.stack([e for _, e in answer.docs]), expected)
    over_http = await send(server, "http-json", failing)
    assert over_http.code == 200 and "injected failure" in over_http.message
    assert sample(metrics.items, outcome="model_error") >= 4


# --- overload: refused quickly, and the client's retry finishes the job ----------------------


@pytest.fixture
def tiny_queue_server() -> Iterator[tuple[RunningServer, GatedModel]]:
    model = GatedModel(delay_s=0.15)
    config = loopback_config(
        max_batch_size=4, max_queue_items=8, max_queue_wait_s=0.0, shutdown_grace_s=1.0,
        cache_mb=0,  # the same texts again must reach the queue
    )  # fmt: skip
    with running_server(config, model=model, metrics=Metrics(CollectorRegistry())) as running:
        try:
            yield running, model
        finally:
            model.gate.set()


async def test_overload_is_refused_without_waiting_for_the_model(tiny_queue_server) -> None:
    """With the model held and the queue full, every further request is refused at once (it
    is answered while the model is still held), then the queued work completes."""
    server, model = tiny_queue_server
    model.hold()
    engine = engine_of(server)
    url = server.urls["http"] + "/post"
    body = json.dumps({"data": [{"text": f"t{i}"} for i in range(4)]}).encode()
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(timeout=FAILSAFE_S, limits=limits) as http:
        held = asyncio.ensure_future(http.post(url, content=body))
        assert await asyncio.to_thread(model.entered.wait, FAILSAFE_S)
        queued = asyncio.ensure_future(http.post(url, content=body))
        await eventually(lambda: engine._admission.outstanding["text"] == 8, "a full queue")
        burst = await asyncio.gather(*(http.post(url, content=body) for _ in range(24)))
        assert {response.status_code for response in burst} == {429}
        assert burst[0].json()["error"]["type"] == "OverloadedError"

        # gRPC: 4 requests of 4 items. grpc-python races here: a client write that fails
        # after the server ended the call replaces the server's RESOURCE_EXHAUSTED with a
        # local "INTERNAL: Internal error from Core" (clipserve's client handles that, see
        # its grpc transport); then the server's own count of overload refusals decides.
        metrics = server.server.metrics
        refusals = sample(metrics.requests, protocol="grpc", status="overloaded")
        requests = [texts_request(f"g{i}", 4) for i in range(4)]
        code, details = await _grpc_status_of_burst(server.grpc_port, requests)
        if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert (code, details) == (grpc.StatusCode.INTERNAL, "Internal error from Core")
        assert sample(metrics.requests, protocol="grpc", status="overloaded") > refusals
        assert not held.done() and not queued.done()  # all of that while the model was held
        model.gate.set()
        assert [(await held).status_code, (await queued).status_code] == [200, 200]
    assert not (await send(server, "grpc", requests[0])).failed  # room again


async def _grpc_status_of_burst(
    port: int, requests: list[DataRequestProto]
) -> tuple[grpc.StatusCode, str]:
    """Write every request (stopping if the call ends), read to the end, return the status."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            GRPC_METHOD,
            request_serializer=DataRequestProto.SerializeToString,
            response_deserializer=DataRequestProto.FromString,
        )(metadata=(("__prefetch__", "100"),))
        try:
            for request in requests:
                await call.write(request)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the server ended the call while we were still writing
        with contextlib.suppress(grpc.aio.AioRpcError):
            while await call.read() is not grpc.aio.EOF:
                pass
        return await call.code(), await call.details()


@pytest.mark.parametrize("scheme", ["grpc", "http", "ws"])
def test_client_retries_through_overload(tiny_queue_server, scheme) -> None:
    """Three clients, each within the queue's capacity alone, together overload it; with
    retries every job completes, every embedding exactly once and in order."""
    url = tiny_queue_server[0].urls[scheme]
    jobs = {name: [f"{scheme} {name} {i}" for i in range(40)] for name in "abc"}
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        with Client(url, retries=50, retry_backoff=0.05) as client:
            results[name] = client.encode(jobs[name], batch_size=4, prefetch=2)

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=FAILSAFE_S * 2)
    for name, texts in jobs.items():
        np.testing.assert_array_equal(results[name], HashModel().encode_texts(texts))
