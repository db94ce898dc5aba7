"""CLIP on onnxruntime: export from the torch model once, cache on disk, run sessions.

An exported directory holds ``text.onnx`` and ``vision.onnx`` (each tower with its
projection; dynamic batch, and dynamic sequence length for text), the tokenizer files,
``preprocessor_config.json`` and ``clipserve_onnx.json`` (name, dim). Such a directory
loads by path. Exports are cached under ``onnx_cache_dir()`` keyed by model name, the
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
import threading
from pathlib import Path
from typing import Any

import numpy as np

from clipserve.errors import ModelError, ModelUnavailableError
from clipserve.models.base import EmbeddingModel, ImageSource
from clipserve.models.clip.preprocess import ClipTokenizer, ImagePreprocessor, TokenBatch
from clipserve.models.precision import FLOAT, INT8, check_precision
from clipserve.models.quantize import int8_graph
from clipserve.models.runtime import open_session, session_setup

META_FILE = "clipserve_onnx.json"
TEXT_FILE = "text.onnx"
VISION_FILE = "vision.onnx"
OPSET = 18


def is_onnx_directory(path: Path) -> bool:
    return (path / META_FILE).is_file() and (path / TEXT_FILE).is_file()


class OnnxClipModel(EmbeddingModel):
    """Text and vision towers as two onnxruntime sessions."""

    backend = "onnx"

    def __init__(
        self,
        directory: Path,
        *,
        name: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        precision: str = FLOAT,
        cache_dir: str | Path | None = None,
    ) -> None:
        from clipserve.models.cache import onnx_cache_dir

        check_precision(precision, self.backend, device)
        meta = json.loads((directory / META_FILE).read_text())
        self.name = name or meta.get("name") or str(directory)
        self.dim = int(meta["dim"])
        self.directory = directory
        self.precision = precision
        self.tokenizer = ClipTokenizer.from_directory(directory)
        self.preprocessor = ImagePreprocessor.from_directory(directory)
        options, providers = session_setup(device, threads)
        #: the graphs the sessions run (int8 ones live in the cache, beside the exports)
        self.graphs = (directory / TEXT_FILE, directory / VISION_FILE)
        if precision == INT8:
            quantized = onnx_cache_dir(cache_dir)
            self.graphs = tuple(int8_graph(graph, quantized) for graph in self.graphs)
        try:
            self._text = open_session(self.graphs[0], options, providers)
            self._vision = open_session(self.graphs[1], options, providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelUnavailableError(f"cannot open ONNX model in {directory}: {exc}") from exc
        self.providers = self._vision.get_providers()
        self._lock = threading.Lock()

    @classmethod
    def from_directory(
        cls,
        path: str | Path,
        *,
        name: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
        precision: str = FLOAT,
        cache_dir: str | Path | None = None,
    ) -> OnnxClipModel:
        return cls(
            Path(path),
            name=name,
            device=device,
            threads=threads,
            precision=precision,
            cache_dir=cache_dir,
        )

    def weights_revision(self) -> str:
        """The graphs run (path, size, modification time, as the int8 cache keys them; an
        export's folder name holds its weights' fingerprint) and onnxruntime's version."""
        import onnxruntime

        digest = hashlib.blake2b(digest_size=16)
        for graph in self.graphs:
            stat = graph.stat()
            digest.update(f"{graph.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return f"graphs-{digest.hexdigest()}-onnxruntime-{onnxruntime.__version__}"

    def prepare_image(self, image: ImageSource) -> np.ndarray:
        return self.preprocessor(image, exact=self.exact_preprocess)

    def prepare_texts(self, texts: list[str] | tuple[str, ...]) -> TokenBatch:
        return self.tokenizer(texts)

    def cache_files(self) -> tuple[Path, ...]:
        return self.graphs

    def forward_images(self, pixels: np.ndarray) -> np.ndarray:
        feed = {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)}
        return self._run(self._vision, feed, "image")

    def forward_texts(self, tokens: TokenBatch) -> np.ndarray:
        return self._run(self._text, {"input_ids": tokens.input_ids}, "text")

    def _run(self, session: Any, feed: dict[str, np.ndarray], what: str) -> np.ndarray:
        try:
            with self._lock:
                output = session.run(None, feed)[0]
        except Exception as exc:
            raise ModelError(f"{self.name}: {what} forward failed: {exc}") from exc
        return np.asarray(output, dtype=np.float32)


def onnx_from_torch(
    model: Any,
    *,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    precision: str = FLOAT,
) -> OnnxClipModel:
    """The ONNX twin of a ``TorchClipModel``, exported once into the cache."""
    from clipserve.models.cache import onnx_cache_dir

    target = onnx_cache_dir(cache_dir) / export_key(model)
    if not is_onnx_directory(target):
        export_onnx(model, target)
    return OnnxClipModel.from_directory(
        target,
        name=model.name,
        device=device,
        threads=threads,
        precision=precision,
        cache_dir=cache_dir,
    )


def export_key(model: Any) -> str:
    """Cache folder name: readable model name + hash of name, versions and weights."""
    import torch
    import transformers

    from clipserve.models.cache import weights_fingerprint

    weights = weights_fingerprint(model.source) if model.source else f"random-{model.name}"
    parts = [model.name, transformers.__version__, torch.__version__, weights, str(OPSET)]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.name)[-60:]
    return f"{readable}-{digest}"


def export_onnx(model: Any, target: Path) -> Path:
    """Export a ``TorchClipModel`` (on CPU, float32) into ``target`` atomically."""
    import torch

    if model.device.type != "cpu":
        raise ValueError("export from a CPU model; the ONNX session can still run on CUDA")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        _export_towers(model.model, staging)
        model.hf_tokenizer.save_pretrained(staging)
        (staging / "preprocessor_config.json").write_text(
            json.dumps(model.preprocessor.to_config(), indent=2)
        )
        meta = {"name": model.name, "dim": model.dim, "torch": torch.__version__, "opset": OPSET}
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


def _export_towers(clip: Any, directory: Path) -> None:
    import torch

    class VisionTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.clip.get_image_features(pixel_values=pixel_values).pooler_output

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            # no attention mask needed: the tower is causal and pools at the end token,
            # so padding after it cannot change the result
            return self.clip.get_text_features(input_ids=input_ids).pooler_output

    size = int(clip.config.vision_config.image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim(
        "sequence", min=2, max=int(clip.config.text_config.max_position_embeddings)
    )
    eos = int(clip.config.text_config.eos_token_id)
    example_ids = torch.full((2, 8), eos, dtype=torch.long)
    example_ids[:, 0] = int(clip.config.text_config.bos_token_id)
    example_ids[0, 1:7] = 300
    quiet = contextlib.redirect_stdout(io.StringIO())  # the exporter narrates on stdout
    with quiet, torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            VisionTower().eval(),
            (torch.zeros(2, 3, size, size),),
            str(directory / VISION_FILE),
            input_names=["pixel_values"],
            output_names=["embeddings"],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            dynamo=True,
            external_data=True,
            verbose=False,
        )
        torch.onnx.export(
            TextTower().eval(),
            (example_ids,),
            str(directory / TEXT_FILE),
            input_names=["input_ids"],
            output_names=["embeddings"],
            dynamic_shapes=({0: batch, 1: sequence},),
            opset_version=OPSET,
            dynamo=True,
            external_data=True,
            verbose=False,
        )
