"""The embedding cache in front of a real engine: hits are the computed bytes, the bound
holds, models never share entries, failures are not kept, identical work is done once."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from clipserve.engine import (
    CachedEngine,
    CacheKeys,
    EmbeddingCache,
    Engine,
    ImageItem,
    Metrics,
    TextItem,
)
from clipserve.engine.cache import ENTRY_OVERHEAD, entry_size
from clipserve.errors import InvalidInputError, ModelError, OverloadedError
from clipserve.models.base import EmbeddingModel
from clipserve.models.hashing import HashModel
from tests.engine.helpers import BLOCK, FAIL, WrappedModel

MiB = 1024 * 1024


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def cached(model: EmbeddingModel, metrics: Metrics, max_bytes: int = MiB, **engine: object):
    """A started-on-entry CachedEngine over a fresh Engine."""
    return CachedEngine(
        Engine(model, metrics=metrics, **engine), EmbeddingCache(max_bytes), metrics
    )


async def test_a_hit_is_exactly_the_computed_embedding(
    builtin_model: EmbeddingModel, metrics: Metrics, cat_png: bytes
) -> None:
    items = [TextItem("a cat on a mat"), ImageItem(cat_png)]
    async with cached(builtin_model, metrics) as engine:
        first = await engine.encode(items)
        again = await engine.encode(items)
    assert all(isinstance(outcome, np.ndarray) for outcome in first + again)
    for computed, hit in zip(first, again, strict=True):
        assert hit.tobytes() == computed.tobytes() and hit.dtype == np.float32
    assert engine.stats["image"].items == 1 and engine.stats["text"].items == 1
    assert sample(metrics, "clipserve_cache_hits_total", modality="image", tier="memory") == 1
    assert sample(metrics, "clipserve_cache_misses_total", modality="text") == 1
    assert engine.cache_info()["entries"] == 2


def test_the_bound_holds_under_churn() -> None:
    rng = np.random.default_rng(0)
    value = rng.standard_normal(512).astype(np.float32).tobytes()
    cache = EmbeddingCache(64 * 1024)
    keys = CacheKeys("model|onnx|int8|rev")
    kept = keys.text("kept")
    cache.put(kept, value)
    for index in range(5000):
        cache.put(keys.text(f"churn {index}"), value)
        assert cache.bytes <= cache.max_bytes
        assert cache.get(kept) is not None  # used all along: never the least recent
    per_entry = entry_size(kept, value)
    assert len(cache) == cache.max_bytes // per_entry
    assert cache.evictions == 5001 - len(cache)
    assert (
        cache.get(keys.text("churn 0")) is None and cache.get(keys.text("churn 4999")) is not None
    )


def test_the_accounted_size_covers_the_real_memory() -> None:
    keys = CacheKeys("model")
    cache = EmbeddingCache(8 * MiB)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(3000):  # what the engine stores: a fresh bytes object per entry
            cache.put(keys.text(str(index)), np.full(512, index, np.float32).tobytes())
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used <= cache.bytes, (used, cache.bytes, ENTRY_OVERHEAD)
    assert cache.bytes <= used * 1.25  # and does not overstate it much


async def test_models_and_precisions_never_share_an_entry(tmp_path: Path, metrics: Metrics) -> None:
    base = HashModel()
    identities = {base.identity()}
    for change in ({"name": "other"}, {"precision": "int8"}, {"backend": "onnx"}):
        model = HashModel()
        for attribute, value in change.items():
            setattr(model, attribute, value)
        identities.add(model.identity())
    exact = HashModel()
    exact.exact_preprocess = True
    identities.add(exact.identity())
    assert len(identities) == 5
    keys = {CacheKeys(identity).text("same sentence") for identity in identities}
    assert len(keys) == 5
    one = CacheKeys(base.identity())
    assert one.text("x") != one.image(b"x") != one.image(np.frombuffer(b"x", np.uint8))
    # two models behind one shared disk cache: the second never sees the first's entries
    for model in (HashModel(512), HashModel(64)):
        cache = EmbeddingCache(MiB, disk_dir=tmp_path / "shared")
        async with CachedEngine(Engine(model, metrics=metrics), cache, metrics) as engine:
            (embedding,) = await engine.encode([TextItem("same sentence")])
        assert embedding.shape == (model.dim,)
    assert sample(metrics, "clipserve_cache_misses_total", modality="text") == 2
    assert sample(metrics, "clipserve_cache_hits_total", modality="text", tier="disk") == 0


async def test_failures_are_never_cached(
    wrapped: WrappedModel, metrics: Metrics, builtin_model: EmbeddingModel
) -> None:
    async with cached(wrapped, metrics) as engine:
        for _ in range(2):
            outcomes = await engine.encode([TextItem(FAIL), TextItem("fine")])
            assert all(isinstance(outcome, ModelError) for outcome in outcomes)
    assert wrapped.prepared_texts.count(FAIL) == 2 and wrapped.prepared_texts.count("fine") == 2
    assert engine.cache_info()["entries"] == 0
    async with cached(builtin_model, metrics) as engine:
        for _ in range(2):
            (outcome,) = await engine.encode([ImageItem(b"\x89PNG\r\n\x1a\n broken")])
            assert isinstance(outcome, InvalidInputError)
    assert engine.stats["image"].items == 0 and engine.cache_info()["entries"] == 0
    assert sample(metrics, "clipserve_cache_misses_total", modality="image") == 2


async def test_identical_inputs_in_flight_are_computed_once(
    wrapped: WrappedModel, metrics: Metrics
) -> None:
    async with cached(wrapped, metrics, max_batch_size=8, max_wait_ms=0) as engine:
        first = asyncio.create_task(engine.encode([TextItem(BLOCK), TextItem("shared")]))
        await asyncio.to_thread(wrapped.forward_entered.wait, 30)
        waiters = [asyncio.create_task(engine.encode_texts(["shared", "shared"])) for _ in range(3)]
        await asyncio.sleep(0)  # let every waiter find the computation in flight
        wrapped.release.set()
        first_outcomes = await first
        results = await asyncio.gather(*waiters)
        repeated = await engine.encode_texts(["again", "again", "again"])
    assert wrapped.prepared_texts.count("shared") == 1
    assert wrapped.prepared_texts.count("again") == 1
    for outcomes in results:
        assert [o.tobytes() for o in outcomes] == [first_outcomes[1].tobytes()] * 2
    assert repeated[0].tobytes() == repeated[2].tobytes()
    assert sample(metrics, "clipserve_cache_coalesced_total", modality="text") == 6 + 2


async def test_waiters_compute_themselves_when_the_computing_call_goes_away(
    wrapped: WrappedModel, metrics: Metrics
) -> None:
    async with cached(wrapped, metrics, max_batch_size=1, max_wait_ms=0) as engine:
        blocker = asyncio.create_task(engine.encode_texts([BLOCK]))
        await asyncio.to_thread(wrapped.forward_entered.wait, 30)
        owner = asyncio.create_task(engine.encode_texts(["wanted"]))  # queued behind BLOCK
        await asyncio.sleep(0)
        waiter = asyncio.create_task(engine.encode_texts(["wanted"]))
        await asyncio.sleep(0)
        owner.cancel()
        await asyncio.gather(owner, return_exceptions=True)
        wrapped.release.set()
        (outcome,) = await waiter
        await blocker
    assert isinstance(outcome, np.ndarray)
    # misses: BLOCK, "wanted" for the cancelled call, "wanted" again for the waiter itself
    assert sample(metrics, "clipserve_cache_misses_total", modality="text") == 3
    assert sample(metrics, "clipserve_cache_coalesced_total", modality="text") == 1
    assert engine.cache_info()["entries"] == 2


async def test_hits_skip_a_full_queue(wrapped: WrappedModel, metrics: Metrics) -> None:
    async with cached(wrapped, metrics, max_batch_size=1, max_queue_items=2) as engine:
        (known,) = await engine.encode_texts(["known"])
        blocked = asyncio.create_task(engine.encode_texts([BLOCK, "queued"]))
        await asyncio.to_thread(wrapped.forward_entered.wait, 30)
        (hit,) = await engine.encode_texts(["known"])  # the queue is full, the cache is not
        with pytest.raises(OverloadedError):
            await engine.encode_texts(["new"])
        wrapped.release.set()
        await blocked
    assert hit.tobytes() == known.tobytes()


async def test_the_disk_tier_survives_a_restart(
    hash_model: EmbeddingModel, tmp_path: Path, metrics: Metrics
) -> None:
    outcomes = []
    for _ in range(2):
        model = WrappedModel(hash_model)
        cache = EmbeddingCache(MiB, disk_dir=tmp_path / "embeddings")
        async with CachedEngine(Engine(model, metrics=metrics), cache, metrics) as engine:
            outcomes.append(await engine.encode_texts(["kept on disk", "also kept"]))
        computed = model.prepared_texts
    assert computed == []  # the second engine computed nothing
    assert [o.tobytes() for o in outcomes[0]] == [o.tobytes() for o in outcomes[1]]
    assert sample(metrics, "clipserve_cache_hits_total", modality="text", tier="disk") == 2
    assert any(name.endswith(".db") for name in os.listdir(tmp_path / "embeddings"))
