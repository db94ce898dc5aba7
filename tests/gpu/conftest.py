"""The CUDA tests: every test here is marked ``gpu`` and skipped, saying why, where torch
sees no GPU (CI, the CPU machines). ``benchmarks/gpu_check.sh`` runs them on a lent GPU."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.photos import encode, source_photos, upscaled

NO_GPU = (
    None
    if torch.cuda.is_available()
    else (
        f"needs a CUDA GPU: torch {torch.__version__} sees none"
        + (" (a CPU-only build)" if torch.version.cuda is None else "")
    )
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/gpu/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if NO_GPU is not None:
                item.add_marker(pytest.mark.skip(reason=NO_GPU))


@pytest.fixture(scope="session")
def photos() -> list[bytes]:
    """Real photos as JPEGs at their own size (0.1-2 MP), and two at 12 MP."""
    small = [encode(Image.fromarray(array)) for _, array in source_photos()]
    big = [encode(upscaled(array, 12.0, seed=index)) for index, (_, array) in
           enumerate(source_photos()[:2])]  # fmt: skip
    return small + big


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
