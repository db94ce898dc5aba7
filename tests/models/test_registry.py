"""Model names, dims, the hub cache lookup and the offline error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from clipserve.errors import ModelUnavailableError
from clipserve.models.hashing import HashModel
from clipserve.models.hf.core.torch_model import TorchDualEncoder
from clipserve.models.registry import (
    DEFAULT_MODEL,
    PRETRAINED,
    ModelInfo,
    known_names,
    list_models,
    load_model,
)
from tests.models.clip_testkit import save_tiny_clip

EXPECTED_DIMS = {
    "ViT-B-32::openai": 512,
    "ViT-B-16::openai": 512,
    "ViT-L-14::openai": 768,
    "ViT-L-14-336::openai": 768,
    "ViT-B-32::laion2b_s34b_b79k": 512,
    "ViT-L-14::laion2b_s32b_b82k": 768,
    "ViT-H-14::laion2b_s32b_b79k": 1024,
}


def test_list_models_names_dims_and_locality(tmp_path: Path) -> None:
    infos = {info.name: info for info in list_models(cache_dir=tmp_path)}
    assert all(isinstance(info, ModelInfo) for info in infos.values())
    for name, dim in EXPECTED_DIMS.items():
        assert infos[name].dim == dim
        assert infos[name].local is False  # empty cache, no network
        assert PRETRAINED[name] in infos[name].description
    assert infos["ViT-B-32::random"].dim == 512 and infos["ViT-B-32::random"].local
    assert infos["ViT-H-14::random"].dim == 1024
    assert infos[DEFAULT_MODEL].local and infos[DEFAULT_MODEL].dim == 384
    assert infos["hash"].local and infos["hash"].dim == 512


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as caught:
        load_model("ViT-Q-99::nowhere")
    message = str(caught.value)
    assert "ViT-Q-99::nowhere" in message
    for name in ("ViT-B-32::openai", "ViT-H-14::laion2b_s32b_b79k", "builtin", "hash"):
        assert name in message
    assert set(PRETRAINED) <= set(known_names())


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend"):
        load_model("hash", backend="tensorflow")


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE=1", "no-env"])
def test_missing_weights_fail_fast_naming_model_and_cache(
    offline: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelUnavailableError) as caught:  # the connection probe is bounded
        load_model("ViT-B-32::openai", cache_dir=tmp_path)
    message = str(caught.value)
    assert "ViT-B-32::openai" in message and "openai/clip-vit-base-patch32" in message
    assert str(tmp_path / "hub") in message
    assert "builtin" in message and "local directory" in message


def test_name_loads_from_a_populated_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint placed in the hub cache layout loads by its CLIP-as-service name."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = save_tiny_clip(tmp_path / "source")
    repo = tmp_path / "hub" / "models--openai--clip-vit-base-patch32"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    infos = {info.name: info for info in list_models(cache_dir=tmp_path)}
    assert infos["ViT-B-32::openai"].local
    model = load_model("ViT-B-32::openai", cache_dir=tmp_path)
    assert isinstance(model, TorchDualEncoder) and model.name == "ViT-B-32::openai"
    direct = load_model(str(source))
    assert np.array_equal(model.encode_texts(["the cat"]), direct.encode_texts(["the cat"]))


def test_hash_names() -> None:
    assert isinstance(load_model("hash"), HashModel) and load_model("hash").dim == 512
    assert load_model("hash::64").dim == 64
    with pytest.raises(ValueError):
        load_model("hash::wide")


def test_default_is_the_builtin_model() -> None:
    builtin = pytest.importorskip("clipserve.models.builtin.model")
    model = load_model(None)
    assert isinstance(model, builtin.BuiltinModel)
    assert model.dim == 384
