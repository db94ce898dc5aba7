"""The device image path, run on the CPU device (the same torch code CUDA runs): uint8
pixels normalised by torch give the host path's embeddings; images decoded "on the device"
(here by a Pillow decoder standing in for nvJPEG) are oriented, resized and cropped like
the host path, and one that nobody can decode fails alone."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipserve.errors import InvalidInputError
from clipserve.models.accel.batch import DeviceImages
from clipserve.models.accel.jpeg import EncodedJpeg, JpegRoute
from clipserve.models.devices import DeviceOptions
from clipserve.models.hf.core.torch_model import TorchDualEncoder
from clipserve.models.registry import load_model
from tests.models.clip_testkit import save_tiny_clip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TorchDualEncoder:
    model = load_model(str(save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))))
    assert isinstance(model, TorchDualEncoder)
    return model


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_uint8_pixels_on_the_device_give_the_host_embeddings(tiny, jpeg_photos) -> None:
    photos = list(jpeg_photos.values())
    host = tiny.encode_images(photos)
    identity = tiny.identity()
    tiny.use_device_options(DeviceOptions(device_preprocess=True))
    try:
        prepared = tiny.prepare_image(photos[0])
        assert prepared.dtype == np.uint8 and prepared.shape[-1] == 3  # a quarter the bytes
        on_device = tiny.encode_images(photos)
        assert tiny.identity() == identity  # same numbers, same cache keys
    finally:
        tiny.use_device_options(DeviceOptions())
    np.testing.assert_allclose(on_device, host, rtol=0, atol=1e-5)


def test_builtin_uint8_pixels_on_the_device_give_the_host_embeddings(
    builtin_model, jpeg_photos
) -> None:
    photos = list(jpeg_photos.values())
    host = builtin_model.encode_images(photos)
    builtin_model.use_device_options(DeviceOptions(device_preprocess=True))
    try:
        on_device = builtin_model.encode_images(photos)
    finally:
        builtin_model.use_device_options(DeviceOptions())
    np.testing.assert_allclose(on_device, host, rtol=0, atol=1e-5)


def pillow_decoder(files: Sequence[bytes]) -> list[torch.Tensor]:
    """Full-size RGB decode to [3, H, W] uint8 tensors, as nvJPEG returns them (no EXIF)."""
    decoded = []
    for data in files:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"))
        decoded.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
    return decoded


def _device_images(model: TorchDualEncoder) -> DeviceImages:
    preprocessor = model.preprocessor
    return DeviceImages(
        torch.device("cpu"),
        preprocessor.normalizer,
        preprocessor.plan,
        lambda image, exact: preprocessor.pixels(image, exact=exact),
        preprocessor.max_pixels,
        JpegRoute(True, 0),
        pillow_decoder,
    )


def _rotated_jpeg(array: np.ndarray, orientation: int) -> bytes:
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_device_decoded_jpegs_match_the_host_path(tiny, jpeg_photos, tmp_path: Path) -> None:
    images = _device_images(tiny)
    astronaut = np.asarray(Image.open(io.BytesIO(jpeg_photos["astronaut"])).convert("RGB"))
    wide = np.ascontiguousarray(astronaut[:300])  # not square: the crop matters
    sources = [jpeg_photos["china"], _rotated_jpeg(wide, 6), _rotated_jpeg(wide, 3)]
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, "PNG")
    sources.append(buffer.getvalue())  # a PNG is prepared on the host, in the same batch
    prepared = [images.prepare(source) for source in sources]
    assert [type(item).__name__ for item in prepared] == ["EncodedJpeg"] * 3 + ["ndarray"]
    device = images(images.collate(prepared))
    host = images(np.stack([tiny.preprocessor.pixels(source) for source in sources]))
    assert not device.failures and device.pixels.shape == host.pixels.shape
    # torch's antialiased bicubic against Pillow's: within a few levels of 255 on average
    difference = (device.pixels - host.pixels).abs() * 255 * 0.27  # std of ~0.27
    assert float(difference[:3].mean()) < 3.0
    assert float(difference[3].max()) == 0.0  # the PNG took the host path in both


def test_a_jpeg_nobody_can_decode_fails_alone(tiny, jpeg_photos) -> None:
    images = _device_images(tiny)
    good = jpeg_photos["chelsea"]
    truncated = good[: len(good) // 3]  # its header reads, its pixels do not
    prepared = [images.prepare(good), images.prepare(truncated), images.prepare(good)]
    assert isinstance(prepared[1], EncodedJpeg)
    batch = images(images.collate(prepared))
    assert list(batch.failures) == [1]
    assert isinstance(batch.failures[1], InvalidInputError)
    assert "truncated" in str(batch.failures[1]) or "corrupt" in str(batch.failures[1])
    assert torch.equal(batch.pixels[0], batch.pixels[2])


async def test_the_engine_answers_an_image_that_fails_in_the_forward_alone(
    tiny, jpeg_photos
) -> None:
    """A JPEG whose header reads but whose pixels do not reaches the forward pass (the device
    decodes it there); the model raises PartialBatchError and the engine gives that image
    its error and the others their embeddings."""
    from clipserve.engine import Engine, ImageItem

    good, other = jpeg_photos["chelsea"], jpeg_photos["china"]
    expected = tiny.encode_images([good, other])
    tiny._on_device = _device_images(tiny)  # nvJPEG's place, taken by the Pillow decoder
    try:
        items = [ImageItem(good), ImageItem(good[: len(good) // 3]), ImageItem(other)]
        async with Engine(tiny, max_batch_size=8, max_wait_ms=50) as engine:
            outcomes = await engine.encode(items)
    finally:
        tiny.use_device_options(DeviceOptions())
    assert isinstance(outcomes[1], InvalidInputError)
    cosines = _cosines(np.stack([outcomes[0], outcomes[2]]), expected)
    assert cosines.min() > 0.99, cosines
