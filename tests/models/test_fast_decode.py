"""Big photos decode straight to near the model's size, and embed as the full decode does.

The agreement bar is the issue's: cosine >= 0.999 between the fast path and the exact one
(full decode, reference resize) on real photos scaled up to 12 MP. The full table over
every packaged photo is benchmarks/bench_decode_agreement.py's.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipserve.models.base import EmbeddingModel
from clipserve.models.hf.core.images import ImagePreprocessor
from clipserve.models.images import decode_image
from tests.photos import encode, source_photos, upscaled

#: the packaged photos whose fast-path embeddings moved most in the agreement benchmark
HARDEST = ("rocket", "chelsea", "retina")


@pytest.fixture(scope="module")
def twelve_mp() -> dict[str, bytes]:
    photos = dict(source_photos())
    return {name: encode(upscaled(photos[name], 12.0)) for name in HARDEST}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def embeddings_both_ways(model: EmbeddingModel, files: list[bytes]) -> list[float]:
    outputs = []
    for exact in (True, False):
        model.exact_preprocess = exact
        try:
            outputs.append(model.encode_images(files))
        finally:
            model.exact_preprocess = False
    return [cosine(a, b) for a, b in zip(*outputs, strict=True)]


def test_a_big_jpeg_decodes_at_a_reduced_scale(twelve_mp: dict[str, bytes]) -> None:
    data = twelve_mp["rocket"]
    full = decode_image(data)
    fast = decode_image(data, min_side=448)
    assert min(full.size) > 2800 and fast.mode == "RGB"
    assert 448 <= min(fast.size) < 2 * 448  # 1/4 scale in the DCT: 1061x708
    assert fast.width / fast.height == pytest.approx(full.width / full.height, rel=0.005)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_other_formats_are_box_reduced(fmt: str) -> None:
    image = upscaled(dict(source_photos())["coffee"], 3.0, grain=0)  # 2121x1414
    data = encode(image, fmt)
    fast = decode_image(data, min_side=448)
    assert fast.size == (707, 472)  # reduce(3): the largest whole factor keeping >= 448
    reference = np.asarray(decode_image(data).reduce(3), dtype=np.int16)
    assert np.array_equal(np.asarray(fast, dtype=np.int16), reference)


def test_small_images_decode_exactly(jpeg_photos: dict[str, bytes]) -> None:
    for data in jpeg_photos.values():  # 300-640 pixels: nothing to shrink at 448
        assert np.array_equal(
            np.asarray(decode_image(data, min_side=448)), np.asarray(decode_image(data))
        )


def test_exif_rotation_survives_the_reduced_decode() -> None:
    image = upscaled(dict(source_photos())["coffee"], 3.0, grain=0)  # landscape, 2121x1414
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    full = decode_image(buffer.getvalue())
    fast = decode_image(buffer.getvalue(), min_side=300)
    assert full.size == (1414, 2121) and fast.size == (354, 531)  # portrait, 1/4 scale
    shrunk = np.asarray(full.resize(fast.size, Image.Resampling.BOX), dtype=np.int16)
    # the DCT's scaling is not quite a box filter (~4 levels apart on average); a mirrored or
    # unrotated picture would be ~40 apart
    assert np.abs(np.asarray(fast, dtype=np.int16) - shrunk).mean() < 6


def test_alpha_palette_and_array_inputs_shrink_too() -> None:
    base = upscaled(dict(source_photos())["chelsea"], 2.0, grain=0)  # 1733x1154
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE)
    array = np.asarray(base)
    for source in (encode(rgba, "PNG"), encode(palette, "GIF"), array):
        full, fast = decode_image(source), decode_image(source, min_side=400)
        assert fast.mode == "RGB" and fast.size == (867, 577)  # reduce(2)
        shrunk = np.asarray(full.reduce(2), dtype=np.int16)
        assert np.abs(np.asarray(fast, dtype=np.int16) - shrunk).max() <= 2


def test_builtin_fast_path_agrees_with_the_full_decode(
    builtin_model: EmbeddingModel, twelve_mp: dict[str, bytes]
) -> None:
    agreement = embeddings_both_ways(builtin_model, list(twelve_mp.values()))
    assert min(agreement) >= 0.999, agreement


def test_clip_fast_path_agrees_with_the_full_decode(twelve_mp: dict[str, bytes]) -> None:
    from clipserve.models.registry import load_model

    model = load_model("ViT-B-32::random")
    agreement = embeddings_both_ways(model, list(twelve_mp.values()))
    assert min(agreement) >= 0.999, agreement
    # random weights map every photo near every other: check the pixels the model sees too
    preprocessor = ImagePreprocessor()
    for data in twelve_mp.values():
        difference = np.abs(preprocessor(data) - preprocessor(data, exact=True))
        assert difference.mean() < 0.02  # ~1.4 levels of 255 on average
