"""What bounds the engine's memory under big images: the bytes of admitted images
(``max_queue_image_mb``) and the decoded pixels held at once (``max_decoding_megapixels``),
with the real built-in model decoding real photos."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image
from skimage import data as skimage_data

from clipserve.engine import Engine, ImageItem, Metrics
from clipserve.models.base import EmbeddingModel
from tests.engine.helpers import WrappedModel
from tests.waiting import FAILSAFE_S, eventually

MB = 1024 * 1024


def photo_jpeg(array: np.ndarray, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).resize((width, height), Image.Resampling.BICUBIC).save(
        buffer, "JPEG", quality=90
    )
    return buffer.getvalue()


async def test_decoded_pixels_in_flight_stay_within_the_budget(
    builtin_model: EmbeddingModel, metrics: Metrics
) -> None:
    """8 photos of 1.5 MP on 4 preprocessing threads with a budget of 3.5 MP: never more
    than 3.5 MP decoded at once, and every embedding is the in-process one."""
    sources = [skimage_data.astronaut(), skimage_data.chelsea(), skimage_data.coffee()]
    photos = [photo_jpeg(sources[i % 3], 1500, 1000) for i in range(8)]
    engine = Engine(builtin_model, preprocess_workers=4, max_decoding_megapixels=3.5,
                    max_batch_size=8, max_wait_ms=50, metrics=metrics)  # fmt: skip
    async with engine:
        outcomes = await asyncio.gather(*(engine.encode([ImageItem(p)]) for p in photos))
    expected = builtin_model.encode_images(photos)
    for (outcome,), want in zip(outcomes, expected, strict=True):
        np.testing.assert_allclose(outcome, want, atol=1e-5)
    budget = engine.pixel_budget
    assert 1_500_000 <= budget.peak <= 3_500_000
    assert budget.held_pixels == 0
    assert metrics.registry.get_sample_value("clipserve_decoding_pixels") == 0


async def test_admitted_image_bytes_are_bounded(wrapped: WrappedModel, metrics: Metrics) -> None:
    """A 1 MiB image budget: a second 0.6 MiB image waits while the first is held; a single
    image above the whole budget is still admitted when nothing else is."""
    blob = photo_jpeg(skimage_data.astronaut(), 512, 512)
    blob += bytes(int(0.6 * MB) - len(blob))  # trailing bytes: same pixels, 0.6 MiB held
    engine = Engine(wrapped, max_queue_image_mb=1, max_queue_wait_s=FAILSAFE_S, metrics=metrics)
    await engine.start()
    wrapped.hold_images.set()
    first = asyncio.create_task(engine.encode([ImageItem(blob)]))
    assert await asyncio.to_thread(wrapped.forward_entered.wait, FAILSAFE_S)
    second = asyncio.create_task(engine.encode([ImageItem(blob)]))
    admission = engine._admission
    await eventually(lambda: admission.waiting["image_bytes"] == len(blob), "it waits")
    assert admission.outstanding["image_bytes"] == len(blob) and not second.done()
    wrapped.hold_images.clear()
    wrapped.release.set()
    assert all(isinstance(o[0], np.ndarray) for o in await asyncio.gather(first, second))
    assert admission.outstanding["image_bytes"] == 0
    (alone,) = await engine.encode([ImageItem(blob + blob)])  # 1.2 MiB > 1 MiB, alone
    assert isinstance(alone, np.ndarray)
    await engine.stop()
