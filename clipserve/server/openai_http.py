"""The OpenAI-compatible HTTP routes: ``POST /v1/embeddings`` (the work is in
``openai_embeddings``, run and counted by the ``Dispatcher`` like every request) and
``GET /v1/models`` / ``GET /v1/models/{model}``, which list the one served model.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}`` (see
``errors_map.http_error_body``), so the ``openai`` package raises its own classes:
400 ``BadRequestError``, 401 ``AuthenticationError``, 404 ``NotFoundError``, 429
``RateLimitError``, 5xx ``InternalServerError``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clipserve.server.dispatch import Dispatcher
from clipserve.server.errors_map import ModelNotFoundError
from clipserve.server.http_common import (
    ClientDisconnectedError,
    caller_of,
    error_response,
    json_response,
    parse_json,
    read_body,
    unless_disconnected,
    with_deadline,
)
from clipserve.wire.messages import OPENAI_ENDPOINT

MODELS_PATH = "/v1/models"
OWNER = "clipserve"


def openai_routes(dispatcher: Dispatcher, max_body_bytes: int) -> list[Route]:
    created = int(time.time())
    return [
        Route(OPENAI_ENDPOINT, _embeddings(dispatcher, max_body_bytes), methods=["POST"]),
        Route(MODELS_PATH, _models(dispatcher, created), methods=["GET"]),
        Route(MODELS_PATH + "/{model:path}", _model(dispatcher, created), methods=["GET"]),
    ]


def _embeddings(
    dispatcher: Dispatcher, max_body_bytes: int
) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        caller = caller_of(request)
        try:
            caller = with_deadline(caller, request)
            body = parse_json(await read_body(request, max_body_bytes))
        except Exception as exc:
            dispatcher.rejected("http", exc, OPENAI_ENDPOINT, caller)
            return error_response(exc)
        try:
            work = dispatcher.answer_openai(body, "http", caller)
            reply = await unless_disconnected(request, work)
        except ClientDisconnectedError:
            return Response(status_code=499)
        except Exception as exc:
            return error_response(exc)
        return json_response(reply)

    return route


def _model_object(dispatcher: Dispatcher, created: int) -> dict[str, Any]:
    name = dispatcher.service.model_name
    return {"id": name, "object": "model", "created": created, "owned_by": OWNER}


def _models(dispatcher: Dispatcher, created: int) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        return json_response({"object": "list", "data": [_model_object(dispatcher, created)]})

    return route


def _model(dispatcher: Dispatcher, created: int) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        asked = request.path_params["model"]
        served = dispatcher.service.model_name
        if asked.lower() != served.lower():
            message = f"model {asked!r} is not served here; this server serves {served!r}"
            return error_response(ModelNotFoundError(message, param="model"))
        return json_response(_model_object(dispatcher, created))

    return route
