"""``CachedEngine``: an embedding cache in front of an engine, with the engine's interface.

It wraps anything that behaves like ``Engine`` (``encode``, ``encode_texts``, ``model``,
``start``/``stop``...), so the front-ends call it as they would the engine, local or not.
Per call:

1. every input's key is computed once (BLAKE2b; big images hashed in threads);
2. memory hits are answered at once: they never wait for room in the queue;
3. an input that another call is computing right now waits for that result instead of
   computing it again (and so does a repeat within one call);
4. the rest is looked up on disk (if configured), then sent to the engine in one call;
   embeddings are stored (memory now, disk from a background thread), errors never are.

If the call that computes an input fails as a whole (the queue refused it, its caller went
away), the calls waiting on it try again themselves, so nobody inherits another caller's
refusal; per-input errors (a broken image) are shared, since the same input fails the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from clipserve.engine.cache import CacheKeys, EmbeddingCache
from clipserve.engine.engine import Outcome
from clipserve.engine.items import ImageItem, Item, Modality, TextItem
from clipserve.engine.metrics import METRICS, Metrics
from clipserve.errors import InvalidInputError, ServerUnavailableError
from clipserve.models.runtime import available_cpus

#: hash the images of a call in threads when their bytes add up to more than this
THREAD_HASH_BYTES = 256 * 1024


class CachedEngine:
    """``engine`` with ``cache`` in front. ``start``/``stop`` start and stop both.

    ``identity`` names what decides the embeddings (default: ``engine.model.identity()``,
    read at ``start``); give it for engines whose model lives elsewhere (e.g. a Ray cluster).
    """

    def __init__(
        self,
        engine: Any,
        cache: EmbeddingCache,
        metrics: Metrics | None = None,
        *,
        identity: str | None = None,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.identity = identity
        self.metrics = metrics or METRICS
        self.hits = self.misses = self.coalesced = 0
        self._keys: CacheKeys | None = None
        self._in_flight: dict[bytes, asyncio.Future[Outcome]] = {}
        self._disk_writer: ThreadPoolExecutor | None = None
        self._evictions_counted = 0

    # ---- the engine's face ---------------------------------------------------------------

    @property
    def model(self) -> Any:
        return self.engine.model

    @property
    def max_batch_size(self) -> int:
        return int(self.engine.max_batch_size)

    @property
    def running(self) -> bool:
        return bool(self.engine.running)

    @property
    def stats(self) -> Any:
        return self.engine.stats

    @property
    def health(self) -> Any:
        """The wrapped engine's health (the watchdog's view)."""
        return self.engine.health

    def describe(self) -> dict[str, Any]:
        return dict(self.engine.describe())

    async def start(self) -> None:
        await self.engine.start()
        self._keys = CacheKeys(self.identity or self.engine.model.identity())
        if self.cache.disk is not None:
            self._disk_writer = ThreadPoolExecutor(1, "clipserve-cache-disk")
        self._update_size()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        await self.engine.stop(drain_timeout)
        if self._disk_writer is not None:
            await asyncio.to_thread(self._disk_writer.shutdown, wait=True)
            self._disk_writer = None
        self.cache.close()

    async def __aenter__(self) -> CachedEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def encode(self, items: Iterable[Item]) -> list[Outcome]:
        items = list(items)
        for item in items:
            if not isinstance(item, (TextItem, ImageItem)):
                raise InvalidInputError(
                    f"cannot encode {type(item).__name__}; use TextItem/ImageItem"
                )
        return await self._encode(items, await self._keys_of(items))

    async def encode_texts(self, texts: Sequence[str]) -> list[Outcome]:
        return await self.encode([TextItem(text) for text in texts])

    def cache_info(self) -> dict[str, Any]:
        """What /health shows about the cache."""
        return {
            "enabled": True,
            "max_bytes": self.cache.max_bytes,
            "bytes": self.cache.bytes,
            "entries": len(self.cache),
            "hits": self.hits,
            "misses": self.misses,
            "coalesced": self.coalesced,
            "evictions": self.cache.evictions,
            "disk": self.cache.disk_stats(),
        }

    # ---- the cache path --------------------------------------------------------------------

    async def _encode(self, items: list[Item], keys: list[bytes]) -> list[Outcome]:
        if not self.engine.running:
            raise ServerUnavailableError("the engine is not running; it takes no new work")
        outcomes: list[Outcome | None] = [None] * len(items)
        owned: dict[bytes, int] = {}  # key -> index of the item this call computes it for
        waits: list[tuple[int, asyncio.Future[Outcome]]] = []
        loop = asyncio.get_running_loop()
        hits: dict[Modality, int] = {"text": 0, "image": 0}
        for index, (item, key) in enumerate(zip(items, keys, strict=True)):
            cached = self.cache.get(key)
            if cached is not None:
                outcomes[index] = cached
                hits[item.modality] += 1
                continue
            future = self._in_flight.get(key)
            if future is None:
                future = loop.create_future()
                self._in_flight[key] = future
                owned[key] = index
            else:  # being computed, by another call or for an earlier copy in this one
                self._count("coalesced", item.modality)
            waits.append((index, future))
        for modality, count in hits.items():
            self._count("hits", modality, count, tier="memory")
        if owned:
            await self._compute(items, owned)
        retry: list[int] = []
        for index, future in waits:
            try:
                outcomes[index] = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this caller was cancelled, not the computation it waited for
                retry.append(index)  # the call computing it failed as a whole: our turn
        if retry:
            again = await self._encode([items[i] for i in retry], [keys[i] for i in retry])
            for index, outcome in zip(retry, again, strict=True):
                outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]

    async def _compute(self, items: list[Item], owned: dict[bytes, int]) -> None:
        """Answer the futures of ``owned`` keys: from disk, else from the engine."""
        try:
            if self.cache.disk is not None:
                found = await asyncio.to_thread(self.cache.disk_get_many, list(owned))
                for key, value in found.items():
                    index = owned.pop(key)
                    self.cache.put(key, value)
                    self._settle(key, np.frombuffer(value, dtype=np.float32))
                    self._count("hits", items[index].modality, tier="disk")
            if not owned:
                return
            for index in owned.values():
                self._count("misses", items[index].modality)
            wanted = [items[index] for index in owned.values()]
            if all(isinstance(item, TextItem) for item in wanted):
                results = await self.engine.encode_texts([item.text for item in wanted])  # type: ignore[union-attr]
            else:
                results = await self.engine.encode(wanted)
            to_disk: dict[bytes, bytes] = {}
            for key, outcome in zip(owned, results, strict=True):
                if isinstance(outcome, np.ndarray):
                    value = np.ascontiguousarray(outcome, dtype=np.float32).tobytes()
                    self.cache.put(key, value)
                    to_disk[key] = value
                self._settle(key, outcome)
            if to_disk and self._disk_writer is not None:
                self._disk_writer.submit(self.cache.disk_put_many, to_disk)
        finally:  # refused, cancelled or failed as a whole: waiters compute it themselves
            self._update_size()
            for key in owned:
                future = self._in_flight.pop(key, None)
                if future is not None and not future.done():
                    future.cancel()

    def _settle(self, key: bytes, outcome: Outcome) -> None:
        future = self._in_flight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    async def _keys_of(self, items: list[Item]) -> list[bytes]:
        keys = self._keys
        if keys is None:
            raise ServerUnavailableError("the engine is not started; it takes no new work")
        image_bytes = sum(
            len(item.source) if isinstance(item.source, bytes) else item.source.nbytes
            for item in items
            if isinstance(item, ImageItem)
        )
        if image_bytes <= THREAD_HASH_BYTES:
            return [keys.item(item) for item in items]
        # hashlib lets go of the GIL on big buffers: spread the hashing over the CPUs
        parts = max(1, min(available_cpus(), len(items)))
        chunks = [items[start::parts] for start in range(parts)]
        hashed = await asyncio.gather(*(asyncio.to_thread(_keys_for, keys, c) for c in chunks))
        out: list[bytes] = [b""] * len(items)
        for start, chunk_keys in enumerate(hashed):
            out[start::parts] = chunk_keys
        return out

    def _count(self, what: str, modality: Modality, count: int = 1, tier: str = "") -> None:
        if not count:
            return
        if what == "hits":
            self.hits += count
            self.metrics.cache_hits.labels(modality, tier).inc(count)
        elif what == "misses":
            self.misses += count
            self.metrics.cache_misses.labels(modality).inc(count)
        else:
            self.coalesced += count
            self.metrics.cache_coalesced.labels(modality).inc(count)

    def _update_size(self) -> None:
        self.metrics.cache_bytes.set(self.cache.bytes)
        self.metrics.cache_entries.set(len(self.cache))
        evicted, self._evictions_counted = (
            self.cache.evictions - self._evictions_counted,
            self.cache.evictions,
        )
        if evicted:
            self.metrics.cache_evictions.inc(evicted)


def _keys_for(keys: CacheKeys, items: list[Item]) -> list[bytes]:
    return [keys.item(item) for item in items]
