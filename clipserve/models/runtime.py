"""Runtime settings shared by every model family: inference threads, onnxruntime's
session options and providers, and the physical core count."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clipserve.errors import ModelUnavailableError

THREADS_ENV = "CLIPSERVE_THREADS"
SPIN_ENV = "CLIPSERVE_ORT_SPIN"


def session_setup(device: str, threads: int | None) -> tuple[Any, list[str]]:
    """onnxruntime session options and providers for ``device``, with the thread count
    (``threads``, else ``$CLIPSERVE_THREADS``, else physical cores) and spinning setting."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or configured_threads() or physical_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", ort_spinning())
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        if not gpu:
            raise ModelUnavailableError(
                f"device {device!r} requested but onnxruntime has no CUDA provider"
            )
        providers = gpu + providers
    return options, providers


def open_session(path: Path, options: Any, providers: list[str]) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def configured_threads() -> int | None:
    """``$CLIPSERVE_THREADS``: inference threads per model, if the operator set it."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def ort_spinning() -> str:
    """``$CLIPSERVE_ORT_SPIN``: "1" (default, onnxruntime's own) lets idle inference threads
    spin briefly for the next parallel section, which is faster on a dedicated machine;
    "0" makes them sleep, leaving the cores to other processes on a shared one."""
    value = os.environ.get(SPIN_ENV, "1").strip() or "1"
    if value not in ("0", "1"):
        raise ValueError(f"{SPIN_ENV} must be 0 or 1, got {value!r}")
    return value


def available_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask): the decode pool's size."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads do not help GEMMs)."""
    available = available_cpus()
    try:
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
        per_core = len([part for part in siblings.strip().split(",") if part]) or 1
        if "-" in siblings:
            low, high = siblings.strip().split("-")[:2]
            per_core = int(high) - int(low) + 1
    except (OSError, ValueError):
        per_core = 1
    return max(1, available // per_core)
