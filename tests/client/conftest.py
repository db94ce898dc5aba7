"""Fixtures for the client tests: real servers on loopback, real photos, a local image
web server and a self-signed certificate."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipserve.server.app import RunningServer, loopback_config, running_server


@pytest.fixture(scope="session")
def hash_server() -> Iterator[RunningServer]:
    with running_server(loopback_config()) as server:
        yield server


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos from scikit-image, as PNG and JPEG files."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    files = {}
    for name, pixels in (("astronaut", data.astronaut()), ("coffee", data.coffee()),
                         ("chelsea", data.chelsea())):  # fmt: skip
        image = Image.fromarray(np.asarray(pixels)[::4, ::4])  # small: fast tests
        files[f"{name}.png"] = folder / f"{name}.png"
        image.save(files[f"{name}.png"])
        files[f"{name}.jpg"] = folder / f"{name}.jpg"
        image.save(files[f"{name}.jpg"], quality=90)
    return files


@pytest.fixture(scope="session")
def image_site(photos) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving the photos' folder."""
    folder = next(iter(photos.values())).parent

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost (needs the openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
