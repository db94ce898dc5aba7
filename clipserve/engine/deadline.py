"""Deadlines: the moment after which a caller can no longer use an answer.

A deadline is a ``time.monotonic()`` value. The front-end that knows it (a gRPC call's
deadline, a request's ``header.timeout``, an HTTP ``X-Request-Timeout`` header) opens a
``deadline_scope`` around the request; the engine reads ``current_deadline()`` when work
is submitted, so no signature between the two has to carry it. Any engine behind the
engine seam (a Ray-backed one too) reads it the same way, and drops work whose deadline
passed before computing it, raising ``DeadlineExceededError``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

from clipserve.errors import DeadlineExceededError

_CURRENT: ContextVar[float | None] = ContextVar("clipserve_deadline", default=None)


def current_deadline() -> float | None:
    """The deadline of the request being served in this task (None: none)."""
    return _CURRENT.get()


def earliest(*deadlines: float | None) -> float | None:
    """The earliest of the given deadlines (None: no deadline)."""
    known = [deadline for deadline in deadlines if deadline is not None]
    return min(known) if known else None


def deadline_after(seconds: float | None, start: float | None = None) -> float | None:
    """``seconds`` from ``start`` (default: now); None stays None."""
    if seconds is None:
        return None
    return (time.monotonic() if start is None else start) + seconds


@contextlib.contextmanager
def deadline_scope(deadline: float | None) -> Iterator[float | None]:
    """Serve the work inside under ``deadline`` (an outer, earlier deadline still holds)."""
    effective = earliest(deadline, _CURRENT.get())
    token = _CURRENT.set(effective)
    try:
        yield effective
    finally:
        _CURRENT.reset(token)


def expired(deadline: float | None, now: float | None = None) -> bool:
    return deadline is not None and (time.monotonic() if now is None else now) >= deadline


def check_deadline(deadline: float | None, what: str = "the request") -> None:
    """Raise ``DeadlineExceededError`` if ``deadline`` has passed."""
    if expired(deadline):
        raise DeadlineExceededError(
            f"the caller's deadline passed before {what} was computed; it was dropped"
        )
