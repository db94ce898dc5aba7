"""A call's items travel as one group: split across batches, merged with other callers'
items, answered in order, counted once each, and dropped whole when the caller leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from skimage import data as skimage_data

from clipserve.engine import Engine, ImageItem, Metrics, TextItem
from clipserve.models.base import EmbeddingModel
from tests.engine.helpers import BLOCK, WrappedModel
from tests.engine.test_engine import sample
from tests.waiting import FAILSAFE_S, eventually


class BatchRecorder(WrappedModel):
    """Remembers the texts of every prepared batch."""

    def __init__(self, inner: EmbeddingModel) -> None:
        super().__init__(inner)
        self.batches: list[list[str]] = []

    def prepare_texts(self, texts: Sequence[str]) -> Any:
        self.batches.append(list(texts))
        return super().prepare_texts(texts)


async def test_calls_are_split_and_merged_into_batches_in_order(
    hash_model: EmbeddingModel, metrics: Metrics
) -> None:
    model = BatchRecorder(hash_model)
    calls = [[f"call {c} text {i}" for i in range(size)] for c, size in enumerate((10, 25, 7))]
    async with Engine(model, max_batch_size=16, max_wait_ms=50, metrics=metrics) as engine:
        results = await asyncio.gather(*(engine.encode([TextItem(t) for t in c]) for c in calls))
    for texts, outcomes in zip(calls, results, strict=True):
        np.testing.assert_allclose(np.stack(outcomes), hash_model.encode_texts(texts), atol=1e-6)
    flat = [t for c in calls for t in c]
    assert [t for batch in model.batches for t in batch] == flat  # FIFO, nothing twice
    assert all(len(batch) <= 16 for batch in model.batches)
    assert any(len({t.split(" text")[0] for t in batch}) > 1 for batch in model.batches)
    assert len(model.batches) < len(calls) + 2  # full batches, not one per call
    assert sample(metrics, "clipserve_items_total", modality="text", outcome="ok") == len(flat)
    assert sample(metrics, "clipserve_queue_depth", modality="text") == 0


async def test_encode_texts_matches_encode(hash_model: EmbeddingModel) -> None:
    texts = [f"sentence {i}" for i in range(40)]
    async with Engine(hash_model, max_batch_size=16) as engine:
        plain = await engine.encode_texts(texts)
        items = await engine.encode([TextItem(t) for t in texts])
        assert await engine.encode_texts([]) == []
    for a, b in zip(plain, items, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and a.shape == (hash_model.dim,)


async def test_mixed_call_larger_than_a_batch_keeps_positions(hash_model: EmbeddingModel) -> None:
    tensor = skimage_data.camera()[:64, :64, None]
    items: list[TextItem | ImageItem] = [TextItem(f"t{i}") for i in range(40)]
    items.insert(3, ImageItem(tensor))
    items.insert(30, ImageItem(skimage_data.astronaut()))
    async with Engine(hash_model, max_batch_size=16) as engine:
        outcomes = await engine.encode(items)
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(item, TextItem):
            want = hash_model.encode_texts([item.text])[0]
        else:
            want = hash_model.encode_images([item.source])[0]
        np.testing.assert_allclose(outcome, want, atol=1e-6)


async def test_a_caller_leaving_mid_call_drops_its_unstarted_batches(
    hash_model: EmbeddingModel, metrics: Metrics
) -> None:
    model = WrappedModel(hash_model)
    texts = [BLOCK, "a1", "a2", "a3", "a4"]
    async with Engine(model, max_batch_size=2, max_queue_items=5, metrics=metrics) as engine:
        call = asyncio.create_task(engine.encode([TextItem(t) for t in texts]))
        assert await asyncio.to_thread(model.forward_entered.wait, FAILSAFE_S)  # [BLOCK, a1] runs
        # [a2, a3] is ready, waiting for the model
        await eventually(lambda: "a3" in model.prepared_texts, "[a2, a3] is prepared")
        assert len(engine._queues["text"]) == 1  # a4 is still queued
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        model.release.set()
        # every item was released: a call as large as the queue fits again
        again = await engine.encode([TextItem(f"b{i}") for i in range(5)])
    assert all(isinstance(o, np.ndarray) for o in again)
    assert "a4" not in model.prepared_texts  # dropped before any compute
    assert sample(metrics, "clipserve_items_total", modality="text", outcome="cancelled") == 5
    assert sample(metrics, "clipserve_items_total", modality="text", outcome="ok") == 5
    assert sample(metrics, "clipserve_queue_depth", modality="text") == 0
