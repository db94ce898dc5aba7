"""Token auth, the same on every protocol, and *nothing processed* without it: the engine
and request counters do not move for refused calls. (TLS trust / no-trust and the basic
token checks per protocol are in ``tests/server/test_tls_auth.py``.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clipserve.engine.metrics import Metrics
from clipserve.models.base import EmbeddingModel
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire import WS_END_OF_INPUT, WS_SUBPROTOCOL, DataRequestProto, DocumentProto
from clipserve.wire.messages import new_request
from tests.reliability.protocols import grpc_stream, post

TOKEN = "s3cret-token-for-tests"
WRONG = ("", "wrong-token", TOKEN + "x", TOKEN[:-1], "Bearer wrong-token")


def request(tag: str) -> DataRequestProto:
    return new_request([DocumentProto(id=f"{tag}-0", text="hello")], request_id=tag)


def processed(metrics: Metrics) -> float:
    """Everything that would show work was done: engine items and answered documents."""
    total = 0.0
    for metric in (metrics.items, metrics.documents):
        for family in metric.collect():
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


@pytest.fixture(scope="module")
def guarded(hash_model: EmbeddingModel) -> Iterator[tuple[RunningServer, Metrics]]:
    """Token required; health open, metrics protected."""
    metrics = Metrics(CollectorRegistry())
    config = loopback_config(auth_token=TOKEN, open_health=True, open_metrics=False, cache_mb=0)
    with running_server(config, model=hash_model, metrics=metrics) as server:  # counts model work
        yield server, metrics


@pytest.fixture(scope="module")
def guarded_inverse(hash_model: EmbeddingModel) -> Iterator[RunningServer]:
    """Token required; health protected, metrics open."""
    config = loopback_config(auth_token=TOKEN, open_health=False, open_metrics=True)
    with running_server(config, model=hash_model) as server:
        yield server


async def _ws(url: str, first: str | None, headers: dict[str, str] | None) -> tuple[Any, int]:
    """One WebSocket session: optional first text frame, one request, end of input."""
    replies = []
    async with connect(url, subprotocols=[WS_SUBPROTOCOL], additional_headers=headers) as ws:  # type: ignore[list-item]
        try:
            if first is not None:
                await ws.send(first)
            await ws.send(request("ws").SerializeToString())
            await ws.send(WS_END_OF_INPUT)
            async for message in ws:
                replies.append(DataRequestProto.FromString(message))
        except ConnectionClosed:
            pass
    return replies, ws.close_code


async def test_refused_calls_process_nothing_on_any_protocol(guarded) -> None:
    server, metrics = guarded
    before = processed(metrics)
    for credential in WRONG:
        metadata = (("authorization", credential),) if credential else ()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_stream(server.grpc_port, [request("g")] * 3, metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        headers = {"authorization": credential} if credential else {}
        response = await post(server.urls["http"], request("h").SerializeToString(),
                              protobuf=True, headers=headers)  # fmt: skip
        assert response.status_code == 401 and "unauthenticated" in response.text

        replies, code = await _ws(server.urls["ws"], None, headers)
        assert (replies, code) == ([], 1008)
        frame = json.dumps({"authorization": credential})
        replies, code = await _ws(server.urls["ws"], frame, None)
        assert (replies, code) == ([], 1008)
    assert processed(metrics) == before, "a refused call did work"

    # the same calls with the token are processed, and the counters do move
    ok = await grpc_stream(server.grpc_port, [request("g")], metadata=(("authorization", TOKEN),))
    assert ok[0].data.docs.docs[0].HasField("embedding")
    response = await post(server.urls["http"], request("h").SerializeToString(), protobuf=True,
                          headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert response.status_code == 200
    replies, code = await _ws(server.urls["ws"], None, {"authorization": TOKEN})
    assert len(replies) == 1 and code == 1000
    replies, code = await _ws(server.urls["ws"], json.dumps({"authorization": TOKEN}), None)
    assert len(replies) == 1 and code == 1000
    assert processed(metrics) >= before + 4 * 2  # engine item + answered document, each


def test_health_and_metrics_open_or_protected(guarded, guarded_inverse) -> None:
    server, _ = guarded
    with httpx.Client(base_url=server.urls["http"]) as http:
        assert http.get("/health").status_code == 200  # open
        assert http.get("/metrics").status_code == 401  # protected
        auth = {"authorization": TOKEN}
        assert http.get("/metrics", headers=auth).status_code == 200
    with httpx.Client(base_url=guarded_inverse.urls["http"]) as http:
        assert http.get("/health").status_code == 401
        assert http.get("/health", headers={"authorization": TOKEN}).status_code == 200
        assert http.get("/metrics").status_code == 200


async def test_websocket_without_any_credential_is_closed_not_served(guarded) -> None:
    """No header and a binary frame first: the frame is not a credential -> 1008."""
    server, metrics = guarded
    before = processed(metrics)
    try:
        replies, code = await _ws(server.urls["ws"], None, None)
    except InvalidStatus as exc:  # refusing the upgrade would be acceptable too
        assert exc.response.status_code == 401
    else:
        assert (replies, code) == ([], 1008)
    assert processed(metrics) == before
