"""How each front-end reports clipserve's error tree: one table per protocol.

Lookups walk the exception's MRO, so the most specific entry wins
(``InputRefusedError`` before ``InvalidInputError`` before ``ClipServeError``).

Decisions, made for clip-client 0.8.3 (which raises on any ERROR status and on any
failed call alike):

* gRPC: request-level input problems (``InvalidInputError``, ``ModelError``) are answered
  *in band*: that one request gets a reply whose ``header.status`` is ERROR (exception name
  and reason filled in). The stream goes on, the other requests still get their answers,
  and clip-client users with ``on_error=`` can handle it per request. Errors about the
  server as a whole end the call with a status code: UNAUTHENTICATED (before anything is
  read), RESOURCE_EXHAUSTED (queues full: retry later), UNAVAILABLE (shutting down).
* HTTP: every error is a non-2xx status with a JSON body
  ``{"error": {"type", "message"}, "header": {"status": {"code": 1, "description"}}}``
  (the ``header`` part lets jina's client show the reason on 503). Per-document failures
  inside a valid request are a 200 reply whose status is ERROR, like gRPC.
* WebSocket: a request-level error, overload included, is an in-band ERROR reply
  (``OverloadedError`` keeps its name; description starts with ``overloaded:``).
  The connection is closed only for problems with the connection itself: 1008 for auth,
  1007 for a frame that is not a DataRequestProto and carries no request id, 1003 for a
  text frame after authentication, 1001 when the server shuts down, 1011 for bugs.
"""

from __future__ import annotations

import grpc

from clipserve.errors import (
    AuthenticationError,
    ClipServeError,
    InputRefusedError,
    InvalidInputError,
    ModelError,
    ModelUnavailableError,
    OverloadedError,
    ServerUnavailableError,
)

GRPC_STATUS: dict[type[BaseException], grpc.StatusCode] = {
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ServerUnavailableError: grpc.StatusCode.UNAVAILABLE,
    ModelUnavailableError: grpc.StatusCode.UNAVAILABLE,
    InputRefusedError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelError: grpc.StatusCode.INTERNAL,
    ClipServeError: grpc.StatusCode.INTERNAL,
    Exception: grpc.StatusCode.INTERNAL,
}

#: gRPC errors answered with an ERROR reply on the stream instead of ending the call
GRPC_IN_BAND: tuple[type[BaseException], ...] = (InvalidInputError, ModelError)
#: gRPC errors that end the call with their status code (anything else unexpected: in band)
GRPC_ENDS_CALL: tuple[type[BaseException], ...] = (
    OverloadedError,
    ServerUnavailableError,
    AuthenticationError,
)

HTTP_STATUS: dict[type[BaseException], int] = {
    AuthenticationError: 401,
    OverloadedError: 429,
    ServerUnavailableError: 503,
    ModelUnavailableError: 503,
    InputRefusedError: 400,
    InvalidInputError: 400,
    ModelError: 500,
    ClipServeError: 500,
    Exception: 500,
}

WS_CLOSE: dict[type[BaseException], int] = {
    AuthenticationError: 1008,  # policy violation
    InvalidInputError: 1007,  # invalid frame payload
    ServerUnavailableError: 1001,  # going away
    Exception: 1011,  # internal error
}
WS_NORMAL = 1000
WS_UNSUPPORTED_DATA = 1003

#: WebSocket errors answered with an ERROR reply (everything but connection-level ones)
WS_IN_BAND: tuple[type[BaseException], ...] = (InvalidInputError, ModelError, OverloadedError)


def _lookup(table: dict[type[BaseException], object], exc: BaseException) -> object:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return table[Exception]


def grpc_status(exc: BaseException) -> grpc.StatusCode:
    return _lookup(GRPC_STATUS, exc)  # type: ignore[return-value]


def http_status(exc: BaseException) -> int:
    return _lookup(HTTP_STATUS, exc)  # type: ignore[return-value]


def ws_close_code(exc: BaseException) -> int:
    return _lookup(WS_CLOSE, exc)  # type: ignore[return-value]


def public_message(exc: BaseException) -> str:
    """What a client may see: our own errors verbatim, anything else as a generic line."""
    if isinstance(exc, ClipServeError):
        message = str(exc) or type(exc).__name__
        if isinstance(exc, OverloadedError) and not message.startswith("overloaded"):
            message = f"overloaded: {message}"
        return message
    return "internal server error (see the server log)"


def error_name(exc: BaseException) -> str:
    return type(exc).__name__ if isinstance(exc, ClipServeError) else "InternalError"


def http_error_body(exc: BaseException) -> dict[str, object]:
    message = public_message(exc)
    return {
        "error": {"type": error_name(exc), "message": message},
        "header": {"status": {"code": 1, "description": message}},
    }
