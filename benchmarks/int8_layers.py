"""Where int8 goes wrong on a CPU without VNNI, layer by layer.

onnxruntime's u8 x s8 kernel on AVX2 (and AVX-512 without VNNI) multiplies with VPMADDUBSW:
each two neighbouring products along K are added into an int16 that saturates at +-32767.
For every MatMulInteger of a tower's int8 graph this script takes the u8 activations and s8
weights it really saw on the tests' inputs and computes, in numpy: the share of pairs whose
sum saturates, the error that makes in the layer's int32 result (relative to the exact one),
and which of the two results the CPU that ran the graph returned ("exact" with VNNI,
"saturating" on AVX2, "-" where no pair saturates and both agree; "neither" would mean the
model of the kernel is wrong).

    python benchmarks/int8_layers.py [--models tiny,builtin] [--recipe old|current]
        [--emulate Haswell [--attribute]]

``--recipe old`` (the default) is the 8-bit recipe before issue 10, ``current`` the 7-bit one
in use (no pair can saturate: 2 x 255 x 64 < 32767). ``--attribute`` (with ``--emulate``, on
a CPU with VNNI) also makes one graph per layer with only that layer in int8 and gives the
drift it causes alone: 1 - the cosine between its embeddings on the emulated CPU and here.
"""

from __future__ import annotations

import argparse
import ast
import tempfile
from pathlib import Path

import numpy as np
import onnx
from int8_setup import (
    CANDIDATES,
    MODELS,
    Tower,
    int8_twin,
    load_towers,
    machine_line,
    run_graphs,
)
from onnx import numpy_helper
from rich.console import Console
from rich.table import Table

from clipserve.models.cpu import cpu_features
from clipserve.models.quantize import RECIPE, Recipe, quantize_graph
from tests.models.precision_testkit import cosines

INT16 = (-32768, 32767)


def probed_copy(graph: Path, target: Path) -> tuple[Path, list[onnx.NodeProto], dict]:
    """``graph`` with each MatMulInteger's activations, zero point and result as outputs."""
    model = onnx.load(str(graph))
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    nodes = [node for node in model.graph.node if node.op_type == "MatMulInteger"]
    present = {output.name for output in model.graph.output}
    for node in nodes:
        for name in (node.input[0], node.input[2], node.output[0]):
            if name and name not in weights and name not in present:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    onnx.save(model, str(target))
    return target, nodes, weights


def layer_names(float_graph: Path) -> dict[str, str]:
    """Quantized node name -> the module it came from (torch's name scopes, when exported by
    the dynamo exporter; the node names of the TorchScript exporter already say it)."""
    names = {}
    for node in onnx.load(str(float_graph), load_external_data=False).graph.node:
        scopes = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes")
        if scopes:
            module = ast.literal_eval(scopes)[-2]
            module = module.split("encoder.", 1)[-1]  # "layers.0.self_attn.q_proj"
            wrapper, _, inner = module.partition(".")  # "inner.text_projection"
            module = inner if inner and wrapper in ("inner", "clip", "model") else module
            # a Gemm is quantized as MatMul (+ Add)
            names[f"{node.name}_quant"] = names[f"{node.name}_MatMul_quant"] = module
    return names


def saturating_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """u8 [M, K] x s8 [K, N] as VPMADDUBSW + VPMADDWD compute it: pairs (k, k+1) summed in
    int16 with saturation, then added in int32. Returns the result and the saturated pairs."""
    if a.shape[1] % 2:
        a, b = np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 1), (0, 0)))
    even, odd = b[0::2].astype(np.int32), b[1::2].astype(np.int32)
    result, saturated = np.zeros((a.shape[0], b.shape[1]), np.int64), 0
    for row in range(a.shape[0]):
        pairs = a[row, 0::2, None].astype(np.int32) * even + a[row, 1::2, None] * odd
        clipped = np.clip(pairs, *INT16)
        saturated += int(np.count_nonzero(clipped != pairs))
        result[row] = clipped.sum(axis=0)
    return result, saturated


def analyse(node: onnx.NodeProto, values: dict, weights: dict) -> tuple | None:
    """(K, saturated pairs, share, relative error, what this CPU returned) of one layer."""
    b = weights[node.input[1]]
    if b.dtype != np.int8:
        return None  # u8 weights run on the 16-bit u8 x u8 kernels: nothing saturates
    a = values[node.input[0]]
    a = a.reshape(-1, a.shape[-1])
    zero = node.input[2]
    za = int(np.asarray(values[zero] if zero in values else weights.get(zero, 0)))
    correction = za * b.astype(np.int64).sum(axis=0)
    exact = a.astype(np.int64) @ b.astype(np.int64) - correction
    saturating, count = saturating_product(a, b)
    saturating -= correction
    got = values[node.output[0]].reshape(exact.shape).astype(np.int64)
    if count == 0:
        returned = "-" if np.array_equal(got, exact) else "neither"  # both results agree
    elif np.array_equal(got, exact):
        returned = "exact"
    elif np.array_equal(got, saturating):
        returned = "saturating"
    else:
        returned = "neither"
    pairs = a.shape[0] * ((a.shape[1] + 1) // 2) * b.shape[1]
    error = float(np.linalg.norm(saturating - exact) / max(np.linalg.norm(exact), 1.0))
    return a.shape[1], count, count / pairs, error, returned


def drift_alone(
    tower: Tower, nodes: list[onnx.NodeProto], recipe: Recipe, work: Path, emulate: str
) -> dict[str, float]:
    """Quantized node name -> 1 - min cosine of emulated vs native embeddings, with only that
    layer in int8 (the rest float, which both CPUs compute alike)."""
    # the quantizer names its nodes "<float node>_quant" (a Gemm becomes "<gemm>_MatMul" first)
    sources = {node.name: node.name.removesuffix("_quant") for node in nodes}
    drift = {}
    chunk = 8  # graphs on disk at a time
    names = list(sources)
    for start in range(0, len(names), chunk):
        runs = []
        for index, quantized in enumerate(names[start : start + chunk]):
            others = tuple(source for q, source in sources.items() if q != quantized)
            graph = work / f"only-{index}.onnx"
            quantize_graph(tower.graph, graph, recipe, keep_float=others)
            runs.append((graph, tower.feeds, quantized))
        native, _ = run_graphs(runs, work / "native")
        emulated, _ = run_graphs(runs, work / "emulated", emulate)
        for _, _, quantized in runs:
            drift[quantized] = float(1 - cosines(emulated[quantized], native[quantized]).min())
    return drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,builtin", help=f"of {', '.join(MODELS)}")
    parser.add_argument("--recipe", choices=("old", "current"), default="old")
    parser.add_argument("--emulate", default=None, help="qemu CPU model, e.g. Haswell")
    parser.add_argument("--attribute", action="store_true", help="drift of each layer alone")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache/clipserve-bench")
    args = parser.parse_args()
    recipe = CANDIDATES["old"] if args.recipe == "old" else RECIPE
    if args.attribute and (not args.emulate or cpu_features().int8_saturates):
        parser.error("--attribute compares an emulated CPU with this one: it needs --emulate "
                     "and a CPU whose own int8 kernel is exact (VNNI)")  # fmt: skip
    console = Console(width=140)
    towers = load_towers(args.models.split(","), 2, args.cache_dir)
    with tempfile.TemporaryDirectory() as work:
        probes, runs = [], []
        for index, tower in enumerate(towers):
            target = Path(work) / f"probed-{index}.onnx"
            probe = probed_copy(int8_twin(tower, recipe, args.cache_dir), target)
            probes.append(probe)
            runs.append((probe[0], tower.feeds, tower.label))
        outputs, report = run_graphs(runs, Path(work) / "run", args.emulate, every_output=True)
        alone: dict[str, dict[str, float]] = {}
        if args.attribute:
            for tower, (_, nodes, _) in zip(towers, probes, strict=True):
                alone[tower.label] = drift_alone(tower, nodes, recipe, Path(work), args.emulate)
    for tower, (_, nodes, weights) in zip(towers, probes, strict=True):
        values = {
            key.split("/", 1)[1]: value
            for key, value in outputs.items()
            if key.startswith(f"{tower.label}/")
        }
        names = layer_names(tower.graph)
        title = f"{tower.label}, {recipe.name} - {machine_line(report, args.emulate)}"
        table = Table(title=title)
        columns = ["layer", "K", "saturated pairs", "share", "int32 error", "this CPU"]
        for column in columns + (["drift alone"] if args.attribute else []):
            table.add_column(column, justify="left" if column == "layer" else "right")
        total = saturated = 0
        for node in nodes:
            row = analyse(node, values, weights)
            if row is None:
                continue
            k, count, share, error, returned = row
            total, saturated = total + 1, saturated + (count > 0)
            name = names.get(node.name, node.name.removesuffix("_quant"))
            name = name.removeprefix("/bert/encoder/").removesuffix("/MatMul")
            cells = [name, str(k), str(count), f"{share:.2e}", f"{error:.4f}", returned]
            if args.attribute:
                cells.append(f"{alone[tower.label][node.name]:.4f}")
            table.add_row(*cells)
        console.print(table)
        console.print(f"{saturated} of {total} int8 layers have saturating pairs on these inputs")


if __name__ == "__main__":
    main()
