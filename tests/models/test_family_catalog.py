"""Family names and architectures: the published names map to their repos, every
``ARCH::random`` builds with its listed dimension, stand-in tokenizers keep the real
layout, names load from a populated hub cache, and directories are told apart."""

from __future__ import annotations

import json
import shutil
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from skimage import data

from clipserve.errors import ModelUnavailableError
from clipserve.models.hf.catalog import FAMILIES, detect, entries, find
from clipserve.models.hf.core.spec import Family
from clipserve.models.hf.core.torch_model import TorchDualEncoder
from clipserve.models.registry import list_models, load_model
from clipserve.models.scoring import SIGMOID, SOFTMAX
from tests.models.family_testkit import SAVERS

REQUIRED = {
    "ViT-B-16-SigLIP::webli": ("SigLIP", "google/siglip-base-patch16-224", 768),
    "ViT-SO400M-14-SigLIP-384::webli": ("SigLIP", "google/siglip-so400m-patch14-384", 1152),
    "ViT-B-16-SigLIP2::webli": ("SigLIP 2", "google/siglip2-base-patch16-224", 768),
    "ViT-SO400M-14-SigLIP2-378::webli": ("SigLIP 2", "google/siglip2-so400m-patch14-384", 1152),
    "ViT-L-16-SigLIP2-256::webli": ("SigLIP 2", "google/siglip2-large-patch16-256", 1024),
    "ViT-B-16-SigLIP2-NaFlex::webli": (
        "SigLIP 2 NaFlex", "google/siglip2-base-patch16-naflex", 768
    ),
    "ViT-H-14-quickgelu-worldwide::metaclip2_worldwide": (
        "MetaCLIP 2", "facebook/metaclip-2-worldwide-huge-quickgelu", 1024
    ),
    "CN-CLIP/ViT-B-16": ("Chinese-CLIP", "OFA-Sys/chinese-clip-vit-base-patch16", 512),
    "AltCLIP-m9/ViT-L-14": ("AltCLIP", "BAAI/AltCLIP-m9", 768),
}  # fmt: skip
TEXTS = ["a photo of a cat", "", "一只猫"]


def test_published_names_map_to_their_repos(tmp_path: Path) -> None:
    for name, (label, repo, dim) in REQUIRED.items():
        entry = find(name)
        assert entry is not None, name
        assert (entry.family.label, entry.repo, entry.dim) == (label, repo, dim)
    infos = {info.name: info for info in list_models(cache_dir=tmp_path)}
    assert {family.label for family in FAMILIES} <= {info.family for info in infos.values()}
    for entry in entries():
        info = infos[entry.name]
        assert (info.dim, info.family, info.languages) == (
            entry.dim, entry.family.label, entry.languages
        )  # fmt: skip
        assert info.local == (entry.repo is None)  # an empty cache: only random is local


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.key)
def test_every_architecture_builds_with_its_listed_dim(family: Family) -> None:
    """Full-size models on the meta device: shapes without memory or time."""
    for arch, kwargs in family.architectures.items():
        assert find(f"{arch}::random") is not None
        with torch.device("meta"):
            model = family.model_type_class()(family.config(kwargs))
        ids = torch.zeros((2, family.text.context_length), dtype=torch.long, device="meta")
        texts = model.get_text_features(input_ids=ids).pooler_output
        if family.image.patches:  # NaFlex checks its grid with .item(): no meta forward
            images = torch.zeros((2, model.config.vision_config.hidden_size))
        else:
            size = model.config.vision_config.image_size
            pixels = torch.zeros((2, 3, size, size), device="meta")
            images = model.get_image_features(pixel_values=pixels).pooler_output
        assert tuple(texts.shape) == tuple(images.shape) == (2, family.dim_of(arch)), arch


def shrunk(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The architecture at a few layers and small widths (same vocabulary and layout)."""
    small = deepcopy(kwargs)
    for tower in ("text_config", "vision_config"):
        small[tower].update(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        )
    small["vision_config"].update(patch_size=16)
    if "num_patches" in small["vision_config"]:  # NaFlex: a patch budget, no image size
        small["vision_config"]["num_patches"] = 16
    else:
        small["vision_config"]["image_size"] = 32
    small["text_config"].update(vocab_size=min(small["text_config"]["vocab_size"], 2048))
    if "projection_dim" in small:
        small["projection_dim"] = 16
    if "project_dim" in small["text_config"]:
        small["text_config"]["project_dim"] = 16
    return small


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.key)
def test_random_weights_and_stand_in_tokenizer(family: Family) -> None:
    arch = next(iter(family.architectures))
    tiny = shrunk(family.architectures[arch])
    first = TorchDualEncoder.random(family, tiny, name=f"{arch}::random")
    again = TorchDualEncoder.random(family, tiny, name=f"{arch}::random")
    other = TorchDualEncoder.random(family, tiny, name=f"{arch}::random", seed=1)
    texts = first.encode_texts(TEXTS)
    assert texts.shape == (3, first.dim) and np.isfinite(texts).all()
    assert np.array_equal(texts, again.encode_texts(TEXTS))
    assert not np.allclose(texts, other.encode_texts(TEXTS))
    assert first.encode_images([data.astronaut()]).shape == (1, first.dim)
    assert first.score_rule.kind == family.scoring
    # the stand-in wraps texts as the real tokenizer does, at the config's special ids
    tokens = first.prepare_texts(["ab"])
    ids = tokens.input_ids[0][tokens.attention_mask[0] == 1].tolist()
    config = first.model.config.text_config
    assert len(ids) == 2 + (ids[0] == config.bos_token_id) + (ids[-1] == config.eos_token_id)
    if family.text.fixed_length:
        assert tokens.input_ids.shape == (1, 64)
    else:
        assert tokens.input_ids.shape == (1, len(ids))
    vocab = config.vocab_size
    assert first.prepare_texts(["日本語 " * 40]).input_ids.max() < vocab


@pytest.mark.slow
def test_full_size_siglip_random_by_name() -> None:
    model = load_model("ViT-B-16-SigLIP::random")
    assert isinstance(model, TorchDualEncoder) and model.family == "SigLIP"
    parameters = sum(p.numel() for p in model.model.parameters())
    assert 202e6 < parameters < 204e6  # SigLIP B/16 has ~203M parameters
    assert model.encode_texts(["a diagram"]).shape == (1, 768)
    assert model.encode_images([data.astronaut()]).shape == (1, 768)
    assert model.score_rule.kind == SIGMOID


def place_in_hub(source: Path, cache: Path, repo: str) -> None:
    """Copy a checkpoint into the hub cache layout, as a download would leave it."""
    folder = cache / "hub" / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(source, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("siglip", "ViT-B-16-SigLIP::webli"),
        ("siglip2", "ViT-B-16-SigLIP2::webli"),
        ("siglip2_naflex", "ViT-B-16-SigLIP2-NaFlex::webli"),
        ("metaclip2", "ViT-B-32-worldwide::metaclip2_worldwide"),
        ("chinese_clip", "CN-CLIP/ViT-B-16"),
        ("altclip", "AltCLIP/ViT-L-14"),
    ],
)
def test_names_load_from_a_populated_hub_cache(
    key: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = SAVERS[key](tmp_path / "source")
    entry = find(name)
    assert entry is not None and entry.repo is not None
    place_in_hub(source, tmp_path, entry.repo)
    assert {info.name: info for info in list_models(cache_dir=tmp_path)}[name].local
    model = load_model(name, cache_dir=tmp_path)
    assert model.name == name and model.family == entry.family.label
    assert model.score_rule.kind == (SIGMOID if key.startswith("siglip") else SOFTMAX)
    direct = load_model(str(source))
    assert np.array_equal(model.encode_texts(TEXTS), direct.encode_texts(TEXTS))


def test_directories_are_told_apart_by_config(tmp_path: Path) -> None:
    siglip = SAVERS["siglip"](tmp_path / "siglip")
    siglip2 = SAVERS["siglip2"](tmp_path / "siglip2")
    assert (detect(siglip).key, detect(siglip2).key) == ("siglip", "siglip2")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelUnavailableError, match="model_type 'bert'.*clipserve serves"):
        load_model(str(other))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailableError, match="cannot read .*config.json"):
        load_model(str(empty))
