"""CLIP image preprocessing against transformers' CLIPImageProcessor, and the tokenizer.

Tolerance: 1e-5 absolute on normalised pixels. Both resize with Pillow's bicubic filter on
uint8 pixels and crop at the same offsets, so the outputs agree to float32 rounding. These
photos are small, so the default path decodes them at full size too and equals the exact
one (``exact=True``, the reference); big photos are checked in test_fast_decode.py.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from skimage import data
from sklearn.datasets import load_sample_images
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from clipserve.errors import InvalidInputError
from clipserve.models.hf.core.images import ImagePreprocessor
from clipserve.models.hf.core.spec import ImageRule
from clipserve.models.hf.core.tokens import TextTokenizer, TokenBatch, text_tokenizer
from clipserve.models.hf.families.clip import FAMILY, byte_level_clip_tokenizer
from tests.models.clip_testkit import MERGES


def photos() -> list[np.ndarray]:
    """Real photos: square, landscape, portrait-ish, greyscale and a tiny crop."""
    return [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        np.ascontiguousarray(data.coffee()[:, :250]),
        *load_sample_images().images,
        data.camera(),
        data.astronaut()[:100, :150],
    ]


@pytest.mark.parametrize("size", [224, 336])
def test_matches_clip_image_processor(size: int) -> None:
    reference = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    ours = ImagePreprocessor(shortest_edge=size, crop=(size, size))
    for photo in photos():
        rgb = Image.fromarray(photo).convert("RGB")
        expected = reference(images=rgb, return_tensors="np")["pixel_values"][0]
        got = ours(photo, exact=True)
        assert got.shape == (3, size, size) and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-5
        assert np.array_equal(ours(photo), got)  # small: the default path is the reference


def test_reads_preprocessor_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    CLIPImageProcessorPil(
        size={"shortest_edge": 64}, crop_size={"height": 48, "width": 48}, image_mean=[0.5] * 3
    ).save_pretrained(tmp_path)
    loaded = ImagePreprocessor.from_directory(tmp_path, ImageRule(), 224)
    assert (loaded.shortest_edge, loaded.crop, loaded.mean) == (64, (48, 48), (0.5, 0.5, 0.5))
    missing = ImagePreprocessor.from_directory(tmp_path / "missing", ImageRule(), 224)
    assert missing == ImagePreprocessor()


def test_encoded_bytes_equal_arrays_and_bad_bytes_fail() -> None:
    preprocess = ImagePreprocessor()
    photo = data.chelsea()
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    assert np.array_equal(preprocess(buffer.getvalue()), preprocess(photo))
    with pytest.raises(InvalidInputError):
        preprocess(b"\x89PNG\r\n\x1a\n truncated")


def test_preprocessing_is_thread_safe() -> None:
    preprocess = ImagePreprocessor()
    images = photos()
    sequential = [preprocess(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(preprocess, images * 3))
    for index, result in enumerate(parallel):
        assert np.array_equal(result, sequential[index % len(images)])


def clip_tokenizer() -> TextTokenizer:
    return text_tokenizer(byte_level_clip_tokenizer(MERGES), FAMILY.text)


def test_tokenizer_pads_per_batch_and_truncates() -> None:
    tokenizer = clip_tokenizer()
    batch = tokenizer(["the cat", "of"])
    assert isinstance(batch, TokenBatch) and batch.input_ids.dtype == np.int64
    # the merges make "the</w>", "cat</w>" and "of</w>" single tokens between <bos> and <eos>
    assert batch.input_ids.shape == (2, 4)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch.input_ids[1, 3] == tokenizer.pad_id
    long = tokenizer(["word " * 500])
    assert long.input_ids.shape == (1, 77) and long.input_ids[0, -1] == tokenizer.pad_id
    assert tokenizer(["x"], pad_to=77).input_ids.shape == (1, 77)
    with pytest.raises(TypeError):
        tokenizer("not a list")  # type: ignore[arg-type]


def test_tokenizer_is_thread_safe() -> None:
    tokenizer = clip_tokenizer()
    batches = [[f"the cat {i} " * (i % 30), "of"] for i in range(200)]
    sequential = [tokenizer(batch).input_ids for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda batch: tokenizer(batch).input_ids, batches))
    assert all(np.array_equal(a, b) for a, b in zip(sequential, parallel, strict=True))
