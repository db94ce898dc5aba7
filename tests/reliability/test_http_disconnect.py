"""An HTTP client that disconnects before its reply: the server cancels its queued work.

Starlette does not cancel a handler when its client goes away; ``http_app`` watches the ASGI
receive channel for ``http.disconnect`` and cancels the request. Raw sockets on 127.0.0.1
send real requests to a real server whose model is held at a gate, then close the
connection once every item of theirs is queued.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from clipserve.engine.metrics import Metrics
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire.json_codec import request_to_json
from tests.reliability.gated import GatedModel, engine_of, sample, texts_request
from tests.reliability.protocols import send
from tests.waiting import FAILSAFE_S, eventually

ITEMS_PER_REQUEST = 512
REQUESTS = 4


@pytest.fixture
def held_server() -> Iterator[tuple[RunningServer, Metrics, GatedModel]]:
    """The model's gate is closed: the first batch is held, everything else queues."""
    metrics, model = Metrics(CollectorRegistry()), GatedModel()
    config = loopback_config(
        max_batch_size=8, max_queue_items=100_000, shutdown_grace_s=1.0, cache_mb=0
    )
    with running_server(config, model=model, metrics=metrics) as running:
        model.hold()  # after the warm-up pass
        try:
            yield running, metrics, model
        finally:
            model.gate.set()


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


async def _send_then_vanish(server: RunningServer, kind: str, abort: bool) -> None:
    """``REQUESTS`` requests on their own connections; once all their items are admitted
    by the engine (the model holds the first batch), hang up."""
    writers = []
    for n in range(REQUESTS):
        _, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        writer.write(_http_request(*_body(kind, f"{kind}{n}")))
        await writer.drain()
        writers.append(writer)
    admission = engine_of(server)._admission
    total = REQUESTS * ITEMS_PER_REQUEST
    await eventually(lambda: admission.outstanding["text"] == total, "all work is queued")
    for writer in writers:
        if abort:
            writer.transport.abort()  # RST-like: no FIN handshake
        else:
            writer.close()


@pytest.mark.parametrize(("kind", "abort"), [("json", False), ("proto", True), ("openai", False)])
async def test_disconnected_http_client_work_is_cancelled(held_server, kind, abort) -> None:
    server, metrics, model = held_server
    forwards = model.forwards
    await _send_then_vanish(server, kind, abort=abort)
    total = REQUESTS * ITEMS_PER_REQUEST
    # nothing was answered while the model was held: every item is cancelled, at once
    await eventually(
        lambda: sample(metrics.items, outcome="cancelled") == total, "all work is cancelled"
    )
    assert not engine_of(server)._admission.busy
    model.gate.set()
    await eventually(lambda: sample(metrics.queue_depth) == 0, "the queue is dropped")
    answer = await send(server, "http-json", texts_request("after", 2))  # the server goes on
    assert not answer.failed, answer.message
    assert sample(metrics.items, outcome="ok") == 2
    # only the held batch ran, plus "after": the batch prepared behind it was dropped once
    # the replica was free, and everything queued was dropped at the hang-up
    assert model.forwards - forwards == 2
    assert sample(metrics.dropped, reason="cancelled") == total - 8  # all but the held 8


async def test_a_client_that_waits_still_gets_its_reply(held_server) -> None:
    """The disconnect watcher must not cut off a client that simply waits for held work."""
    server, metrics, model = held_server
    reply = asyncio.ensure_future(send(server, "http-proto", texts_request("patient", 64)))
    assert await asyncio.to_thread(model.entered.wait, FAILSAFE_S)  # its work is held
    assert not reply.done()
    model.gate.set()
    answer = await reply
    assert not answer.failed, answer.message
    assert [doc_id for doc_id, _ in answer.docs] == [f"patient-{i}" for i in range(64)]
    assert sample(metrics.items, outcome="cancelled") == 0
