"""What each error means on every front-end, in one table (``ERRORS``): the status label
the request metrics count it under, the HTTP status, the gRPC code, the WebSocket close
code, and whether gRPC and WebSocket answer it in band.

Lookups walk the exception's MRO, so the most specific entry wins
(``InputRefusedError`` before ``InvalidInputError`` before ``ClipServeError``).

Decisions, made for clip-client 0.8.3 (which raises on any ERROR status and on any
failed call alike):

* gRPC: request-level input problems (``InvalidInputError``, ``ModelError``) are answered
  *in band*: that one request gets a reply whose ``header.status`` is ERROR (exception name
  and reason filled in). The stream goes on, the other requests still get their answers,
  and clip-client users with ``on_error=`` can handle it per request. So are the refusals
  that concern one request only: its deadline passed (``DeadlineExceededError``, the
  meaning of DEADLINE_EXCEEDED) and its tenant's rate limit (``RateLimitedError``, the
  meaning of RESOURCE_EXHAUSTED, with the retry-after in the description and
  ``exception.args``): ending the call would cancel the caller's other admitted work.
  Errors about the server as a whole end the call with a status code: UNAUTHENTICATED
  (before anything is read), RESOURCE_EXHAUSTED (queues full: retry later), UNAVAILABLE
  (shutting down, or the engine is stuck).
* HTTP: every error is a non-2xx status (413 for a body above the limit) with a JSON body
  ``{"error": {"message", "type", "param", "code"}, "header": {"status": {"code": 1,
  "description"}}}``: OpenAI's shape (``type`` is the error's class name, ``param`` the
  request field at fault or null, ``code`` the metric label) plus a ``header`` that lets
  jina's client show the reason on 503. Per-document failures
  inside a valid request are a 200 reply whose status is ERROR, like gRPC.
* WebSocket: a request-level error, overload included, is an in-band ERROR reply
  (``OverloadedError`` keeps its name; description starts with ``overloaded:``).
  The connection is closed only for problems with the connection itself: 1008 for auth,
  1007 for a frame that is not a DataRequestProto and carries no request id, 1003 for a
  text frame after authentication, 1001 when the server shuts down, 1011 for bugs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import grpc

from clipserve.errors import (
    AuthenticationError,
    ClipServeError,
    DeadlineExceededError,
    EngineUnhealthyError,
    InputRefusedError,
    InvalidInputError,
    ModelError,
    ModelUnavailableError,
    OverloadedError,
    RateLimitedError,
    ServerUnavailableError,
)

Code = grpc.StatusCode
WS_NORMAL = 1000
WS_UNSUPPORTED_DATA = 1003


class BodyTooLargeError(InputRefusedError):
    """An HTTP request body above the configured limit."""


class ModelNotFoundError(InvalidInputError):
    """An OpenAI-style lookup (``GET /v1/models/{model}``) of a model not served here."""


class Meaning(NamedTuple):
    """What one kind of error means on each front-end."""

    #: the ``status`` label of ``clipserve_requests_total``
    label: str
    http: int
    grpc: grpc.StatusCode
    #: the close code when the error ends a WebSocket connection
    ws_close: int
    #: answered with an ERROR reply on a gRPC stream (else the call ends with ``grpc``)
    grpc_in_band: bool
    #: answered with an ERROR reply on a WebSocket (else the connection closes)
    ws_in_band: bool


# WebSocket close codes: 1001 going away, 1007 invalid payload, 1008 policy violation,
# 1011 internal error (used only where the error is not answered in band)
# fmt: off
_TABLE: dict[type[BaseException], tuple[str, int, grpc.StatusCode, int, bool, bool]] = {
    #                        label             HTTP gRPC code                WS  in band: gRPC, WS
    AuthenticationError:    ("unauthenticated", 401, Code.UNAUTHENTICATED,    1008, False, False),
    OverloadedError:        ("overloaded",      429, Code.RESOURCE_EXHAUSTED, 1011, False, True),
    RateLimitedError:       ("rate_limited",    429, Code.RESOURCE_EXHAUSTED, 1011, True, True),
    DeadlineExceededError:  ("expired",         504, Code.DEADLINE_EXCEEDED,  1011, True, True),
    EngineUnhealthyError:   ("unhealthy",       503, Code.UNAVAILABLE,        1011, False, True),
    ServerUnavailableError: ("error",           503, Code.UNAVAILABLE,        1001, False, False),
    ModelUnavailableError:  ("error",           503, Code.UNAVAILABLE,        1011, True, True),
    BodyTooLargeError:      ("refused",         413, Code.INVALID_ARGUMENT,   1007, True, True),
    ModelNotFoundError:     ("invalid",         404, Code.NOT_FOUND,          1007, True, True),
    InputRefusedError:      ("refused",         400, Code.INVALID_ARGUMENT,   1007, True, True),
    InvalidInputError:      ("invalid",         400, Code.INVALID_ARGUMENT,   1007, True, True),
    ModelError:             ("error",           500, Code.INTERNAL,           1011, True, True),
    ClipServeError:         ("error",           500, Code.INTERNAL,           1011, True, False),
    Exception:              ("error",           500, Code.INTERNAL,           1011, True, False),
}
# fmt: on
ERRORS: dict[type[BaseException], Meaning] = {cls: Meaning(*row) for cls, row in _TABLE.items()}
#: the label of a request whose caller went away (its task was cancelled)
CANCELLED = "cancelled"


def meaning(exc: BaseException) -> Meaning:
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return ERRORS[Exception]


def grpc_status(exc: BaseException) -> grpc.StatusCode:
    return meaning(exc).grpc


def http_status(exc: BaseException) -> int:
    return meaning(exc).http


def ws_close_code(exc: BaseException) -> int:
    return meaning(exc).ws_close


def metric_label(exc: BaseException) -> str:
    return meaning(exc).label if isinstance(exc, Exception) else CANCELLED


def in_band(exc: BaseException, protocol: str) -> bool:
    """Whether ``protocol`` answers ``exc`` with an ERROR reply rather than ending the call
    (gRPC) or closing the connection (WebSocket). HTTP answers every error with a status."""
    row = meaning(exc)
    return row.ws_in_band if protocol == "websocket" else row.grpc_in_band


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


def retry_after(exc: BaseException) -> float | None:
    """Seconds the client should wait before trying again, when the error knows."""
    return getattr(exc, "retry_after", None) if isinstance(exc, OverloadedError) else None


def http_headers(exc: BaseException) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up, as HTTP has it) when the error knows."""
    seconds = retry_after(exc)
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def http_error_body(exc: BaseException) -> dict[str, object]:
    message = public_message(exc)
    error: dict[str, object] = {
        "message": message,
        "type": error_name(exc),
        "param": getattr(exc, "param", None),
        "code": metric_label(exc),
    }
    seconds = retry_after(exc)
    if seconds is not None:
        error["retry_after_s"] = round(seconds, 3)  # the precise hint (Retry-After rounds up)
    return {"error": error, "header": {"status": {"code": 1, "description": message}}}
