"""A bounded queue of pending items and the rule that turns it into batches.

Each queued item owns a future its caller awaits. ``next_batch`` waits for a first live
item, then collects more until the batch is full or ``max_wait`` has passed since that
first item. Items whose caller went away (future cancelled) are dropped here, before any
compute is spent on them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Pending(Generic[T]):
    """One queued item and the future that will carry its outcome."""

    item: T
    future: asyncio.Future = field(repr=False)


class BatchQueue(Generic[T]):
    """FIFO of pending items for one modality; batches by size and time."""

    def __init__(
        self,
        max_batch_size: int,
        max_wait_s: float,
        on_depth_change: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait must be >= 0")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._items: deque[Pending[T]] = deque()
        self._not_empty = asyncio.Event()
        self._on_depth_change = on_depth_change

    def __len__(self) -> int:
        return len(self._items)

    def put(self, pending: Pending[T]) -> None:
        self._items.append(pending)
        self._not_empty.set()
        self._depth_changed()

    def drain(self) -> list[Pending[T]]:
        """Take everything still queued (used when stopping)."""
        items = list(self._items)
        self._items.clear()
        self._not_empty.clear()
        self._depth_changed()
        return items

    async def next_batch(self) -> list[Pending[T]]:
        """Wait for the next batch: 1..max_batch_size live items, oldest first."""
        loop = asyncio.get_running_loop()
        batch: list[Pending[T]] = []
        while not batch:
            await self._wait_not_empty(None)
            self._take_into(batch)
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if self._items:
                self._take_into(batch)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._wait_not_empty(remaining):
                break
        return batch

    def _take_into(self, batch: list[Pending[T]]) -> None:
        while self._items and len(batch) < self.max_batch_size:
            pending = self._items.popleft()
            if not pending.future.done():  # cancelled callers are dropped here
                batch.append(pending)
        if not self._items:
            self._not_empty.clear()
        self._depth_changed()

    async def _wait_not_empty(self, timeout: float | None) -> bool:
        if self._items:
            return True
        self._not_empty.clear()
        try:  # wait_for (not asyncio.timeout) keeps Python 3.10 working
            await asyncio.wait_for(self._not_empty.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _depth_changed(self) -> None:
        if self._on_depth_change is not None:
            self._on_depth_change(len(self._items))
