"""The batching engine: items in, embeddings (or per-item errors) out."""

from clipserve.engine.engine import Engine, ModalityStats, ModelSource, Outcome
from clipserve.engine.items import ImageItem, Item, Modality, TextItem
from clipserve.engine.metrics import METRICS, REGISTRY, Metrics
from clipserve.engine.seam import EncodingEngine, ModelDescription

__all__ = [
    "METRICS",
    "REGISTRY",
    "Engine",
    "EncodingEngine",
    "ImageItem",
    "Item",
    "Metrics",
    "ModalityStats",
    "Modality",
    "ModelDescription",
    "ModelSource",
    "Outcome",
    "TextItem",
]
