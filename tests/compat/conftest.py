"""Fixtures for the clip-client 0.8.3 compatibility tests: its venv, a self-signed
certificate, real photos on disk and the in-process builtin model for expected values."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.compat.harness import ensure_clip_client_venv
from tests.conftest import TlsPair


@pytest.fixture(scope="session")
def clip_client_python() -> Path:
    """The clip-client venv's python, created on first use (about a minute from PyPI)."""
    return ensure_clip_client_venv(timeout=900)


@pytest.fixture(scope="session")
def compat_cert(tls_pair: TlsPair) -> tuple[Path, Path]:
    """(cert, key) of the session's self-signed certificate (127.0.0.1 and localhost)."""
    return tls_pair.cert, tls_pair.key


@dataclass
class Photos:
    """Real photos saved to disk: name -> path; the same photos at twice the size as PNG
    (about 5 MiB together, for one request over 4 MiB); one raw uint8 [H, W, 3] tensor."""

    jpeg: dict[str, Path]
    png: dict[str, Path]
    big_png: dict[str, Path]
    tensor_file: Path

    def file_bytes(self, path: Path) -> bytes:
        return path.read_bytes()


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Photos:
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee()}
    china, flower = load_sample_images().images
    arrays.update(china=china, flower=flower)
    directory = tmp_path_factory.mktemp("compat-photos")
    jpeg, png, big_png = {}, {}, {}
    for name, array in arrays.items():
        image = Image.fromarray(array)
        doubled = image.resize((image.width * 2, image.height * 2), Image.LANCZOS)
        for picture, fmt, suffix, table in (
            (image, "JPEG", ".jpg", jpeg),
            (image, "PNG", ".png", png),
            (doubled, "PNG", "-big.png", big_png),
        ):
            path = directory / f"{name}{suffix}"
            picture.save(path, fmt)
            table[name] = path
    tensor_file = directory / "rocket.npy"
    np.save(tensor_file, np.ascontiguousarray(data.rocket()[::2, ::2]))
    return Photos(jpeg=jpeg, png=png, big_png=big_png, tensor_file=tensor_file)


#: the model the compat suite serves and compares against (override for quick plumbing runs)
COMPAT_MODEL = os.environ.get("CLIPSERVE_COMPAT_MODEL", "builtin")


@pytest.fixture(scope="session")
def builtin_model(builtin_model):
    """The session's shared built-in model (tests/conftest.py), unless overridden."""
    if COMPAT_MODEL == "builtin":
        return builtin_model
    from clipserve.models.registry import load_model

    return load_model(COMPAT_MODEL)
