"""Any dual-encoder family on onnxruntime: two sessions over an export (see ``export``)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from clipserve.errors import ModelError, ModelUnavailableError
from clipserve.models.base import EmbeddingModel, ImageSource
from clipserve.models.hf.core.export import (
    META_FILE,
    TEXT_FILE,
    VISION_FILE,
    export_key,
    export_onnx,
    is_onnx_directory,
)
from clipserve.models.hf.core.images import exported_preprocessor
from clipserve.models.hf.core.spec import TextRule
from clipserve.models.hf.core.tokens import TokenBatch, load_hf_tokenizer, text_tokenizer
from clipserve.models.precision import FLOAT, INT8, check_precision
from clipserve.models.quantize import int8_graph
from clipserve.models.runtime import open_session, session_setup
from clipserve.models.scoring import ScoreRule

#: exports made before families existed were CLIP's
_CLIP_TEXT = TextRule(context_length=77)


class OnnxDualEncoder(EmbeddingModel):
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
        self.family = str(meta.get("family_label", "CLIP"))
        self.languages = str(meta.get("languages", "en"))
        self.score_rule = ScoreRule.from_dict(meta.get("score_rule"))
        self.text_rule = TextRule.from_dict(meta.get("text_rule") or _CLIP_TEXT.to_dict())
        self.directory = directory
        self.precision = precision
        self.tokenizer = text_tokenizer(load_hf_tokenizer(directory), self.text_rule)
        self.preprocessor = exported_preprocessor(directory)
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
        self._text_inputs = {node.name for node in self._text.get_inputs()}
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
    ) -> OnnxDualEncoder:
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
        return self._run(self._vision, self.preprocessor.model_inputs(pixels), "image")

    def forward_texts(self, tokens: TokenBatch) -> np.ndarray:
        feed = {"input_ids": tokens.input_ids}
        if "attention_mask" in self._text_inputs:
            feed["attention_mask"] = tokens.attention_mask
        return self._run(self._text, feed, "text")

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
) -> OnnxDualEncoder:
    """The ONNX twin of a ``TorchDualEncoder``, exported once into the cache."""
    from clipserve.models.cache import onnx_cache_dir

    target = onnx_cache_dir(cache_dir) / export_key(model)
    if not is_onnx_directory(target):
        export_onnx(model, target)
    return OnnxDualEncoder.from_directory(
        target,
        name=model.name,
        device=device,
        threads=threads,
        precision=precision,
        cache_dir=cache_dir,
    )
