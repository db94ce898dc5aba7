"""Deadlines on every front-end: work whose caller can no longer use the answer is dropped
before any forward pass and counted. The model is held at a gate behind a first request, so
the expiring work is known to be queued; each deadline is observed passing (its call fails
at the client), and the forward passes the model ran are listed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect

from clipserve import Client
from clipserve.engine.metrics import Metrics
from clipserve.errors import ClientTimeoutError
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire import WS_SUBPROTOCOL, DataRequestProto
from tests.reliability.gated import GatedModel, engine_of, sample, texts_request
from tests.reliability.protocols import grpc_stream, post
from tests.waiting import FAILSAFE_S, eventually

SHORT_S = 0.4


@pytest.fixture
def held_server() -> Iterator[tuple[RunningServer, GatedModel, Metrics]]:
    model = GatedModel()
    metrics = Metrics(CollectorRegistry())
    config = loopback_config(max_batch_size=4, max_wait_ms=0, shutdown_grace_s=1.0, cache_mb=0)
    with running_server(config, model=model, metrics=metrics) as server:
        try:
            yield server, model, metrics
        finally:
            model.gate.set()


async def hold(server: RunningServer, model: GatedModel) -> asyncio.Task:
    """A request whose forward pass waits at the closed gate (no deadline)."""
    model.hold()
    body = texts_request("hold", 1).SerializeToString()
    holder = asyncio.ensure_future(post(server.urls["http"], body, protobuf=True))
    assert await asyncio.to_thread(model.entered.wait, FAILSAFE_S)
    return holder


async def release_and_finish(server: RunningServer, model: GatedModel, holder) -> None:
    """Open the gate, let the holder finish, then one more request: once it is answered,
    everything queued before it has been run or dropped."""
    model.gate.set()
    assert (await holder).status_code == 200
    answer = await grpc_stream(server.grpc_port, [texts_request("after", 2)])
    assert answer[0].header.status.code == 0


def forwarded_texts(model: GatedModel) -> list[str]:
    return [text for batch in model.forwarded for text in batch]


def expired_items(metrics: Metrics) -> float:
    return sample(metrics.dropped, reason="deadline")


async def test_grpc_call_deadline_under_a_backlog_costs_no_forward_pass(held_server) -> None:
    server, model, metrics = held_server
    holder = await hold(server, model)
    requests = [texts_request(f"g{i}", 3) for i in range(10)]
    try:  # the server answers each request at the deadline, just before grpc ends the call
        replies = await grpc_stream(server.grpc_port, requests, timeout=SHORT_S)
    except grpc.aio.AioRpcError as exc:  # or grpc ended it first: either way, at the deadline
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        names = {reply.header.status.exception.name for reply in replies}
        assert len(replies) == 10 and names == {"DeadlineExceededError"}
    await eventually(
        lambda: sample(metrics.requests, protocol="grpc", status="expired") == 10,
        "every request of the call is counted as expired",
    )
    await release_and_finish(server, model, holder)
    assert not [t for t in forwarded_texts(model) if t.startswith("g")]
    # the passes the model ran: its warm-up, the held one, the one after; none of the 30
    assert model.forwarded == [["warm up"], ["hold 0"], ["after 0", "after 1"]]
    assert expired_items(metrics) == 30


async def test_grpc_request_header_timeout_is_answered_in_band(held_server) -> None:
    """A request's own ``header.timeout`` expires it alone: an ERROR reply, the call goes on."""
    server, model, metrics = held_server
    holder = await hold(server, model)
    short = texts_request("short", 2)
    short.header.timeout = int(SHORT_S * 1000)
    waiting = asyncio.ensure_future(
        grpc_stream(server.grpc_port, [short, texts_request("patient", 1)])
    )
    await eventually(
        lambda: sample(metrics.requests, protocol="grpc", status="expired") == 1,
        "the short request expires while the model is held",
    )
    await release_and_finish(server, model, holder)
    replies = {reply.header.request_id: reply for reply in await waiting}
    status = replies["short"].header.status
    assert status.code == 1 and status.exception.name == "DeadlineExceededError"
    assert "deadline passed" in status.description
    assert replies["patient"].header.status.code == 0
    assert "short 0" not in forwarded_texts(model) and "patient 0" in forwarded_texts(model)
    assert expired_items(metrics) == 2


async def test_http_deadline_header(held_server) -> None:
    server, model, metrics = held_server
    holder = await hold(server, model)
    body = texts_request("late", 3).SerializeToString()
    headers = {"X-Request-Timeout": f"{SHORT_S}"}
    response = await post(server.urls["http"], body, protobuf=True, headers=headers)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["type"] == "DeadlineExceededError"
    bad = await post(server.urls["http"], body, protobuf=True, headers={"X-Request-Timeout": "x"})
    assert bad.status_code == 400 and "X-Request-Timeout" in bad.json()["error"]["message"]
    await release_and_finish(server, model, holder)
    assert not [t for t in forwarded_texts(model) if t.startswith("late")]
    assert sample(metrics.requests, protocol="http", status="expired") == 1
    assert expired_items(metrics) == 3


async def test_websocket_deadline_and_closed_connection(held_server) -> None:
    server, model, metrics = held_server
    holder = await hold(server, model)
    short = texts_request("ws-short", 2)
    short.header.timeout = int(SHORT_S * 1000)
    async with connect(server.urls["ws"], subprotocols=[WS_SUBPROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send(short.SerializeToString())
        reply = DataRequestProto.FromString(await ws.recv())  # while the model is held
        assert reply.header.status.exception.name == "DeadlineExceededError"
        for i in range(5):  # then queued work on a connection that closes
            await ws.send(texts_request(f"ws-gone{i}", 2).SerializeToString())
        engine = engine_of(server)
        await eventually(lambda: engine._admission.outstanding["text"] == 11, "all queued")
    await eventually(
        lambda: sample(metrics.requests, protocol="websocket", status="cancelled") == 5,
        "the closed connection's requests are cancelled",
    )
    await release_and_finish(server, model, holder)
    assert not [t for t in forwarded_texts(model) if t.startswith("ws-")]
    assert sample(metrics.dropped, reason="cancelled") == 10
    assert expired_items(metrics) == 2


@pytest.mark.parametrize("scheme", ["grpc", "http", "ws"])
async def test_our_clients_timeout_is_the_servers_deadline(held_server, scheme) -> None:
    """clipserve's client sends its ``timeout`` with every request (``header.timeout``, and
    ``X-Request-Timeout`` over HTTP): the server expires the requests and says so."""
    server, model, metrics = held_server
    holder = await hold(server, model)
    async with Client(server.urls[scheme], timeout=SHORT_S) as client:
        with pytest.raises(ClientTimeoutError, match="deadline passed"):
            await client.aencode([f"{scheme}-c{i}" for i in range(8)], batch_size=4)
    await release_and_finish(server, model, holder)
    assert not [t for t in forwarded_texts(model) if t.startswith(f"{scheme}-c")]
    protocol = {"grpc": "grpc", "http": "http", "ws": "websocket"}[scheme]
    assert sample(metrics.requests, protocol=protocol, status="expired") >= 1


async def test_a_deadline_far_enough_changes_nothing(held_server) -> None:
    server, model, metrics = held_server
    response = await post(
        server.urls["http"],
        texts_request("fine", 2).SerializeToString(),
        protobuf=True,
        headers={"X-Request-Timeout": str(FAILSAFE_S)},
    )
    assert response.status_code == 200
    async with httpx.AsyncClient() as http:
        health = (await http.get(server.urls["http"] + "/metrics")).text
    assert "clipserve_dropped_items_total" in health
    assert sample(metrics.dropped) == 0
