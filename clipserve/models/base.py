"""The contract every model backend implements.

A model maps sentences and images into one shared space. Work is split in stages so the
engine can pipeline them: ``prepare_*`` (CPU preprocessing, safe to run in worker
threads, one image at a time so a bad image fails only itself), ``forward_*`` (the
inference call, run on the model's own thread) and the ``encode_*`` conveniences that
chain both for in-process use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipserve.errors import ClipServeError, ModelError
from clipserve.models.devices import DeviceOptions
from clipserve.models.images import DECODE_VERSION
from clipserve.models.scoring import CLIP_AS_SERVICE, ScoreRule

# An image as the engine hands it to a model: encoded file bytes (any Pillow format)
# or a decoded uint8 array of shape [H, W, C] (C in 1, 3, 4).
ImageSource = bytes | np.ndarray


class PartialBatchError(ModelError):
    """Some inputs of a batch failed inside the forward pass (an image that only turned out
    undecodable there); the others have embeddings. The engine answers each input with its
    own outcome: ``embeddings[i]``, or ``failures[i]`` where given (that row is meaningless)."""

    def __init__(self, embeddings: np.ndarray, failures: dict[int, ClipServeError]) -> None:
        first = min(failures)
        super().__init__(
            f"{len(failures)} of {len(embeddings)} inputs failed; input {first}: {failures[first]}"
        )
        self.embeddings = embeddings
        self.failures = failures


class EmbeddingModel(ABC):
    """A text+image embedding model. Subclasses set ``name`` and ``dim``."""

    name: str
    dim: int
    #: the backend that runs forward ("torch", "onnx", "none")
    backend: str = "torch"
    #: numeric precision of the weights ("float" or "int8", see ``models.quantize``)
    precision: str = "float"
    #: shorter sizes the model was trained to keep meaning at (Matryoshka representation
    #: learning): the first ``n`` components, renormalised. Empty: only ``dim`` is valid
    #: (true of every CLIP-style model clipserve serves today)
    matryoshka_dims: tuple[int, ...] = ()
    #: True: decode every image at full size and preprocess exactly as the model's reference
    #: does (slow on big photos). False (default): big photos are decoded straight to about
    #: twice the model's input (``models.images``), then preprocessed the same way
    exact_preprocess: bool = False
    #: how ``/rank`` turns cosines into ``clip_score`` (see ``models.scoring``)
    score_rule: ScoreRule = CLIP_AS_SERVICE
    #: the model family ("CLIP", "SigLIP", ...) and the languages its text tower reads
    family: str = ""
    languages: str = "en"

    @abstractmethod
    def prepare_image(self, image: ImageSource) -> np.ndarray:
        """Decode and preprocess one image into the model's input array.

        Raises ``InvalidInputError`` naming the reason for undecodable or refused input.
        """

    @abstractmethod
    def prepare_texts(self, texts: Sequence[str]) -> Any:
        """Tokenise a batch: padded to its longest member where padding cannot change the
        result, to the model's fixed text length where it can (SigLIP)."""

    @abstractmethod
    def forward_images(self, pixels: Any) -> np.ndarray:
        """``collate_images`` output (by default the stacked ``prepare_image`` outputs) ->
        float32 [N, dim]. May raise ``PartialBatchError`` when single images fail in it."""

    def collate_images(self, prepared: list[Any]) -> Any:
        """One batch's ``prepare_image`` outputs -> the input of ``forward_images``: stacked
        by default (models whose prepared images differ in kind or shape override it)."""
        try:
            return np.stack(prepared)
        except ValueError as exc:
            raise ModelError(f"preprocessed images differ in shape: {exc}") from exc

    @abstractmethod
    def forward_texts(self, tokens: Any) -> np.ndarray:
        """A ``prepare_texts`` output -> float32 [N, dim]."""

    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = self.collate_images([self.prepare_image(image) for image in images])
        return self.forward_images(pixels)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.forward_texts(self.prepare_texts(list(texts)))

    def weights_revision(self) -> str:
        """What identifies this model's weights beyond its name, backend and precision: a hash
        of its weight files, its pinned packages' versions, a random seed... Embedding caches
        key on it (``identity()``), so two models that may embed differently must differ
        here. Subclasses that load weights override it; the default names only the class."""
        return f"{type(self).__module__}.{type(self).__qualname__}"

    def use_device_options(self, options: DeviceOptions) -> None:
        """Apply what ``options`` ask of an accelerator (GPU decode, CUDA graphs, uint8
        pixels on the device). Models that run only on the CPU have nothing to apply."""
        return None

    def numerics(self) -> str:
        """Where and how the numbers are computed, when that is not the float32-on-CPU,
        host-preprocessed default: e.g. ``cuda-float16`` and the GPU decode's route. Part of
        ``identity()``; empty by default (and for the default settings, so keys stay)."""
        return ""

    def identity(self) -> str:
        """Everything that decides this model's output for a given input, as one string."""
        preprocess = "exact" if self.exact_preprocess else f"fast-{DECODE_VERSION}"
        parts = (self.name, self.backend, self.precision, self.weights_revision(), preprocess)
        numerics = self.numerics()
        return "|".join(parts + ((numerics,) if numerics else ()))

    def warmup(self) -> None:
        """Run one tiny batch of each modality so the first request is not slow."""
        self.encode_texts(["warm up"])
        self.encode_images([np.zeros((32, 32, 3), dtype=np.uint8)])

    def cache_files(self) -> tuple[Path, ...]:
        """Files this model made or read from its on-disk caches (exports, quantized graphs,
        precomputed tables, downloaded weights); empty when it has none."""
        return ()

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release resources (sessions, GPU memory). Default: nothing to do."""
