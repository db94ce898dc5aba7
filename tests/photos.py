"""Camera-size photos for tests and benchmarks, made from the real photos packages ship.

scikit-image and scikit-learn ship photos of 0.1-2 MP; phones and cameras send 3-12 MP. Each
photo here is a packaged one scaled up (bicubic) to the wanted pixel count, with mild
Gaussian grain (sigma ``grain``, in 0..255 units) so that its JPEG carries camera-like detail
and weighs what a phone photo weighs (~1 MB per 4 MP at quality 90 with ``grain=4``,
instead of ~0.3 MB for the smooth upscale). Distinct variants of one photo differ in their
grain and are mirrored on odd indices, so no two encodings are byte-identical.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image


@cache
def source_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, RGB uint8 array) for each colour photo shipped by scikit-image/scikit-learn,
    the largest first (retina.jpg is 1411x1411)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    named = [
        ("retina", data.retina()),
        ("hubble", data.hubble_deep_field()),
        ("astronaut", data.astronaut()),
        ("rocket", data.rocket()),
        ("coffee", data.coffee()),
        ("chelsea", data.chelsea()),
    ]
    sample = load_sample_images()
    named += [(Path(name).stem, image) for name, image in zip(
        sample.filenames, sample.images, strict=True
    )]  # fmt: skip
    return tuple((name, np.ascontiguousarray(image[:, :, :3])) for name, image in named)


def upscaled(
    photo: np.ndarray, megapixels: float, grain: float = 4.0, seed: int = 0
) -> Image.Image:
    """``photo`` scaled (bicubic, aspect kept) to about ``megapixels``, plus grain."""
    height, width = photo.shape[:2]
    scale = math.sqrt(megapixels * 1e6 / (width * height))
    size = (round(width * scale), round(height * scale))
    image = Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC)
    if grain <= 0:
        return image
    rng = np.random.default_rng(seed)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, grain, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def big_photos(
    count: int, megapixels: float = 12.0, fmt: str = "JPEG", grain: float = 4.0
) -> Iterator[tuple[str, bytes]]:
    """``count`` distinct encoded photos of ~``megapixels``, cycling over the packaged ones:
    (name, file bytes)."""
    sources = source_photos()
    for index in range(count):
        name, photo = sources[index % len(sources)]
        if index % 2:
            photo = np.ascontiguousarray(photo[:, ::-1])
        image = upscaled(photo, megapixels, grain, seed=index)
        yield f"{name}-{index}", encode(image, fmt)
