"""The built-in model's memory measures do not change its embeddings.

Images go through the image tower in passes of at most ``IMAGE_CHUNK`` images, and the text
tower's GELU runs on torch's native kernel instead of oneDNN (both keep oneDNN's per-shape
state bounded, see docs/builtin-model.md). Here, on real photos and sentences of several
lengths: chunked == one whole-batch pass, and native GELU == oneDNN GELU, to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from sklearn.datasets import load_sample_images
from transformers.activations import ACT2FN

from clipserve.models.builtin.model import IMAGE_CHUNK, BuiltinModel
from clipserve.models.builtin.text import NativeGelu

pytestmark = pytest.mark.timeout(900)
TOLERANCE = 1e-5

SENTENCES = [
    "a cat",
    "a photo of a cat sleeping on a red sofa",
    "two people riding bicycles along a river at sunset, with a city skyline behind them "
    "and a few boats on the water",
    " ".join(["a long caption that goes on"] * 60),  # past the 256-token truncation
]


@pytest.fixture(scope="module")
def model(builtin_model: BuiltinModel) -> BuiltinModel:
    return builtin_model


@pytest.fixture(scope="module")
def pixels(model: BuiltinModel) -> np.ndarray:
    """Seven real photos of different sizes and shapes (greyscale included), prepared."""
    china, flower = load_sample_images().images
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
              skimage.data.camera(), skimage.data.rocket(), china, flower]  # fmt: skip
    return np.stack([model.prepare_image(photo) for photo in photos])


def test_image_chunks_equal_one_whole_batch_pass(model: BuiltinModel, pixels: np.ndarray) -> None:
    assert len(pixels) > IMAGE_CHUNK  # several passes, and a short last one
    chunked = model.forward_images(pixels)
    with torch.inference_mode():  # the whole batch through the tower at once, as before
        whole = model._image_vectors(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(chunked, whole, atol=TOLERANCE)
    assert np.allclose(np.linalg.norm(chunked, axis=1), 1.0, atol=1e-5)


def test_an_image_embeds_the_same_alone_or_in_any_batch(
    model: BuiltinModel, pixels: np.ndarray
) -> None:
    alone = np.concatenate([model.forward_images(pixels[i : i + 1]) for i in range(len(pixels))])
    for start in range(3):  # each photo at other positions within its pass
        batch = np.concatenate([pixels[start:], pixels[:start]])
        rolled = np.roll(alone, -start, axis=0)
        np.testing.assert_allclose(model.forward_images(batch), rolled, atol=TOLERANCE)


def test_native_gelu_is_the_same_function() -> None:
    gelu = NativeGelu()
    for shape in [(3, 7, 1536), (1, 1, 1536), (32, 256, 64), (5,)]:
        x = torch.randn(shape) * 4
        np.testing.assert_allclose(gelu(x), torch.nn.functional.gelu(x), atol=1e-5)


def test_native_gelu_leaves_text_embeddings_unchanged(model: BuiltinModel) -> None:
    layers = model._text._model.encoder.layer
    assert all(isinstance(layer.intermediate.intermediate_act_fn, NativeGelu) for layer in layers)
    native = model.encode_texts(SENTENCES)
    native_alone = np.concatenate([model.encode_texts([s]) for s in SENTENCES])
    try:
        for layer in layers:  # the model as loaded: GELU through oneDNN
            layer.intermediate.intermediate_act_fn = ACT2FN["gelu"]
        stock = model.encode_texts(SENTENCES)
    finally:
        for layer in layers:
            layer.intermediate.intermediate_act_fn = NativeGelu()
    np.testing.assert_allclose(native, stock, atol=TOLERANCE)
    np.testing.assert_allclose(native_alone, stock, atol=TOLERANCE)  # padding changes nothing


def test_warmup_runs_every_image_pass_shape(model: BuiltinModel) -> None:
    shapes: list[int] = []
    handle = model._vision.register_forward_pre_hook(lambda _, args: shapes.append(len(args[0])))
    try:
        model.warmup()
    finally:
        handle.remove()
    assert sorted(set(shapes)) == [2 * size for size in range(1, IMAGE_CHUNK + 1)]  # 2 views
