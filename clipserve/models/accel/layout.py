"""The torch-free half of device preprocessing: a model's normalisation and the plan that
brings a decoded image to its input size (what the host path does with Pillow, as numbers
the device code in ``pixels`` follows)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalizer:
    """``((x * scale) - mean) / std`` per channel, in float32."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: 1/255 for models that see [0, 1] pixels; 1.0 for ones that see [0, 255]
    scale: float = 1 / 255

    def host(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [..., 3] (channels last) -> float32 normalised, channels last (numpy)."""
        values = np.asarray(pixels, dtype=np.float32)
        if self.scale != 1.0:
            values = values * np.float32(self.scale)
        return (values - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


@dataclass(frozen=True)
class Plan:
    """How one decoded image becomes the model's input size (all in pixels)."""

    #: (height, width) to resize to
    size: tuple[int, int]
    #: (top, left, height, width) cut out before resizing, or None for the whole image
    box: tuple[int, int, int, int] | None = None
    #: (height, width) of a centre crop after resizing (black padding where the image is
    #: smaller), or None
    crop: tuple[int, int] | None = None
