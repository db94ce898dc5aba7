"""What the precision tests share: the texts and real photos int8/bf16 are measured on, the
cosine, and the float/int8 pair of onnx models of the tiny random CLIP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage import data

from clipserve.models.hf.core.onnx_model import OnnxDualEncoder
from clipserve.models.registry import load_model

#: an empty text and one cut at 77 tokens are the hardest for int8 (measured)
TEXTS = ["the cat", "a photo of the cat sitting on a mat", "", "of " * 200]
PHOTOS = [data.astronaut(), data.coffee(), data.chelsea()]
#: the built-in model's captions of its test photos (tests/models/test_builtin.py)
CAPTIONS = ["a photo of a cat", "a cup of coffee", "a rocket", "an astronaut",
            "a man with a camera", "a temple", "a flower", "a motorcycle", "a clock"]  # fmt: skip


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def float_and_int8(model_dir: Path, cache_dir: Path) -> tuple[OnnxDualEncoder, OnnxDualEncoder]:
    exact = load_model(str(model_dir), backend="onnx", cache_dir=cache_dir)
    int8 = load_model(str(model_dir), backend="onnx", cache_dir=cache_dir, precision="int8")
    assert isinstance(exact, OnnxDualEncoder) and isinstance(int8, OnnxDualEncoder)
    return exact, int8
