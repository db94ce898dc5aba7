"""How a front-end turns requests into calls to replicas: whole chunks, never single items.

Every request's inputs join one FIFO (``BatchQueue``, the engine's own batcher). A call takes
up to ``chunk_items`` of them: a large request is cut into several calls, which go to
several replicas; small requests waiting together share one call. At most ``capacity()``
calls are in flight (replicas x ``max_ongoing_requests``): the rest wait here, in the bounded
queue, rather than in Ray's router, and the next call takes everything that piled up
meanwhile. So a burst of one-sentence requests costs a few full calls, not one call each,
while a lone request is sent at once (no waiting to fill a chunk).

A call that fails fails every request it carried items of (the caller maps the error:
``ServerUnavailableError`` is retryable); its answers land in place, so each request's
outcomes stay in input order whatever calls they travelled in.

Deadlines: a request whose deadline passes while its inputs wait here fails with
``DeadlineExceededError`` at that moment, and its unsent inputs are never sent. A call
carries how long its callers can still use the answer (the latest of their deadlines; none
when one of them has none), so the replica drops the work it cannot answer in time too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from clipserve.engine.batcher import BatchQueue, Group, Span
from clipserve.errors import DeadlineExceededError, ServerUnavailableError

#: ``send(values, timeout_s)``: one call, whose answer is of use for ``timeout_s`` (None: always)
Send = Callable[[list[Any], float | None], Awaitable[list[Any]]]


class CallBatcher:
    """Queue of request inputs -> calls of up to ``chunk_items``, ``capacity()`` at a time."""

    def __init__(
        self,
        send: Send,
        chunk_items: int,
        capacity: Callable[[], int],
        on_depth_change: Callable[[int], None] | None = None,
    ) -> None:
        self._send = send
        self._capacity = capacity
        self._queue = BatchQueue(chunk_items, 0.0, on_depth_change)
        self._in_flight = 0
        self._slot_freed = asyncio.Event()
        self._calls: set[asyncio.Task[None]] = set()
        self._groups: set[Group] = set()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def calls_in_flight(self) -> int:
        return self._in_flight

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._dispatch())

    async def stop(self) -> None:
        """Stop sending: calls in flight are cancelled (the engine drained them first) and
        whatever is still unanswered fails with ``ServerUnavailableError``."""
        tasks = [t for t in (self._loop_task, *self._calls) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for group in list(self._groups):
            if not group.future.done():
                group.future.set_exception(
                    ServerUnavailableError("the front-end stopped before this request's answer")
                )

    async def submit(self, values: list[Any], deadline: float | None = None) -> list[Any]:
        """One outcome per value, in order; raises what a call carrying them raised, or
        ``DeadlineExceededError`` once ``deadline`` (``time.monotonic()``) passes."""
        loop = asyncio.get_running_loop()
        group = Group(values, loop.create_future(), deadline=deadline)
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            group.timer = loop.call_later(delay, self._expire, group)
        self._queue.put(group)
        self._groups.add(group)
        try:
            return await group.future
        finally:
            self._groups.discard(group)
            if group.timer is not None:
                group.timer.cancel()
            group.future.cancel()  # the caller left: its unsent items are skipped
            self._queue.remove(group)

    def _expire(self, group: Group) -> None:
        if not group.future.done():
            group.future.set_exception(
                DeadlineExceededError(
                    "the caller's deadline passed before the cluster answered; "
                    "its unsent inputs were dropped"
                )
            )

    async def _dispatch(self) -> None:
        while True:
            while self._in_flight >= max(1, self._capacity()):
                self._slot_freed.clear()
                await self._slot_freed.wait()
            batch = await self._queue.next_batch()
            self._in_flight += 1
            task = asyncio.create_task(self._call(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, batch: list[Span]) -> None:
        try:
            values = [value for span in batch for value in span.inputs()]
            try:
                outcomes = await self._send(values, _time_left(batch))
            except Exception as exc:
                for span in batch:
                    if not span.group.future.done():  # each its own instance and traceback
                        span.group.future.set_exception(_fresh(exc))
                return
            offset = 0
            for span in batch:
                group = span.group
                count = len(span)
                if not group.future.done():
                    group.outcomes[span.start : span.stop] = outcomes[offset : offset + count]
                    group.remaining -= count
                    if not group.remaining:
                        group.future.set_result(group.outcomes)
                offset += count
        finally:
            self._in_flight -= 1
            self._slot_freed.set()


def _time_left(batch: list[Span]) -> float | None:
    """How long the answer of a call carrying ``batch`` is of use to any of its callers."""
    deadlines = [span.group.deadline for span in batch]
    if not deadlines or any(deadline is None for deadline in deadlines):
        return None
    return max(0.0, max(d for d in deadlines if d is not None) - time.monotonic())


def _fresh(exc: Exception) -> Exception:
    try:
        return type(exc)(str(exc))
    except TypeError:  # an exception class with other constructor arguments: share it
        return exc
