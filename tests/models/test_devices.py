"""Device names, replica device lists, ``auto``, precisions per device and the clear errors
when CUDA is asked of a torch that has none (this test machine's CPU-only torch)."""

from __future__ import annotations

import logging

import pytest
import torch

from clipserve.errors import ModelUnavailableError
from clipserve.models.devices import (
    DeviceOptions,
    parse_device,
    parse_devices,
    replica_devices,
    resolve,
    resolve_name,
    torch_dtype,
)
from clipserve.models.precision import check_precision

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a GPU")


@pytest.mark.parametrize(
    ("text", "name"),
    [("cpu", "cpu"), (" CUDA ", "cuda"), ("cuda:1", "cuda:1"), ("Auto", "auto")],
)
def test_device_names_are_normalised(text: str, name: str) -> None:
    assert parse_device(text) == name


@pytest.mark.parametrize("text", ["gpu", "cpu:1", "cuda:x", "cuda:", "auto:0", "", "mps"])
def test_bad_device_names_are_refused_naming_the_accepted_ones(text: str) -> None:
    with pytest.raises(ValueError, match=r"'cpu', 'cuda', 'cuda:N' or 'auto'.*got"):
        parse_device(text)


def test_device_lists_spread_replicas_in_turn() -> None:
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert replica_devices("cuda:0,cuda:1", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert replica_devices("cpu", 2) == ["cpu", "cpu"]
    assert replica_devices("cuda:0,cuda:1", 1) == ["cuda:0"]


def test_device_lists_must_not_mix_cpu_and_cuda() -> None:
    with pytest.raises(ValueError, match="all be CPU or all be CUDA"):
        parse_devices("cpu,cuda:0")
    with pytest.raises(ValueError, match="at least one device"):
        parse_devices(" , ")


@no_cuda
def test_auto_is_the_cpu_where_torch_sees_no_gpu() -> None:
    assert resolve("auto") == torch.device("cpu")
    assert resolve_name("auto") == "cpu"
    assert resolve("cpu") == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_says_what_is_missing(name: str) -> None:
    with pytest.raises(ModelUnavailableError) as caught:
        resolve(name)
    message = str(caught.value)
    assert f"device {name!r} requested" in message
    if torch.version.cuda is None:  # the CPU wheel: names the build and the way out
        assert f"torch build ({torch.__version__}) has no CUDA support" in message
    assert "--device cpu" in message


def test_fp16_is_refused_on_a_cpu_with_the_alternatives() -> None:
    with pytest.raises(ValueError, match="'fp16' runs on CUDA only.*'float' or 'bf16'"):
        check_precision("fp16", "torch", "cpu")
    with pytest.raises(ValueError, match="needs backend 'torch'"):
        check_precision("fp16", "onnx", "cuda")
    with pytest.raises(ValueError, match="'fp16' runs on CUDA only"):
        torch_dtype("fp16", torch.device("cpu"))
    check_precision("fp16", "torch", "cuda:1")  # fine on paper; resolve() checks the GPU


def test_float_means_float32_on_a_cpu_and_float16_on_cuda() -> None:
    assert torch_dtype("float", torch.device("cpu")) == torch.float32
    assert torch_dtype("fp32", torch.device("cpu")) == torch.float32
    assert torch_dtype("float", torch.device("cuda", 0)) == torch.float16
    assert torch_dtype("fp32", torch.device("cuda", 0)) == torch.float32
    assert torch_dtype("fp16", torch.device("cuda", 0)) == torch.float16


def test_device_options_check_their_settings() -> None:
    with pytest.raises(ValueError, match="gpu_decode must be one of auto, on, off"):
        DeviceOptions(gpu_decode="yes")
    assert DeviceOptions().pixels_on_device("cuda")
    assert not DeviceOptions().pixels_on_device("cpu")
    assert DeviceOptions(device_preprocess=True).pixels_on_device("cpu")


def test_gpu_decode_on_without_a_cuda_device_falls_back_with_a_warning(caplog) -> None:
    from clipserve.models.accel.jpeg import route_for

    with caplog.at_level(logging.INFO, logger="clipserve.models.accel.jpeg"):
        route, decoder = route_for(DeviceOptions(gpu_decode="on"), torch.device("cpu"))
    assert not route.enabled and decoder is None
    assert "--gpu-decode on, but the model runs on cpu" in caplog.text
    assert "JPEGs decode on the CPU" in caplog.text


@no_cuda
@pytest.mark.parametrize(("mode", "level"), [("auto", "INFO"), ("on", "WARNING")])
def test_gpu_decode_without_nvjpeg_falls_back_to_the_cpu_decode(caplog, mode, level) -> None:
    """A CUDA device whose torch has no CUDA (or no torchvision): the route stays on the
    CPU and the log says why and what to do."""
    from clipserve.models.accel.jpeg import nvjpeg_decoder, route_for

    with caplog.at_level(logging.INFO, logger="clipserve.models.accel.jpeg"):
        route, decoder = route_for(DeviceOptions(gpu_decode=mode), torch.device("cuda", 0))
    assert not route.enabled and decoder is None
    (record,) = [r for r in caplog.records if "JPEGs decode on the CPU" in r.getMessage()]
    assert record.levelname == level
    with pytest.raises(ModelUnavailableError, match="--gpu-decode off") as caught:
        nvjpeg_decoder(torch.device("cuda", 0))
    assert "torchvision" in str(caught.value) or "nvJPEG" in str(caught.value)


def test_cuda_graph_buckets_pad_up_and_cpu_batches_run_eagerly() -> None:
    from clipserve.models.accel.graphs import GraphedTower

    tower = GraphedTower(lambda batch: batch * 2)
    assert [tower.bucket_of(n) for n in (1, 3, 17, 100, 1024)] == [1, 4, 24, 128, 1024]
    assert tower.bucket_of(1025) is None  # above the largest bucket: eager
    assert torch.equal(tower(torch.ones(3, 2)), torch.full((3, 2), 2.0))
    assert tower.captured == []  # nothing is captured off CUDA
