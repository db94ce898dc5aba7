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
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from clipserve.engine.metrics import Metrics
from clipserve.server.auth import TokenAuth
from clipserve.server.dispatch import Dispatcher, parse_request
from clipserve.server.errors_map import http_error_body
from clipserve.server.http_common import (
    TENANT_SCOPE_KEY,
    ClientDisconnectedError,
    caller_of,
    error_response,
    json_response,
    parse_json,
    read_body,
    unless_disconnected,
    with_deadline,
)
from clipserve.server.openai_http import openai_routes
from clipserve.server.openapi import OPENAPI, PROTOBUF
from clipserve.server.service import EmbeddingService
from clipserve.server.websocket import WebSocketSessions
from clipserve.web import OPEN_PATHS as WEB_OPEN_PATHS
from clipserve.web import STATIC_PREFIX, web_routes
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto
from clipserve.wire.json_codec import request_from_json, request_to_json
from clipserve.wire.messages import endpoint_of

log = logging.getLogger("clipserve.server")
T = TypeVar("T")
_PROTOBUF_TYPES = (PROTOBUF, "application/protobuf", "application/octet-stream")
HEALTH_PATHS = ("/health", "/healthz", "/readyz")
#: bodies larger than this are parsed in a worker thread, off the event loop
_THREAD_PARSE_BYTES = 512 * 1024


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
            *openai_routes(state.dispatcher, state.max_body_bytes),
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
        caller = caller_of(request)
        try:
            caller = with_deadline(caller, request)
            body = await read_body(request, state.max_body_bytes)
            data_request = await _parse(body, request.headers.get("content-type", ""))
        except Exception as exc:
            state.dispatcher.rejected("http", exc, path_endpoint or "/", caller)
            return error_response(exc)
        if path_endpoint and endpoint_of(data_request) != path_endpoint:
            data_request.header.exec_endpoint = path_endpoint
        try:
            reply = await unless_disconnected(
                request, state.dispatcher.answer(data_request, "http", caller)
            )
        except ClientDisconnectedError:
            return Response(status_code=499)  # nobody reads it: uvicorn drops it
        except Exception as exc:
            return error_response(exc)
        if PROTOBUF in request.headers.get("accept", ""):
            return Response(reply.SerializeToString(), media_type=PROTOBUF)
        return json_response(request_to_json(reply))

    return route


async def _parse(body: bytes, content_type: str) -> DataRequestProto:
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _PROTOBUF_TYPES:
        return parse_request(body)
    if len(body) > _THREAD_PARSE_BYTES:
        return await asyncio.to_thread(_from_json, body)
    return _from_json(body)


def _from_json(body: bytes) -> DataRequestProto:
    request = request_from_json(parse_json(body), default_endpoint="/")
    for doc in request.data.docs.docs:  # curl users send no ids; replies must carry one
        if not doc.id:
            doc.id = uuid.uuid4().hex
    return request


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
            return json_response(body, status_code=503)
        if not state.ready:
            body["status"] = "draining"
            return json_response(body, status_code=503 if path == "/readyz" else 200)
        return json_response(body)

    return route


def _metrics_route(state: HttpState) -> Callable[[Request], Awaitable[Response]]:
    from prometheus_client import CONTENT_TYPE_LATEST

    async def route(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return route


async def _openapi(request: Request) -> Response:
    return json_response(OPENAPI)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    what = "no such path" if status == 404 else "method not allowed on"
    message = f"{what} {request.method} {request.url.path}"
    body = {"error": {"type": "NotFound" if status == 404 else "MethodNotAllowed"}}
    body["error"]["message"] = message
    return json_response(body, status_code=status)


# ---- helpers --------------------------------------------------------------------------


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
                response = json_response(
                    http_error_body(exc), status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _auth_error(credential: bytes | None) -> Exception:
    from clipserve.errors import AuthenticationError

    reason = "missing credential" if not credential else "wrong credential"
    return AuthenticationError(f"unauthenticated: {reason} (send the Authorization header)")
