"""ONNX export and onnxruntime backend against the torch backend, on a tiny checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from clipserve.models.hf.core.export import export_key, is_onnx_directory
from clipserve.models.hf.core.onnx_model import OnnxDualEncoder
from clipserve.models.hf.core.torch_model import TorchDualEncoder
from clipserve.models.registry import load_model
from tests.models.clip_testkit import save_tiny_clip

TEXTS = ["the cat", "a photo of the cat sitting on a mat", "", "of " * 200]


@pytest.fixture(scope="module", params=[True, False], ids=["legacy-eos-2", "eos-config"])
def tiny_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # legacy (eos_token_id 2, pool at the largest id) is what the OpenAI checkpoints use
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), legacy_eos=request.param)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clipserve-cache")


@pytest.fixture(scope="module")
def pair(tiny_dir: Path, cache_dir: Path) -> tuple[TorchDualEncoder, OnnxDualEncoder]:
    torch_model = load_model(str(tiny_dir))
    onnx_model = load_model(str(tiny_dir), backend="onnx", cache_dir=cache_dir)
    assert isinstance(torch_model, TorchDualEncoder) and isinstance(onnx_model, OnnxDualEncoder)
    return torch_model, onnx_model


def test_texts_match_torch(pair: tuple[TorchDualEncoder, OnnxDualEncoder]) -> None:
    torch_model, onnx_model = pair
    for batch in (TEXTS, TEXTS[:1], TEXTS[:3]):  # varied batch sizes and sequence lengths
        expected = torch_model.encode_texts(batch)
        got = onnx_model.encode_texts(batch)
        assert got.shape == expected.shape == (len(batch), 24)
        assert np.abs(got - expected).max() <= 1e-4
    # the exported graph is also exact under padding to 77
    fixed = onnx_model.forward_texts(onnx_model.tokenizer(TEXTS, pad_to=77))
    assert np.abs(fixed - torch_model.encode_texts(TEXTS)).max() <= 1e-4


def test_images_match_torch(pair: tuple[TorchDualEncoder, OnnxDualEncoder]) -> None:
    torch_model, onnx_model = pair
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    for batch in (photos, photos[:1]):
        expected = torch_model.encode_images(batch)
        got = onnx_model.encode_images(batch)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4


def test_export_is_cached_and_loads_by_path(
    pair: tuple[TorchDualEncoder, OnnxDualEncoder], tiny_dir: Path, cache_dir: Path
) -> None:
    _, onnx_model = pair
    exported = onnx_model.directory
    assert exported.parent == cache_dir / "onnx" and is_onnx_directory(exported)
    stamp = os.stat(exported / "vision.onnx").st_mtime_ns
    again = load_model(str(tiny_dir), backend="onnx", cache_dir=cache_dir)
    assert isinstance(again, OnnxDualEncoder) and again.directory == exported
    assert os.stat(exported / "vision.onnx").st_mtime_ns == stamp  # not exported twice
    by_path = load_model(str(exported), backend="onnx")
    assert isinstance(by_path, OnnxDualEncoder) and by_path.dim == 24
    assert np.array_equal(by_path.encode_texts(TEXTS), onnx_model.encode_texts(TEXTS))


def test_changed_weights_get_a_new_cache_key(
    pair: tuple[TorchDualEncoder, OnnxDualEncoder], tiny_dir: Path, tmp_path: Path
) -> None:
    torch_model, onnx_model = pair
    assert onnx_model.directory.name == export_key(torch_model)
    other = load_model(str(save_tiny_clip(tmp_path / "other", seed=99)))
    renamed = load_model(str(tiny_dir))
    renamed.name = "another-name"
    keys = {export_key(torch_model), export_key(other), export_key(renamed)}
    assert len(keys) == 3


def test_thread_setting_is_validated(
    pair: tuple[TorchDualEncoder, OnnxDualEncoder], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, onnx_model = pair
    monkeypatch.setenv("CLIPSERVE_THREADS", "1")
    single = OnnxDualEncoder.from_directory(onnx_model.directory)
    assert np.abs(single.encode_texts(TEXTS) - onnx_model.encode_texts(TEXTS)).max() <= 1e-6
    monkeypatch.setenv("CLIPSERVE_THREADS", "many")
    with pytest.raises(ValueError, match="CLIPSERVE_THREADS"):
        OnnxDualEncoder.from_directory(onnx_model.directory)
