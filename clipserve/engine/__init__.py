"""The batching engine: items in, embeddings (or per-item errors) out."""

from clipserve.engine.cache import CacheKeys, EmbeddingCache
from clipserve.engine.cached import CachedEngine
from clipserve.engine.engine import Engine, ModalityStats, ModelSource, Outcome
from clipserve.engine.items import ImageItem, Item, Modality, TextItem
from clipserve.engine.metrics import METRICS, REGISTRY, Metrics

__all__ = [
    "METRICS",
    "REGISTRY",
    "CacheKeys",
    "CachedEngine",
    "EmbeddingCache",
    "Engine",
    "ImageItem",
    "Item",
    "Metrics",
    "ModalityStats",
    "Modality",
    "ModelSource",
    "Outcome",
    "TextItem",
]
