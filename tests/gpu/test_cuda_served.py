"""``clipserve serve --device cuda`` end to end: the Python client's embeddings of real
photos (small and 12 MP, JPEG decoded on the GPU) and texts against the CPU model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipserve import Client
from clipserve.models.registry import load_model
from tests.compat.harness import serve_subprocess
from tests.gpu.conftest import cosines

TEXTS = ["a photo of a cat", "a cup of coffee", "a rocket at night"]


@pytest.mark.parametrize("gpu_decode", ["auto", "on"])
def test_served_on_cuda(photos, gpu_decode: str, tmp_path: Path) -> None:
    cpu = load_model("ViT-B-32::random")
    files = []  # the Python client sends image files, like clip-client
    for index, photo in enumerate(photos):
        files.append(tmp_path / f"photo-{index}.jpg")
        files[-1].write_bytes(photo)
    flags = ["--model", "ViT-B-32::random", "--device", "cuda", "--gpu-decode", gpu_decode]
    with serve_subprocess(flags) as server:
        with Client(f"grpc://127.0.0.1:{server.grpc_port}") as client:
            images = np.asarray(client.encode([str(path) for path in files]))
            texts = np.asarray(client.encode(TEXTS))
        with Client(f"http://127.0.0.1:{server.http_port}") as client:
            over_http = client.encode(TEXTS[:1])
    assert cosines(images, cpu.encode_images(photos)).min() >= 0.99
    assert cosines(texts, cpu.encode_texts(TEXTS)).min() >= 0.999
    assert np.asarray(over_http).shape == (1, cpu.dim)
