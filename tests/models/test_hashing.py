"""The hash model: deterministic, unit-norm, input-sensitive, cheap."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from clipserve.errors import InvalidInputError
from clipserve.models.hashing import HashModel


def test_texts_are_deterministic_unit_vectors() -> None:
    model = HashModel()
    first = model.encode_texts(["a cat", "a dog", "a cat"])
    again = HashModel().encode_texts(["a cat"])
    assert first.shape == (3, 512) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first[0], first[2]) and np.array_equal(first[0], again[0])
    assert abs(float(first[0] @ first[1])) < 0.3  # unrelated inputs: near-orthogonal


def test_images_hash_bytes_and_arrays() -> None:
    model = HashModel(dim=64)
    photo = data.astronaut()
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    encoded = buffer.getvalue()
    vectors = model.encode_images([encoded, photo, photo.copy(), photo[:, :, :1]])
    assert vectors.shape == (4, 64)
    assert np.array_equal(vectors[1], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])  # bytes and array are different inputs
    assert not np.allclose(vectors[1], vectors[3])
    # the same text and image bytes do not collide
    assert not np.allclose(model.encode_texts(["x"])[0], model.encode_images([b"x"])[0])


def test_no_decoding_happens() -> None:
    model = HashModel()
    assert model.prepare_image(b"not an image at all").shape == (32,)
    with pytest.raises(InvalidInputError):
        model.prepare_image(b"")
    with pytest.raises(InvalidInputError):
        model.prepare_image("a string")  # type: ignore[arg-type]


def test_dim_is_checked() -> None:
    assert HashModel(8).name == "hash::8"
    with pytest.raises(ValueError):
        HashModel(0)


def test_a_row_never_depends_on_its_batch() -> None:
    model = HashModel()
    texts = [f"sentence number {i}" for i in range(97)]
    whole = model.encode_texts(texts)
    alone = np.stack([model.encode_texts([text])[0] for text in texts])
    shuffled = model.encode_texts(texts[::-1])[::-1]
    assert np.array_equal(whole, alone) and np.array_equal(whole, shuffled)
    assert len({row.tobytes() for row in whole}) == len(texts)


def test_sleep_model_is_the_hash_model_after_one_sleep_per_batch(monkeypatch) -> None:
    from clipserve.models import hashing
    from clipserve.models.registry import load_model

    slept: list[float] = []
    monkeypatch.setattr(hashing.time, "sleep", slept.append)
    model = load_model("sleep::20")
    assert model.name == "sleep::20" and model.dim == 512
    texts = [f"text {i}" for i in range(40)]
    assert np.array_equal(model.encode_texts(texts), HashModel().encode_texts(texts))
    assert np.array_equal(model.encode_images([b"png"]), HashModel().encode_images([b"png"]))
    assert slept == [0.02, 0.02]  # one sleep per forward batch, whatever its size
    model.warmup()
    assert slept == [0.02, 0.02]  # warming up a simulated accelerator costs nothing
    for bad in ("sleep::", "sleep::fast", "sleep::-1"):
        with pytest.raises(ValueError, match="sleep"):
            load_model(bad)
