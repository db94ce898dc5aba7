"""Run ONNX graphs on saved inputs and save what they return: the part of the emulated-CPU
tests that runs under ``qemu-x86_64 -cpu <model>`` (see test_int8_emulated.py).

    python tests/models/emulated_runs.py JOB.json

JOB.json: ``{"inputs": "in.npz", "outputs": "out.npz", "report": "cpu.json",
"runs": [{"graph": "a.onnx", "feeds": {"input_ids": "npz key"}, "output": "npz key"}]}``.
A run with ``"every_output": true`` saves each graph output as ``"<output>/<name>"`` (and
runs unoptimised, so the graph's own nodes run; benchmarks/int8_layers.py uses it).
Only numpy, onnxruntime and ``clipserve.models.cpu`` are imported: torch would take minutes
to start under emulation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from clipserve.models.cpu import cpu_report


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    inputs = np.load(job["inputs"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # emulated threads only add overhead
    options.log_severity_level = 3
    results = {}
    for run in job["runs"]:
        every = bool(run.get("every_output"))
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if every
            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        session = ort.InferenceSession(run["graph"], options, providers=["CPUExecutionProvider"])
        feeds = {name: inputs[key] for name, key in run["feeds"].items()}
        values = session.run(None, feeds)
        if every:
            for output, value in zip(session.get_outputs(), values, strict=True):
                results[f"{run['output']}/{output.name}"] = value
        else:
            results[run["output"]] = values[0]
    np.savez(job["outputs"], **results)
    Path(job["report"]).write_text(json.dumps(cpu_report()))


if __name__ == "__main__":
    main(sys.argv[1])
