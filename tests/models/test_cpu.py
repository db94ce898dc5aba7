"""CPU feature detection (CPUID) and the per-precision verdicts built on it.

The decoder is checked on CPUID tables of known CPU families; the live reading is checked
against numpy's own CPUID-based dispatch table on whatever CPU runs the tests."""

from __future__ import annotations

import pytest

from clipserve.models import cpu
from clipserve.models.cpu import FAST, REFUSED, SLOW, CpuFeatures, precision_verdicts

FMA, OSXSAVE, AVX = 12, 27, 28  # CPUID.1:ECX
AVX2, AVX512F, AVX512DQ, AVX512BW, AVX512VL = 5, 16, 17, 30, 31  # CPUID.7.0:EBX
AVX512_VNNI = 11  # CPUID.7.0:ECX
AMX_BF16, AMX_TILE, AMX_INT8 = 22, 24, 25  # CPUID.7.0:EDX
AVX_VNNI, AVX512_BF16 = 4, 5  # CPUID.7.1:EAX
XCR0_AVX, XCR0_AVX512, XCR0_AMX = 0x7, 0xE7, 0x600E7


def bits(*indices: int) -> int:
    return sum(1 << index for index in indices)


def fake_cpu(
    *,
    ebx7: tuple[int, ...] = (),
    ecx7: tuple[int, ...] = (),
    edx7: tuple[int, ...] = (),
    eax7_1: tuple[int, ...] = (),
    xcr0: int = XCR0_AVX,
) -> CpuFeatures:
    brand = b"Test CPU".ljust(48, b"\0")
    words = [int.from_bytes(brand[i : i + 4], "little") for i in range(0, 48, 4)]
    table = {
        (0, 0): (0xD, 0, 0, 0),
        (1, 0): (0, 0, bits(FMA, OSXSAVE, AVX), 0),
        (7, 0): (1, bits(*ebx7), bits(*ecx7), bits(*edx7)),
        (7, 1): (bits(*eax7_1), 0, 0, 0),
        (0x80000000, 0): (0x80000004, 0, 0, 0),
        (0x80000002, 0): tuple(words[0:4]),
        (0x80000003, 0): tuple(words[4:8]),
        (0x80000004, 0): tuple(words[8:12]),
    }
    return cpu._decode(lambda leaf, subleaf=0: table[(leaf, subleaf)], lambda _: xcr0)


AVX512_CORE = (AVX2, AVX512F, AVX512DQ, AVX512BW, AVX512VL)
HASWELL = fake_cpu(ebx7=(AVX2,))
ALDER_LAKE = fake_cpu(ebx7=(AVX2,), eax7_1=(AVX_VNNI,))
SKYLAKE_SP = fake_cpu(ebx7=AVX512_CORE, xcr0=XCR0_AVX512)
ZEN4 = fake_cpu(ebx7=AVX512_CORE, ecx7=(AVX512_VNNI,), eax7_1=(AVX512_BF16,), xcr0=XCR0_AVX512)
SAPPHIRE_RAPIDS = fake_cpu(
    ebx7=AVX512_CORE,
    ecx7=(AVX512_VNNI,),
    edx7=(AMX_BF16, AMX_TILE, AMX_INT8),
    eax7_1=(AVX_VNNI, AVX512_BF16),
    xcr0=XCR0_AMX,
)


def statuses(features: CpuFeatures) -> dict[str, str]:
    return {verdict.precision: verdict.status for verdict in precision_verdicts(features)}


@pytest.mark.parametrize(
    ("features", "kind", "saturates", "expected"),
    [
        (HASWELL, "AVX2 without VNNI", True, {"bf16": REFUSED, "int8": FAST}),
        (ALDER_LAKE, "AVX2 + AVX-VNNI", False, {"bf16": REFUSED, "int8": FAST}),
        (SKYLAKE_SP, "AVX-512 without VNNI", True, {"bf16": REFUSED, "int8": FAST}),
        (ZEN4, "AVX-512 VNNI", False, {"bf16": FAST, "int8": FAST}),
        (SAPPHIRE_RAPIDS, "AVX-512 VNNI + AMX", False, {"bf16": FAST, "int8": FAST}),
    ],
)
def test_cpu_families_decode_to_their_kernels_and_verdicts(
    features: CpuFeatures, kind: str, saturates: bool, expected: dict[str, str]
) -> None:
    assert features.name == "Test CPU"
    assert features.kind == kind
    assert features.int8_saturates is saturates
    assert statuses(features) == {"float": FAST, **expected}


def test_avx512_the_os_does_not_save_counts_as_avx2() -> None:
    """onnxruntime checks XCR0 too: without the ZMM state enabled it runs the AVX2 kernels."""
    hidden = fake_cpu(ebx7=AVX512_CORE, ecx7=(AVX512_VNNI,), xcr0=XCR0_AVX)
    assert not hidden.avx512 and not hidden.avx512_vnni
    assert hidden.int8_kernel == HASWELL.int8_kernel


def test_amx_needs_the_tile_state_enabled() -> None:
    no_tiles = fake_cpu(
        ebx7=AVX512_CORE,
        ecx7=(AVX512_VNNI,),
        edx7=(AMX_BF16, AMX_TILE, AMX_INT8),
        xcr0=XCR0_AVX512,
    )
    assert not no_tiles.amx_int8 and no_tiles.int8_kernel.startswith("AVX-512 VNNI")


def test_without_avx2_int8_is_flagged_slow() -> None:
    old = fake_cpu()
    assert old.kind == "x86-64 without AVX2" and not old.int8_saturates
    assert statuses(old) == {"float": FAST, "bf16": REFUSED, "int8": SLOW}
    assert "may not beat float32" in cpu.verdict_for("int8", old).reason


def test_report_and_summary_name_the_kind_and_every_precision() -> None:
    report = cpu.cpu_report(HASWELL)
    assert report["kind"] == "AVX2 without VNNI" and report["source"] == "cpuid"
    assert report["features"] == {
        "avx2": True,
        "avx512": False,
        "avx512_vnni": False,
        "avx_vnni": False,
        "avx512_bf16": False,
        "amx_bf16": False,
        "amx_int8": False,
    }
    assert set(report["precisions"]) == {"float", "bf16", "int8"}
    assert cpu.cpu_summary(HASWELL) == (
        "CPU Test CPU (AVX2 without VNNI): float fast, bf16 refused, int8 fast"
    )
    with pytest.raises(ValueError, match="unknown precision"):
        cpu.verdict_for("fp8", HASWELL)


def test_this_cpu_agrees_with_numpys_own_cpuid_table() -> None:
    live = cpu.cpu_features()
    if live.source == "none":
        pytest.skip("not an x86-64 CPU")
    numpy_view = cpu._from_numpy()
    for flag in ("avx2", "avx512", "avx512_vnni", "avx512_bf16"):
        assert getattr(live, flag) == getattr(numpy_view, flag), flag
    assert live.name and live.name != "unknown CPU"
