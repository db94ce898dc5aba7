"""Helpers for the tenant tests: a server with a tokens file, and one request per protocol
sent with a credential, reduced to (ok, status, error name, retry-after)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clipserve.engine.metrics import Metrics
from clipserve.models.base import EmbeddingModel
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire import WS_END_OF_INPUT, WS_SUBPROTOCOL, DataRequestProto
from clipserve.wire.messages import retry_after_of
from tests.reliability.protocols import grpc_stream, post


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_tokens(path: Path, entries: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    return path


@contextlib.contextmanager
def tenant_server(
    tmp_path: Path, entries: dict[str, Any], model: EmbeddingModel, **config: Any
) -> Iterator[tuple[RunningServer, Metrics, Path]]:
    tokens = write_tokens(tmp_path / "tokens.yaml", entries)
    metrics = Metrics(CollectorRegistry())
    settings = loopback_config(
        auth_tokens_file=str(tokens), shutdown_grace_s=1.0, cache_mb=0, **config
    )
    with running_server(settings, model=model, metrics=metrics) as server:
        yield server, metrics, tokens


@dataclass
class Outcome:
    ok: bool
    code: Any = None  # gRPC code / HTTP status / WebSocket close code
    error: str = ""  # the error's name (ERROR reply or HTTP body)
    retry_after: float | None = None
    message: str = ""


def _from_reply(reply: DataRequestProto, code: Any) -> Outcome:
    status = reply.header.status
    if status.code:
        return Outcome(False, code, status.exception.name, retry_after_of(reply),
                       status.description)  # fmt: skip
    return Outcome(True, code)


async def send_as(
    server: RunningServer, protocol: str, token: str, request: DataRequestProto
) -> Outcome:
    """One request over ``protocol`` (grpc, http, websocket) with ``token``."""
    if protocol == "grpc":
        try:
            (reply,) = await grpc_stream(
                server.grpc_port, [request], metadata=(("authorization", token),)
            )
        except grpc.aio.AioRpcError as exc:
            return Outcome(False, exc.code(), message=exc.details() or "")
        return _from_reply(reply, grpc.StatusCode.OK)
    if protocol == "http":
        response = await post(server.urls["http"], request.SerializeToString(), protobuf=True,
                              headers={"authorization": token})  # fmt: skip
        if response.status_code != 200:
            error = response.json().get("error", {})
            retry = response.headers.get("retry-after")
            return Outcome(False, response.status_code, error.get("type", ""),
                           error.get("retry_after_s", retry and float(retry)),
                           error.get("message", ""))  # fmt: skip
        return _from_reply(DataRequestProto.FromString(response.content), 200)
    headers = {"authorization": token}
    async with connect(server.urls["ws"], subprotocols=[WS_SUBPROTOCOL],  # type: ignore[list-item]
                       additional_headers=headers) as ws:  # fmt: skip
        try:
            await ws.send(request.SerializeToString())
            await ws.send(WS_END_OF_INPUT)
            reply = DataRequestProto.FromString(await ws.recv())
        except ConnectionClosed:
            return Outcome(False, ws.close_code, message=ws.close_reason or "")
    return _from_reply(reply, 1000)


def tenant_sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0
