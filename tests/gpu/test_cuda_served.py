"""``clipserve serve --device cuda`` end to end: the Python client's embeddings of real
photos (small and 12 MP, JPEG decoded on the GPU) and texts against the CPU model's."""

from __future__ import annotations

import numpy as np
import pytest

from clipserve import Client
from clipserve.models.registry import load_model
from tests.compat.harness import serve_subprocess
from tests.gpu.conftest import cosines

TEXTS = ["a photo of a cat", "a cup of coffee", "a rocket at night"]


@pytest.mark.parametrize("gpu_decode", ["auto", "on"])
def test_served_on_cuda(photos, gpu_decode: str) -> None:
    cpu = load_model("ViT-B-32::random")
    flags = ["--model", "ViT-B-32::random", "--device", "cuda", "--gpu-decode", gpu_decode]
    with serve_subprocess(flags) as server:
        client = Client(f"grpc://127.0.0.1:{server.grpc_port}")
        images = np.asarray(client.encode(photos))
        texts = np.asarray(client.encode(TEXTS))
        health = Client(f"http://127.0.0.1:{server.http_port}").encode(TEXTS[:1])
    assert cosines(images, cpu.encode_images(photos)).min() >= 0.99
    assert cosines(texts, cpu.encode_texts(TEXTS)).min() >= 0.999
    assert np.asarray(health).shape == (1, cpu.dim)
