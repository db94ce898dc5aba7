"""A bounded queue of pending work and the rule that turns it into batches.

Work arrives in groups: one caller's inputs of one modality, sharing one future that
carries all their outcomes (one future per call, not per item, keeps the per-item cost
low). ``next_batch`` waits for a first live group, then takes spans of groups (oldest
first; a group may be split across batches and a batch may hold many groups) until the
batch is full or ``max_wait`` has passed since its first item. Groups whose caller can no
longer use the answer (future done: cancelled, past its deadline, failed fast) are dropped
here, before any compute is spent on them (``on_dropped`` is told how many inputs), and
the engine removes such groups from the queue as soon as their future is done (``remove``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, eq=False)
class Group:
    """One caller's inputs of one modality, and the one future for all their outcomes.

    ``outcomes[i]`` stays None until input ``i`` is answered; ``remaining`` counts the
    unanswered ones. The engine resolves ``future`` with ``outcomes`` when it reaches 0.
    """

    inputs: list[Any]
    future: asyncio.Future = field(repr=False)
    #: ``time.monotonic()`` after which the caller cannot use the outcomes (None: never)
    deadline: float | None = None
    #: what the group holds against the queue's byte budget (image bytes), released when done
    held_bytes: int = 0
    outcomes: list[Any] = field(init=False, repr=False)
    remaining: int = field(init=False)
    taken: int = 0  # inputs already handed to batches
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.outcomes = [None] * len(self.inputs)
        self.remaining = len(self.inputs)


@dataclass(slots=True, eq=False)
class Span:
    """``group.inputs[start:stop]``: the part of a group that went into one batch."""

    group: Group
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def inputs(self) -> list[Any]:
        return self.group.inputs[self.start : self.stop]


class BatchQueue:
    """FIFO of pending groups for one modality; batches by item count and time."""

    def __init__(
        self,
        max_batch_size: int,
        max_wait_s: float,
        on_depth_change: Callable[[int], None] | None = None,
        on_dropped: Callable[[Group, int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait must be >= 0")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._groups: deque[Group] = deque()
        self._size = 0  # queued inputs not yet in a batch
        self._not_empty = asyncio.Event()
        self._on_depth_change = on_depth_change
        self._on_dropped = on_dropped

    def __len__(self) -> int:
        """Inputs queued and not yet in a batch (a cancelled caller's count until skipped)."""
        return self._size

    def put(self, group: Group) -> None:
        self._groups.append(group)
        self._size += len(group.inputs) - group.taken
        self._not_empty.set()
        self._depth_changed()

    def remove(self, group: Group) -> int:
        """Take ``group`` out of the queue if it is there; how many of its inputs were
        still queued (0 when it was not)."""
        try:
            self._groups.remove(group)
        except ValueError:
            return 0
        left = len(group.inputs) - group.taken
        self._size -= left
        if not self._groups:
            self._not_empty.clear()
        self._depth_changed()
        return left

    def drain(self) -> list[Span]:
        """Take everything still queued (used when stopping)."""
        spans = [Span(g, g.taken, len(g.inputs)) for g in self._groups]
        self._groups.clear()
        self._size = 0
        self._not_empty.clear()
        self._depth_changed()
        return spans

    async def next_batch(self) -> list[Span]:
        """Wait for the next batch: spans of live groups, 1..max_batch_size inputs in all."""
        loop = asyncio.get_running_loop()
        batch: list[Span] = []
        count = 0
        while not count:
            await self._wait_not_empty(None)
            count = self._take_into(batch, count)
        deadline = loop.time() + self.max_wait_s
        while count < self.max_batch_size:
            if self._groups:
                count = self._take_into(batch, count)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._wait_not_empty(remaining):
                break
        return batch

    def _take_into(self, batch: list[Span], count: int) -> int:
        groups = self._groups
        while groups and count < self.max_batch_size:
            group = groups[0]
            left = len(group.inputs) - group.taken
            if group.future.done():  # callers that cannot use the answer are dropped here
                groups.popleft()
                self._size -= left
                if self._on_dropped is not None:
                    self._on_dropped(group, left)
                continue
            take = min(left, self.max_batch_size - count)
            batch.append(Span(group, group.taken, group.taken + take))
            group.taken += take
            self._size -= take
            count += take
            if take == left:
                groups.popleft()
        if not groups:
            self._not_empty.clear()
        self._depth_changed()
        return count

    async def _wait_not_empty(self, timeout: float | None) -> bool:
        if self._groups:
            return True
        self._not_empty.clear()
        try:  # wait_for (not asyncio.timeout) keeps Python 3.10 working
            await asyncio.wait_for(self._not_empty.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _depth_changed(self) -> None:
        if self._on_depth_change is not None:
            self._on_depth_change(self._size)
