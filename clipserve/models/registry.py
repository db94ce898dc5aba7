"""Model names -> loaded models.

Accepted names:

* ``builtin`` (the default, also ``None``): the bundled model, no download.
* ``hash`` / ``hash::<dim>``: deterministic hash embeddings, a benchmarking aid.
* ``ARCH::PRETRAINED`` in CLIP-as-service style, e.g. ``ViT-B-32::openai`` or
  ``ViT-B-16-SigLIP::webli`` (also ``CN-CLIP/ViT-B-16``, ``AltCLIP/ViT-L-14``): a public
  Hugging Face checkpoint of one of the dual-encoder families (CLIP, SigLIP, SigLIP 2,
  MetaCLIP 2, Chinese-CLIP, AltCLIP; ``clipserve.models.hf``), taken from the hub cache or
  downloaded into it.
* ``ARCH::random``, e.g. ``ViT-B-32::random``: the full architecture, seeded random
  weights, the family's stand-in tokenizer; no download (for benchmarks and tests).
* a local directory: an HF checkpoint of any of those families (told apart by its
  config.json), or a directory exported by ``clipserve.models.hf`` (loads with onnx).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipserve.models.base import EmbeddingModel
from clipserve.models.builtin import BUILTIN_DESCRIPTION, BUILTIN_DIM
from clipserve.models.hashing import DEFAULT_HASH_DIM, HASH_NAME, HashModel
from clipserve.models.hf import catalog
from clipserve.models.precision import BACKENDS, FLOAT, check_precision

DEFAULT_MODEL = "builtin"
RANDOM_WEIGHTS = catalog.RANDOM_WEIGHTS
#: published name -> Hugging Face repo, every family
PRETRAINED: dict[str, str] = {
    entry.name: entry.repo for entry in catalog.entries() if entry.repo is not None
}


@dataclass(frozen=True)
class ModelInfo:
    """One loadable model name."""

    name: str
    dim: int
    description: str
    #: weights are available without network (always for builtin, hash and random)
    local: bool
    family: str = ""
    languages: str = "en"


def known_names() -> list[str]:
    return [DEFAULT_MODEL, HASH_NAME, f"{HASH_NAME}::<dim>"] + [
        entry.name for entry in catalog.entries()
    ]


def list_models(cache_dir: str | Path | None = None) -> list[ModelInfo]:
    """Every named model, with whether it can load right now without network."""
    from clipserve.models.cache import cached_snapshot

    infos = [
        ModelInfo(DEFAULT_MODEL, BUILTIN_DIM, BUILTIN_DESCRIPTION, True, "built-in", "en"),
        ModelInfo(
            HASH_NAME,
            DEFAULT_HASH_DIM,
            "hash embeddings for benchmarking (no meaning; hash::<dim> for other sizes)",
            True,
            "hash",
            "any",
        ),
    ]
    for entry in catalog.entries():
        if entry.repo is None:
            description, local = "random weights, stand-in tokenizer (no download)", True
        else:
            description = f"huggingface.co/{entry.repo}"
            local = cached_snapshot(entry.repo, cache_dir) is not None
        infos.append(
            ModelInfo(
                entry.name, entry.dim, description, local, entry.family.label, entry.languages
            )
        )
    return infos


def load_model(
    name: str | None = None,
    *,
    backend: str = "torch",
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    precision: str = FLOAT,
) -> EmbeddingModel:
    """Load a model by name or path (see the module docstring for the accepted names).

    ``cache_dir`` roots both caches (``<cache_dir>/hub`` and ``<cache_dir>/onnx``); by
    default the HF hub cache and ``$CLIPSERVE_CACHE_DIR`` / ``~/.cache/clipserve``.
    ``precision`` is ``float``, ``bf16`` (backend torch) or ``int8`` (backend onnx, CPU);
    see ``clipserve.models.precision``. Raises ``ValueError`` for unknown names and bad
    settings, and ``ModelUnavailableError`` when weights cannot be found or fetched.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    check_precision(precision, backend, device)
    name = name or DEFAULT_MODEL
    if name == DEFAULT_MODEL:
        from clipserve.models.builtin.model import BuiltinModel

        return BuiltinModel(
            backend=backend, device=device, cache_dir=cache_dir, precision=precision
        )
    if name == HASH_NAME or name.startswith(f"{HASH_NAME}::"):
        return HashModel(_hash_dim(name))
    options = dict(backend=backend, device=device, cache_dir=cache_dir, precision=precision)
    path = Path(name).expanduser()
    if path.is_dir():
        return catalog.load(str(path), path=path, **options)  # type: ignore[arg-type]
    if catalog.find(name) is None:
        raise ValueError(
            f"unknown model {name!r}; known names: {', '.join(known_names())}, "
            "or a path to a local model directory"
        )
    return catalog.load(name, **options)  # type: ignore[arg-type]


def _hash_dim(name: str) -> int:
    _, _, suffix = name.partition("::")
    if not suffix:
        return DEFAULT_HASH_DIM
    if not suffix.isdigit():
        raise ValueError(f"hash model name must be 'hash' or 'hash::<dim>', got {name!r}")
    return int(suffix)


