"""The numeric precisions a model can run in, and which backend and device run each.

* ``float`` (default): float32 on CPU, float16 on CUDA; backends agree to 1e-4.
* ``fp32``: float32 on any device (on a GPU: no TF32 either), the CPU's embeddings to 1e-4.
* ``fp16``: float16, the torch backend on CUDA only (what ``float`` picks there).
* ``bf16``: the torch backend in bfloat16, on a CPU with bf16 instructions (AVX512-BF16 or
  AMX) or a CUDA GPU that has them; about 2x float32 on such a CPU, cosine ~0.9999 with it.
* ``int8``: the onnx backend on CPU with int8 weights (``clipserve.models.quantize``);
  about 3x float32 with VNNI, 1.8x on AVX2, cosine ~0.99 or better with it on both.

``clipserve.models.cpu`` says which of them are fast, slow or refused on the CPU at hand.
"""

from __future__ import annotations

#: the inference backends every model family offers
BACKENDS = ("torch", "onnx")
FLOAT = "float"
FP32 = "fp32"
FP16 = "fp16"
BF16 = "bf16"
INT8 = "int8"
PRECISIONS = (FLOAT, FP32, FP16, BF16, INT8)
#: precision -> the backend that runs it (float and fp32 run on every backend)
BACKEND_OF = {FP16: "torch", BF16: "torch", INT8: "onnx"}


def check_precision(precision: str, backend: str, device: str) -> None:
    """Raise ``ValueError`` for a precision the backend or device cannot run. (Whether the
    hardware has bf16 instructions is checked by the torch backend when it loads.)
    ``device`` is a device name (``cpu``, ``cuda[:N]``); ``auto`` is checked once resolved."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    needed = BACKEND_OF.get(precision)
    if needed is not None and backend != needed:
        raise ValueError(f"precision {precision!r} needs backend {needed!r}, not {backend!r}")
    kind = device.strip().lower().partition(":")[0]
    if precision == INT8 and kind != "cpu":
        raise ValueError(f"precision 'int8' runs on 'cpu' only, not {device!r}")
    if precision == FP16 and kind == "cpu":
        raise ValueError(
            "precision 'fp16' runs on CUDA only (a CPU only emulates float16); use 'float' "
            "or 'bf16' on a CPU"
        )
