"""Dynamic int8 quantization of ONNX graphs (``precision="int8"`` of the onnx backend).

``int8`` stores the weights of every MatMul/Gemm as int8 with one scale per output channel,
within +-64 (7 bits, onnxruntime's ``reduce_range``); activations are quantized to uint8 per
batch at run time (onnxruntime's dynamic quantization). The 7-bit weights are what makes the
recipe right on every x86 CPU: onnxruntime's u8 x s8 kernel on AVX2 (and on AVX-512 without
VNNI) sums neighbouring products in saturating int16 (VPMADDUBSW), and 2 x 255 x 64 = 32640
always fits where 2 x 255 x 127 did not (cosine 0.947 with float32 on an AVX2 CPU). The same
u8 x s8 kernel runs, so VNNI keeps its speed: about 3x float32 for ViT-B/32 with AVX-512 VNNI,
about 1.8x on AVX2. Embeddings keep a cosine of 0.99 or more with the float ones, not the
1e-4 agreement of float32; docs/precision.md has the measurements and the recipes compared.
Convolutions stay in float: onnxruntime's integer convolutions ran EfficientNet-Lite0 about
10x slower than its float ones on the dev box.

A quantized graph is made once from its float graph and cached on disk, keyed by the float
file (path, size, modification time), onnxruntime's version and this recipe.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from clipserve.errors import ModelUnavailableError
from clipserve.models.cache import write_atomically


@dataclass(frozen=True)
class Recipe:
    """Settings of onnxruntime's dynamic quantization; ``name`` is part of the cache key."""

    name: str
    #: "s8" (symmetric, the u8 x s8 kernels) or "u8" (asymmetric, the u8 x u8 kernels)
    weights: str = "s8"
    per_channel: bool = True
    #: 7-bit weights (onnxruntime's ``reduce_range``)
    reduce_range: bool = True


#: the recipe int8 runs with (benchmarks/bench_int8.py compares it with the others)
RECIPE = Recipe("dynamic-u8s8-7bit-per-channel-matmul-v2")
#: the largest weight magnitude ``RECIPE`` produces: 2 x 255 x 64 < 2^15 (see above)
WEIGHT_LIMIT = 64


def int8_graph(source: Path, cache_dir: Path, recipe: Recipe = RECIPE) -> Path:
    """The int8 twin of the float ONNX graph ``source``: quantized on first use, then cached
    under ``cache_dir/int8``. Concurrent first uses are safe (write, then rename)."""
    import onnxruntime

    stat = source.stat()
    parts = [str(source.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    parts += [onnxruntime.__version__, recipe.name]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    target = cache_dir / "int8" / f"{source.stem}-{digest}.onnx"
    if target.is_file():
        return target

    def quantize_into(temporary: Path) -> None:
        try:
            quantize_graph(source, temporary, recipe)
        except Exception as exc:
            raise ModelUnavailableError(f"int8 quantization of {source} failed: {exc}") from exc

    try:
        write_atomically(target, quantize_into)
    except OSError as exc:
        raise ModelUnavailableError(
            f"cannot write the int8 graph of {source} into {target.parent}: {exc}; make the "
            "cache writable or fill it beforehand with `clipserve prepare`"
        ) from exc
    return target


def quantize_graph(
    source: Path, target: Path, recipe: Recipe = RECIPE, keep_float: tuple[str, ...] = ()
) -> None:
    """Write the int8 version of ``source`` to ``target`` (no caching); the nodes named in
    ``keep_float`` stay float (benchmarks/int8_layers.py quantizes one layer at a time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()  # the quantizer advises pre-processing on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8 if recipe.weights == "s8" else QuantType.QUInt8,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=list(keep_float),
            # only weight matrices: attention's activation-by-activation products stay float
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        quiet.setLevel(level)
