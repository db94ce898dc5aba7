"""Waiting in tests: on an event or on the state that shows it, never on the clock alone.
Every timeout here is a failsafe, generous enough that a slow or busy machine never fails
a test by it; a test fails by what it observes, not by how long that took."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: how long a wait may last before the test gives up: a failsafe, never a measurement
FAILSAFE_S = 60.0
_POLL_S = 0.01


def wait_until(
    condition: Callable[[], object], what: str, timeout: float = FAILSAFE_S, poll_s: float = _POLL_S
) -> None:
    """Block until ``condition()`` is true (checked every ``poll_s``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not so after {timeout:g} s (failsafe)")
        time.sleep(poll_s)


async def eventually(
    condition: Callable[[], object], what: str, timeout: float = FAILSAFE_S, poll_s: float = _POLL_S
) -> None:
    """``wait_until`` for a coroutine: the event loop keeps running meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not so after {timeout:g} s (failsafe)")
        await asyncio.sleep(poll_s)
