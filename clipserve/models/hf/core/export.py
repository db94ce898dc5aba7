"""Export a ``TorchDualEncoder`` to ONNX once, into a cache directory that loads by path.

An exported directory holds ``text.onnx`` and ``vision.onnx`` (each tower with its pooling
and projection; dynamic batch, and a dynamic sequence length unless the family pads to a
fixed one), the tokenizer files, ``preprocessor_config.json`` and ``clipserve_onnx.json``
(name, dim, family, text rule, score rule). Exports are cached keyed by model name, the
transformers and torch versions and a fingerprint of the weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

META_FILE = "clipserve_onnx.json"
TEXT_FILE = "text.onnx"
VISION_FILE = "vision.onnx"
OPSET = 18
#: bumped when the layout of an export changes, so old cache entries are not reused
LAYOUT = 2


def is_onnx_directory(path: Path) -> bool:
    return (path / META_FILE).is_file() and (path / TEXT_FILE).is_file()


def export_key(model: Any) -> str:
    """Cache folder name: readable model name + hash of name, versions and weights."""
    import torch
    import transformers

    from clipserve.models.cache import weights_fingerprint

    weights = weights_fingerprint(model.source) if model.source else f"random-{model.name}"
    parts = [model.name, transformers.__version__, torch.__version__, weights, str(OPSET)]
    parts += [model.spec.key, str(LAYOUT)]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.name)[-60:]
    return f"{readable}-{digest}"


def export_onnx(model: Any, target: Path) -> Path:
    """Export a ``TorchDualEncoder`` (on CPU, float32) into ``target`` atomically."""
    import torch

    if model.device.type != "cpu":
        raise ValueError("export from a CPU model; the ONNX session can still run on CUDA")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        _export_towers(model, staging)
        model.hf_tokenizer.save_pretrained(staging)
        (staging / "preprocessor_config.json").write_text(
            json.dumps(model.preprocessor.to_config(), indent=2)
        )
        meta = {
            "name": model.name,
            "dim": model.dim,
            "family": model.spec.key,
            "family_label": model.family,
            "languages": model.languages,
            "text_rule": model.spec.text.to_dict(),
            "score_rule": model.score_rule.to_dict(),
            "torch": torch.__version__,
            "opset": OPSET,
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        if target.exists() and not is_onnx_directory(target):
            shutil.rmtree(target)  # a broken leftover
        try:
            os.replace(staging, target)
        except OSError:
            if not is_onnx_directory(target):  # lost a race only if the winner finished
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _export_towers(model: Any, directory: Path) -> None:
    import torch

    hf_model = model.model
    feed_mask = model.spec.text.feed_mask

    class VisionTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.inner.get_image_features(pixel_values=pixel_values).pooler_output

    class PatchVisionTower(VisionTower):
        """NaFlex: patches, the mask of real ones, and each image's grid shape."""

        def forward(  # type: ignore[override]
            self,
            pixel_values: torch.Tensor,
            pixel_attention_mask: torch.Tensor,
            spatial_shapes: torch.Tensor,
        ) -> torch.Tensor:
            features = self.inner.get_image_features(
                pixel_values=pixel_values,
                pixel_attention_mask=pixel_attention_mask,
                spatial_shapes=spatial_shapes,
            )
            return features.pooler_output

    class TextTower(torch.nn.Module):
        """Causal towers pooled at the end token need no mask (padding after it cannot
        change the result), and SigLIP reads its padding by design."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.inner.get_text_features(input_ids=input_ids).pooler_output

    class MaskedTextTower(TextTower):
        """Bidirectional towers (BERT, XLM-R) get the attention mask."""

        def forward(  # type: ignore[override]
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor
        ) -> torch.Tensor:
            features = self.inner.get_text_features(
                input_ids=input_ids, attention_mask=attention_mask
            )
            return features.pooler_output

    batch = torch.export.Dim("batch", min=1, max=4096)
    # two images of different shapes (NaFlex grids differ), as the engine stacks them
    shapes = [(48, 80, 3), (96, 40, 3)]
    packed = np.stack([model.preprocessor(np.zeros(shape, np.uint8)) for shape in shapes])
    vision_inputs = model.preprocessor.model_inputs(packed)
    vision_example = tuple(torch.from_numpy(array) for array in vision_inputs.values())
    vision = PatchVisionTower() if len(vision_inputs) > 1 else VisionTower()
    tokens = model.tokenizer(["a photo of a cat", "x"])
    if not model.spec.text.fixed_length:  # two rows of different lengths, 8 wide
        tokens = model.tokenizer(["a photo of a cat", "x"], pad_to=8)
    example: tuple[torch.Tensor, ...] = (torch.from_numpy(tokens.input_ids),)
    names = ["input_ids"]
    if feed_mask:
        example += (torch.from_numpy(tokens.attention_mask),)
        names.append("attention_mask")
    sequence: Any = None
    if not model.spec.text.fixed_length:
        limit = model.tokenizer.context_length
        sequence = torch.export.Dim("sequence", min=2, max=max(limit, example[0].shape[1]))
    text_shapes = tuple({0: batch, 1: sequence} if sequence else {0: batch} for _ in names)
    quiet = contextlib.redirect_stdout(io.StringIO())  # the exporter narrates on stdout
    with quiet, torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            vision.eval(),
            vision_example,
            str(directory / VISION_FILE),
            input_names=list(vision_inputs),
            output_names=["embeddings"],
            dynamic_shapes=tuple({0: batch} for _ in vision_example),
            custom_translation_table=_translations(),
            opset_version=OPSET,
            dynamo=True,
            external_data=True,
            verbose=False,
        )
        torch.onnx.export(
            (MaskedTextTower() if feed_mask else TextTower()).eval(),
            example,
            str(directory / TEXT_FILE),
            input_names=names,
            output_names=["embeddings"],
            dynamic_shapes=text_shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=True,
            verbose=False,
        )


def _translations() -> dict[Any, Any]:
    """ONNX for ops the exporter lacks: ``aten._is_all_true``, which NaFlex's input checks
    (``torch._check`` on the grid shapes) leave in the graph; their assertions are dropped."""
    import torch
    from onnxscript import opset18 as op

    def is_all_true(value: Any) -> Any:
        return op.Not(op.Cast(op.ReduceMax(op.Cast(op.Not(value), to=7), keepdims=0), to=9))

    return {torch.ops.aten._is_all_true.default: is_all_true}
