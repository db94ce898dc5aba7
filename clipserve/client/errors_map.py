"""Translating what a server said back into ``clipserve.errors`` (no I/O): one table per
protocol, mirroring the server's tables (gRPC code, HTTP status, WebSocket close code)."""

from __future__ import annotations

from clipserve.errors import (
    AuthenticationError,
    ClientTimeoutError,
    ClipServeError,
    InvalidInputError,
    OverloadedError,
    RateLimitedError,
    RemoteError,
    ServerUnavailableError,
)

_GRPC: dict[str, type[ClipServeError]] = {
    "UNAVAILABLE": ServerUnavailableError,
    "CANCELLED": ServerUnavailableError,
    "ABORTED": ServerUnavailableError,
    "DEADLINE_EXCEEDED": ClientTimeoutError,
    "RESOURCE_EXHAUSTED": OverloadedError,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": AuthenticationError,
    "INVALID_ARGUMENT": InvalidInputError,
    "FAILED_PRECONDITION": InvalidInputError,
    "OUT_OF_RANGE": InvalidInputError,
}
_HTTP: dict[int, type[ClipServeError]] = {
    400: InvalidInputError,
    401: AuthenticationError,
    403: AuthenticationError,
    408: ClientTimeoutError,
    413: InvalidInputError,
    422: InvalidInputError,
    429: OverloadedError,
    502: ServerUnavailableError,
    503: ServerUnavailableError,
    504: ServerUnavailableError,
}
_WS_CLOSE: dict[int, type[ClipServeError]] = {
    1001: ServerUnavailableError,  # going away (shutdown)
    1006: ServerUnavailableError,  # abnormal closure (connection lost)
    1011: ServerUnavailableError,  # internal error: clip-client reads it as ConnectionError
    1012: ServerUnavailableError,  # service restart
    1013: OverloadedError,  # try again later
    1008: AuthenticationError,  # policy violation
    4001: AuthenticationError,
    4003: AuthenticationError,
    4029: OverloadedError,
    1003: InvalidInputError,
    1007: InvalidInputError,
    1009: InvalidInputError,
}
_BY_NAME: dict[str, type[ClipServeError]] = {
    "OverloadedError": OverloadedError,
    "RateLimitedError": RateLimitedError,
    "AuthenticationError": AuthenticationError,
    "ServerUnavailableError": ServerUnavailableError,
    "EngineUnhealthyError": ServerUnavailableError,
    "DeadlineExceededError": ClientTimeoutError,
    "InvalidInputError": InvalidInputError,
    "InputRefusedError": InvalidInputError,
}


def from_grpc(code_name: str, details: str, url: str) -> ClipServeError:
    kind = _GRPC.get(code_name, RemoteError)
    if code_name == "RESOURCE_EXHAUSTED" and "larger than max" in (details or ""):
        kind = InvalidInputError  # a message size limit, not a full queue
    return _make(kind, f"{url}: gRPC {code_name}: {details or 'no details'}")


def from_http(
    status: int,
    reason: str,
    url: str,
    error_name: str | None = None,
    retry_after: float | None = None,
) -> ClipServeError:
    """``error_name``: the ``error.type`` of a clipserve error body, which may name the
    error more precisely than the status (a 504 that is a passed deadline)."""
    kind = _HTTP.get(status)
    if kind is None:
        kind = ServerUnavailableError if status >= 500 and status != 500 else RemoteError
    kind = _BY_NAME.get(error_name or "", kind)
    error = _make(kind, f"{url}: HTTP {status}: {reason or 'no details'}")
    if isinstance(error, OverloadedError):
        error.retry_after = retry_after
    return error


def from_ws_close(code: int | None, reason: str, url: str) -> ClipServeError:
    kind = _WS_CLOSE.get(code or 1006, RemoteError)
    return _make(kind, f"{url}: WebSocket closed with code {code}: {reason or 'no reason'}")


def from_error_name(name: str) -> type[ClipServeError] | None:
    """The transient/request-level error a reply's ``status.exception.name`` stands for."""
    return _BY_NAME.get(name)


def _make(kind: type[ClipServeError], message: str) -> ClipServeError:
    return kind(message)
