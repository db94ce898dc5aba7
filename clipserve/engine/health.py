"""Whether the engine can answer: a set of named problems, healthy when there is none.

The engine reports a problem when a forward pass runs past its time limit or an inference
thread dies, and clears it when the pass returns. Listeners (the gRPC health service, the
HTTP readiness route, ``--exit-on-stuck``) are told of every change; tests await changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Listener = Callable[["EngineHealth"], None]


class EngineHealth:
    """Problems by key (``replica-0``...); ``ok`` when there is none. Event-loop only."""

    def __init__(self) -> None:
        self._problems: dict[str, str] = {}
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        #: ``time.monotonic()`` of the last change (for /health)
        self.since = time.monotonic()

    @property
    def ok(self) -> bool:
        return not self._problems

    @property
    def problems(self) -> dict[str, str]:
        """The current problems by key (a copy)."""
        return dict(self._problems)

    @property
    def reason(self) -> str | None:
        """Every current problem, in one line; None when healthy."""
        return "; ".join(self._problems.values()) or None

    def report(self, key: str, problem: str) -> None:
        if self._problems.get(key) != problem:
            self._problems[key] = problem
            self._notify()

    def clear(self, key: str) -> None:
        if self._problems.pop(key, None) is not None:
            self._notify()

    def subscribe(self, listener: Listener) -> None:
        """``listener(health)`` after every change."""
        self._listeners.append(listener)

    async def wait_for(self, ok: bool) -> None:
        """Until the engine is (``ok=True``) or is not healthy."""
        while self.ok != ok:
            self._changed.clear()
            await self._changed.wait()

    def describe(self) -> dict[str, object]:
        return {"ok": self.ok, "reason": self.reason, "since_s": time.monotonic() - self.since}

    def _notify(self) -> None:
        self.since = time.monotonic()
        self._changed.set()
        for listener in list(self._listeners):
            listener(self)
