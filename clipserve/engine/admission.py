"""Room in the engine's queues: each call takes room for all its items at once, or waits.

Each modality holds at most ``max_items`` admitted, unanswered items. A call that does not fit
waits its turn, first come first served among the calls that need the same modality, for up to
``max_wait_s`` seconds; then it is refused with ``OverloadedError``. So a burst larger than the
queue turns into latency rather than errors, while memory stays bounded: at most ``max_items``
more items per modality may wait (beyond that a call is refused at once), and a call larger
than the whole queue is refused at once. ``max_wait_s=0`` refuses whatever does not fit now.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clipserve.errors import ClipServeError, OverloadedError


@dataclass(eq=False)
class _Waiter:
    counts: dict[str, int]
    future: asyncio.Future[None]


class Admission:
    """Counts of admitted items per modality, and the calls waiting for room."""

    def __init__(
        self,
        modalities: Iterable[str],
        max_items: int,
        max_wait_s: float,
        on_waiting: Callable[[str, int], None] | None = None,
    ) -> None:
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        #: told (modality, items waiting) whenever that number changes (a metrics gauge)
        self._on_waiting = on_waiting
        #: admitted items not yet answered, per modality
        self.outstanding: dict[str, int] = dict.fromkeys(modalities, 0)
        #: items of waiting calls, per modality
        self.waiting: dict[str, int] = dict.fromkeys(self.outstanding, 0)
        self._waiters: deque[_Waiter] = deque()
        self._closed: ClipServeError | None = None

    @property
    def busy(self) -> bool:
        return any(self.outstanding.values()) or bool(self._waiters)

    async def reserve(self, counts: dict[str, int]) -> None:
        """Take room for ``counts`` (items per modality), waiting for it if allowed.

        Raises ``OverloadedError`` when the call is refused; nothing is held then."""
        counts = {modality: count for modality, count in counts.items() if count}
        if not counts:
            return
        if self._closed is not None:
            raise type(self._closed)(str(self._closed))
        for modality, count in counts.items():
            if count > self.max_items:  # can never fit: say so, still as overload
                raise OverloadedError(
                    f"one call has {count} {modality} items, more than the queue holds "
                    f"({self.max_items}); split it"
                )
        if not any(self.waiting[modality] for modality in counts) and self._fits(counts):
            self._take(counts)
            return
        full = next(iter(counts))
        for modality, count in counts.items():
            if self.outstanding[modality] + count > self.max_items:
                full = modality
                break
        if self.max_wait_s <= 0 or any(
            self.waiting[modality] + count > self.max_items for modality, count in counts.items()
        ):
            raise OverloadedError(
                f"the {full} queue is full ({self.outstanding[full]} of {self.max_items} "
                f"items pending, {self.waiting[full]} waiting); retry later"
            )
        await self._wait(_Waiter(counts, asyncio.get_running_loop().create_future()), full)

    def release(self, modality: str, count: int) -> None:
        """``count`` admitted items of ``modality`` were answered: room for waiting calls."""
        self.outstanding[modality] -= count
        if self._waiters:
            self._grant()

    def close(self, error: ClipServeError) -> None:
        """Refuse every waiting call and every later one with ``error``."""
        self._closed = error
        while self._waiters:
            waiter = self._waiters.popleft()
            self._forget(waiter)
            if not waiter.future.done():  # each its own instance: each gets its own traceback
                waiter.future.set_exception(type(error)(str(error)))

    # ---- internals ----------------------------------------------------------------------

    def _fits(self, counts: dict[str, int]) -> bool:
        return all(self.outstanding[m] + c <= self.max_items for m, c in counts.items())

    def _take(self, counts: dict[str, int]) -> None:
        for modality, count in counts.items():
            self.outstanding[modality] += count

    def _forget(self, waiter: _Waiter) -> None:
        self._add_waiting(waiter, -1)

    def _add_waiting(self, waiter: _Waiter, sign: int) -> None:
        for modality, count in waiter.counts.items():
            self.waiting[modality] += sign * count
            if self._on_waiting is not None:
                self._on_waiting(modality, self.waiting[modality])

    async def _wait(self, waiter: _Waiter, full: str) -> None:
        self._waiters.append(waiter)
        self._add_waiting(waiter, 1)
        try:
            await asyncio.wait({waiter.future}, timeout=self.max_wait_s)
        except asyncio.CancelledError:  # the caller left: give back what it was granted
            granted = waiter.future.done() and not waiter.future.cancelled()
            if granted and waiter.future.exception() is None:
                for modality, count in waiter.counts.items():
                    self.release(modality, count)
            else:
                self._withdraw(waiter)
            raise
        if waiter.future.done():
            waiter.future.result()  # granted, or the engine stopped (raises its error)
            return
        self._withdraw(waiter)
        raise OverloadedError(
            f"the {full} queue stayed full for {self.max_wait_s:g} s "
            f"({self.outstanding[full]} of {self.max_items} items pending); retry later"
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
        that need any of its modalities (so big calls are not starved by small ones)."""
        held: set[str] = set()
        for waiter in list(self._waiters):
            if held.isdisjoint(waiter.counts) and self._fits(waiter.counts):
                self._waiters.remove(waiter)
                self._forget(waiter)
                self._take(waiter.counts)
                waiter.future.set_result(None)
            else:
                held.update(waiter.counts)
