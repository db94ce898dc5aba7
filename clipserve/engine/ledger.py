"""Every group the engine was given, and exactly one outcome per item: answers, counts,
queue room, and work dropped because its caller can no longer use it.

A group ends normally when its last item is answered (``deliver``). It ends early when its
caller leaves (future cancelled), its deadline passes (``DeadlineExceededError``, set by a
timer at the deadline itself) or the engine fails fast (``fail_waiting``); then its
unanswered items are counted by how it ended and its queued items are taken out of the
queue at once (``clipserve_dropped_items_total``), so they cost no forward pass and hold no
memory.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import numpy as np

from clipserve.engine.admission import Admission
from clipserve.engine.batcher import BatchQueue, Group, Span
from clipserve.engine.items import Modality
from clipserve.engine.metrics import Metrics
from clipserve.errors import (
    ClipServeError,
    DeadlineExceededError,
    EngineUnhealthyError,
    InvalidInputError,
    ServerUnavailableError,
)

Outcome = np.ndarray | ClipServeError


class Ledger:
    def __init__(self, admission: Admission, metrics: Metrics) -> None:
        self.admission = admission
        self.metrics = metrics
        self.queues: dict[Modality, BatchQueue] = {}
        #: set while nothing is admitted or waiting (stop() drains until then)
        self.idle = asyncio.Event()
        self.idle.set()
        self._live: dict[Group, Modality] = {}  # groups not yet ended
        self._counters: dict[tuple[Modality, str], Any] = {}

    async def submit(
        self, inputs: dict[Modality, list[Any]], deadline: float | None, held_bytes: int = 0
    ) -> Any:
        """Queue one group per modality (room already reserved); their outcome lists, in
        ``inputs`` order (one list when there is one modality)."""
        loop = asyncio.get_running_loop()
        self.idle.clear()
        groups: list[Group] = []
        for modality, values in inputs.items():
            group = Group(values, loop.create_future(), deadline=deadline)
            if modality == "image":
                group.held_bytes = held_bytes
            if deadline is not None:
                delay = max(0.0, deadline - time.monotonic())
                group.timer = loop.call_later(delay, self._expire, group)
            group.future.add_done_callback(functools.partial(self._ended, modality, group))
            self._live[group] = modality
            self.queues[modality].put(group)
            groups.append(group)
        try:
            if len(groups) == 1:
                return await groups[0].future
            return await asyncio.gather(*(group.future for group in groups))
        finally:
            for group in groups:  # the caller went away: drop what is not done
                group.future.cancel()

    def fail_waiting(self, error: ClipServeError) -> None:
        """Every call waiting for room or for its answer fails now with ``error``."""
        self.admission.fail_waiting(error)
        for group in list(self._live):
            if not group.future.done():
                group.future.set_exception(type(error)(str(error)))

    def deliver(self, modality: Modality, span: Span, outcomes: list[Outcome]) -> None:
        """Answer ``span`` (whose items are all unanswered) with ``outcomes``."""
        group = span.group
        if group.future.done():  # the group ended early; its items were counted then
            return
        group.outcomes[span.start : span.stop] = outcomes
        group.remaining -= len(outcomes)
        if outcomes and isinstance(outcomes[0], np.ndarray):
            self.count(modality, "ok", len(outcomes))
        else:
            for outcome in outcomes:
                self.count(modality, _outcome_label(outcome), 1)
        if not group.remaining:
            group.future.set_result(group.outcomes)

    def fail_unanswered(self, modality: Modality, span: Span, error: ClipServeError) -> None:
        """Answer whatever in ``span`` has no outcome yet with ``error``."""
        group = span.group
        if group.future.done():
            return
        for index in range(span.start, span.stop):
            if group.outcomes[index] is None:
                self.deliver(modality, Span(group, index, index + 1), [error])

    def dropped(self, modality: Modality, group: Group, count: int) -> None:
        """``count`` items of an ended group were dropped before any forward pass."""
        self.metrics.dropped.labels(modality, _drop_reason(group)).inc(count)

    def count(self, modality: Modality, outcome: str, count: int) -> None:
        """``count`` items of ``modality`` got ``outcome``: metrics, queue room, idleness."""
        counter = self._counters.get((modality, outcome))
        if counter is None:
            counter = self.metrics.items.labels(modality, outcome)
            self._counters[(modality, outcome)] = counter
        counter.inc(count)
        self.admission.release(modality, count)
        self._check_idle()

    # ---- internals ----------------------------------------------------------------------

    def _expire(self, group: Group) -> None:
        if not group.future.done():
            group.future.set_exception(
                DeadlineExceededError(
                    "the caller's deadline passed before its work was computed; it was dropped"
                )
            )

    def _ended(self, modality: Modality, group: Group, future: asyncio.Future[Any]) -> None:
        self._live.pop(group, None)
        if group.timer is not None:
            group.timer.cancel()
        if group.held_bytes:
            self.admission.release("image_bytes", group.held_bytes)
            group.held_bytes = 0
            self._check_idle()
        if not group.remaining:  # answered in full
            return
        if not future.cancelled():
            future.exception()  # retrieved: a caller that already left does not log it
        self.count(modality, _ended_label(future), group.remaining)
        group.remaining = 0
        queued = self.queues[modality].remove(group)
        if queued:
            self.dropped(modality, group, queued)

    def _check_idle(self) -> None:
        if not self.admission.busy:
            self.idle.set()


def _outcome_label(outcome: Outcome) -> str:
    if isinstance(outcome, np.ndarray):
        return "ok"
    if isinstance(outcome, InvalidInputError):
        return "invalid"
    if isinstance(outcome, ServerUnavailableError):
        return "stopped"
    return "model_error"


def _ended_label(future: asyncio.Future[Any]) -> str:
    """The ``clipserve_items`` outcome of items whose group ended before its answer."""
    if future.cancelled():
        return "cancelled"
    error = future.exception()
    if isinstance(error, DeadlineExceededError):
        return "expired"
    if isinstance(error, EngineUnhealthyError):
        return "unhealthy"
    return "model_error"


def _drop_reason(group: Group) -> str:
    """Why an ended group's items were dropped: ``deadline``, ``cancelled`` (the caller
    left) or ``unhealthy`` (failed fast)."""
    if group.deadline is not None and time.monotonic() >= group.deadline:
        return "deadline"
    future = group.future
    if future.cancelled() or not future.done():
        return "cancelled"
    error = future.exception()
    if isinstance(error, DeadlineExceededError):
        return "deadline"
    return "unhealthy" if isinstance(error, EngineUnhealthyError) else "failed"
