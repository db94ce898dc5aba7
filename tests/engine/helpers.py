"""Test helpers: a thin wrapper around a real model that blocks, fails or records on
marker texts, so the engine's behaviour can be observed without sleeps."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from clipserve.models.base import EmbeddingModel, ImageSource
from clipserve.models.hashing import HashModel
from tests.waiting import FAILSAFE_S

BLOCK = "<block>"
FAIL = "<fail>"


class WrappedModel(EmbeddingModel):
    """Delegates to a real model; records what it prepared; can block or fail on markers."""

    def __init__(self, inner: EmbeddingModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.backend = inner.backend
        self.prepared_texts: list[str] = []
        self.forward_entered = threading.Event()  # a forward holding BLOCK has started
        self.release = threading.Event()  # lets that forward finish
        self.prepared = threading.Event()  # some prepare_texts call finished
        self.barrier: threading.Barrier | None = None  # forwards must overlap when set
        self.forwarded: list[list[str]] = []  # the texts of each forward pass, in order
        self.hold_images = threading.Event()  # when set, image forwards wait for release

    def weights_revision(self) -> str:
        return self.inner.weights_revision()

    def prepare_image(self, image: ImageSource) -> np.ndarray:
        return self.inner.prepare_image(image)

    def prepare_texts(self, texts: Sequence[str]) -> Any:
        self.prepared_texts.extend(texts)
        tokens = (list(texts), self.inner.prepare_texts(texts))
        self.prepared.set()
        return tokens

    def forward_texts(self, tokens: Any) -> np.ndarray:
        texts, inner_tokens = tokens
        self.forwarded.append(list(texts))
        if self.barrier is not None:
            self.barrier.wait(timeout=FAILSAFE_S)
        if BLOCK in texts:
            self.forward_entered.set()
            if not self.release.wait(timeout=FAILSAFE_S):
                raise RuntimeError("test gate was never released")
        if FAIL in texts:
            raise RuntimeError("injected failure on the marker text")
        return self.inner.forward_texts(inner_tokens)

    def forward_images(self, pixels: np.ndarray) -> np.ndarray:
        if self.hold_images.is_set():
            self.forward_entered.set()
            if not self.release.wait(timeout=FAILSAFE_S):
                raise RuntimeError("test gate was never released")
        return self.inner.forward_images(pixels)


STUCK = "<stuck>"
CRASH = "<crash>"


class HashTextsModel(EmbeddingModel):
    """The hash model whose text tokens keep their texts, so that a test double can act on
    marker texts inside a forward pass (``on_texts``); counts text forward passes."""

    def __init__(self) -> None:
        self.inner = HashModel()
        self.name, self.dim, self.backend = "hash", self.inner.dim, "none"
        self.forwards = 0

    def on_texts(self, texts: list[str]) -> None:
        """Runs in each text forward pass (on the inference thread) before the model."""

    def prepare_image(self, image: ImageSource) -> np.ndarray:
        return self.inner.prepare_image(image)

    def prepare_texts(self, texts: Sequence[str]) -> Any:
        return list(texts), self.inner.prepare_texts(texts)

    def forward_texts(self, tokens: Any) -> np.ndarray:
        texts, inner = tokens
        self.forwards += 1
        self.on_texts(texts)
        return self.inner.forward_texts(inner)

    def forward_images(self, pixels: np.ndarray) -> np.ndarray:
        return self.inner.forward_images(pixels)


class FaultyModel(HashTextsModel):
    """A pass holding ``STUCK`` hangs until ``release``; a pass holding ``CRASH`` raises
    ``SystemExit`` (what a library calling ``sys.exit`` does), which ends its inference
    thread."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def on_texts(self, texts: list[str]) -> None:
        if STUCK in texts and not self.release.wait(FAILSAFE_S):
            raise RuntimeError("the test never released the stuck pass")
        if CRASH in texts:
            raise SystemExit(3)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
