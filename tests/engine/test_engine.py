"""The engine against a real model: batching, per-item outcomes, failures, lifecycle."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from skimage import data as skimage_data

from clipserve.engine import Engine, ImageItem, Metrics, TextItem
from clipserve.errors import (
    InvalidInputError,
    ModelError,
    OverloadedError,
    ServerUnavailableError,
)
from clipserve.models.base import EmbeddingModel
from tests.engine.helpers import BLOCK, FAIL, WrappedModel
from tests.waiting import FAILSAFE_S, eventually


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_concurrent_single_item_callers_share_batches(
    hash_model: EmbeddingModel, metrics: Metrics
) -> None:
    texts = [f"sentence number {i}" for i in range(64)]
    async with Engine(hash_model, max_batch_size=16, max_wait_ms=20, metrics=metrics) as engine:
        results = await asyncio.gather(*(engine.encode([TextItem(t)]) for t in texts))
    expected = hash_model.encode_texts(texts)
    for (embedding,), want in zip(results, expected, strict=True):
        np.testing.assert_allclose(embedding, want, atol=1e-6)
    stats = engine.stats["text"]
    assert stats.items == 64
    assert stats.largest_batch > 1 and stats.largest_batch <= 16
    assert stats.batches < 64
    assert sample(metrics, "clipserve_batch_size_count", modality="text") == stats.batches
    assert sample(metrics, "clipserve_batch_size_sum", modality="text") == 64
    assert sample(metrics, "clipserve_items_total", modality="text", outcome="ok") == 64


async def test_max_batch_size_one_disables_batching(
    hash_model: EmbeddingModel, metrics: Metrics
) -> None:
    async with Engine(hash_model, max_batch_size=1, metrics=metrics) as engine:
        results = await asyncio.gather(*(engine.encode([TextItem(f"t{i}")]) for i in range(20)))
    assert all(isinstance(r[0], np.ndarray) for r in results)
    assert dict(engine.stats["text"].batch_sizes) == {1: 20}


async def test_texts_and_images_in_one_call_keep_their_order(
    hash_model: EmbeddingModel, cat_png: bytes
) -> None:
    tensor = skimage_data.astronaut()
    items = [TextItem("a cat"), ImageItem(cat_png), TextItem("a dog"), ImageItem(tensor)]
    async with Engine(hash_model) as engine:
        outcomes = await engine.encode(items)
    np.testing.assert_allclose(outcomes[0], hash_model.encode_texts(["a cat"])[0], atol=1e-6)
    np.testing.assert_allclose(outcomes[1], hash_model.encode_images([cat_png])[0], atol=1e-6)
    np.testing.assert_allclose(outcomes[2], hash_model.encode_texts(["a dog"])[0], atol=1e-6)
    np.testing.assert_allclose(outcomes[3], hash_model.encode_images([tensor])[0], atol=1e-6)
    assert all(o.dtype == np.float32 and o.shape == (hash_model.dim,) for o in outcomes)


async def test_a_bad_image_fails_only_itself(
    builtin_model: EmbeddingModel, cat_png: bytes, coffee_png: bytes
) -> None:
    model = builtin_model
    items = [ImageItem(cat_png), ImageItem(b"not an image"), ImageItem(cat_png[:200])]
    items.append(ImageItem(coffee_png))
    async with Engine(model) as engine:
        outcomes = await engine.encode(items)
    assert isinstance(outcomes[1], InvalidInputError)
    assert isinstance(outcomes[2], InvalidInputError)
    np.testing.assert_allclose(outcomes[0], model.encode_images([cat_png])[0], atol=1e-6)
    np.testing.assert_allclose(outcomes[3], model.encode_images([coffee_png])[0], atol=1e-6)
    assert engine.stats["image"].items == 2  # the bad ones never reached the model


async def test_a_failing_forward_fails_its_batch_and_the_engine_goes_on(
    wrapped: WrappedModel, metrics: Metrics
) -> None:
    async with Engine(wrapped, metrics=metrics) as engine:
        failed = await engine.encode([TextItem("fine"), TextItem(FAIL)])
        assert all(isinstance(o, ModelError) for o in failed)
        assert "injected failure on the marker text" in str(failed[0])
        (after,) = await engine.encode([TextItem("fine")])
    np.testing.assert_allclose(after, wrapped.inner.encode_texts(["fine"])[0], atol=1e-6)
    assert sample(metrics, "clipserve_items_total", modality="text", outcome="model_error") == 2


async def test_output_count_is_checked(hash_model: EmbeddingModel) -> None:
    class DropsARow(WrappedModel):
        def forward_texts(self, tokens: object) -> np.ndarray:
            return super().forward_texts(tokens)[:-1]

    async with Engine(DropsARow(hash_model)) as engine:
        outcomes = await engine.encode([TextItem("one"), TextItem("two")])
    assert all(isinstance(o, ModelError) for o in outcomes)
    assert "for 2 text inputs" in str(outcomes[0])


async def test_the_next_batch_is_prepared_while_the_model_runs(wrapped: WrappedModel) -> None:
    async with Engine(wrapped, max_batch_size=1) as engine:
        first = asyncio.create_task(engine.encode([TextItem(BLOCK)]))
        assert await asyncio.to_thread(wrapped.forward_entered.wait, FAILSAFE_S)
        wrapped.prepared.clear()
        second = asyncio.create_task(engine.encode([TextItem("next")]))
        assert await asyncio.to_thread(wrapped.prepared.wait, FAILSAFE_S)  # forward still blocked
        assert not first.done() and wrapped.prepared_texts == [BLOCK, "next"]
        wrapped.release.set()
        await asyncio.gather(first, second)


async def test_a_cancelled_caller_is_dropped_before_compute(
    wrapped: WrappedModel, metrics: Metrics
) -> None:
    async with Engine(wrapped, max_batch_size=1, metrics=metrics) as engine:
        blocked = asyncio.create_task(engine.encode([TextItem(BLOCK)]))
        assert await asyncio.to_thread(wrapped.forward_entered.wait, FAILSAFE_S)
        wrapped.prepared.clear()
        waiting = asyncio.create_task(engine.encode([TextItem("waits for the model")]))
        # the second call holds the second pipeline slot
        assert await asyncio.to_thread(wrapped.prepared.wait, FAILSAFE_S)
        leaving = asyncio.create_task(engine.encode([TextItem("caller leaves")]))
        await eventually(lambda: len(engine._queues["text"]) == 1, "its item is queued")
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        wrapped.release.set()
        await blocked
        await waiting
        await engine.encode([TextItem("later")])
    assert wrapped.prepared_texts == [BLOCK, "waits for the model", "later"]
    assert sample(metrics, "clipserve_items_total", modality="text", outcome="cancelled") == 1
    assert sample(metrics, "clipserve_queue_depth", modality="text") == 0


async def test_a_full_queue_refuses_the_whole_call(wrapped: WrappedModel) -> None:
    async with Engine(wrapped, max_queue_items=4) as engine:
        first = asyncio.create_task(engine.encode([TextItem(BLOCK), TextItem("x"), TextItem("y")]))
        assert await asyncio.to_thread(wrapped.forward_entered.wait, FAILSAFE_S)
        with pytest.raises(OverloadedError, match="queue is full"):
            await engine.encode([TextItem("a"), TextItem("b")])
        # images have their own queue: accepted (it waits for the busy model like the rest)
        image = asyncio.create_task(engine.encode([ImageItem(skimage_data.camera())]))
        wrapped.release.set()
        assert all(isinstance(o, np.ndarray) for o in await first)
        assert isinstance((await image)[0], np.ndarray)
        assert len(await engine.encode([TextItem("a"), TextItem("b")])) == 2
        with pytest.raises(OverloadedError, match="more than the queue holds"):
            await engine.encode([TextItem("z")] * 5)
    assert "a" not in wrapped.prepared_texts[:3]


async def test_replicas_run_forwards_concurrently(hash_model: EmbeddingModel) -> None:
    replicas = [WrappedModel(hash_model), WrappedModel(hash_model)]
    barrier = threading.Barrier(2)
    for replica in replicas:
        replica.barrier = barrier  # each forward waits until another one runs beside it
    async with Engine(replicas, max_batch_size=1) as engine:
        outcomes = await engine.encode([TextItem("left"), TextItem("right")])
    assert all(isinstance(o, np.ndarray) for o in outcomes), outcomes


async def test_a_factory_builds_one_model_per_replica(hash_model: EmbeddingModel) -> None:
    built: list[WrappedModel] = []

    def factory() -> WrappedModel:
        built.append(WrappedModel(hash_model))
        return built[-1]

    async with Engine(factory, replicas=2) as engine:
        assert engine.model is built[0]
        await engine.encode([TextItem("hello")])
    assert len(built) == 2


async def test_stop_drains_queued_work_then_refuses(hash_model: EmbeddingModel) -> None:
    engine = Engine(hash_model, max_batch_size=4)
    await engine.start()
    pending = asyncio.create_task(engine.encode([TextItem(f"t{i}") for i in range(40)]))
    await asyncio.sleep(0)  # one turn of the loop (no clock): the call is queued, not yet run
    await asyncio.gather(engine.stop(drain_timeout=30), engine.stop(drain_timeout=30))
    assert all(isinstance(o, np.ndarray) for o in pending.result())
    with pytest.raises(ServerUnavailableError, match="stopped"):
        await engine.encode([TextItem("too late")])


async def test_stop_answers_what_it_cannot_finish(wrapped: WrappedModel) -> None:
    engine = Engine(wrapped, max_batch_size=1)
    await engine.start()
    blocked = asyncio.create_task(engine.encode([TextItem(BLOCK), TextItem("queued")]))
    assert await asyncio.to_thread(wrapped.forward_entered.wait, FAILSAFE_S)
    await engine.stop(drain_timeout=0.05)
    wrapped.release.set()
    outcomes = await blocked
    assert all(isinstance(o, ServerUnavailableError) for o in outcomes)


async def test_encode_before_start_is_refused(hash_model: EmbeddingModel) -> None:
    with pytest.raises(ServerUnavailableError, match="not started"):
        await Engine(hash_model).encode([TextItem("x")])


def test_bad_settings_are_refused(hash_model: EmbeddingModel) -> None:
    with pytest.raises(ValueError):
        Engine(hash_model, max_batch_size=0)
    with pytest.raises(ValueError):
        Engine([hash_model, hash_model], replicas=3)
