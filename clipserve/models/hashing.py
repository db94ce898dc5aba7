"""A zero-cost stand-in model for benchmarking the service around the model.

``hash`` / ``hash::<dim>`` embeds each text or image as a unit vector drawn from a hash of
its bytes: deterministic and near-free, with no meaning at all. It measures the server,
engine and wire overhead without a real forward pass. Never a default, never for search.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from clipserve.errors import InvalidInputError
from clipserve.models.base import EmbeddingModel, ImageSource

HASH_NAME = "hash"
DEFAULT_HASH_DIM = 512
DIGEST_BYTES = 32


class HashModel(EmbeddingModel):
    """Embeddings from a BLAKE2b digest of the input bytes (benchmarking aid only)."""

    backend = "none"

    def __init__(self, dim: int = DEFAULT_HASH_DIM) -> None:
        if not 1 <= dim <= 65536:
            raise ValueError(f"hash model dim must be in 1..65536, got {dim}")
        self.dim = dim
        self.name = HASH_NAME if dim == DEFAULT_HASH_DIM else f"{HASH_NAME}::{dim}"

    def prepare_image(self, image: ImageSource) -> np.ndarray:
        """The digest of the encoded bytes, or of an array's dtype, shape and bytes."""
        if isinstance(image, np.ndarray):
            header = f"array:{image.dtype.str}:{image.shape}".encode()
            data = header + np.ascontiguousarray(image).tobytes()
        elif isinstance(image, (bytes, bytearray, memoryview)):
            data = b"image:" + bytes(image)
            if len(data) == len(b"image:"):
                raise InvalidInputError("image is empty (zero bytes)")
        else:
            raise InvalidInputError(f"image must be bytes or an array, got {type(image).__name__}")
        return _digest(data)

    def prepare_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([_digest(b"text:" + str(text).encode("utf-8")) for text in texts])

    def forward_images(self, pixels: np.ndarray) -> np.ndarray:
        return self._embed(pixels)

    def forward_texts(self, tokens: np.ndarray) -> np.ndarray:
        return self._embed(tokens)

    def _embed(self, digests: np.ndarray) -> np.ndarray:
        out = np.empty((len(digests), self.dim), dtype=np.float32)
        for row, digest in enumerate(digests):
            seed = int.from_bytes(bytes(digest), "little")
            vector = np.random.default_rng(seed).standard_normal(self.dim, dtype=np.float32)
            out[row] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return out


def _digest(data: bytes) -> np.ndarray:
    return np.frombuffer(hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest(), dtype=np.uint8)
