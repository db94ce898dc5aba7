"""CLIP on torch through transformers' ``CLIPModel``.

CPU runs in float32; ``device="cuda"`` runs in float16; ``precision="bf16"`` runs in bfloat16
on either (where the hardware has it). Embeddings are the projected
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
from clipserve.models.clip.preprocess import (
    ClipTokenizer,
    ImagePreprocessor,
    TokenBatch,
    byte_level_clip_tokenizer,
)
from clipserve.models.precision import BF16, FLOAT, check_precision
from clipserve.models.runtime import configured_threads

#: seed for ``ARCH::random`` weights, so two loads give the same model
RANDOM_SEED = 0


class TorchClipModel(EmbeddingModel):
    """A transformers ``CLIPModel`` behind the clipserve model contract."""

    backend = "torch"

    def __init__(
        self,
        model: Any,
        hf_tokenizer: Any,
        preprocessor: ImagePreprocessor,
        *,
        name: str,
        device: str = "cpu",
        source: Path | None = None,
        precision: str = FLOAT,
    ) -> None:
        check_precision(precision, self.backend, device)
        self.device = torch.device(_check_device(device))
        self.precision = precision
        if precision == BF16:
            _check_bf16(self.device)
            self.dtype = torch.bfloat16
        else:
            self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        #: the transformers tokenizer (saved alongside ONNX exports)
        self.hf_tokenizer = hf_tokenizer
        self.tokenizer = ClipTokenizer.from_hf(hf_tokenizer)
        self.preprocessor = preprocessor
        self.name = name
        self.dim = int(model.config.projection_dim)
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
        *,
        name: str | None = None,
        device: str = "cpu",
        precision: str = FLOAT,
    ) -> TorchClipModel:
        """Load an HF CLIP directory (config, weights, tokenizer, preprocessor config)."""
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        try:
            model = CLIPModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(
                f"cannot load a CLIP model from {path}: {exc}. The directory needs config.json, "
                "model.safetensors (or pytorch_model.bin), tokenizer files and "
                "preprocessor_config.json, as written by CLIPModel/CLIPProcessor.save_pretrained"
            ) from exc
        preprocessor = ImagePreprocessor.from_directory(path)
        return cls(
            model,
            tokenizer,
            preprocessor,
            name=name or str(path),
            device=device,
            source=path,
            precision=precision,
        )

    @classmethod
    def random(
        cls,
        config: Mapping[str, Any],
        *,
        name: str,
        device: str = "cpu",
        seed: int = RANDOM_SEED,
        precision: str = FLOAT,
    ) -> TorchClipModel:
        """The full architecture with seeded random weights and a byte-level tokenizer."""
        hf_tokenizer: Any = byte_level_clip_tokenizer()
        model = build_random_clip(
            config, seed=seed, bos_id=hf_tokenizer.bos_token_id, eos_id=hf_tokenizer.eos_token_id
        )
        size = int(model.config.vision_config.image_size)
        preprocessor = ImagePreprocessor(resize_to=size, crop_size=size)
        clip = cls(model, hf_tokenizer, preprocessor, name=name, device=device, precision=precision)
        clip.random_seed = seed
        return clip

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
        tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        with self._lock, torch.inference_mode():
            try:
                output = self.model.get_image_features(
                    pixel_values=tensor.to(self.device, self.dtype)
                )
            except RuntimeError as exc:
                raise ModelError(f"{self.name}: image forward failed: {exc}") from exc
        return _features(output)

    def forward_texts(self, tokens: TokenBatch) -> np.ndarray:
        with self._lock, torch.inference_mode():
            try:
                output = self.model.get_text_features(
                    input_ids=torch.from_numpy(tokens.input_ids).to(self.device),
                    attention_mask=torch.from_numpy(tokens.attention_mask).to(self.device),
                )
            except RuntimeError as exc:
                raise ModelError(f"{self.name}: text forward failed: {exc}") from exc
        return _features(output)

    def cache_files(self) -> tuple[Path, ...]:
        return (self.source,) if self.source is not None else ()

    def close(self) -> None:
        if self.device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()


def build_random_clip(
    config: Mapping[str, Any], *, seed: int = RANDOM_SEED, bos_id: int, eos_id: int
) -> Any:
    """A ``CLIPModel`` of the given architecture with weights from a fixed seed."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(config["text_config"])
    text.update(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    clip_config = CLIPConfig(
        text_config=text,
        vision_config=dict(config["vision_config"]),
        projection_dim=int(config["projection_dim"]),
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = CLIPModel(clip_config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def _features(output: Any) -> np.ndarray:
    """transformers 5 returns a model output whose ``pooler_output`` is the projection."""
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor.float().cpu().numpy()


def _check_bf16(device: torch.device) -> None:
    """bfloat16 only where the hardware computes in it: emulated, it is slower than float32."""
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        where = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        try:
            supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            supported = False
        where = "this CPU (needs AVX512-BF16 or AMX)"
    if not supported:
        raise ModelUnavailableError(
            f"precision 'bf16' requested but {where} has no bfloat16 instructions; "
            "use precision 'float' (or 'int8' with backend 'onnx')"
        )


def _check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {device!r} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device
