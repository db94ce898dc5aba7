"""Every dual-encoder family against transformers' own model, on a tiny random checkpoint
saved to a temp dir and loaded back by path: token ids, text and image embeddings and rank
scores equal the reference to 1e-4; the onnx backend equals torch to 1e-4 in float32; int8
and bf16 stay close. Models here preprocess exactly as the reference (``exact_preprocess``);
the default fast decode of big photos is checked against it at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from clipserve.models.hf.catalog import FAMILIES
from clipserve.models.hf.core.images import ImagePreprocessor
from clipserve.models.hf.core.onnx_model import OnnxDualEncoder
from clipserve.models.hf.core.spec import Family
from clipserve.models.hf.core.torch_model import TorchDualEncoder
from clipserve.models.registry import load_model
from clipserve.models.scoring import SIGMOID
from tests.models.family_testkit import FAMILY_KEYS, SAVERS
from tests.photos import encode, source_photos, upscaled

TEXTS = [
    "a photo of a cat",
    "Two DOGS, playing in the snow!",
    "",
    "一只猫的照片",
    "un chat   une photo",
    "the quick brown fox jumps over the lazy dog " * 12,  # past every context length
]
PHOTOS = [data.astronaut(), data.coffee(), data.chelsea()[:200, :120], data.camera()]


@dataclass
class Case:
    family: Family
    directory: Path
    torch: TorchDualEncoder
    onnx: OnnxDualEncoder
    reference: Any
    hf_tokenizer: Any
    processor: Any


def family_by_key(key: str) -> Family:
    return next(family for family in FAMILIES if family.key == key)


def image_processor(key: str, directory: Path) -> Any:
    """transformers' own (PIL) image processor of the family, read from the checkpoint."""
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import (
        ChineseCLIPImageProcessorPil,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil,
    )

    classes = {"siglip": SiglipImageProcessorPil, "siglip2": SiglipImageProcessorPil}
    classes["siglip2_naflex"] = Siglip2ImageProcessorPil
    classes["chinese_clip"] = ChineseCLIPImageProcessorPil
    return classes.get(key, CLIPImageProcessorPil).from_pretrained(directory)


def reference_tokenizer(key: str, directory: Path) -> Any:
    """transformers' tokenizer for the family: SigLIP 2's is its own lowercasing class."""
    from transformers import AutoTokenizer
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    if key.startswith("siglip2"):
        return Siglip2Tokenizer.from_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clipserve-cache")


@pytest.fixture(scope="module", params=FAMILY_KEYS)
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         cache_dir: Path) -> Case:  # fmt: skip
    key = request.param
    family = family_by_key(key)
    directory = SAVERS[key](tmp_path_factory.mktemp(key) / "checkpoint")
    torch_model = load_model(str(directory))
    onnx_model = load_model(str(directory), backend="onnx", cache_dir=cache_dir)
    assert isinstance(torch_model, TorchDualEncoder) and isinstance(onnx_model, OnnxDualEncoder)
    torch_model.exact_preprocess = onnx_model.exact_preprocess = True  # the reference's path
    reference = family.model_type_class().from_pretrained(directory).eval()
    return Case(
        family, directory, torch_model, onnx_model, reference,
        reference_tokenizer(key, directory), image_processor(key, directory),
    )  # fmt: skip


def reference_inputs(case: Case, texts: list[str]) -> dict[str, torch.Tensor]:
    """Token ids as transformers makes them under the family's rule."""
    rule = case.family.text
    encoded = case.hf_tokenizer(
        texts,
        padding="max_length" if rule.fixed_length else "longest",
        truncation=True,
        max_length=rule.context_length,
        return_tensors="pt",
    )
    inputs = {"input_ids": encoded["input_ids"]}
    if rule.feed_mask:
        inputs["attention_mask"] = encoded["attention_mask"]
    return inputs


def reference_pixels(case: Case, photos: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """The vision tower's inputs as transformers' image processor makes them."""
    rgb = [Image.fromarray(photo).convert("RGB") for photo in photos]
    return dict(case.processor(images=rgb, return_tensors="pt"))


def test_loads_by_path_as_its_family(case: Case) -> None:
    for model in (case.torch, case.onnx):
        assert model.family == case.family.label
        assert model.languages == case.family.languages
        assert model.score_rule.kind == case.family.scoring
    assert case.onnx.dim == case.torch.dim


def test_token_ids_equal_transformers(case: Case) -> None:
    ours = case.torch.prepare_texts(TEXTS)
    expected = reference_inputs(case, TEXTS)["input_ids"].numpy()
    assert ours.input_ids.shape == expected.shape
    np.testing.assert_array_equal(ours.input_ids, expected)
    np.testing.assert_array_equal(case.onnx.prepare_texts(TEXTS).input_ids, expected)


def test_text_embeddings_equal_transformers(case: Case) -> None:
    with torch.no_grad():
        expected = case.reference.get_text_features(**reference_inputs(case, TEXTS))
    expected = expected.pooler_output.numpy()
    ours = case.torch.encode_texts(TEXTS)
    assert ours.shape == (len(TEXTS), case.torch.dim) and ours.dtype == np.float32
    assert np.abs(ours - expected).max() <= 1e-4


def test_image_embeddings_equal_transformers(case: Case) -> None:
    pixels = reference_pixels(case, PHOTOS)
    stacked = np.stack([case.torch.prepare_image(photo) for photo in PHOTOS])
    ours = case.torch.preprocessor.model_inputs(stacked)
    assert set(ours) == set(pixels)
    for name, array in ours.items():
        assert np.abs(array - pixels[name].numpy()).max() <= 1e-5, name
    with torch.no_grad():
        expected = case.reference.get_image_features(**pixels).pooler_output.numpy()
    assert np.abs(case.torch.encode_images(PHOTOS) - expected).max() <= 1e-4


def test_rank_scores_equal_transformers(case: Case) -> None:
    """clip_score for one image against the texts, by the model's own rule."""
    inputs = reference_inputs(case, TEXTS)
    with torch.no_grad():
        output = case.reference(**reference_pixels(case, PHOTOS[:1]), **inputs)
    logits = output.logits_per_image[0].double()
    is_sigmoid = case.family.scoring == SIGMOID
    expected = (torch.sigmoid(logits) if is_sigmoid else torch.softmax(logits, 0)).numpy()
    for model in (case.torch, case.onnx):
        image = model.encode_images(PHOTOS[:1])[0]
        texts = model.encode_texts(TEXTS)
        cosines = texts @ image / (np.linalg.norm(texts, axis=1) * np.linalg.norm(image))
        assert np.abs(model.score_rule.scores(cosines) - expected).max() <= 1e-4
    if not is_sigmoid:
        assert expected.sum() == pytest.approx(1.0)


def test_onnx_equals_torch_in_float32(case: Case) -> None:
    for texts in (TEXTS, TEXTS[:1], TEXTS[2:4]):  # varied batch sizes and lengths
        difference = np.abs(case.onnx.encode_texts(texts) - case.torch.encode_texts(texts))
        assert difference.max() <= 1e-4
    difference = np.abs(case.onnx.encode_images(PHOTOS) - case.torch.encode_images(PHOTOS))
    assert difference.max() <= 1e-4


def test_padding_rule(case: Case) -> None:
    """Per-batch padding where it is exact; SigLIP's fixed 64 where the tower reads it."""
    model, rule = case.torch, case.family.text
    tokens = model.prepare_texts(TEXTS[:2])
    if rule.fixed_length:
        assert tokens.input_ids.shape[1] == rule.context_length == 64
        # what per-batch padding would give differs: the padding is part of the input
        shortest = int(tokens.attention_mask.sum(axis=1).max())
        trimmed = model.tokenizer(TEXTS[:2])
        keep = slice(-shortest, None) if model.tokenizer.pad_left else slice(0, shortest)
        short_ids = torch.from_numpy(trimmed.input_ids[:, keep])
        with torch.no_grad():
            unpadded = case.reference.get_text_features(input_ids=short_ids).pooler_output
        assert np.abs(unpadded.numpy() - model.forward_texts(tokens)).max() > 1e-3
        return
    assert tokens.input_ids.shape[1] < rule.context_length
    padded = model.tokenizer(TEXTS[:2], pad_to=rule.context_length)
    for backend in (case.torch, case.onnx):
        difference = backend.forward_texts(tokens) - backend.forward_texts(padded)
        assert np.abs(difference).max() <= 1e-5
    alone = model.encode_texts([TEXTS[0]])[0]
    assert np.abs(alone - model.encode_texts(TEXTS)[0]).max() <= 1e-5


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_int8_stays_close_to_float(case: Case, cache_dir: Path) -> None:
    int8 = load_model(str(case.directory), backend="onnx", cache_dir=cache_dir, precision="int8")
    assert isinstance(int8, OnnxDualEncoder) and int8.precision == "int8"
    int8.exact_preprocess = True
    assert cosines(case.onnx.encode_texts(TEXTS), int8.encode_texts(TEXTS)).min() >= 0.98
    assert cosines(case.onnx.encode_images(PHOTOS), int8.encode_images(PHOTOS)).min() >= 0.98
    assert int8.score_rule == case.onnx.score_rule


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bf16 instructions"
)
def test_bf16_stays_close_to_float(case: Case) -> None:
    bf16 = load_model(str(case.directory), precision="bf16")
    bf16.exact_preprocess = True
    assert {parameter.dtype for parameter in bf16.model.parameters()} == {torch.bfloat16}
    assert cosines(case.torch.encode_texts(TEXTS), bf16.encode_texts(TEXTS)).min() >= 0.99
    assert cosines(case.torch.encode_images(PHOTOS), bf16.encode_images(PHOTOS)).min() >= 0.99


def test_fast_decode_of_big_photos_stays_close(case: Case) -> None:
    """The default path decodes big photos reduced (``models.images``): at the family's
    layout and a real input size (224), the pixels stay within about 1.4 levels of 255 of
    the full decode on average, as for CLIP in test_fast_decode.py. NaFlex always decodes
    at full size (its grid follows the photo's aspect ratio)."""
    data = encode(upscaled(dict(source_photos())["chelsea"], 12.0))
    if case.family.image.patches:
        fast = load_model(str(case.directory))
        assert np.array_equal(fast.prepare_image(data), case.torch.prepare_image(data))
        return
    preprocess = ImagePreprocessor.for_rule(case.family.image, 224)
    difference = np.abs(preprocess(data) - preprocess(data, exact=True))
    assert difference.mean() < 0.02
