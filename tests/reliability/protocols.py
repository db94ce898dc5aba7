"""Raw clients for each protocol, as an outside sender would use them (no clipserve client),
with every answer normalised into one ``Answer`` so one test can run over all protocols."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clipserve.server.limits import MiB
from clipserve.wire import GRPC_METHOD, WS_END_OF_INPUT, WS_SUBPROTOCOL, DataRequestProto
from clipserve.wire.json_codec import request_to_json
from clipserve.wire.ndarray import read_ndarray

#: how each test talks to the server: raw gRPC stream, HTTP with a JSON or protobuf body,
#: WebSocket binary frames
PROTOCOLS = ("grpc", "http-json", "http-proto", "websocket")
TIMEOUT_S = 60.0


@dataclass
class Answer:
    """What one request got back, whatever the protocol."""

    protocol: str
    #: (id, embedding or None) per document of the reply, in reply order
    docs: list[tuple[str, np.ndarray | None]] = field(default_factory=list)
    failed: bool = False  # ERROR status, HTTP error, aborted call or closed connection
    message: str = ""  # status description / error message / close reason
    code: Any = None  # HTTP status, gRPC status code, WebSocket close code

    def embedding(self, doc_id: str) -> np.ndarray | None:
        found = [emb for i, emb in self.docs if i == doc_id]
        assert len(found) == 1, f"{doc_id!r} appears {len(found)} times in the reply"
        return found[0]


def _from_reply(protocol: str, reply: DataRequestProto, code: Any = None) -> Answer:
    docs = []
    for doc in reply.data.docs.docs:
        embedding = read_ndarray(doc.embedding) if doc.HasField("embedding") else None
        docs.append((doc.id, embedding))
    status = reply.header.status
    return Answer(protocol, docs, status.code == 1, status.description, code)


async def grpc_stream(
    port: int,
    requests: Sequence[DataRequestProto | bytes],
    *,
    metadata: Sequence[tuple[str, str]] = (),
    root_cert: bytes | None = None,
    timeout: float = TIMEOUT_S,
) -> list[DataRequestProto]:
    """One bidirectional stream; raises ``grpc.aio.AioRpcError`` if the call ends badly."""
    options = [("grpc.max_receive_message_length", 256 * MiB),
               ("grpc.max_send_message_length", 256 * MiB)]  # fmt: skip
    target = f"127.0.0.1:{port}"
    if root_cert is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_cert)
        options.append(("grpc.ssl_target_name_override", "localhost"))
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.aio.insecure_channel(target, options=options)
    async with channel:
        call = channel.stream_stream(
            GRPC_METHOD,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=DataRequestProto.FromString,
        )
        stream = call(iter(requests), metadata=tuple(metadata) or None, timeout=timeout)
        return [reply async for reply in stream]


async def send_grpc(port: int, request: DataRequestProto | bytes, **kwargs: Any) -> Answer:
    try:
        replies = await grpc_stream(port, [request], **kwargs)
    except grpc.aio.AioRpcError as exc:
        return Answer("grpc", failed=True, message=exc.details() or "", code=exc.code())
    assert len(replies) == 1, f"expected one reply, got {len(replies)}"
    return _from_reply("grpc", replies[0], grpc.StatusCode.OK)


async def post(
    base: str,
    body: bytes,
    *,
    protobuf: bool = False,
    path: str = "/post",
    headers: dict[str, str] | None = None,
    verify: Any = True,
) -> httpx.Response:
    all_headers = {"content-type": "application/x-protobuf" if protobuf else "application/json"}
    if protobuf:
        all_headers["accept"] = "application/x-protobuf"
    all_headers.update(headers or {})
    async with httpx.AsyncClient(timeout=TIMEOUT_S, verify=verify) as client:
        return await client.post(base + path, content=body, headers=all_headers)


def answer_from_http(protocol: str, response: httpx.Response) -> Answer:
    if response.status_code != 200:
        try:
            message = response.json().get("error", {}).get("message", "")
        except ValueError:  # not JSON: e.g. a bare 500 from the ASGI server
            message = response.text
        return Answer(protocol, failed=True, message=message, code=response.status_code)
    if protocol == "http-proto":
        return _from_reply(protocol, DataRequestProto.FromString(response.content), 200)
    body = response.json()
    docs = []
    for doc in body["data"]:
        embedding = doc.get("embedding")
        docs.append((doc["id"], None if embedding is None else np.asarray(embedding, np.float32)))
    status = body["header"]["status"]
    return Answer(protocol, docs, status.get("code") == 1, status.get("description", ""), 200)


async def send_http(base: str, request: DataRequestProto | bytes, protobuf: bool) -> Answer:
    protocol = "http-proto" if protobuf else "http-json"
    if isinstance(request, bytes):
        body = request
    elif protobuf:
        body = request.SerializeToString()
    else:
        body = json.dumps(request_to_json(request)).encode()
    return answer_from_http(protocol, await post(base, body, protobuf=protobuf))


async def ws_session(
    url: str,
    frames: Sequence[bytes | str],
    *,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    expect: int | None = None,
) -> tuple[list[DataRequestProto], int | None, str]:
    """Send ``frames`` then the end-of-input marker; collect replies until the server
    closes. Returns (replies, close code, close reason)."""
    replies: list[DataRequestProto] = []
    async with connect(
        url,
        subprotocols=[websockets.Subprotocol(WS_SUBPROTOCOL)],
        additional_headers=headers,
        ssl=ssl_context,
        max_size=256 * MiB,
        open_timeout=10,
    ) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            await ws.send(WS_END_OF_INPUT)
        except ConnectionClosed:
            pass
        try:
            async with asyncio.timeout(TIMEOUT_S):
                async for message in ws:
                    replies.append(DataRequestProto.FromString(message))
                    if expect is not None and len(replies) == expect:
                        break
        except ConnectionClosed:
            pass
        code = ws.close_code
        reason = ws.close_reason or ""
    return replies, code, reason


async def send_ws(url: str, request: DataRequestProto | bytes) -> Answer:
    frame = request if isinstance(request, bytes) else request.SerializeToString()
    replies, code, reason = await ws_session(url, [frame])
    if not replies:
        return Answer("websocket", failed=True, message=reason, code=code)
    assert len(replies) == 1, f"expected one reply, got {len(replies)}"
    return _from_reply("websocket", replies[0], code)


async def send(server: Any, protocol: str, request: DataRequestProto | bytes) -> Answer:
    """One request over ``protocol`` to a ``RunningServer``."""
    if protocol == "grpc":
        return await send_grpc(server.grpc_port, request)
    if protocol in ("http-json", "http-proto"):
        return await send_http(server.urls["http"], request, protocol == "http-proto")
    if protocol == "websocket":
        return await send_ws(server.urls["ws"], request)
    raise ValueError(protocol)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found")
