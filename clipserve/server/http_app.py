"""HTTP front-end (Starlette on uvicorn); the WebSocket route shares the app and port.

Routes: ``POST /post`` (endpoint from the body's ``execEndpoint``, default ``/``),
``POST /encode``, ``POST /rank``, ``POST /v1/embeddings`` (OpenAI), ``GET /openapi.json``
(clip-client reads it to pick ``/encode``), ``GET /health``, ``/healthz``, ``/readyz``,
``GET /metrics`` (Prometheus) and the WebSocket at ``/``; the web page at ``GET /`` and the
JavaScript client at ``/static/clipserve.js`` (``clipserve.web``).

Bodies are JSON (jina's shape, see ``clipserve.wire.json_codec``) or, with
``Content-Type: application/x-protobuf``, a serialized ``DataRequestProto``; the reply is
protobuf when the request says ``Accept: application/x-protobuf``, JSON otherwise.
Errors are JSON with a non-2xx status (table in ``errors_map``), with ``Retry-After``
when the server knows when to retry. ``X-Request-Timeout: <seconds>`` is the request's
deadline, counted from its arrival: work still queued then is dropped (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from clipserve.engine.metrics import Metrics
from clipserve.errors import ClipServeError, InvalidInputError
from clipserve.server.auth import ANONYMOUS, TokenAuth
from clipserve.server.dispatch import Caller, Dispatcher, parse_request
from clipserve.server.errors_map import (
    BodyTooLargeError,
    http_error_body,
    http_headers,
    http_status,
)
from clipserve.server.openapi import OPENAPI, PROTOBUF
from clipserve.server.service import EmbeddingService
from clipserve.server.websocket import WebSocketSessions
from clipserve.web import OPEN_PATHS as WEB_OPEN_PATHS
from clipserve.web import STATIC_PREFIX, web_routes
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto
from clipserve.wire.json_codec import loads, request_from_json, request_to_json
from clipserve.wire.messages import OPENAI_ENDPOINT, endpoint_of

log = logging.getLogger("clipserve.server")
T = TypeVar("T")
_PROTOBUF_TYPES = (PROTOBUF, "application/protobuf", "application/octet-stream")
HEALTH_PATHS = ("/health", "/healthz", "/readyz")
#: the request's deadline in seconds from its arrival (our client sends its ``timeout``)
TIMEOUT_HEADER = "x-request-timeout"
#: where the auth middleware leaves the caller's tenant in the ASGI scope
TENANT_SCOPE_KEY = "clipserve.tenant"
#: bodies larger than this are parsed in a worker thread, off the event loop
_THREAD_PARSE_BYTES = 512 * 1024


class ClientDisconnectedError(Exception):
    """The HTTP client went away before its reply; its work was cancelled."""


@dataclass
class HttpState:
    """What the routes need; ``ready`` turns False while the server drains."""

    dispatcher: Dispatcher
    service: EmbeddingService
    auth: TokenAuth
    metrics: Metrics
    max_body_bytes: int
    serve_http: bool = True
    serve_websocket: bool = True
    #: the web page at ``/`` (the client module at ``/static/clipserve.js`` is always served)
    serve_ui: bool = True
    max_inflight: int = 64
    ready: bool = True
    sessions: WebSocketSessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = WebSocketSessions(self.dispatcher, self.auth, self.max_inflight)


def build_app(
    state: HttpState,
    *,
    cors: tuple[str, ...] = (),
    open_health: bool = True,
    open_metrics: bool = True,
) -> Starlette:
    routes: list[Route | WebSocketRoute] = []
    if state.serve_http:
        routes += [
            Route("/openapi.json", _openapi, methods=["GET"]),
            Route("/post", _data_route(state, None), methods=["POST"]),
            Route("/encode", _data_route(state, "/encode"), methods=["POST"]),
            Route("/rank", _data_route(state, "/rank"), methods=["POST"]),
            Route(OPENAI_ENDPOINT, _openai_route(state), methods=["POST"]),
            Route("/metrics", _metrics_route(state), methods=["GET"]),
        ]
        routes += [
            Route(path, _health_route(state, path), methods=["GET"]) for path in HEALTH_PATHS
        ]
        routes += web_routes(_page_facts(state), page=state.serve_ui)
    if state.serve_websocket:
        routes.append(WebSocketRoute("/", state.sessions.serve))
    open_paths = {"/openapi.json", *WEB_OPEN_PATHS}
    if open_health:
        open_paths.update(HEALTH_PATHS)
    if open_metrics:
        open_paths.add("/metrics")
    middleware = []
    if cors:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["*"],
            )
        )
    middleware.append(
        Middleware(
            _AuthMiddleware, auth=state.auth, open_paths=open_paths, open_prefix=STATIC_PREFIX
        )
    )
    handlers = {404: _not_found, 405: _not_found}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


# ---- routes ---------------------------------------------------------------------------


def _data_route(
    state: HttpState, path_endpoint: str | None
) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        try:
            caller = _caller(request)
            body = await _read_body(request, state.max_body_bytes)
            data_request = await _parse(body, request.headers.get("content-type", ""))
        except Exception as exc:
            state.dispatcher.rejected("http", exc, path_endpoint or "/")
            return _error_response(exc)
        if path_endpoint and endpoint_of(data_request) != path_endpoint:
            data_request.header.exec_endpoint = path_endpoint
        try:
            reply = await _unless_disconnected(
                request, state.dispatcher.answer(data_request, "http", caller)
            )
        except ClientDisconnectedError:
            return Response(status_code=499)  # nobody reads it: uvicorn drops it
        except Exception as exc:
            return _error_response(exc)
        if PROTOBUF in request.headers.get("accept", ""):
            return Response(reply.SerializeToString(), media_type=PROTOBUF)
        return _json_reply(request_to_json(reply))

    return route


def _json_reply(body: dict[str, Any]) -> Response:
    """JSON has no NaN/Infinity: a failed document's echoed tensor may hold them, so on
    that rare path non-finite numbers are written as null instead of failing the reply."""
    try:
        return JSONResponse(body)
    except ValueError:
        return JSONResponse(_finite(body))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


async def _parse(body: bytes, content_type: str) -> DataRequestProto:
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _PROTOBUF_TYPES:
        return parse_request(body)
    if len(body) > _THREAD_PARSE_BYTES:
        return await asyncio.to_thread(_from_json, body)
    return _from_json(body)


def _from_json(body: bytes) -> DataRequestProto:
    request = request_from_json(loads(body), default_endpoint="/")
    for doc in request.data.docs.docs:  # curl users send no ids; replies must carry one
        if not doc.id:
            doc.id = uuid.uuid4().hex
    return request


def _openai_route(state: HttpState) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        try:
            caller = _caller(request)
            body = loads(await _read_body(request, state.max_body_bytes))
        except Exception as exc:
            state.dispatcher.rejected("http", exc, OPENAI_ENDPOINT)
            return _error_response(exc)
        try:
            work = state.dispatcher.answer_openai(body, "http", caller)
            reply = await _unless_disconnected(request, work)
        except ClientDisconnectedError:
            return Response(status_code=499)
        except Exception as exc:
            return _error_response(exc)
        return JSONResponse(reply)

    return route


def _page_facts(state: HttpState) -> dict[str, Any]:
    """What the web page must know before it has a token."""
    protocols = [name for name, on in (("http", True), ("websocket", state.serve_websocket)) if on]
    return {"auth_required": state.auth.enabled, "protocols": protocols}


def _health_route(state: HttpState, path: str) -> Callable[[Request], Awaitable[Response]]:
    """200 while serving. 503 on every health path while the engine is unhealthy (a stuck
    forward pass, a dead inference thread: a supervisor should know, and may restart);
    503 on ``/readyz`` only while draining for shutdown."""

    async def route(request: Request) -> Response:
        health = getattr(state.service.engine, "health", None)
        body: dict[str, Any] = {"status": "ok", **state.service.info()}
        if health is not None and not health.ok:
            body.update(status="unhealthy", reason=health.reason)
            return JSONResponse(body, status_code=503)
        if not state.ready:
            body["status"] = "draining"
            return JSONResponse(body, status_code=503 if path == "/readyz" else 200)
        return JSONResponse(body)

    return route


def _metrics_route(state: HttpState) -> Callable[[Request], Awaitable[Response]]:
    from prometheus_client import CONTENT_TYPE_LATEST

    async def route(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return route


async def _openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    what = "no such path" if status == 404 else "method not allowed on"
    message = f"{what} {request.method} {request.url.path}"
    body = {"error": {"type": "NotFound" if status == 404 else "MethodNotAllowed"}}
    body["error"]["message"] = message
    return JSONResponse(body, status_code=status)


# ---- helpers --------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
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


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
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


def _error_response(exc: Exception) -> Response:
    if not isinstance(exc, ClipServeError):
        log.exception("HTTP request failed")
    return JSONResponse(http_error_body(exc), http_status(exc), headers=http_headers(exc))


def _caller(request: Request) -> Caller:
    """The caller's tenant (found by the auth middleware) and deadline (from
    ``X-Request-Timeout``, seconds from now, if sent)."""
    arrival = time.monotonic()
    tenant = request.scope.get(TENANT_SCOPE_KEY, ANONYMOUS)
    value = request.headers.get(TIMEOUT_HEADER)
    if value is None:
        return Caller(tenant=tenant, arrival=arrival)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError(
            f"header X-Request-Timeout must be a positive number of seconds, got {value!r}"
        )
    return Caller(tenant=tenant, deadline=arrival + seconds, arrival=arrival)


class _AuthMiddleware:
    """401 for HTTP requests without the right ``Authorization`` header (WebSocket
    connections are checked by the WebSocket handler, which also takes a first frame)."""

    def __init__(
        self, app: ASGIApp, auth: TokenAuth, open_paths: set[str], open_prefix: str
    ) -> None:
        self.app = app
        self.auth = auth
        self.open_paths = open_paths
        self.open_prefix = open_prefix

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.auth.enabled and not self._is_open(scope["path"]):
            credential = None
            for key, value in scope.get("headers", ()):
                if key == b"authorization":
                    credential = value
            tenant = self.auth.identify(credential)
            scope[TENANT_SCOPE_KEY] = tenant
            if tenant is None:
                exc = _auth_error(credential)
                response = JSONResponse(
                    http_error_body(exc), status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _auth_error(credential: bytes | None) -> Exception:
    from clipserve.errors import AuthenticationError

    reason = "missing credential" if not credential else "wrong credential"
    return AuthenticationError(f"unauthenticated: {reason} (send the Authorization header)")
