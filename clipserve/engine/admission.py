"""Room in the engine's queues: each call takes room for all it holds at once, or waits.

Room is counted per key: items per modality (``text``, ``image``) and, for images, the
bytes they hold (``image_bytes``: encoded files and decoded arrays waiting to be decoded or
batched, so a stream of 12 MP photos is bounded by memory, not only by item count). Each key
holds at most its limit admitted and unanswered. A call that does not fit waits its turn,
first come first served among the calls that need the same keys, for up to ``max_wait_s``
seconds or until its deadline; then it is refused with ``OverloadedError`` (or
``DeadlineExceededError``). So a burst larger than the queue turns into latency rather than
errors, while memory stays bounded: at most one limit more per key may wait (beyond that a
call is refused at once), and a call larger than a whole limit is refused at once (except
for image bytes: one call may exceed the byte limit alone, when nothing else is admitted).
``max_wait_s=0`` refuses whatever does not fit now.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from clipserve.errors import ClipServeError, DeadlineExceededError, OverloadedError

#: keys whose single over-sized call is admitted alone instead of refused
_ALONE_KEYS = frozenset({"image_bytes"})


@dataclass(eq=False)
class _Waiter:
    counts: dict[str, int]
    future: asyncio.Future[None]


class Admission:
    """Counts of admitted work per key, and the calls waiting for room."""

    def __init__(
        self,
        limits: Mapping[str, int],
        max_wait_s: float,
        on_waiting: Callable[[str, int], None] | None = None,
    ) -> None:
        self.limits = dict(limits)
        self.max_wait_s = max_wait_s
        #: told (key, amount waiting) whenever that number changes (a metrics gauge)
        self._on_waiting = on_waiting
        #: admitted work not yet answered, per key
        self.outstanding: dict[str, int] = dict.fromkeys(self.limits, 0)
        #: work of waiting calls, per key
        self.waiting: dict[str, int] = dict.fromkeys(self.limits, 0)
        self._waiters: deque[_Waiter] = deque()
        self._closed: ClipServeError | None = None

    @property
    def busy(self) -> bool:
        return any(self.outstanding.values()) or bool(self._waiters)

    async def reserve(self, counts: dict[str, int], deadline: float | None = None) -> None:
        """Take room for ``counts`` (amount per key), waiting for it if allowed, at most
        until ``deadline`` (``time.monotonic()``). Raises ``OverloadedError`` (or
        ``DeadlineExceededError``) when the call is refused; nothing is held then."""
        counts = {key: count for key, count in counts.items() if count}
        if not counts:
            return
        if self._closed is not None:
            raise type(self._closed)(str(self._closed))
        for key, count in counts.items():
            if count > self.limits[key] and key not in _ALONE_KEYS:  # can never fit
                raise OverloadedError(
                    f"one call has {_amount(key, count)}, more than the queue holds "
                    f"({_amount(key, self.limits[key])}); split it"
                )
        if not any(self.waiting[key] for key in counts) and self._fits(counts):
            self._take(counts)
            return
        full = next((k for k, c in counts.items() if not self._fits({k: c})), next(iter(counts)))
        if self.max_wait_s <= 0 or any(
            self.waiting[key] + count > max(self.limits[key], count)
            for key, count in counts.items()
        ):
            raise OverloadedError(
                f"the {_queue(full)} is full ({self._state(full)}, "
                f"{_short(full, self.waiting[full])} waiting); retry later"
            )
        waiter = _Waiter(counts, asyncio.get_running_loop().create_future())
        await self._wait(waiter, full, deadline)

    def release(self, key: str, count: int) -> None:
        """``count`` of admitted ``key`` work was answered: room for waiting calls."""
        self.outstanding[key] -= count
        if self._waiters:
            self._grant()

    def fail_waiting(self, error: ClipServeError) -> None:
        """Refuse every call waiting now with ``error`` (later calls may still wait)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            self._forget(waiter)
            if not waiter.future.done():  # each its own instance: each gets its own traceback
                waiter.future.set_exception(type(error)(str(error)))

    def close(self, error: ClipServeError) -> None:
        """Refuse every waiting call and every later one with ``error``."""
        self._closed = error
        self.fail_waiting(error)

    # ---- internals ----------------------------------------------------------------------

    def _fits(self, counts: dict[str, int]) -> bool:
        for key, count in counts.items():
            outstanding = self.outstanding[key]
            if outstanding + count > self.limits[key] and not (
                key in _ALONE_KEYS and outstanding == 0
            ):
                return False
        return True

    def _state(self, key: str) -> str:
        if key == "image_bytes":
            mib = 2**20
            return f"{self.outstanding[key] / mib:.1f} of {self.limits[key] / mib:.1f} MiB pending"
        return f"{self.outstanding[key]} of {self.limits[key]} items pending"

    def _take(self, counts: dict[str, int]) -> None:
        for key, count in counts.items():
            self.outstanding[key] += count

    def _forget(self, waiter: _Waiter) -> None:
        self._add_waiting(waiter, -1)

    def _add_waiting(self, waiter: _Waiter, sign: int) -> None:
        for key, count in waiter.counts.items():
            self.waiting[key] += sign * count
            if self._on_waiting is not None:
                self._on_waiting(key, self.waiting[key])

    async def _wait(self, waiter: _Waiter, full: str, deadline: float | None) -> None:
        self._waiters.append(waiter)
        self._add_waiting(waiter, 1)
        timeout = self.max_wait_s
        by_deadline = deadline is not None and deadline - time.monotonic() < timeout
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        try:
            await asyncio.wait({waiter.future}, timeout=timeout)
        except asyncio.CancelledError:  # the caller left: give back what it was granted
            granted = waiter.future.done() and not waiter.future.cancelled()
            if granted and waiter.future.exception() is None:
                for key, count in waiter.counts.items():
                    self.release(key, count)
            else:
                self._withdraw(waiter)
            raise
        if waiter.future.done():
            waiter.future.result()  # granted, or refused (raises its error)
            return
        self._withdraw(waiter)
        if by_deadline:
            raise DeadlineExceededError(
                "the caller's deadline passed while the request waited for room in the "
                f"{_queue(full)}; it was dropped"
            )
        raise OverloadedError(
            f"the {_queue(full)} stayed full for {self.max_wait_s:g} s "
            f"({self._state(full)}); retry later"
        )

    def _withdraw(self, waiter: _Waiter) -> None:
        """A waiter leaves without room: the calls behind it may fit now."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            self._forget(waiter)
        waiter.future.cancel()
        self._grant()

    def _grant(self) -> None:
        """Admit waiting calls in order; a call that does not fit holds back later calls
        that need any of its keys (so big calls are not starved by small ones)."""
        held: set[str] = set()
        for waiter in list(self._waiters):
            if held.isdisjoint(waiter.counts) and self._fits(waiter.counts):
                self._waiters.remove(waiter)
                self._forget(waiter)
                self._take(waiter.counts)
                waiter.future.set_result(None)
            else:
                held.update(waiter.counts)


def _queue(key: str) -> str:
    return "image queue" if key == "image_bytes" else f"{key} queue"


def _short(key: str, count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if key == "image_bytes" else str(count)


def _amount(key: str, count: int) -> str:
    if key == "image_bytes":
        return f"{count / 2**20:.1f} MiB of images"
    return f"{count} {key} items"
