"""Fixtures shared by every test package: loaded models, a self-signed certificate, real
photos as JPEG bytes, a killable hash-model server subprocess. Sub-package conftests may
override a fixture by name."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clipserve.models.base import EmbeddingModel
from tests.server_process import HashServerProcess


@dataclass(frozen=True)
class TlsPair:
    """A self-signed certificate for 127.0.0.1/localhost; it is its own CA."""

    cert: Path
    key: Path


def make_self_signed(directory: Path) -> TlsPair:
    """Uses the ``openssl`` command line (the ``cryptography`` package is not installed)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return TlsPair(cert, key)


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> TlsPair:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def hash_model() -> EmbeddingModel:
    from clipserve.models.registry import load_model

    return load_model("hash")


@pytest.fixture(scope="session")
def builtin_model() -> EmbeddingModel:
    """The real default model, loaded once per session (slow on a busy machine)."""
    from clipserve.models.registry import load_model

    return load_model("builtin")


@pytest.fixture(scope="session")
def jpeg_photos() -> dict[str, bytes]:
    """Real photos (scikit-image, scikit-learn) encoded as JPEG files."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    arrays = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "china": china}
    arrays["flower"] = flower
    photos = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=90)
        photos[name] = buffer.getvalue()
    return photos


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[HashServerProcess]:
    """A started ``clipserve serve --model hash`` subprocess, killed by PID at the end."""
    process = HashServerProcess(tmp_path)
    process.start()
    yield process
    process.kill()
