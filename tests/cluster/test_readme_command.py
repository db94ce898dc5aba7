"""The README's Ray command as a newcomer runs it on one machine: ``clipserve serve --ray
local --replicas 2`` (here on loopback, ports 0) starts a Ray cluster of its own with two
replicas of the built-in model, and the published clip-client 0.8.3 gets the built-in
model's embeddings from it over gRPC and HTTP. SIGTERM drains, deletes the app, stops the
cluster it started and exits 0.

No shared cluster here: the command starts its own (Ray's files go to the private
temporary directory ``tests/cluster/conftest.py`` sets for every Ray process of the run).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.cluster.conftest import wait_until
from tests.compat.conftest import Photos
from tests.compat.harness import run_driver, serve_subprocess

pytestmark = [pytest.mark.cluster, pytest.mark.compat, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
README_ARGS = ["--ray", "local", "--replicas", "2"]
TEXTS = [f"a photo of a {thing}" for thing in ("cat", "dog", "cup of coffee", "red flower")]


def test_the_readme_command_serves_two_replicas_to_clip_client(
    clip_client_python: Path, builtin_model, photos: Photos, tmp_path: Path
) -> None:
    assert f"`clipserve serve {' '.join(README_ARGS)}`" in (REPO / "README.md").read_text()
    log = tmp_path / "serve.log"
    chelsea = photos.jpeg["chelsea"]
    ops = [
        {"name": "texts", "op": "encode", "content": TEXTS},
        {"name": "mixed", "op": "encode", "content": [str(chelsea), "a photo of a cat"]},
    ]
    with serve_subprocess(README_ARGS, log_file=log, ready_timeout=600) as served:
        url = f"http://127.0.0.1:{served.http_port}"
        health = wait_until(
            lambda: (
                (body := httpx.get(url + "/health", timeout=30).json())["status"] == "ok" and body
            ),
            "both replicas running in /health",
        )
        results = {
            scheme: run_driver(
                clip_client_python,
                {"default": {"server": f"{scheme}://127.0.0.1:{port}"}},
                ops,
                tmp_path / scheme,
            )
            for scheme, port in (("grpc", served.grpc_port), ("http", served.http_port))
        }
    assert health["replicas"] == {"wanted": 2, "running": 2}, health
    assert health["cluster"]["joined"] == "deployed" and health["family"] == "built-in"
    image = builtin_model.encode_images([chelsea.read_bytes()])
    mixed = np.concatenate([image, builtin_model.encode_texts(["a photo of a cat"])])
    for scheme, result in results.items():
        np.testing.assert_allclose(
            result.embeddings("texts"), builtin_model.encode_texts(TEXTS), atol=1e-5,
            err_msg=scheme,
        )  # fmt: skip
        np.testing.assert_allclose(result.embeddings("mixed"), mixed, atol=1e-5, err_msg=scheme)
    text = log.read_text()
    assert "clipserve: started a local Ray cluster at 127.0.0.1:" in text, text[-3000:]
    assert "clipserve: stopped" in text, text[-3000:]
    assert served.process.returncode == 0
