"""``clipserve serve`` as a real subprocess with device settings this machine cannot honour:
the start fails at once, naming what is missing or what was wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipserve.server.config import ServerConfig

REPO = Path(__file__).resolve().parents[2]


def serve(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clipserve", "serve", "--grpc-port", "0", "--http-port"]
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [*command, "0", "--host", "127.0.0.1", *flags],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=300,  # failsafe: each of these ends within seconds
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a GPU")
@pytest.mark.parametrize("model", ["builtin", "ViT-B-32::random"])
def test_serve_on_cuda_without_cuda_fails_naming_what_is_missing(model: str) -> None:
    done = serve("--model", model, "--device", "cuda")
    assert done.returncode == 1, done.stderr
    assert "clipserve: error: device 'cuda' requested but" in done.stderr
    if torch.version.cuda is None:
        assert f"this torch build ({torch.__version__}) has no CUDA support" in done.stderr
    assert "--device cpu" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a GPU")
def test_the_device_can_come_from_the_environment() -> None:
    done = serve("--model", "builtin", env={"CLIPSERVE_DEVICE": "cuda:1"})
    assert done.returncode == 1
    assert "device 'cuda:1' requested but" in done.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "gpu"], "device must be 'cpu', 'cuda', 'cuda:N' or 'auto'"),
        (["--device", "cpu,cuda:0"], "replica devices must all be CPU or all be CUDA"),
        (["--precision", "fp16"], "precision 'fp16' runs on CUDA only"),
        (["--gpu-decode", "always"], "invalid choice: 'always'"),
    ],
)
def test_bad_device_settings_are_refused_before_loading(flags: list[str], message: str) -> None:
    done = serve("--model", "builtin", *flags)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "loading model" not in done.stderr


def test_the_config_checks_devices_and_gpu_decode() -> None:
    with pytest.raises(ValueError, match="gpu_decode must be one of auto, on, off"):
        ServerConfig(gpu_decode="maybe")
    with pytest.raises(ValueError, match="'fp16' runs on CUDA only"):
        ServerConfig(device="cpu", precision="fp16")
    config = ServerConfig(device="cuda:0,cuda:1", precision="fp16", replicas=2)
    assert config.cuda_graphs is False and config.gpu_decode == "auto"
