"""Fixtures for the web page and clipserve.js tests: real photos as files, the built-in
model, Debian's headless Chromium driven by Playwright, and a folder for screenshots.

Chromium and Node.js come from the machine (``scripts/install-browser.sh`` installs
Chromium as root). Missing, their tests are skipped, unless ``CLIPSERVE_REQUIRE_BROWSER=1``
(set by ``scripts/test.sh``, so CI cannot skip them silently): then they fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CLIPSERVE_CHROMIUM", "/usr/bin/chromium")
#: flags that keep Chromium off the (closed) network and quiet in a container
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: zero-shot cases the built-in model gets right: photo -> the caption that must rank first
PHOTO_CAPTIONS = {
    "astronaut.png": "a photo of an astronaut",
    "chelsea.jpg": "a photo of a cat",
    "coffee.jpg": "a cup of coffee",
    "rocket.jpg": "a rocket launch",
}


def required_or_skip(what: str) -> None:
    if os.environ.get("CLIPSERVE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} (CLIPSERVE_REQUIRE_BROWSER=1; run scripts/install-browser.sh)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: $CLIPSERVE_TEST_ARTIFACTS, else test-artifacts/ in the repo."""
    folder = Path(os.environ.get("CLIPSERVE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photos from scikit-image as files (PNG and JPEG), plus one that is not an image."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("web-photos")
    arrays = {
        "astronaut.png": data.astronaut(),
        "chelsea.jpg": data.chelsea(),
        "coffee.jpg": data.coffee(),
        "rocket.jpg": data.rocket(),
        "camera.png": np.stack([data.camera()] * 3, axis=-1),
    }
    files = {}
    for name, pixels in arrays.items():
        files[name] = folder / name
        Image.fromarray(np.asarray(pixels)).save(files[name], quality=90)
    files["broken.jpg"] = folder / "broken.jpg"
    files["broken.jpg"].write_bytes(b"\xff\xd8\xff this is not really a JPEG")
    return files


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's Chromium, headless, through Playwright (which downloads no browser).
    Module-scoped: Playwright's sync API runs an event loop in this thread while it is
    open, which asyncio tests collected after it would trip over."""
    if not Path(CHROMIUM).exists():
        required_or_skip(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        required_or_skip("the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def node() -> list[str]:
    """A Node.js >= 20 command line, with WebSocket turned on where it is still a flag."""
    path = shutil.which("node")
    if path is None:
        required_or_skip("Node.js is not installed")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < 20:
        required_or_skip(f"Node.js {version} is older than 20")
    return [path, "--experimental-websocket"] if major < 22 else [path]
