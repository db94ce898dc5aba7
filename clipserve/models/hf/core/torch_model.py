"""Any dual-encoder family on torch, through its transformers model class.

``precision="float"`` runs in float32 on the CPU and float16 on CUDA; ``fp32`` and ``fp16``
say which, ``bf16`` runs in bfloat16 where the hardware has it (``models.devices``). On CUDA
(or where ``use_device_options`` asks for it) images go to the device as uint8 and are
normalised there, big JPEGs may be decoded there (``models.accel``), inputs are staged in
pinned memory and copied without blocking, and ``cuda_graphs`` replays the image tower.
Embeddings are the model's own pooled and projected features (``get_text_features`` /
``get_image_features``), not L2-normalised, like CLIP-as-service.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipserve.errors import ModelError, ModelUnavailableError
from clipserve.models.accel.batch import DeviceImages
from clipserve.models.accel.graphs import GraphedTower
from clipserve.models.accel.pixels import stage
from clipserve.models.base import EmbeddingModel, ImageSource, PartialBatchError
from clipserve.models.devices import (
    DeviceOptions,
    dtype_name,
    exact_float32,
    resolve,
    torch_dtype,
)
from clipserve.models.hf.core.images import ImagePreprocessor, preprocessor_for
from clipserve.models.hf.core.patches import PatchPreprocessor
from clipserve.models.hf.core.spec import Family, config_dim
from clipserve.models.hf.core.tokens import TokenBatch, load_hf_tokenizer, text_tokenizer
from clipserve.models.precision import FLOAT, FP32, check_precision
from clipserve.models.runtime import configured_threads
from clipserve.models.scoring import ScoreRule

#: seed for ``ARCH::random`` weights, so two loads give the same model
RANDOM_SEED = 0


class TorchDualEncoder(EmbeddingModel):
    """A transformers dual encoder behind the clipserve model contract."""

    backend = "torch"

    def __init__(
        self,
        model: Any,
        hf_tokenizer: Any,
        preprocessor: ImagePreprocessor | PatchPreprocessor,
        family: Family,
        *,
        name: str,
        device: str = "cpu",
        source: Path | None = None,
        precision: str = FLOAT,
    ) -> None:
        check_precision(precision, self.backend, device)
        self.device = resolve(device)
        self.precision = precision
        self.dtype = torch_dtype(precision, self.device)
        if precision == FP32:
            exact_float32(self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.spec = family
        self.family = family.label
        self.languages = family.languages
        #: the transformers tokenizer (saved alongside ONNX exports)
        self.hf_tokenizer = hf_tokenizer
        self.tokenizer = text_tokenizer(hf_tokenizer, family.text)
        self.preprocessor = preprocessor
        self.name = name
        self.dim = config_dim(model.config)
        self.score_rule = score_rule_of(model, family.scoring)
        #: the HF directory the weights came from (None for random weights)
        self.source = source
        #: the seed of ``random()`` weights (None for loaded ones)
        self.random_seed: int | None = None
        self._revision: str | None = None
        self._lock = threading.Lock()  # one forward at a time per model instance
        self._on_device: DeviceImages | None = None
        self._graphed: GraphedTower | None = None
        self.use_device_options(DeviceOptions())
        threads = configured_threads()
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_directory(
        cls,
        path: str | Path,
        family: Family,
        *,
        name: str | None = None,
        device: str = "cpu",
        precision: str = FLOAT,
    ) -> TorchDualEncoder:
        """Load an HF checkpoint directory (config, weights, tokenizer, preprocessor config)."""
        path = Path(path)
        try:
            model = family.model_type_class().from_pretrained(
                str(path), local_files_only=True, dtype=torch.float32
            )
            tokenizer = load_hf_tokenizer(path)
        except (OSError, ValueError, TypeError, ImportError) as exc:
            raise ModelUnavailableError(
                f"cannot load a {family.label} model from {path}: {exc}. The directory needs "
                "config.json, model.safetensors (or pytorch_model.bin), tokenizer files and "
                f"preprocessor_config.json, as written by {family.model_class}.save_pretrained "
                "and the processor's save_pretrained"
            ) from exc
        preprocessor = preprocessor_for(family.image, model.config.vision_config, path)
        return cls(
            model,
            tokenizer,
            preprocessor,
            family,
            name=name or str(path),
            device=device,
            source=path,
            precision=precision,
        )

    @classmethod
    def random(
        cls,
        family: Family,
        config: Mapping[str, Any],
        *,
        name: str,
        device: str = "cpu",
        seed: int = RANDOM_SEED,
        precision: str = FLOAT,
    ) -> TorchDualEncoder:
        """The architecture with seeded random weights and the family's stand-in tokenizer."""
        if family.stand_in_tokenizer is None:
            raise ValueError(f"{family.label} has no stand-in tokenizer for random weights")
        model = build_random(family, config, seed=seed)
        preprocessor = preprocessor_for(family.image, model.config.vision_config)
        encoder = cls(
            model,
            family.stand_in_tokenizer(),
            preprocessor,
            family,
            name=name,
            device=device,
            precision=precision,
        )
        encoder.random_seed = seed
        return encoder

    def weights_revision(self) -> str:
        """The weight files' fingerprint (hub blob names, else their bytes), or the random
        seed with the versions that turn it into weights."""
        if self._revision is None:
            import transformers

            from clipserve.models.cache import weights_fingerprint

            if self.source is not None:
                self._revision = f"weights-{weights_fingerprint(self.source)}"
            else:
                versions = f"torch-{torch.__version__}-transformers-{transformers.__version__}"
                self._revision = f"random-seed{self.random_seed}-{versions}"
        return self._revision

    def use_device_options(self, options: DeviceOptions) -> None:
        """uint8 pixels to the device (CUDA by default) and the GPU decode's route, for
        the fixed-size image families; CUDA graphs for the image tower where asked."""
        self.options = options
        self._on_device = None
        if isinstance(self.preprocessor, ImagePreprocessor) and options.pixels_on_device(
            self.device.type
        ):
            preprocessor = self.preprocessor
            self._on_device = DeviceImages.build(
                self.device,
                options,
                normalizer=preprocessor.normalizer,
                plan_for=preprocessor.plan,
                host_pixels=lambda image, exact: preprocessor.pixels(image, exact=exact),
                max_pixels=preprocessor.max_pixels,
            )
        graphs = options.cuda_graphs and self.device.type == "cuda"
        self._graphed = GraphedTower(self._image_tower) if graphs else None

    def numerics(self) -> str:
        """Off the CPU: the device and dtype, and the GPU decode's route (on the CPU the
        precision already says it all, so CPU cache keys stay as they were)."""
        on_cpu = self.device.type == "cpu"
        parts = [] if on_cpu else [f"{self.device.type}-{dtype_name(self.dtype)}"]
        if self._on_device is not None and self._on_device.route.enabled:
            parts.append(self._on_device.route.describe())
        return "-".join(parts)

    # -- the model contract -------------------------------------------------------------
    def prepare_image(self, image: ImageSource) -> Any:
        if self._on_device is not None:
            return self._on_device.prepare(image, exact=self.exact_preprocess)
        return self.preprocessor(image, exact=self.exact_preprocess)

    def collate_images(self, prepared: list[Any]) -> Any:
        if self._on_device is not None:
            return self._on_device.collate(prepared)
        return super().collate_images(prepared)

    def prepare_texts(self, texts: list[str] | tuple[str, ...]) -> TokenBatch:
        return self.tokenizer(texts)

    def forward_images(self, pixels: Any) -> np.ndarray:
        """Host-prepared float32 pixels, or (on the device path) uint8 pixels and encoded
        JPEGs; a JPEG that fails alone there fails alone (``PartialBatchError``)."""
        host_floats = isinstance(pixels, np.ndarray) and pixels.dtype == np.float32
        if self._on_device is None or host_floats:
            return self._forward_host_images(pixels)
        with self._lock, torch.inference_mode():
            batch = self._on_device(pixels)
            if batch.pixels is None:  # every image failed
                embeddings = np.zeros((len(batch.failures), self.dim), dtype=np.float32)
            else:
                embeddings = self._run_image_tower(batch.pixels.to(self.dtype))
        if batch.failures:
            raise PartialBatchError(embeddings, batch.failures)
        return embeddings

    def _forward_host_images(self, pixels: np.ndarray) -> np.ndarray:
        inputs = {
            name: stage(array, self.device)
            for name, array in self.preprocessor.model_inputs(pixels).items()
        }
        inputs = {
            name: tensor.to(self.dtype) if tensor.is_floating_point() else tensor
            for name, tensor in inputs.items()
        }
        with self._lock, torch.inference_mode():
            if set(inputs) == {"pixel_values"}:
                return self._run_image_tower(inputs["pixel_values"])
            try:
                return _features(self.model.get_image_features(**inputs))
            except RuntimeError as exc:
                raise ModelError(f"{self.name}: image forward failed: {exc}") from exc

    def _run_image_tower(self, pixel_values: torch.Tensor) -> np.ndarray:
        tower = self._graphed or self._image_tower
        try:
            return _features(tower(pixel_values))
        except RuntimeError as exc:
            raise ModelError(f"{self.name}: image forward failed: {exc}") from exc

    def _image_tower(self, pixel_values: torch.Tensor) -> torch.Tensor:
        output = self.model.get_image_features(pixel_values=pixel_values)
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def forward_texts(self, tokens: TokenBatch) -> np.ndarray:
        inputs = {"input_ids": stage(tokens.input_ids, self.device)}
        if self.spec.text.feed_mask:
            inputs["attention_mask"] = stage(tokens.attention_mask, self.device)
        with self._lock, torch.inference_mode():
            try:
                output = self.model.get_text_features(**inputs)
            except RuntimeError as exc:
                raise ModelError(f"{self.name}: text forward failed: {exc}") from exc
        return _features(output)

    def cache_files(self) -> tuple[Path, ...]:
        return (self.source,) if self.source is not None else ()

    def close(self) -> None:
        if self.device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()


def build_random(family: Family, config: Mapping[str, Any], *, seed: int = RANDOM_SEED) -> Any:
    """The family's model of the given architecture with weights from a fixed seed."""
    model_class = family.model_type_class()
    hf_config = family.config(config)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = model_class(hf_config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def score_rule_of(model: Any, kind: str) -> ScoreRule:
    """The model's learnt scale (``exp(logit_scale)``) and bias under the family's rule."""
    scale = float(model.logit_scale.detach().float().exp().item())
    bias = getattr(model, "logit_bias", None)
    return ScoreRule(kind, scale, float(bias.detach().float().item()) if bias is not None else 0.0)


def _features(output: Any) -> np.ndarray:
    """transformers 5 returns a model output whose ``pooler_output`` is the embedding."""
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor.float().cpu().numpy()
