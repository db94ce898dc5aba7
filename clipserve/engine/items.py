"""What callers hand the engine: one sentence or one image per item."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

Modality = Literal["text", "image"]


@dataclass(frozen=True, slots=True)
class TextItem:
    """One sentence to embed."""

    text: str

    modality: ClassVar[Modality] = "text"


@dataclass(frozen=True, slots=True, eq=False)
class ImageItem:
    """One image to embed: encoded file bytes, or a decoded uint8 [H, W, C] array."""

    source: bytes | np.ndarray

    modality: ClassVar[Modality] = "image"


Item = TextItem | ImageItem
