"""What this CPU can do natively, for choices that depend on it (``train.precision``) and for
benchmarks, which name the CPU they measured.

``mixed_bfloat16`` is fast only where the CPU computes bfloat16 itself (AVX-512 BF16 or AMX, through
oneDNN): on an AVX2-only CPU TensorFlow converts every operand to float32 and back, and training is
slower than in float32 (README, Performance). Linux only: elsewhere the flags are unknown (None).
"""
from __future__ import annotations

import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo_value(keys: tuple[str, ...], cpuinfo: str | Path) -> str | None:
    """The first processor's value of the first of ``keys`` present, or None (unreadable, absent)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The first processor's feature flags, or None when they cannot be read (not Linux)."""
    flags = _cpuinfo_value(("flags", "Features"), cpuinfo)  # x86 / arm64
    return None if flags is None else set(flags.split())


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    return _cpuinfo_value(("model name",), cpuinfo) or platform.processor() or platform.machine()


def native_bf16(flags: set[str] | None = None) -> bool | None:
    """True when the CPU computes bfloat16 natively, False when it does not, None when unknown."""
    flags = cpu_flags() if flags is None else flags
    return None if flags is None else any(flag in flags for flag in BF16_FLAGS)


def describe_cpu(cores: int) -> str:
    """e.g. ``AMD EPYC, x86_64, 2 cores, avx2 avx512f avx512_bf16``, for benchmark reports."""
    flags = cpu_flags() or set()
    shown = " ".join(flag for flag in _SHOWN if flag in flags) or "no AVX2"
    return f"{cpu_model()}, {platform.machine()}, {cores} cores, {shown}"


def bf16_warning(precision: str, on_gpu: bool, flags: set[str] | None = None) -> str | None:
    """One line for a run asked to train in bfloat16 on a CPU that would only emulate it."""
    if precision != "mixed_bfloat16" or on_gpu or native_bf16(flags) is not False:
        return None
    return ("warning: train.precision=mixed_bfloat16 on a CPU without AVX-512 BF16 or AMX: TensorFlow emulates "
            "bfloat16 here, so training is slower than float32 (README, Performance)")
