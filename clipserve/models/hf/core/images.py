"""Image preprocessing without torch, as transformers' PIL image processors do it.

Two layouts cover the families: CLIP's (resize the shorter side, centre crop; CLIP,
MetaCLIP 2, AltCLIP) and the square resize that ignores the aspect ratio (SigLIP, SigLIP 2
fixed resolution, Chinese-CLIP). Then RGB, scale to [0, 1] and normalise with the model's
mean and std. Settings come from the checkpoint's ``preprocessor_config.json``, the
family's ``ImageRule`` where it is silent. Plain Pillow + numpy on top of ``decode_image``,
no mutable state: one preprocessor serves many worker threads. By default a big photo is
decoded straight to a shorter side of at least twice the resize target first (see
``models.images``); ``exact=True`` decodes every image at full size, as the reference does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipserve.models.accel.layout import Normalizer, Plan
from clipserve.models.base import ImageSource
from clipserve.models.hf.core.patches import PatchPreprocessor
from clipserve.models.hf.core.spec import ImageRule, scaling_config
from clipserve.models.images import DEFAULT_MAX_PIXELS, decode_image

CONFIG_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class ImagePreprocessor:
    """Decode + preprocess one image into float32 [3, H, W]."""

    #: the shorter side after resizing (CLIP layout), or None
    shortest_edge: int | None = 224
    #: (height, width) to resize to regardless of aspect (square layout), or None
    size: tuple[int, int] | None = None
    #: (height, width) of the centre crop, or None for no crop
    crop: tuple[int, int] | None = (224, 224)
    mean: tuple[float, float, float] = ImageRule().mean
    std: tuple[float, float, float] = ImageRule().std
    resample: int = int(Image.Resampling.BICUBIC)
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def for_rule(cls, rule: ImageRule, image_size: int) -> ImagePreprocessor:
        """The family's layout at ``image_size`` (random-weight models have no config)."""
        if rule.squash:
            return cls(None, (image_size, image_size), None, rule.mean, rule.std)
        return cls(image_size, None, (image_size, image_size), rule.mean, rule.std)

    @classmethod
    def from_directory(
        cls, path: str | Path, rule: ImageRule, image_size: int
    ) -> ImagePreprocessor:
        """Read an HF ``preprocessor_config.json``; the rule's defaults where it is silent."""
        config_path = Path(path) / CONFIG_FILE
        config: dict[str, Any] = (
            json.loads(config_path.read_text()) if config_path.is_file() else {}
        )
        default = cls.for_rule(rule, image_size)
        shortest, size = default.shortest_edge, default.size
        if "size" in config:
            shortest, size = _size(config["size"])
        crop = default.crop
        if config.get("do_center_crop") is False:
            crop = None
        elif "crop_size" in config:
            crop = _pair(config["crop_size"])
        elif "do_center_crop" in config and crop is None:
            crop = size or (shortest, shortest)  # type: ignore[assignment]
        return cls(
            shortest_edge=shortest,
            size=size,
            crop=crop,
            mean=tuple(config.get("image_mean", rule.mean)),  # type: ignore[arg-type]
            std=tuple(config.get("image_std", rule.std)),  # type: ignore[arg-type]
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
        )

    def to_config(self) -> dict[str, Any]:
        """A ``preprocessor_config.json`` describing this pipeline (read back by
        ``from_directory``; transformers reads it as a CLIP or SigLIP image processor)."""
        squash = self.size is not None
        config: dict[str, Any] = {
            "image_processor_type": "SiglipImageProcessor" if squash else "CLIPImageProcessor",
            "do_resize": True,
            "size": (
                {"height": self.size[0], "width": self.size[1]}
                if self.size is not None
                else {"shortest_edge": self.shortest_edge}
            ),
            "resample": self.resample,
            "do_center_crop": self.crop is not None,
            **scaling_config(self.mean, self.std),
        }
        if self.crop is not None:
            config["crop_size"] = {"height": self.crop[0], "width": self.crop[1]}
        return config

    def __call__(self, source: ImageSource, *, exact: bool = False) -> np.ndarray:
        """``exact``: decode at full size like the reference (slower on big photos). Either
        way, a photo whose shorter side is under 4x the resize target is decoded at full
        size, so its result is the reference's."""
        return self.to_float(self.pixels(source, exact=exact))

    def pixels(self, source: ImageSource, *, exact: bool = False) -> np.ndarray:
        """Decode, resize and crop: uint8 [H, W, 3] at the input size, not yet normalised
        (what a device normalises itself; ``to_float`` does it on the host)."""
        target = self.shortest_edge if self.size is None else min(self.size)
        min_side = None if exact or not target else 2 * target
        image = decode_image(source, max_pixels=self.max_pixels, min_side=min_side)
        return np.asarray(self.fit(image))

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer(self.mean, self.std)

    def to_float(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> float32 [3, H, W], normalised."""
        return np.ascontiguousarray(self.normalizer.host(pixels).transpose(2, 0, 1))

    @staticmethod
    def model_inputs(pixels: np.ndarray) -> dict[str, np.ndarray]:
        """A stack of preprocessed images -> the vision tower's inputs."""
        return {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)}

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.to_float(np.asarray(self.fit(image)))

    def fit(self, image: Image.Image) -> Image.Image:
        """Resize (and centre-crop) a decoded RGB image to the input size."""
        image = self._resize(image)
        if self.crop is not None:
            image = self._centre_crop(image)
        return image

    def plan(self, height: int, width: int) -> Plan:
        """``fit`` as numbers, for an image decoded on a device."""
        new_width, new_height = self._resized(width, height)
        return Plan((new_height, new_width), crop=self.crop)

    def _resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize."""
        if self.size is not None:
            return (self.size[1], self.size[0])
        short, long = (width, height) if width <= height else (height, width)
        edge = int(self.shortest_edge or short)
        new_short, new_long = edge, int(edge * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def _resize(self, image: Image.Image) -> Image.Image:
        target = self._resized(*image.size)
        if target == image.size:
            return image
        return image.resize(target, resample=Image.Resampling(self.resample))

    def _centre_crop(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        crop_height, crop_width = self.crop  # type: ignore[misc]
        if width < crop_width or height < crop_height:  # pad with black, centred
            canvas = Image.new("RGB", (max(width, crop_width), max(height, crop_height)))
            canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
            image, width, height = canvas, canvas.width, canvas.height
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        return image.crop((left, top, left + crop_width, top + crop_height))


def preprocessor_for(
    rule: ImageRule, vision_config: Any, directory: Path | None = None
) -> ImagePreprocessor | PatchPreprocessor:
    """The family's preprocessing for a vision config, from ``directory``'s preprocessor
    config where there is one (a checkpoint), else the rule's defaults (random weights)."""
    if rule.patches:
        grid = (int(vision_config.patch_size), int(vision_config.num_patches))
        if directory is not None:
            return PatchPreprocessor.from_directory(directory, rule, *grid)
        return PatchPreprocessor(*grid, mean=rule.mean, std=rule.std)
    size = int(vision_config.image_size)
    if directory is not None:
        return ImagePreprocessor.from_directory(directory, rule, size)
    return ImagePreprocessor.for_rule(rule, size)


def exported_preprocessor(directory: Path) -> ImagePreprocessor | PatchPreprocessor:
    """The preprocessing an ONNX export wrote (``to_config`` of either kind)."""
    path = directory / CONFIG_FILE
    config = json.loads(path.read_text()) if path.is_file() else {}
    if "max_num_patches" in config:
        return PatchPreprocessor.from_directory(directory, ImageRule(), 16, 256)
    return ImagePreprocessor.from_directory(directory, ImageRule(), 224)


def _size(value: Any) -> tuple[int | None, tuple[int, int] | None]:
    """HF ``size``: an int or {"shortest_edge"} (CLIP layout) or {"height", "width"}."""
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), None
        return None, (int(value["height"]), int(value["width"]))
    return int(value), None


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, dict):
        return int(value["height"]), int(value["width"])
    return int(value), int(value)
