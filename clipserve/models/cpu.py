"""What this CPU can do for each precision: the instruction-set features that decide it, the
int8 kernel onnxruntime will pick, and a verdict per precision (fast, slow or refused).

Features are read with the CPUID instruction itself (and XGETBV, for whether the operating
system saves the AVX-512 and AMX registers), the same bits onnxruntime's MLAS library and
oneDNN decide on, so the report matches the kernels that run, also inside a VM or an emulator
that hides features the host has (``/proc/cpuinfo`` shows the host's flags under qemu-user).
Where CPUID cannot be run from Python (not x86-64 Linux/macOS, or no executable memory), the
table numpy keeps for its own dispatch is used, which lacks AVX-VNNI and AMX.

onnxruntime's u8 x s8 kernel on AVX2, and on AVX-512 without VNNI, multiplies with VPMADDUBSW,
which adds each two neighbouring u8*s8 products into an int16 that saturates: with 8-bit
weights the sums can exceed 32767 (2 x 255 x 127 = 64770) and the layer output is wrong. The
int8 recipe (``quantize.RECIPE``) keeps weights within +-64, so the sums stay below 2^15 on
every CPU; see docs/precision.md.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from clipserve.models.precision import BF16, FLOAT, INT8
from clipserve.models.quantize import RECIPE

FAST, SLOW, REFUSED = "fast", "slow", "refused"

#: x86-64 machine code (System V ABI): cpuid(leaf, subleaf, uint32 out[4]); xgetbv(register)
_CPUID_CODE = bytes.fromhex(
    "53"  # push rbx (callee-saved, cpuid writes it)
    "89f8"  # mov eax, edi (leaf)
    "89f1"  # mov ecx, esi (subleaf)
    "4989d0"  # mov r8, rdx (out)
    "0fa2"  # cpuid
    "418900"  # mov [r8], eax
    "41895804"  # mov [r8+4], ebx
    "41894808"  # mov [r8+8], ecx
    "4189500c"  # mov [r8+12], edx
    "5b"  # pop rbx
    "c3"  # ret
)
_XGETBV_CODE = bytes.fromhex(
    "89f9"  # mov ecx, edi
    "0f01d0"  # xgetbv
    "48c1e220"  # shl rdx, 32
    "4809d0"  # or rax, rdx
    "c3"  # ret
)
_XCR0_AVX = 0x6  # SSE and AVX register state saved by the OS
_XCR0_AVX512 = 0xE0  # opmask, ZMM upper halves, ZMM16-31
_XCR0_AMX = 0x60000  # tile config and tile data


@dataclass(frozen=True)
class CpuFeatures:
    """The features that decide float, bf16 and int8 speed (and int8 correctness)."""

    name: str
    avx2: bool = False  # with FMA: onnxruntime's and oneDNN's AVX2 kernels
    avx512: bool = False  # AVX-512 F/BW/DQ/VL ("AVX-512 core"), registers enabled by the OS
    avx512_vnni: bool = False
    avx_vnni: bool = False  # the VEX (256-bit) VNNI of Alder Lake and later
    avx512_bf16: bool = False
    amx_bf16: bool = False
    amx_int8: bool = False
    #: "cpuid", "numpy" (numpy's dispatch table: no AVX-VNNI/AMX) or "none" (not x86-64)
    source: str = "cpuid"

    @property
    def vnni(self) -> bool:
        return self.avx512_vnni or self.avx_vnni

    @property
    def kind(self) -> str:
        """The class of CPU in the words the benchmark tables use."""
        if self.source == "none":
            return f"{platform.machine() or 'unknown'} (not x86-64)"
        if self.avx512 and self.avx512_vnni:
            return "AVX-512 VNNI" + (" + AMX" if self.amx_int8 else "")
        if self.avx512:
            return "AVX-512 without VNNI"
        if self.avx2:
            return "AVX2 + AVX-VNNI" if self.avx_vnni else "AVX2 without VNNI"
        return "x86-64 without AVX2"

    @property
    def int8_kernel(self) -> str:
        """The u8 x s8 GEMM kernel onnxruntime (MLAS) selects, in its order of preference."""
        if self.source == "none":
            return "not x86-64: onnxruntime's own choice"
        if self.amx_int8:
            return "AMX"
        if self.avx512 and self.avx512_vnni:
            return "AVX-512 VNNI (VPDPBUSD)"
        if self.avx512:
            return "AVX-512 core (VPMADDUBSW, saturates int16 pairs)"
        if self.avx_vnni:
            return "AVX-VNNI (VPDPBUSD)"
        if self.avx2:
            return "AVX2 (VPMADDUBSW, saturates int16 pairs)"
        return "SSE (16-bit widening, no saturation)"

    @property
    def int8_saturates(self) -> bool:
        """Whether the u8 x s8 kernel adds product pairs in saturating int16 (VPMADDUBSW)."""
        return self.source != "none" and "VPMADDUBSW" in self.int8_kernel


@dataclass(frozen=True)
class Verdict:
    """How a precision runs on this CPU: ``fast`` (faster than float32), ``slow`` (runs, but
    may not beat float32) or ``refused`` (the backend will not load it here)."""

    precision: str
    status: str
    reason: str


def precision_verdicts(features: CpuFeatures) -> list[Verdict]:
    """float, bf16 and int8 on a CPU with ``features`` (speeds: docs/precision.md)."""
    verdicts = [Verdict(FLOAT, FAST, "float32, the reference (exact) setting")]
    if features.avx512_bf16 or features.amx_bf16:
        what = "AMX-BF16" if features.amx_bf16 else "AVX512-BF16"
        verdicts.append(Verdict(BF16, FAST, f"{what}: about 2x float32 (torch backend)"))
    elif features.source == "none":
        verdicts.append(Verdict(BF16, SLOW, "not x86-64: torch decides at load time"))
    else:
        verdicts.append(Verdict(BF16, REFUSED, "no AVX512-BF16 or AMX: bfloat16 would be emulated"))
    if features.amx_int8 or features.vnni:
        verdicts.append(Verdict(INT8, FAST, f"{features.int8_kernel}: about 3x float32"))
    elif features.avx2:
        verdicts.append(
            Verdict(
                INT8,
                FAST,
                f"{features.int8_kernel}; 7-bit weights keep it exact: about 1.8x float32",
            )
        )
    elif features.source == "none":
        verdicts.append(Verdict(INT8, SLOW, "not x86-64: speed and accuracy not measured"))
    else:
        verdicts.append(Verdict(INT8, SLOW, "no AVX2: int8 kernels may not beat float32 here"))
    return verdicts


def verdict_for(precision: str, features: CpuFeatures | None = None) -> Verdict:
    for verdict in precision_verdicts(features or cpu_features()):
        if verdict.precision == precision:
            return verdict
    raise ValueError(f"unknown precision {precision!r}")


def cpu_report(features: CpuFeatures | None = None) -> dict[str, object]:
    """Plain data for ``/health`` and ``clipserve doctor``."""
    features = features or cpu_features()
    flags = asdict(features)
    name, source = flags.pop("name"), flags.pop("source")
    return {
        "name": name,
        "kind": features.kind,
        "features": flags,
        "source": source,
        "int8_kernel": features.int8_kernel,
        "int8_recipe": RECIPE.name,
        "precisions": {
            verdict.precision: {"status": verdict.status, "reason": verdict.reason}
            for verdict in precision_verdicts(features)
        },
    }


def cpu_summary(features: CpuFeatures | None = None) -> str:
    """One line for the start-up log."""
    features = features or cpu_features()
    verdicts = ", ".join(f"{v.precision} {v.status}" for v in precision_verdicts(features))
    return f"CPU {features.name} ({features.kind}): {verdicts}"


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's features (read once per process)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return CpuFeatures(name=_os_cpu_name(), source="none")
    if sys.platform != "win32":
        try:
            return _from_cpuid()
        except (OSError, ValueError, AttributeError):
            pass  # no executable memory here (a hardened kernel): numpy's table below
    return _from_numpy()


def _from_cpuid() -> CpuFeatures:
    size = len(_CPUID_CODE) + len(_XGETBV_CODE)
    code = mmap.mmap(-1, size, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(_CPUID_CODE + _XGETBV_CODE)
    anchor = ctypes.c_char.from_buffer(code)  # holds the map open while the code runs
    try:
        base = ctypes.addressof(anchor)
        signature = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)
        raw_cpuid = signature(base)
        xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)(base + len(_CPUID_CODE))
        out = (ctypes.c_uint32 * 4)()

        def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
            raw_cpuid(leaf, subleaf, ctypes.addressof(out))
            return out[0], out[1], out[2], out[3]

        return _decode(cpuid, xgetbv)
    finally:
        del anchor
        code.close()


def _decode(cpuid, xgetbv) -> CpuFeatures:  # type: ignore[no-untyped-def]
    def bit(value: int, index: int) -> bool:
        return bool(value >> index & 1)

    max_leaf = cpuid(0)[0]
    ecx1 = cpuid(1)[2]
    os_xsave = bit(ecx1, 27)
    xcr0 = xgetbv(0) if os_xsave else 0
    avx_os = bit(ecx1, 28) and xcr0 & _XCR0_AVX == _XCR0_AVX
    ebx7 = ecx7 = edx7 = eax7_1 = 0
    if max_leaf >= 7:
        _, ebx7, ecx7, edx7 = cpuid(7, 0)
        if cpuid(7, 0)[0] >= 1:
            eax7_1 = cpuid(7, 1)[0]
    avx2 = avx_os and bit(ecx1, 12) and bit(ebx7, 5)
    avx512 = (
        avx2
        and xcr0 & _XCR0_AVX512 == _XCR0_AVX512
        and all(bit(ebx7, i) for i in (16, 17, 30, 31))  # F, DQ, BW, VL
    )
    amx = avx2 and bit(edx7, 24) and xcr0 & _XCR0_AMX == _XCR0_AMX
    return CpuFeatures(
        name=_brand(cpuid),
        avx2=avx2,
        avx512=avx512,
        avx512_vnni=avx512 and bit(ecx7, 11),
        avx_vnni=avx2 and bit(eax7_1, 4),
        avx512_bf16=avx512 and bit(eax7_1, 5),
        amx_bf16=amx and bit(edx7, 22),
        amx_int8=amx and bit(edx7, 25),
        source="cpuid",
    )


def _brand(cpuid) -> str:  # type: ignore[no-untyped-def]
    if cpuid(0x80000000)[0] < 0x80000004:
        return _os_cpu_name()
    words = [word for leaf in (0x80000002, 0x80000003, 0x80000004) for word in cpuid(leaf)]
    raw = b"".join(word.to_bytes(4, "little") for word in words)
    return " ".join(raw.split(b"\0")[0].decode("ascii", "replace").split()) or _os_cpu_name()


def _os_cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _from_numpy() -> CpuFeatures:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as table
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as table
    avx2 = bool(table.get("AVX2") and table.get("FMA3"))
    avx512 = avx2 and all(table.get(f"AVX512{part}") for part in ("F", "BW", "DQ", "VL"))
    return CpuFeatures(
        name=_os_cpu_name(),
        avx2=avx2,
        avx512=avx512,
        avx512_vnni=avx512 and bool(table.get("AVX512VNNI")),
        avx512_bf16=avx512 and bool(table.get("AVX512BF16")),
        source="numpy",
    )
