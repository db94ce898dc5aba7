"""Deadlines in the engine: work whose caller can no longer use the answer costs no forward
pass. The model is held at a gate so the tests know where the work is; each deadline is
observed passing (its call fails with ``DeadlineExceededError``), never slept through."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from clipserve.engine import Engine, TextItem
from clipserve.engine.deadline import deadline_after, deadline_scope
from clipserve.engine.metrics import Metrics
from clipserve.errors import DeadlineExceededError
from tests.engine.helpers import BLOCK, WrappedModel
from tests.waiting import FAILSAFE_S, eventually

#: short enough to pass while the model is held, long enough to be queued first
SHORT_S = 0.3


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def encode_within(engine: Engine, seconds: float | None, *texts: str) -> list:
    with deadline_scope(deadline_after(seconds)):
        return await engine.encode([TextItem(t) for t in texts])


async def held(engine: Engine, wrapped: WrappedModel) -> asyncio.Task:
    """A call whose forward pass is held at the model's gate."""
    first = asyncio.create_task(engine.encode([TextItem(BLOCK)]))
    assert await asyncio.to_thread(wrapped.forward_entered.wait, FAILSAFE_S)
    return first


async def test_expired_requests_cost_no_forward_pass_under_a_backlog(
    wrapped: WrappedModel, metrics: Metrics
) -> None:
    """20 calls of 3 texts queue behind a held pass with a short deadline, one call without;
    once the deadlines pass and the model is let go, the only forward passes are the held
    one and the one of the call that still waits."""
    engine = Engine(wrapped, max_batch_size=4, max_wait_ms=0, metrics=metrics)
    await engine.start()
    first = await held(engine, wrapped)
    expiring = [
        asyncio.create_task(encode_within(engine, SHORT_S, f"e{i}a", f"e{i}b", f"e{i}c"))
        for i in range(20)
    ]
    await eventually(lambda: engine._admission.outstanding["text"] == 61, "all are admitted")
    keeper = asyncio.create_task(encode_within(engine, None, "kept"))
    for call in expiring:  # each fails at its deadline, while the model is still held
        with pytest.raises(DeadlineExceededError, match="deadline passed"):
            await call
    assert wrapped.forwarded == [[BLOCK]]
    wrapped.release.set()
    await first
    (kept,) = await keeper
    assert isinstance(kept, np.ndarray)
    assert wrapped.forwarded == [[BLOCK], ["kept"]]  # 2 passes; none for the 60 expired
    assert sample(metrics, "clipserve_items_total", modality="text", outcome="expired") == 60
    dropped = sample(metrics, "clipserve_dropped_items_total", modality="text", reason="deadline")
    assert dropped == 60
    assert engine._admission.outstanding["text"] == 0
    await engine.stop()


async def test_a_deadline_passing_while_a_batch_waits_for_a_replica_drops_only_its_spans(
    wrapped: WrappedModel, metrics: Metrics
) -> None:
    """A batch already prepared and waiting for the held replica holds an expiring call
    and a waiting one: the pass it gets runs the waiting call's texts only."""
    engine = Engine(wrapped, max_batch_size=8, max_wait_ms=50, metrics=metrics)
    await engine.start()
    first = await held(engine, wrapped)
    expiring = asyncio.create_task(encode_within(engine, SHORT_S, "gone 1", "gone 2"))
    keeper = asyncio.create_task(encode_within(engine, None, "stays"))
    await eventually(lambda: "stays" in wrapped.prepared_texts, "both are in one batch")
    with pytest.raises(DeadlineExceededError):
        await expiring
    wrapped.release.set()
    await first
    assert isinstance((await keeper)[0], np.ndarray)
    assert wrapped.forwarded == [[BLOCK], ["stays"]]  # tokenised again without the expired
    dropped = sample(metrics, "clipserve_dropped_items_total", modality="text", reason="deadline")
    assert dropped == 2
    await engine.stop()


async def test_a_deadline_ends_the_wait_for_room(wrapped: WrappedModel, metrics: Metrics) -> None:
    engine = Engine(wrapped, max_queue_items=2, max_queue_wait_s=FAILSAFE_S, metrics=metrics)
    await engine.start()
    first = await held(engine, wrapped)
    # 1 + 2 > 2: it waits for room (up to 60 s), and its deadline ends the wait
    with pytest.raises(DeadlineExceededError, match="waited for room in the text queue"):
        await encode_within(engine, SHORT_S, "a", "b")
    assert engine._admission.waiting["text"] == 0
    wrapped.release.set()
    await first
    assert wrapped.forwarded == [[BLOCK]]
    await engine.stop()


async def test_a_passed_deadline_queues_nothing(wrapped: WrappedModel, metrics: Metrics) -> None:
    async with Engine(wrapped, metrics=metrics) as engine:
        with deadline_scope(time.monotonic() - 1), pytest.raises(DeadlineExceededError):
            await engine.encode([TextItem("late")])
        with deadline_scope(time.monotonic() - 1), pytest.raises(DeadlineExceededError):
            await engine.encode_texts(["late"])
        assert engine._admission.outstanding["text"] == 0
        assert wrapped.prepared_texts == []
        assert isinstance((await encode_within(engine, FAILSAFE_S, "in time"))[0], np.ndarray)


async def test_a_caller_that_leaves_has_its_queued_items_dropped_and_counted(
    wrapped: WrappedModel, metrics: Metrics
) -> None:
    engine = Engine(wrapped, max_batch_size=2, max_wait_ms=0, metrics=metrics)
    await engine.start()
    first = await held(engine, wrapped)
    leaving = asyncio.create_task(encode_within(engine, None, *[f"l{i}" for i in range(10)]))
    await eventually(lambda: engine._admission.outstanding["text"] == 11, "it is admitted")
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    wrapped.release.set()
    await first
    await eventually(lambda: not engine._admission.busy, "the engine is idle")
    dropped = sample(metrics, "clipserve_dropped_items_total", modality="text", reason="cancelled")
    assert dropped == 10 and wrapped.forwarded == [[BLOCK]]
    assert len(engine._queues["text"]) == 0
    await engine.stop()
