"""The built-in model's ONNX backend: both towers exported once, run by onnxruntime.

The exports are stored beside the class-prompt cache, named by a hash of the weights they
come from, so only the first ``backend="onnx"`` start pays for ``torch.onnx.export``.
With ``precision="int8"`` the sentence encoder runs int8-quantized (about 2.4x faster on
2 cores); the image tower is convolutions, which stay float (see ``quantize``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from clipserve.errors import ModelUnavailableError
from clipserve.extras import require
from clipserve.models.builtin.text import TokenBatch
from clipserve.models.cache import write_atomically
from clipserve.models.precision import FLOAT, INT8
from clipserve.models.quantize import int8_graph
from clipserve.models.runtime import session_setup

_OPSET = 17
_FORMAT = "onnx-v1"


class OnnxTowers:
    """onnxruntime sessions for the sentence encoder and the image classifier."""

    def __init__(
        self,
        sentence_encoder: torch.nn.Module,
        classifier: torch.nn.Module,
        digest: str,
        cache_dir: Path,
        precision: str = FLOAT,
    ) -> None:
        onnxruntime = require("onnxruntime", needed_for="backend 'onnx'")
        tag = f"{_FORMAT}-{digest[:20]}"
        text_file = cache_dir / f"builtin-text-{tag}.onnx"
        image_file = cache_dir / f"builtin-image-{tag}.onnx"
        self.exported = False
        if not text_file.is_file():
            ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
            mask = (ids != 0).to(torch.int64)
            _export(
                sentence_encoder,
                (ids, mask),
                text_file,
                inputs={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                },
                output="embeddings",
            )
            self.exported = True
        if not image_file.is_file():
            _export(
                classifier,
                (torch.zeros(2, 3, 224, 224),),
                image_file,
                inputs={"pixels": {0: "batch"}},
                output="logits",
            )
            self.exported = True
        if precision == INT8:
            text_file = int8_graph(text_file, cache_dir)
        options, providers = session_setup("cpu", None)  # same threads/spinning as CLIP
        options.log_severity_level = 3
        self._text = onnxruntime.InferenceSession(str(text_file), options, providers=providers)
        self._image = onnxruntime.InferenceSession(str(image_file), options, providers=providers)
        self.files = (text_file, image_file)

    def encode_texts(self, batch: TokenBatch) -> np.ndarray:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        return np.asarray(self._text.run(None, feeds)[0], dtype=np.float32)

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        feeds = {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)}
        return np.asarray(self._image.run(None, feeds)[0], dtype=np.float32)


def _export(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    target: Path,
    inputs: dict[str, dict[int, str]],
    output: str,
) -> None:
    """Export to a temporary file, then move it into place (concurrent starts are safe)."""

    def export_to(temporary: Path) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                example,
                str(temporary),
                input_names=list(inputs),
                output_names=[output],
                dynamic_axes={**inputs, output: {0: "batch"}},
                opset_version=_OPSET,
                dynamo=False,  # the TorchScript exporter: fast and dependable for these nets
            )

    try:
        write_atomically(target, export_to)
    except Exception as exc:
        raise ModelUnavailableError(f"exporting the built-in model to ONNX failed: {exc}") from exc
