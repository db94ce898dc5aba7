"""Calls that do not fit in the queue wait for room (in order, for a bounded time)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from skimage import data as skimage_data

from clipserve.engine.engine import Engine
from clipserve.engine.items import ImageItem, TextItem
from clipserve.engine.metrics import Metrics
from clipserve.errors import OverloadedError, ServerUnavailableError
from tests.engine.helpers import BLOCK, WrappedModel
from tests.waiting import FAILSAFE_S, eventually


def texts(*values: str) -> list[TextItem]:
    return [TextItem(value) for value in values]


async def blocked_engine(
    wrapped: WrappedModel, wait_s: float, metrics: Metrics | None = None
) -> tuple[Engine, asyncio.Task]:
    """An engine whose text queue (room for 4) holds 3 items stuck in a blocked forward."""
    engine = Engine(
        wrapped, max_queue_items=4, max_queue_wait_s=wait_s, max_batch_size=64, metrics=metrics
    )
    await engine.start()
    first = asyncio.create_task(engine.encode(texts(BLOCK, "x", "y")))
    assert await asyncio.to_thread(wrapped.forward_entered.wait, FAILSAFE_S)
    return engine, first


def waiting_items(engine: Engine, modality: str = "text", count: int = 0):
    """A condition for ``eventually``: ``count`` items of calls wait for room."""
    return lambda: engine._admission.waiting[modality] == count


async def big_then_small(engine: Engine) -> tuple[asyncio.Task, asyncio.Task]:
    """Behind the blocked 3: a call of 3 texts that must wait, then one of 1 text that would
    fit (3 + 1 = 4) but has to queue behind it."""
    big = asyncio.create_task(engine.encode(texts("big 1", "big 2", "big 3")))
    await eventually(waiting_items(engine, count=3), "the big call waits")
    small = asyncio.create_task(engine.encode(texts("small")))
    await eventually(waiting_items(engine, count=4), "the small call queues behind it")
    return big, small


def waiting_gauge(metrics: Metrics, modality: str) -> float | None:
    return metrics.registry.get_sample_value("clipserve_queue_waiting", {"modality": modality})


async def test_a_call_that_does_not_fit_waits_for_room(
    wrapped: WrappedModel, metrics: Metrics
) -> None:
    engine, first = await blocked_engine(wrapped, wait_s=30, metrics=metrics)
    second = asyncio.create_task(engine.encode(texts("a", "b")))  # 3 + 2 > 4
    await eventually(waiting_items(engine, count=2), "the second call waits")
    assert not second.done()
    assert engine._admission.waiting["text"] == 2
    assert waiting_gauge(metrics, "text") == 2
    wrapped.release.set()
    assert all(isinstance(o, np.ndarray) for o in await first)
    assert [o.shape for o in await second] == [(wrapped.dim,)] * 2
    assert wrapped.prepared_texts == [BLOCK, "x", "y", "a", "b"]
    assert engine._admission.outstanding == {"text": 0, "image": 0, "image_bytes": 0}
    assert waiting_gauge(metrics, "text") == 0
    await engine.stop()


async def test_a_call_that_waits_too_long_is_refused_and_nothing_is_lost(
    wrapped: WrappedModel,
) -> None:
    engine, first = await blocked_engine(wrapped, wait_s=0.2)
    with pytest.raises(OverloadedError, match="text queue stayed full for 0.2 s"):
        await engine.encode(texts("a", "b"))
    assert engine._admission.waiting["text"] == 0
    wrapped.release.set()
    assert all(isinstance(o, np.ndarray) for o in await first)
    assert len(await engine.encode(texts("a", "b"))) == 2
    assert "a" not in wrapped.prepared_texts[:3]
    await engine.stop()


async def test_waiting_calls_go_first_come_first_served_per_modality(
    wrapped: WrappedModel,
) -> None:
    engine, first = await blocked_engine(wrapped, wait_s=30)
    big, small = await big_then_small(engine)
    image = asyncio.create_task(engine.encode([ImageItem(skimage_data.camera())]))
    await eventually(lambda: engine._admission.outstanding["image"] == 1, "the image is in")
    assert not big.done() and not small.done()
    assert engine._admission.waiting == {"text": 4, "image": 0, "image_bytes": 0}
    camera_bytes = skimage_data.camera().nbytes  # held by the image until it is answered
    assert engine._admission.outstanding == {"text": 3, "image": 1, "image_bytes": camera_bytes}
    wrapped.release.set()
    await asyncio.gather(first, big, small, image)
    assert wrapped.prepared_texts.index("big 1") < wrapped.prepared_texts.index("small")
    await engine.stop()


async def test_a_caller_leaving_while_waiting_lets_the_next_one_in(
    wrapped: WrappedModel,
) -> None:
    engine, first = await blocked_engine(wrapped, wait_s=30)
    big, small = await big_then_small(engine)
    big.cancel()
    with pytest.raises(asyncio.CancelledError):
        await big
    await eventually(waiting_items(engine, count=0), "nobody waits any more")
    assert engine._admission.outstanding["text"] == 4  # small was let in: 3 + 1 fits
    wrapped.release.set()
    await asyncio.gather(first, small)
    assert "big 1" not in wrapped.prepared_texts
    assert engine._admission.outstanding == {"text": 0, "image": 0, "image_bytes": 0}
    await engine.stop()


async def test_the_waiting_room_is_bounded(wrapped: WrappedModel) -> None:
    engine, first = await blocked_engine(wrapped, wait_s=30)
    waiting = asyncio.create_task(engine.encode(texts("w1", "w2", "w3", "w4")))
    await eventually(waiting_items(engine, count=4), "four items wait")
    with pytest.raises(OverloadedError, match=r"text queue is full \(3 of 4 .* 4 waiting\)"):
        await engine.encode(texts("one more"))
    with pytest.raises(OverloadedError, match="more than the queue holds"):
        await engine.encode(texts(*"abcde"))
    wrapped.release.set()
    await asyncio.gather(first, waiting)
    await engine.stop()


async def test_stop_refuses_calls_still_waiting(wrapped: WrappedModel) -> None:
    engine, first = await blocked_engine(wrapped, wait_s=30)
    waiting = asyncio.create_task(engine.encode(texts("a", "b")))
    await eventually(waiting_items(engine, count=2), "two items wait")
    stopping = asyncio.create_task(engine.stop(drain_timeout=0.05))
    with pytest.raises(ServerUnavailableError, match="stopping"):
        await waiting
    wrapped.release.set()
    await stopping
    await first
