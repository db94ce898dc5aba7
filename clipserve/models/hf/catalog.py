"""The dual-encoder families clipserve knows, their names, and loading by name or path.

Names are CLIP-as-service's ``ARCH::PRETRAINED`` (``ViT-B-16-SigLIP::webli``; Chinese-CLIP
and AltCLIP go by ``CN-CLIP/ViT-B-16`` and ``AltCLIP/ViT-L-14``), and ``ARCH::random`` for
any architecture (seeded random weights, the family's stand-in tokenizer, no download). A
local checkpoint directory is told apart by ``model_type`` in its ``config.json`` (and, for
SigLIP and SigLIP 2 FixRes, which share it, by the tokenizer class).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipserve.errors import ModelUnavailableError
from clipserve.models.base import EmbeddingModel
from clipserve.models.hf.core.spec import Family
from clipserve.models.hf.families import altclip, chinese_clip, clip, metaclip2, siglip
from clipserve.models.precision import FLOAT

RANDOM_WEIGHTS = "random"
FAMILIES: tuple[Family, ...] = (
    clip.FAMILY,
    siglip.SIGLIP,
    siglip.SIGLIP2,
    siglip.SIGLIP2_NAFLEX,
    metaclip2.FAMILY,
    chinese_clip.FAMILY,
    altclip.FAMILY,
)


@dataclass(frozen=True)
class Entry:
    """One loadable name."""

    name: str
    family: Family
    arch: str
    #: Hugging Face repo, or None for random weights
    repo: str | None

    @property
    def dim(self) -> int:
        return self.family.dim_of(self.arch)

    @property
    def languages(self) -> str:
        return self.family.languages_of(self.arch)


def entries() -> list[Entry]:
    """Every published name, then every ``ARCH::random``, family by family."""
    published = [
        Entry(name, family, family.arch_of(name), repo)
        for family in FAMILIES
        for name, repo in family.pretrained.items()
    ]
    random = [
        Entry(f"{arch}::{RANDOM_WEIGHTS}", family, arch, None)
        for family in FAMILIES
        for arch in family.architectures
    ]
    return published + random


def find(name: str) -> Entry | None:
    for entry in entries():
        if entry.name == name:
            return entry
    return None


def detect(path: Path) -> Family:
    """The family of an HF checkpoint directory, from its config.json (and tokenizer)."""
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"{path} is not a model directory clipserve can load: cannot read {config_path} "
            f"({exc}); it needs an HF checkpoint (config.json, weights, tokenizer, "
            "preprocessor_config.json) or a clipserve ONNX export"
        ) from exc
    model_type = config.get("model_type")
    candidates = [family for family in FAMILIES if family.model_type == model_type]
    if not candidates:
        known = ", ".join(sorted({family.model_type for family in FAMILIES}))
        raise ModelUnavailableError(
            f"{path}: config.json has model_type {model_type!r}; clipserve serves {known}"
        )
    tokenizer_class = _tokenizer_class(path)
    for family in candidates:
        if tokenizer_class in family.tokenizer_classes:
            return family
    return candidates[0]


def load(
    name: str,
    *,
    backend: str,
    device: str,
    cache_dir: str | Path | None,
    precision: str,
    path: Path | None = None,
) -> EmbeddingModel:
    """Load ``path`` (a checkpoint or an ONNX export) or the named model."""
    from clipserve.models.hf.core import onnx_model

    options: dict[str, Any] = dict(
        backend=backend, device=device, cache_dir=cache_dir, precision=precision
    )
    if path is not None:
        if onnx_model.is_onnx_directory(path):
            return onnx_model.OnnxDualEncoder.from_directory(
                path, name=name, device=device, precision=precision, cache_dir=cache_dir
            )
        return _load_checkpoint(path, detect(path), name=name, **options)
    entry = find(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}")
    if entry.repo is None:
        return _load_random(entry, **options)
    from clipserve.models.cache import fetch_snapshot

    snapshot = fetch_snapshot(name, entry.repo, cache_dir)
    return _load_checkpoint(snapshot, entry.family, name=name, **options)


def _load_checkpoint(
    path: Path,
    family: Family,
    *,
    name: str,
    backend: str,
    device: str,
    cache_dir: str | Path | None,
    precision: str,
) -> EmbeddingModel:
    from clipserve.models.hf.core.torch_model import TorchDualEncoder

    torch_precision = precision if backend == "torch" else FLOAT  # onnx exports from float
    model = TorchDualEncoder.from_directory(
        path, family, name=name, device=device, precision=torch_precision
    )
    return _on_backend(model, backend, device, cache_dir, precision)


def _load_random(
    entry: Entry, *, backend: str, device: str, cache_dir: str | Path | None, precision: str
) -> EmbeddingModel:
    from clipserve.models.hf.core.torch_model import TorchDualEncoder

    torch_precision = precision if backend == "torch" else FLOAT
    model = TorchDualEncoder.random(
        entry.family,
        entry.family.architectures[entry.arch],
        name=entry.name,
        device=device,
        precision=torch_precision,
    )
    return _on_backend(model, backend, device, cache_dir, precision)


def _on_backend(
    model: Any, backend: str, device: str, cache_dir: str | Path | None, precision: str
) -> EmbeddingModel:
    if backend != "onnx":
        return model
    from clipserve.models.hf.core.onnx_model import onnx_from_torch

    return onnx_from_torch(model, cache_dir=cache_dir, device=device, precision=precision)


def _tokenizer_class(path: Path) -> str | None:
    try:
        value = json.loads((path / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
