"""The torch CLIP backend against transformers' own CLIPModel, on a tiny saved checkpoint."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from transformers import AutoTokenizer, CLIPModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from clipserve.models.hf.core.torch_model import TorchDualEncoder
from clipserve.models.hf.families.clip import FAMILY, clip_arch
from clipserve.models.registry import load_model
from tests.models.clip_testkit import save_tiny_clip

TEXTS = ["the cat", "a photo of the cat sitting on a mat", "", "of", "THE  Cat!!  \n 42"]


def photos() -> list[np.ndarray]:
    return [data.astronaut(), data.coffee(), data.chelsea(), data.camera()]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module", params=[False, True], ids=["eos-config", "legacy-eos-2"])
def tiny_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), legacy_eos=request.param)


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> TorchDualEncoder:
    loaded = load_model(str(tiny_dir))
    assert isinstance(loaded, TorchDualEncoder)
    return loaded


def test_text_embeddings_equal_transformers(model: TorchDualEncoder, tiny_dir: Path) -> None:
    reference = CLIPModel.from_pretrained(tiny_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    inputs = tokenizer(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        expected = reference.get_text_features(**inputs).pooler_output.numpy()
    ours = model.encode_texts(TEXTS)
    assert ours.shape == (len(TEXTS), 24) and ours.dtype == np.float32
    assert np.abs(ours - expected).max() <= 1e-5


def test_image_embeddings_equal_transformers(model: TorchDualEncoder, tiny_dir: Path) -> None:
    reference = CLIPModel.from_pretrained(tiny_dir).eval()
    processor = CLIPImageProcessorPil.from_pretrained(tiny_dir)
    images = photos()
    pil_images = [Image.fromarray(image).convert("RGB") for image in images]
    pixels = processor(images=pil_images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=pixels).pooler_output.numpy()
    model.exact_preprocess = True  # the reference's own pipeline (--exact-preprocess)
    try:
        from_bytes = model.encode_images([png_bytes(image) for image in images])
        from_arrays = model.encode_images(images)
    finally:
        model.exact_preprocess = False
    assert np.abs(from_bytes - expected).max() <= 1e-5
    assert np.abs(from_arrays - expected).max() <= 1e-5


def test_per_batch_padding_equals_fixed_77(model: TorchDualEncoder) -> None:
    short = model.tokenizer(TEXTS)
    fixed = model.tokenizer(TEXTS, pad_to=77)
    assert short.input_ids.shape[1] < 40 and fixed.input_ids.shape[1] == 77
    difference = np.abs(model.forward_texts(short) - model.forward_texts(fixed)).max()
    assert difference <= 1e-5
    # a text alone equals the same text inside a batch padded to a longer member
    alone = model.encode_texts(["of"])
    assert np.abs(alone[0] - model.encode_texts(TEXTS)[3]).max() <= 1e-5


def test_long_text_truncates_to_77_without_error(model: TorchDualEncoder) -> None:
    head = "the cat " * 60
    tokens = model.tokenizer([head + "of " * 300, head + "tail words that differ"])
    assert tokens.input_ids.shape == (2, 77)
    eos = model.tokenizer.pad_id
    assert (tokens.input_ids[:, -1] == eos).all()
    embeddings = model.forward_texts(tokens)
    assert np.isfinite(embeddings).all()
    # only the first 75 content tokens count, so texts that differ after them embed alike
    assert np.abs(embeddings[0] - embeddings[1]).max() <= 1e-5


@pytest.mark.slow
def test_random_full_size_vit_b_32() -> None:
    model = load_model("ViT-B-32::random")
    assert isinstance(model, TorchDualEncoder)
    config = model.model.config
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (768, 12)
    assert (config.vision_config.patch_size, config.vision_config.image_size) == (32, 224)
    assert (config.text_config.hidden_size, config.text_config.num_attention_heads) == (512, 8)
    assert model.dim == 512
    parameters = sum(p.numel() for p in model.model.parameters())
    assert 150e6 < parameters < 153e6  # ViT-B/32 CLIP has ~151M parameters
    texts = model.encode_texts(["a diagram", "a dog"])
    images = model.encode_images([data.astronaut()])
    assert texts.shape == (2, 512) and images.shape == (1, 512)


def test_random_weights_are_seeded() -> None:
    tiny = clip_arch((32, 1, 2, 64), (32, 1, 2), 16, 32, 16, "gelu")
    first = TorchDualEncoder.random(FAMILY, tiny, name="tiny::random")
    second = TorchDualEncoder.random(FAMILY, tiny, name="tiny::random")
    assert np.array_equal(first.encode_texts(TEXTS), second.encode_texts(TEXTS))
    other = TorchDualEncoder.random(FAMILY, tiny, name="tiny::random", seed=1)
    assert not np.allclose(first.encode_texts(TEXTS), other.encode_texts(TEXTS))
