"""Model names -> loaded models.

Accepted names:

* ``builtin`` (the default, also ``None``): the bundled model, no download.
* ``hash`` / ``hash::<dim>``: deterministic hash embeddings, a benchmarking aid.
* ``ARCH::PRETRAINED`` in CLIP-as-service style, e.g. ``ViT-B-32::openai``: a public
  Hugging Face CLIP checkpoint, taken from the hub cache or downloaded into it.
* ``ARCH::random``, e.g. ``ViT-B-32::random``: the full architecture, seeded random
  weights, a byte-level tokenizer; no download (for benchmarks and tests).
* a local directory: an HF CLIP checkpoint (config + weights + tokenizer + preprocessor
  config), or a directory exported by ``clipserve.models.clip.onnx_model`` (loads with onnx).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipserve.models.base import EmbeddingModel
from clipserve.models.builtin import BUILTIN_DESCRIPTION, BUILTIN_DIM
from clipserve.models.hashing import DEFAULT_HASH_DIM, HASH_NAME, HashModel
from clipserve.models.precision import BACKENDS, FLOAT, check_precision

DEFAULT_MODEL = "builtin"
RANDOM_WEIGHTS = "random"


def _arch(
    vision: tuple[int, int, int, int],
    text: tuple[int, int, int],
    patch: int,
    image_size: int,
    projection_dim: int,
    act: str,
) -> dict[str, Any]:
    """CLIPConfig kwargs: vision (width, layers, heads, mlp), text (width, layers, heads)."""
    v_width, v_layers, v_heads, v_mlp = vision
    t_width, t_layers, t_heads = text
    return {
        "projection_dim": projection_dim,
        "vision_config": {
            "hidden_size": v_width,
            "num_hidden_layers": v_layers,
            "num_attention_heads": v_heads,
            "intermediate_size": v_mlp,
            "patch_size": patch,
            "image_size": image_size,
            "hidden_act": act,
        },
        "text_config": {
            "hidden_size": t_width,
            "num_hidden_layers": t_layers,
            "num_attention_heads": t_heads,
            "intermediate_size": 4 * t_width,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
            "hidden_act": act,
        },
    }


#: architecture -> CLIPConfig kwargs (sizes as in the published checkpoints' configs)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ViT-B-32": _arch((768, 12, 12, 3072), (512, 12, 8), 32, 224, 512, "quick_gelu"),
    "ViT-B-16": _arch((768, 12, 12, 3072), (512, 12, 8), 16, 224, 512, "quick_gelu"),
    "ViT-L-14": _arch((1024, 24, 16, 4096), (768, 12, 12), 14, 224, 768, "quick_gelu"),
    "ViT-L-14-336": _arch((1024, 24, 16, 4096), (768, 12, 12), 14, 336, 768, "quick_gelu"),
    "ViT-H-14": _arch((1280, 32, 16, 5120), (1024, 24, 16), 14, 224, 1024, "gelu"),
}

#: CLIP-as-service name -> Hugging Face repo
PRETRAINED: dict[str, str] = {
    "ViT-B-32::openai": "openai/clip-vit-base-patch32",
    "ViT-B-16::openai": "openai/clip-vit-base-patch16",
    "ViT-L-14::openai": "openai/clip-vit-large-patch14",
    "ViT-L-14-336::openai": "openai/clip-vit-large-patch14-336",
    "ViT-B-32::laion2b_s34b_b79k": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "ViT-L-14::laion2b_s32b_b82k": "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    "ViT-H-14::laion2b_s32b_b79k": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
}


@dataclass(frozen=True)
class ModelInfo:
    """One loadable model name."""

    name: str
    dim: int
    description: str
    #: weights are available without network (always for builtin, hash and random)
    local: bool


def known_names() -> list[str]:
    names = [DEFAULT_MODEL, HASH_NAME, f"{HASH_NAME}::<dim>", *PRETRAINED]
    return names + [f"{arch}::{RANDOM_WEIGHTS}" for arch in ARCHITECTURES]


def list_models(cache_dir: str | Path | None = None) -> list[ModelInfo]:
    """Every named model, with whether it can load right now without network."""
    from clipserve.models.cache import cached_snapshot

    infos = [
        ModelInfo(DEFAULT_MODEL, BUILTIN_DIM, BUILTIN_DESCRIPTION, True),
        ModelInfo(
            HASH_NAME,
            DEFAULT_HASH_DIM,
            "hash embeddings for benchmarking (no meaning; hash::<dim> for other sizes)",
            True,
        ),
    ]
    for name, repo in PRETRAINED.items():
        arch = name.split("::")[0]
        infos.append(
            ModelInfo(
                name,
                _dim(arch),
                f"CLIP {arch} from huggingface.co/{repo}",
                cached_snapshot(repo, cache_dir) is not None,
            )
        )
    for arch in ARCHITECTURES:
        name = f"{arch}::{RANDOM_WEIGHTS}"
        infos.append(ModelInfo(name, _dim(arch), f"CLIP {arch} with random weights", True))
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
    options: dict[str, Any] = dict(
        backend=backend, device=device, cache_dir=cache_dir, precision=precision
    )
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_directory(path, **options)
    arch, _, weights = name.partition("::")
    if weights == RANDOM_WEIGHTS and arch in ARCHITECTURES:
        return _load_random(name, arch, **options)
    if name in PRETRAINED:
        from clipserve.models.cache import fetch_snapshot

        snapshot = fetch_snapshot(name, PRETRAINED[name], cache_dir)
        return _load_directory(snapshot, name=name, **options)
    raise ValueError(
        f"unknown model {name!r}; known names: {', '.join(known_names())}, "
        "or a path to a local model directory"
    )


def _load_directory(
    path: Path,
    *,
    backend: str,
    device: str,
    cache_dir: str | Path | None,
    precision: str,
    name: str | None = None,
) -> EmbeddingModel:
    from clipserve.models.clip import onnx_model as clip_onnx

    if clip_onnx.is_onnx_directory(path):
        return clip_onnx.OnnxClipModel.from_directory(
            path, name=name, device=device, precision=precision, cache_dir=cache_dir
        )
    from clipserve.models.clip.torch_model import TorchClipModel

    torch_precision = precision if backend == "torch" else FLOAT  # onnx exports from float
    model = TorchClipModel.from_directory(path, name=name, device=device, precision=torch_precision)
    if backend == "onnx":
        return clip_onnx.onnx_from_torch(
            model, cache_dir=cache_dir, device=device, precision=precision
        )
    return model


def _load_random(
    name: str,
    arch: str,
    *,
    backend: str,
    device: str,
    cache_dir: str | Path | None,
    precision: str,
) -> EmbeddingModel:
    from clipserve.models.clip.torch_model import TorchClipModel

    torch_precision = precision if backend == "torch" else FLOAT  # onnx exports from float
    model = TorchClipModel.random(
        ARCHITECTURES[arch], name=name, device=device, precision=torch_precision
    )
    if backend == "onnx":
        from clipserve.models.clip import onnx_model as clip_onnx

        return clip_onnx.onnx_from_torch(
            model, cache_dir=cache_dir, device=device, precision=precision
        )
    return model


def _hash_dim(name: str) -> int:
    _, _, suffix = name.partition("::")
    if not suffix:
        return DEFAULT_HASH_DIM
    if not suffix.isdigit():
        raise ValueError(f"hash model name must be 'hash' or 'hash::<dim>', got {name!r}")
    return int(suffix)


def _dim(arch: str) -> int:
    return int(ARCHITECTURES[arch]["projection_dim"])
