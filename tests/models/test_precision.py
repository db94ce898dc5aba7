"""Precisions other than float: int8 (onnx backend) and bf16 (torch backend), on the tiny
random CLIP checkpoint."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from clipserve.errors import ModelUnavailableError
from clipserve.models.builtin.model import BuiltinModel
from clipserve.models.cpu import cpu_features, verdict_for
from clipserve.models.hf.core.onnx_model import OnnxDualEncoder
from clipserve.models.hf.core.torch_model import TorchDualEncoder
from clipserve.models.quantize import WEIGHT_LIMIT
from clipserve.models.registry import load_model
from clipserve.server.config import ServerConfig
from tests.models.clip_testkit import save_tiny_clip
from tests.models.precision_testkit import PHOTOS, TEXTS, cosines, float_and_int8


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clipserve-cache")


@pytest.fixture(scope="module")
def pair(tiny_dir: Path, cache_dir: Path) -> tuple[OnnxDualEncoder, OnnxDualEncoder]:
    return float_and_int8(tiny_dir, cache_dir)


def test_int8_graphs_hold_integer_matmuls(pair: tuple[OnnxDualEncoder, OnnxDualEncoder]) -> None:
    exact, int8 = pair
    assert (exact.precision, int8.precision) == ("float", "int8")
    for float_graph, int8_graph in zip(exact.graphs, int8.graphs, strict=True):
        float_ops = {node.op_type for node in onnx.load(str(float_graph)).graph.node}
        int8_ops = {node.op_type for node in onnx.load(str(int8_graph)).graph.node}
        assert "MatMulInteger" not in float_ops
        assert {"MatMulInteger", "DynamicQuantizeLinear"} <= int8_ops
        assert stored_bytes(int8_graph) < stored_bytes(float_graph)
        # 7-bit weights: u8 x s8 pair sums stay below 2^15, so AVX2's VPMADDUBSW cannot saturate
        weights = integer_weights(int8_graph)
        assert weights and all(w.dtype == np.int8 for w in weights)
        assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) == WEIGHT_LIMIT


def integer_weights(graph: Path) -> list[np.ndarray]:
    """The 2-D integer initializers (quantized weight matrices) of an int8 graph."""
    model = onnx.load(str(graph))
    arrays = [onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer]
    return [a for a in arrays if a.ndim == 2 and a.dtype in (np.int8, np.uint8)]


def stored_bytes(graph: Path) -> int:
    """The graph file plus its external weights file, if it has one."""
    weights = graph.with_name(graph.name + ".data")
    return graph.stat().st_size + (weights.stat().st_size if weights.exists() else 0)


def test_int8_embeddings_stay_close_to_float(pair: tuple[OnnxDualEncoder, OnnxDualEncoder]) -> None:
    """0.99 on every x86 CPU: measured 0.9993 (texts) and 0.9998 (images) at worst, the same on
    AVX-512 VNNI and on AVX2 (emulated by qemu -cpu Haswell)."""
    exact, int8 = pair
    text_cos = cosines(exact.encode_texts(TEXTS), int8.encode_texts(TEXTS))
    image_cos = cosines(exact.encode_images(PHOTOS), int8.encode_images(PHOTOS))
    assert text_cos.min() >= 0.99, text_cos
    assert image_cos.min() >= 0.99, image_cos
    # quantized, not the same graph under another name
    assert np.abs(exact.encode_texts(TEXTS) - int8.encode_texts(TEXTS)).max() > 1e-6


def test_int8_graphs_are_made_once_and_follow_the_float_file(
    pair: tuple[OnnxDualEncoder, OnnxDualEncoder], tiny_dir: Path, cache_dir: Path
) -> None:
    _, int8 = pair
    made = {graph: graph.stat().st_mtime_ns for graph in int8.graphs}
    again = load_model(str(tiny_dir), backend="onnx", cache_dir=cache_dir, precision="int8")
    assert isinstance(again, OnnxDualEncoder) and again.graphs == int8.graphs
    assert {graph: graph.stat().st_mtime_ns for graph in again.graphs} == made
    # a float graph that changes (re-exported, replaced by hand) gets a new int8 twin
    text_graph = int8.directory / "text.onnx"
    stat = text_graph.stat()
    os.utime(text_graph, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    renewed = OnnxDualEncoder.from_directory(int8.directory, precision="int8", cache_dir=cache_dir)
    assert renewed.graphs[0] != int8.graphs[0] and renewed.graphs[1] == int8.graphs[1]


def test_an_unwritable_cache_is_a_clear_error(
    pair: tuple[OnnxDualEncoder, OnnxDualEncoder], tmp_path: Path
) -> None:
    exact, _ = pair
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache directory should be")
    with pytest.raises(ModelUnavailableError, match="cannot write the int8 graph.*prepare"):
        OnnxDualEncoder.from_directory(exact.directory, precision="int8", cache_dir=blocked)


def test_int8_needs_onnx_on_cpu(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="int8.*backend 'onnx'"):
        load_model(str(tiny_dir), precision="int8")
    with pytest.raises(ValueError, match="int8.*'cpu' only"):
        load_model(str(tiny_dir), backend="onnx", device="cuda", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of float, fp32, fp16, bf16, int8"):
        load_model(str(tiny_dir), backend="onnx", precision="fp8")
    with pytest.raises(ValueError, match="int8 needs backend onnx"):
        ServerConfig(precision="int8")
    assert ServerConfig(precision="int8", backend="onnx").precision == "int8"


def test_precisions_are_checked_against_backend_and_model(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="'bf16' needs backend 'torch'"):
        load_model(str(tiny_dir), backend="onnx", precision="bf16")
    with pytest.raises(ValueError, match="precision bf16 needs backend torch"):
        ServerConfig(precision="bf16", backend="onnx")
    with pytest.raises(ValueError, match="built-in model runs in precision 'float'.*not 'bf16'"):
        BuiltinModel(precision="bf16")


BF16_HERE = verdict_for("bf16")


@pytest.mark.skipif(BF16_HERE.status != "fast", reason=f"bf16 on this CPU: {BF16_HERE.reason}")
def test_bf16_runs_in_bfloat16_close_to_float(tiny_dir: Path) -> None:
    exact = load_model(str(tiny_dir))
    bf16 = load_model(str(tiny_dir), precision="bf16")
    assert isinstance(bf16, TorchDualEncoder) and bf16.precision == "bf16"
    assert {parameter.dtype for parameter in bf16.model.parameters()} == {torch.bfloat16}
    texts, images = bf16.encode_texts(TEXTS), bf16.encode_images(PHOTOS)
    assert texts.dtype == images.dtype == np.float32
    assert cosines(exact.encode_texts(TEXTS), texts).min() >= 0.99
    assert cosines(exact.encode_images(PHOTOS), images).min() >= 0.99
    assert np.abs(exact.encode_texts(TEXTS) - texts).max() > 1e-6  # really ran in bf16


@pytest.mark.skipif(
    BF16_HERE.status != "refused", reason="this CPU has bf16 instructions (see the test above)"
)
def test_bf16_is_refused_where_it_would_be_emulated(tiny_dir: Path) -> None:
    kind = re.escape(cpu_features().kind)
    with pytest.raises(ModelUnavailableError, match=rf"CPU \({kind}; .* no bfloat16 instructions"):
        load_model(str(tiny_dir), precision="bf16")
