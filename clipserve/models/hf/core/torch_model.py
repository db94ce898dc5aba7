"""Any dual-encoder family on torch, through its transformers model class.

CPU runs in float32; ``device="cuda"`` runs in float16; ``precision="bf16"`` runs in bfloat16
on either (where the hardware has it). Embeddings are the model's own pooled and projected
features (``get_text_features`` / ``get_image_features``), not L2-normalised, like
CLIP-as-service.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipserve.errors import ModelError, ModelUnavailableError
from clipserve.models.base import EmbeddingModel, ImageSource
from clipserve.models.cpu import REFUSED, cpu_features, verdict_for
from clipserve.models.hf.core.images import ImagePreprocessor, preprocessor_for
from clipserve.models.hf.core.patches import PatchPreprocessor
from clipserve.models.hf.core.spec import Family, config_dim
from clipserve.models.hf.core.tokens import TokenBatch, load_hf_tokenizer, text_tokenizer
from clipserve.models.precision import BF16, FLOAT, check_precision
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
        self.device = torch.device(check_device(device))
        self.precision = precision
        if precision == BF16:
            check_bf16(self.device)
            self.dtype = torch.bfloat16
        else:
            self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
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

    # -- the model contract -------------------------------------------------------------
    def prepare_image(self, image: ImageSource) -> np.ndarray:
        return self.preprocessor(image, exact=self.exact_preprocess)

    def prepare_texts(self, texts: list[str] | tuple[str, ...]) -> TokenBatch:
        return self.tokenizer(texts)

    def forward_images(self, pixels: np.ndarray) -> np.ndarray:
        inputs = {
            name: torch.from_numpy(array).to(
                self.device, self.dtype if array.dtype == np.float32 else None
            )
            for name, array in self.preprocessor.model_inputs(pixels).items()
        }
        with self._lock, torch.inference_mode():
            try:
                output = self.model.get_image_features(**inputs)
            except RuntimeError as exc:
                raise ModelError(f"{self.name}: image forward failed: {exc}") from exc
        return _features(output)

    def forward_texts(self, tokens: TokenBatch) -> np.ndarray:
        inputs = {"input_ids": torch.from_numpy(tokens.input_ids).to(self.device)}
        if self.spec.text.feed_mask:
            inputs["attention_mask"] = torch.from_numpy(tokens.attention_mask).to(self.device)
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


def check_bf16(device: torch.device) -> None:
    """bfloat16 only where the hardware computes in it: emulated, it is slower than float32."""
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        where = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        verdict = verdict_for(BF16)
        if verdict.status == REFUSED:  # x86: CPUID says no bf16 instructions
            supported = False
        else:  # elsewhere torch knows best
            try:
                supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            except (AttributeError, RuntimeError):
                supported = False
        where = f"this CPU ({cpu_features().kind}; needs AVX512-BF16 or AMX)"
    if not supported:
        raise ModelUnavailableError(
            f"precision 'bf16' requested but {where} has no bfloat16 instructions; "
            "use precision 'float' (or 'int8' with backend 'onnx')"
        )


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {device!r} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device
