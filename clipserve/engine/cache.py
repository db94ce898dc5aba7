"""The embedding cache: keys, an LRU in memory bounded by bytes, and an optional disk tier.

A key is a BLAKE2b digest of the exact input (a sentence's UTF-8 bytes; an image's file
bytes before decoding, or an array's dtype, shape and bytes), keyed with a digest of the
model's ``identity()`` (name, backend, precision, weights revision, preprocessing), so two
models or precisions never share an entry, and separated by modality. A value is the
float32 embedding's bytes, exactly as computed; a hit is a read-only array over them.

Memory: an ``OrderedDict`` in least-recently-used order, whose accounted size (value, key
and a measured per-entry overhead) never exceeds ``max_bytes``. Disk (optional): a
``diskcache.Cache`` (SQLite, safe across threads and processes) bounded by its own size, so
a restart keeps what was computed. The memory tier is used from the event loop only; disk
calls block and are made from threads (see ``cached.CachedEngine``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clipserve.engine.items import ImageItem, Item
from clipserve.errors import ModelUnavailableError

MiB = 1024 * 1024
#: bytes an entry costs beyond its key and value: the two bytes objects' headers and the
#: ordered dict's slot and link node (measured with tracemalloc in tests/engine/test_cache.py)
ENTRY_OVERHEAD = 200
DIGEST_SIZE = 32
_PERSON = {"text": b"clipserve-text", "image": b"clipserve-image", "array": b"clipserve-array"}


class CacheKeys:
    """Input -> cache key for one model (its identity is the BLAKE2b key)."""

    def __init__(self, model_identity: str) -> None:
        self.model_identity = model_identity
        self._secret = hashlib.blake2b(model_identity.encode(), digest_size=64).digest()

    def text(self, text: str) -> bytes:
        data = text.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(
            data, digest_size=DIGEST_SIZE, key=self._secret, person=_PERSON["text"]
        ).digest()

    def image(self, source: bytes | np.ndarray) -> bytes:
        if isinstance(source, np.ndarray):
            digest = hashlib.blake2b(
                digest_size=DIGEST_SIZE, key=self._secret, person=_PERSON["array"]
            )
            digest.update(f"{source.dtype.str}{source.shape}".encode())
            digest.update(memoryview(np.ascontiguousarray(source)).cast("B"))
            return digest.digest()
        return hashlib.blake2b(
            source, digest_size=DIGEST_SIZE, key=self._secret, person=_PERSON["image"]
        ).digest()

    def item(self, item: Item) -> bytes:
        return self.image(item.source) if isinstance(item, ImageItem) else self.text(item.text)


class EmbeddingCache:
    """LRU of embeddings in memory, bounded by ``max_bytes`` (0: no memory tier), with an
    optional disk tier in ``disk_dir`` bounded by ``disk_max_bytes``."""

    def __init__(
        self,
        max_bytes: int,
        *,
        disk_dir: str | Path | None = None,
        disk_max_bytes: int = 2048 * MiB,
    ) -> None:
        if max_bytes < 0 or disk_max_bytes <= 0:
            raise ValueError("max_bytes must be >= 0 and disk_max_bytes > 0")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self.disk: Any = None
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.disk_max_bytes = disk_max_bytes
        if self.disk_dir is not None:
            self.disk = _open_disk(self.disk_dir, disk_max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    # ---- memory (event loop only) ---------------------------------------------------------

    def get(self, key: bytes) -> np.ndarray | None:
        value = self._entries.get(key)
        if value is None:
            return None
        self._entries.move_to_end(key)
        return as_embedding(value)

    def put(self, key: bytes, value: bytes) -> int:
        """Store (or refresh) an entry; returns how many entries were evicted for it."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return 0
        size = entry_size(key, value)
        if size > self.max_bytes:
            return 0
        self._entries[key] = value
        self.bytes += size
        evicted = 0
        while self.bytes > self.max_bytes:
            old_key, old_value = self._entries.popitem(last=False)
            self.bytes -= entry_size(old_key, old_value)
            evicted += 1
        self.evictions += evicted
        return evicted

    # ---- disk (blocking: call from a thread) ------------------------------------------------

    def disk_get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        if self.disk is None:
            return {}
        found = {}
        for key in keys:
            value = self.disk.get(key)
            if isinstance(value, bytes):
                found[key] = value
        return found

    def disk_put_many(self, entries: Mapping[bytes, bytes]) -> None:
        if self.disk is None:
            return
        for key, value in entries.items():
            self.disk.set(key, value)

    def disk_stats(self) -> dict[str, Any] | None:
        if self.disk is None:
            return None
        return {
            "directory": str(self.disk_dir),
            "max_bytes": self.disk_max_bytes,
            "bytes": int(self.disk.volume()),
            "entries": len(self.disk),
        }

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()


def entry_size(key: bytes, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD


def as_embedding(value: bytes) -> np.ndarray:
    """The stored bytes as a read-only float32 vector (no copy)."""
    return np.frombuffer(value, dtype=np.float32)


def _open_disk(directory: Path, max_bytes: int) -> Any:
    try:
        import diskcache
    except ImportError as exc:
        raise ModelUnavailableError(
            "the on-disk embedding cache needs 'diskcache' (pip install clipserve[server])"
        ) from exc
    try:
        return diskcache.Cache(
            str(directory),
            size_limit=max_bytes,
            eviction_policy="least-recently-used",
            cull_limit=100,
        )
    except OSError as exc:
        raise OSError(f"cannot open the on-disk embedding cache in {directory}: {exc}") from exc
