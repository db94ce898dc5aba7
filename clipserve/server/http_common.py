"""What every HTTP route shares: reading a body within the limit, JSON in and out, the
error reply (with ``Retry-After`` when the server knows when to retry), who the caller is
(tenant, address, ``X-Request-Timeout`` deadline), and not working for a client that went
away.

Replies are written by orjson: a 128 x 512 float reply takes a few milliseconds instead of
tens with the standard library, on the event loop. JSON has no NaN or infinity; orjson
writes them as null (a failed document's echoed tensor may hold them).

Bodies are parsed by orjson first; what it refuses goes to the tolerant parser
(``wire.json_codec.loads``), which takes what curl users send (raw line breaks inside
strings, as ``$(base64 file)`` makes) and names line and column when the JSON is broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from clipserve.errors import ClipServeError, InvalidInputError
from clipserve.server.auth import ANONYMOUS
from clipserve.server.dispatch import Caller
from clipserve.server.errors_map import (
    BodyTooLargeError,
    http_error_body,
    http_headers,
    http_status,
)
from clipserve.server.logs import peer_address
from clipserve.wire.json_codec import loads as tolerant_loads

log = logging.getLogger("clipserve.server")
T = TypeVar("T")
#: the request's deadline in seconds from its arrival (our client sends its ``timeout``)
TIMEOUT_HEADER = "x-request-timeout"
#: where the auth middleware leaves the caller's tenant in the ASGI scope
TENANT_SCOPE_KEY = "clipserve.tenant"


class ClientDisconnectedError(Exception):
    """The HTTP client went away before its reply; its work was cancelled."""


def json_response(
    body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status_code, headers, media_type="application/json")


def parse_json(body: bytes) -> Any:
    """The body's JSON value; ``InvalidInputError`` for what no parser can read."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return tolerant_loads(body)


def error_response(exc: Exception) -> Response:
    if not isinstance(exc, ClipServeError):
        log.exception("HTTP request failed")
    return json_response(http_error_body(exc), http_status(exc), headers=http_headers(exc))


def peer(request: Request) -> str:
    return peer_address(request.client)


def caller_of(request: Request) -> Caller:
    """The caller as the HTTP layer knows it: the tenant the auth middleware found, the
    peer's address and the arrival time (no deadline yet: ``with_deadline``)."""
    tenant = request.scope.get(TENANT_SCOPE_KEY, ANONYMOUS)
    return Caller(tenant=tenant, arrival=time.monotonic(), client=peer(request))


def with_deadline(caller: Caller, request: Request) -> Caller:
    """``caller`` with the deadline ``X-Request-Timeout`` (seconds from arrival) sets, if
    sent; ``InvalidInputError`` for a value that is not a positive number."""
    value = request.headers.get(TIMEOUT_HEADER)
    if value is None:
        return caller
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError(
            f"header X-Request-Timeout must be a positive number of seconds, got {value!r}"
        )
    return dataclasses.replace(caller, deadline=caller.arrival + seconds)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"request body of {declared} bytes is above the {limit} limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"request body is above the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first: then cancel it (which drops its
    queued engine items, as for gRPC and WebSocket) and raise ``ClientDisconnectedError``.

    Starlette does not cancel a handler when its client goes away, so once the body is
    read, a watcher waits on the ASGI ``receive`` channel, whose next message is
    ``http.disconnect`` when the connection closes."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        return task.result()
    if watcher.exception() is not None:  # could not watch: just wait for the work
        return await task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnectedError("the client disconnected before its reply")


async def _disconnected(request: Request) -> None:
    """Returns when the client has disconnected (never for a client that waits)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
