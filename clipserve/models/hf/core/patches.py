"""SigLIP 2 NaFlex preprocessing: an image at its own aspect ratio as a variable grid of
patches, as transformers' ``Siglip2ImageProcessor`` makes it.

The image is resized (bilinear) to the largest size whose sides are multiples of the patch
size and whose patch count stays within ``max_num_patches``, keeping the aspect ratio;
scaled to [-1, 1]; cut into patches (row by row, each patch's pixels row by row, channels
last) and padded with zero patches to ``max_num_patches``. The model gets the patches, a
mask of the real ones and the grid shape; clipserve packs all three into one array per
image (``model_inputs`` unpacks a batch), so the engine stacks images like any other.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipserve.models.base import ImageSource
from clipserve.models.hf.core.spec import ImageRule, scaling_config
from clipserve.models.images import DEFAULT_MAX_PIXELS, decode_image

CONFIG_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class PatchPreprocessor:
    """Decode + NaFlex-preprocess one image into float32 [max_num_patches + 1, p * p * 3]:
    row 0 holds the grid's (rows, columns), then the patches, zero-padded."""

    patch_size: int = 16
    max_num_patches: int = 256
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = int(Image.Resampling.BILINEAR)
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_directory(
        cls, path: str | Path, rule: ImageRule, patch_size: int, max_num_patches: int
    ) -> PatchPreprocessor:
        config_path = Path(path) / CONFIG_FILE
        config: dict[str, Any] = (
            json.loads(config_path.read_text()) if config_path.is_file() else {}
        )
        return cls(
            patch_size=int(config.get("patch_size", patch_size)),
            max_num_patches=int(config.get("max_num_patches", max_num_patches)),
            mean=tuple(config.get("image_mean", rule.mean)),  # type: ignore[arg-type]
            std=tuple(config.get("image_std", rule.std)),  # type: ignore[arg-type]
            resample=int(config.get("resample", Image.Resampling.BILINEAR)),
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "image_processor_type": "Siglip2ImageProcessor",
            "do_resize": True,
            "patch_size": self.patch_size,
            "max_num_patches": self.max_num_patches,
            "resample": self.resample,
            **scaling_config(self.mean, self.std),
        }

    def __call__(self, source: ImageSource, *, exact: bool = True) -> np.ndarray:
        """Always a full-size decode (``exact`` is accepted and ignored): the grid follows
        the stored aspect ratio, which a reduced decode could round to another grid."""
        return self.preprocess(decode_image(source, max_pixels=self.max_pixels))

    def preprocess(self, image: Image.Image) -> np.ndarray:
        height, width = self.target_size(image.height, image.width)
        if (width, height) != image.size:
            image = image.resize((width, height), resample=Image.Resampling(self.resample))
        pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        size = self.patch_size
        rows, columns = height // size, width // size
        patches = pixels.reshape(rows, size, columns, size, 3).transpose(0, 2, 1, 3, 4)
        packed = np.zeros((self.max_num_patches + 1, size * size * 3), dtype=np.float32)
        packed[0, :2] = (rows, columns)
        packed[1 : 1 + rows * columns] = patches.reshape(rows * columns, -1)
        return packed

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The largest (height, width), multiples of the patch size, within the patch budget
        at the image's aspect ratio (a bisection on the scale, as transformers does)."""
        size = self.patch_size

        def scaled(scale: float, side: int) -> int:
            return max(size, math.ceil(side * scale / size) * size)

        low, high, eps = 1e-6, 100.0, 1e-5
        while high - low >= eps:
            scale = (low + high) / 2
            patches = (scaled(scale, height) / size) * (scaled(scale, width) / size)
            low, high = (scale, high) if patches <= self.max_num_patches else (low, scale)
        return scaled(low, height), scaled(low, width)

    @staticmethod
    def model_inputs(packed: np.ndarray) -> dict[str, np.ndarray]:
        """A stack of packed images [B, 1 + N, D] -> the model's three inputs."""
        shapes = packed[:, 0, :2].astype(np.int64)
        patches = np.ascontiguousarray(packed[:, 1:], dtype=np.float32)
        counts = shapes.prod(axis=1)
        mask = (np.arange(patches.shape[1])[None, :] < counts[:, None]).astype(np.int64)
        return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": shapes}
