"""A zero-cost stand-in model for benchmarking the service around the model.

``hash`` / ``hash::<dim>`` embeds each text or image as a unit vector derived from a hash of
its bytes: each of the digest's 32 bytes picks one row, with a sign, from a fixed table of
small random integers; the rows are summed and the sum normalised. Deterministic, no BLAS,
a few microseconds per input, and no meaning at all. It measures the server, engine and wire
overhead without a real forward pass. Never a default, never for search.

Sums of small integers are exact in float32 in any order, so a row never depends on its batch
neighbours; random signs keep unrelated inputs near-orthogonal.
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
TABLE_SEED = 0
#: table entries lie in +-TABLE_RANGE; 32 * 127 < 2**24 keeps float32 sums exact
TABLE_RANGE = 127


class HashModel(EmbeddingModel):
    """Embeddings from a BLAKE2b digest of the input bytes (benchmarking aid only)."""

    backend = "none"
    family = "hash"
    languages = "any"

    def __init__(self, dim: int = DEFAULT_HASH_DIM) -> None:
        if not 1 <= dim <= 65536:
            raise ValueError(f"hash model dim must be in 1..65536, got {dim}")
        self.dim = dim
        self.name = HASH_NAME if dim == DEFAULT_HASH_DIM else f"{HASH_NAME}::{dim}"
        rng = np.random.default_rng(TABLE_SEED)
        rows = rng.integers(-TABLE_RANGE, TABLE_RANGE + 1, (256, dim)).astype(np.float32)
        self._rows = np.concatenate([rows, -rows])  # row r + 256 is row r negated
        # byte value b at digest position j picks row (b + offset[j]) % 256, negated or not
        offsets = rng.integers(0, 256, (DIGEST_BYTES, 1))
        negate = rng.integers(0, 2, (DIGEST_BYTES, 256))
        self._row_of = ((np.arange(256) + offsets) % 256 + 256 * negate).astype(np.intp)

    def weights_revision(self) -> str:
        return f"blake2b-table-seed{TABLE_SEED}-range{TABLE_RANGE}"

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
        digests = np.asarray(digests, dtype=np.uint8).reshape(len(digests), DIGEST_BYTES)
        picks = self._row_of[np.arange(DIGEST_BYTES), digests]  # [N, 32] row numbers
        vectors = self._rows[picks[:, 0]]  # a fresh array (fancy indexing copies)
        for position in range(1, DIGEST_BYTES):
            vectors += self._rows[picks[:, position]]
        # squares of integers summed in float64 are exact too, so the norm is batch-independent
        norms = np.sqrt(np.square(vectors, dtype=np.float64).sum(axis=1, keepdims=True))
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _digest(data: bytes) -> np.ndarray:
    return np.frombuffer(hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest(), dtype=np.uint8)
