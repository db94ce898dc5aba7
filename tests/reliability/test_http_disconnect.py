"""An HTTP client that disconnects before its reply: the server cancels its queued work.

Starlette does not cancel a handler when its client goes away; ``http_app`` watches the ASGI
receive channel for ``http.disconnect`` and cancels the request. Raw sockets on 127.0.0.1
send real requests to a real server whose model is slow, then close the connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from clipserve.engine.metrics import Metrics
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire.json_codec import request_to_json
from tests.reliability.protocols import send
from tests.reliability.test_faults import GatedModel, sample, texts_request, wait_until

ITEMS_PER_REQUEST = 512  # 4 requests x 512 items / 8 per batch x 0.05 s: ~13 s of work


@pytest.fixture
def slow_server() -> Iterator[tuple[RunningServer, Metrics]]:
    metrics = Metrics(CollectorRegistry())
    config = loopback_config(max_batch_size=8, max_queue_items=100_000, shutdown_grace_s=1.0)
    with running_server(config, model=GatedModel(delay_s=0.05), metrics=metrics) as running:
        yield running, metrics


def _http_request(path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Accept: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _body(kind: str, tag: str) -> tuple[str, bytes, str]:
    texts = [f"{tag} {i}" for i in range(ITEMS_PER_REQUEST)]
    if kind == "openai":
        return "/v1/embeddings", json.dumps({"input": texts}).encode(), "application/json"
    request = texts_request(tag, ITEMS_PER_REQUEST)
    if kind == "proto":
        return "/post", request.SerializeToString(), "application/x-protobuf"
    return "/post", json.dumps(request_to_json(request)).encode(), "application/json"


async def _send_then_vanish(port: int, kind: str, count: int, abort: bool) -> None:
    """``count`` requests on their own connections; once their work is queued, hang up."""
    writers = []
    for n in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_http_request(*_body(kind, f"{kind}{n}")))
        await writer.drain()
        writers.append(writer)
    await asyncio.sleep(0.5)
    for writer in writers:
        if abort:
            writer.transport.abort()  # RST-like: no FIN handshake
        else:
            writer.close()


@pytest.mark.parametrize(("kind", "abort"), [("json", False), ("proto", True), ("openai", False)])
async def test_disconnected_http_client_work_is_cancelled(slow_server, kind, abort) -> None:
    server, metrics = slow_server
    await _send_then_vanish(server.http_port, kind, count=4, abort=abort)

    def queue_empty() -> bool:
        return sample(metrics.queue_depth) == 0 and sample(metrics.items, outcome="cancelled") > 0

    await wait_until(queue_empty, 5.0, "the queue should empty after the clients left")
    cancelled = sample(metrics.items, outcome="cancelled")
    done = sample(metrics.items, outcome="ok") + cancelled
    assert cancelled > 1000, f"only {cancelled:.0f} of 2048 items were cancelled"
    assert done <= 4 * ITEMS_PER_REQUEST
    started = time.monotonic()  # the server is free again: a new request is answered fast
    answer = await send(server, "http-json", texts_request("after", 2))
    assert not answer.failed and time.monotonic() - started < 2.0


async def test_a_client_that_waits_still_gets_its_reply(slow_server) -> None:
    """The disconnect watcher must not cut off a client that simply waits for slow work."""
    server, metrics = slow_server
    started = time.monotonic()
    answer = await send(server, "http-proto", texts_request("patient", 64))  # ~0.4 s of work
    assert not answer.failed, answer.message
    assert [doc_id for doc_id, _ in answer.docs] == [f"patient-{i}" for i in range(64)]
    assert time.monotonic() - started >= 0.3
    assert sample(metrics.items, outcome="cancelled") == 0
