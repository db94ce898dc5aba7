"""Where a model runs: device names, the device list of replicas, and the torch side of it.

Device names are ``cpu``, ``cuda`` (the current GPU, ``cuda:0`` unless
``CUDA_VISIBLE_DEVICES`` or a Ray replica's GPU says otherwise), ``cuda:N`` and ``auto``
(``cuda`` where torch sees a GPU, else ``cpu``). ``--device cuda:0,cuda:1`` lists devices
for ``--replicas``, which take them in turn. The parsing here imports no torch, so the
server's configuration can check a device name before any model loads; ``resolve`` and
``torch_dtype`` do import it, and give the clear errors (a CPU-only torch build, a GPU index
that is not there, fp16 asked of a CPU).

``DeviceOptions`` holds what a model does with an accelerator beyond its weights' dtype:
pixels sent as uint8 and normalised there, JPEG decoding on the GPU (nvJPEG, through
torchvision), and CUDA graphs for the image tower.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipserve.errors import ModelUnavailableError
from clipserve.models.precision import BF16, FLOAT, FP16, FP32

if TYPE_CHECKING:
    import torch

CPU = "cpu"
CUDA = "cuda"
AUTO = "auto"
_NAME = re.compile(r"^(cpu|auto|cuda)(?::(\d+))?$")
#: ``gpu_decode`` settings: ``auto`` decodes big JPEGs on the GPU where nvJPEG is at hand
GPU_DECODE_MODES = ("auto", "on", "off")
#: ``gpu_decode=auto`` sends a JPEG to the GPU from this many pixels up (smaller ones
#: decode about as fast on a CPU core, whose scaled decode skips most of their pixels)
AUTO_GPU_DECODE_MIN_PIXELS = 2_000_000


def parse_device(text: str) -> str:
    """A device name, normalised (``" CUDA:1"`` -> ``"cuda:1"``); ``ValueError`` otherwise."""
    name = str(text).strip().lower()
    match = _NAME.match(name)
    if match is None or (match.group(2) is not None and match.group(1) != CUDA):
        raise ValueError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto' (a comma-separated list of "
            f"them for replicas); got {text!r}"
        )
    return name


def parse_devices(text: str) -> list[str]:
    """``"cuda:0,cuda:1"`` -> ``["cuda:0", "cuda:1"]``. All on CPU or all on CUDA: replicas
    on both would embed the same input differently (float32 against float16)."""
    names = [parse_device(part) for part in str(text).split(",") if part.strip()]
    if not names:
        raise ValueError("device must name at least one device (cpu, cuda, cuda:N or auto)")
    kinds = {kind_of(name) for name in names}
    if len(kinds) > 1:
        raise ValueError(
            f"replica devices must all be CPU or all be CUDA (one model, one numeric "
            f"precision); got {text!r}"
        )
    return names


def replica_devices(text: str, replicas: int) -> list[str]:
    """The device of each replica: the listed devices in turn (one device hosts them all)."""
    names = parse_devices(text)
    return [names[index % len(names)] for index in range(max(1, replicas))]


def kind_of(name: str) -> str:
    """``cpu``, ``cuda`` or ``auto`` (the part before any ``:N``)."""
    return name.partition(":")[0]


@dataclass(frozen=True)
class DeviceOptions:
    """How a model uses an accelerator (each setting is a no-op on the CPU unless noted)."""

    #: JPEG decoding on the GPU (nvJPEG via torchvision): ``auto`` for JPEGs of at least
    #: ``gpu_decode_min_pixels`` where torchvision's nvJPEG is importable, ``on`` for every
    #: JPEG (where nvJPEG cannot run: the CPU decode, with a warning), ``off`` never. Other
    #: formats, CMYK JPEGs and decoding failures always take the CPU decode
    gpu_decode: str = "auto"
    gpu_decode_min_pixels: int = AUTO_GPU_DECODE_MIN_PIXELS
    #: replay the image tower as CUDA graphs, one per batch-size bucket (CUDA only)
    cuda_graphs: bool = False
    #: send pixels to the device as uint8 and normalise there (4x fewer bytes than
    #: float32). None: on for CUDA, off on the CPU (True on the CPU runs the same code: a
    #: testing aid)
    device_preprocess: bool | None = None

    def __post_init__(self) -> None:
        if self.gpu_decode not in GPU_DECODE_MODES:
            raise ValueError(
                f"gpu_decode must be one of {', '.join(GPU_DECODE_MODES)}; got {self.gpu_decode!r}"
            )
        if int(self.gpu_decode_min_pixels) < 0:
            raise ValueError("gpu_decode_min_pixels must be >= 0")

    def pixels_on_device(self, device_kind: str) -> bool:
        if self.device_preprocess is not None:
            return self.device_preprocess
        return device_kind == CUDA


# -- the torch side -------------------------------------------------------------------------


def resolve(device: str) -> torch.device:
    """A device name -> ``torch.device``, with a clear error when CUDA is asked for and absent
    (a CPU-only torch build, no visible GPU, an index past the visible ones)."""
    import torch

    name = parse_device(device)
    if name == AUTO:
        return torch.device(CUDA if torch.cuda.is_available() else CPU)
    if kind_of(name) == CPU:
        return torch.device(CPU)
    if not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {device!r} requested but {cuda_absence()}")
    index = int(name.partition(":")[2] or torch.cuda.current_device())
    count = torch.cuda.device_count()
    if index >= count:
        raise ModelUnavailableError(
            f"device {device!r} requested but {count} GPU(s) are visible (cuda:0..cuda:"
            f"{count - 1}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
        )
    return torch.device(CUDA, index)


def resolve_name(device: str) -> str:
    """``auto`` -> ``cuda`` or ``cpu``; other names as they are (normalised)."""
    name = parse_device(device)
    return str(resolve(name).type) if name == AUTO else name


def cuda_absence() -> str:
    """Why torch sees no GPU, and what to do about it."""
    import torch

    if torch.version.cuda is None:
        return (
            f"this torch build ({torch.__version__}) has no CUDA support: install a CUDA build "
            "of torch (https://pytorch.org/get-started/locally/) or run with --device cpu"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    return (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU{where}: "
        "check the driver (nvidia-smi) or run with --device cpu"
    )


def torch_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The weights' dtype: ``float`` is float32 on the CPU and float16 on CUDA; ``fp32``,
    ``fp16`` and ``bf16`` are what they say (fp16 on CUDA only, bf16 where the hardware
    computes in it)."""
    import torch

    if precision == BF16:
        check_bf16(device)
        return torch.bfloat16
    if precision == FP16 or (precision == FLOAT and device.type == CUDA):
        if device.type != CUDA:
            raise ValueError("precision 'fp16' runs on CUDA only (a CPU only emulates float16)")
        return torch.float16
    if precision in (FLOAT, FP32):
        return torch.float32
    raise ValueError(f"precision {precision!r} is not a torch precision")


def exact_float32(device: torch.device) -> None:
    """float32 on a GPU means float32: no TF32 in matrix products and convolutions (they
    keep 10 mantissa bits, ~1e-3 off the CPU). Process-wide settings of torch."""
    import torch

    if device.type == CUDA:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def check_bf16(device: torch.device) -> None:
    """bfloat16 only where the hardware computes in it: emulated, it is slower than float32."""
    import torch

    from clipserve.models.cpu import REFUSED, cpu_features, verdict_for

    if device.type == CUDA:
        supported = torch.cuda.is_bf16_supported()
        where = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        if verdict_for(BF16).status == REFUSED:  # x86: CPUID says no bf16 instructions
            supported = False
        else:  # elsewhere torch knows best
            try:
                supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            except (AttributeError, RuntimeError):
                supported = False
        where = f"this CPU ({cpu_features().kind}; needs AVX512-BF16 or AMX)"
    if not supported:
        raise ModelUnavailableError(
            f"precision 'bf16' requested but {where} has no bfloat16 instructions; "
            "use precision 'float' (or 'int8' with backend 'onnx')"
        )


def dtype_name(dtype: Any) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).rpartition(".")[2]
