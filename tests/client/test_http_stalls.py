"""HTTP after a server is killed: failed attempts must not leave the client waiting forever.

httpcore 1.0.9 keeps a pool slot for good when a request is cancelled after the pool gave it
a new connection but before that connection connected (encode/httpcore#1093). A stream
cancels its other requests when one fails, so attempts into a dead server used to fill the
pool with such slots: later requests waited for a connection forever (no error, an idle
event loop), and retries reused the same pool. The transport now starts over on a fresh
pool after any stream that did not finish cleanly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import numpy as np
import pytest

from clipserve import Client
from clipserve.client.core import next_batch, plan_job
from clipserve.client.transports import TransportOptions
from clipserve.client.transports.http import HttpTransport
from clipserve.client.urls import parse_server
from clipserve.errors import ServerUnavailableError
from clipserve.models.hashing import HashModel
from clipserve.server.app import RunningServer
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto
from tests.server_process import HashServerProcess


def _requests(count: int, prefix: str) -> list[DataRequestProto]:
    job = plan_job([f"{prefix} text {i}" for i in range(count * 4)], "/", None, 4, True)
    return [next_batch(job, index, index * 4).request for index in range(count)]  # type: ignore[union-attr]


async def _replies(transport: HttpTransport, requests: list[DataRequestProto]) -> int:
    async def feed() -> AsyncIterator[DataRequestProto]:
        for request in requests:
            yield request

    count = 0
    async for _ in transport.stream(feed()):
        count += 1
    return count


async def test_streams_into_a_killed_server_fail_promptly_and_recover_after_restart(
    server_process: HashServerProcess,
) -> None:
    # a pool of 2 connections and 4 requests per stream: requests queue for a connection,
    # and the ones cancelled after the pool handed them a fresh connection used to leak it
    options = TransportOptions(parse_server(server_process.url("http")), prefetch=2)
    transport = HttpTransport(options)
    try:
        assert await _replies(transport, _requests(4, "warm")) == 4
        server_process.kill()
        for attempt in range(4):  # the old code waited forever from the third attempt on
            with pytest.raises(ServerUnavailableError):
                await asyncio.wait_for(_replies(transport, _requests(4, f"dead{attempt}")), 10)
        server_process.start()
        assert await asyncio.wait_for(_replies(transport, _requests(4, "back")), 10) == 4
    finally:
        await transport.aclose()


def test_kill_and_restart_with_more_batches_in_flight_than_connections(
    server_process: HashServerProcess,
) -> None:
    """The user's view: ``prefetch`` per call above the client's (its pool size). Before the
    fix every retry after the restart timed out on a pool full of leaked slots."""
    texts = [f"text number {i}" for i in range(600)]
    client = Client(
        server_process.url("http"),
        prefetch=2,
        retries=10,
        retry_backoff=0.1,
        connect_timeout=2,
        timeout=3,
    )
    with client:
        out = client.encode(server_process.killed_at(texts, 200), batch_size=10, prefetch=8)
    assert server_process.restarted.is_set() and server_process.starts == 2
    np.testing.assert_array_equal(out, HashModel().encode_texts(texts))


async def test_calls_cancelled_by_the_caller_do_not_starve_later_calls(
    hash_server: RunningServer,
) -> None:
    """Concurrent ``aencode`` calls share one pool; callers cancel them (``wait_for``) at
    random instants. Each later call must still be answered: before the fix the shared pool
    filled with leaked slots within 10-25 rounds (4 runs out of 4) and calls waited forever."""
    client = Client(hash_server.urls["http"], prefetch=4)
    texts = [f"text {i}" for i in range(400)]
    rng = random.Random(7)
    try:
        for _ in range(60):
            calls = [
                asyncio.wait_for(client.aencode(texts, batch_size=10), rng.uniform(0.005, 0.05))
                for _ in range(6)
            ]
            await asyncio.gather(*calls, return_exceptions=True)
            out = await asyncio.wait_for(client.aencode(texts[:40], batch_size=10), 10)
            assert out.shape[0] == 40
    finally:
        await client.aclose()
