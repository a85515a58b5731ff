"""Numeric precision of inference: fp32, or bf16 through ``torch.autocast``.

Config key ``inference.precision`` (``fp32`` | ``bf16`` | ``auto``), ``fp32`` by default so that a
run gives the same numbers on every machine; bf16 is an explicit choice (faster where the hardware
has it, but every score moves, so its numbers differ from fp32 runs). ``auto`` means bf16 where the
hardware computes it natively: a CUDA device that supports bf16, or a CPU that reports AMX or
AVX512-BF16 (Linux ``/proc/cpuinfo`` flags ``amx_bf16`` / ``avx512_bf16``); fp32 elsewhere (on
other CPUs bf16 is emulated and slower than fp32). :func:`resolve` is the one place that decides;
:func:`autocast` is the context every inference command (predict, zone statistics and case
studies, the ablation grid) runs its forward passes in. Weights stay fp32: autocast runs matrix
products in bf16 and keeps reductions such as softmax and LayerNorm in fp32. Callers return logits
as fp32 (``.float()``) and the zone statistics are accumulated in fp32 with autocast switched off
(:func:`mrcbench.masking.recorders.zone_mass_from_probs`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from mrcbench.errors import MrcbenchError
from mrcbench.runtime.kernels import cpu_flags

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
"""Values of the config key; :func:`resolve` turns ``auto`` into one of the other two."""

BF16_CPU_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
"""``/proc/cpuinfo`` flags of CPUs with native bf16 matrix instructions (Intel AMX, AVX512-BF16)."""

def cpu_has_native_bf16(flags: Iterable[str] | None = None) -> bool:
    """True when the CPU reports AMX or AVX512-BF16.

    Without ``/proc/cpuinfo`` (macOS, Windows) torch's own dispatch level is asked instead; it names
    AMX only on builds that detect it, so such machines fall back to fp32 unless set explicitly.
    """
    flags = cpu_flags() if flags is None else set(flags)
    if flags:
        return any(flag in flags for flag in BF16_CPU_FLAGS)
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "AMX" in capability or "BF16" in capability


def cuda_has_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve(setting: str, device: torch.device | str, flags: Iterable[str] | None = None,
            cuda_bf16: bool | None = None) -> str:
    """``fp32`` or ``bf16`` for ``setting`` on ``device``.

    ``flags`` (CPU flags) and ``cuda_bf16`` default to what this machine reports; tests pass fakes.
    """
    if setting not in PRECISIONS:
        raise MrcbenchError(f"inference.precision: {setting!r} is not one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if (cuda_has_bf16() if cuda_bf16 is None else cuda_bf16) else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16(flags) else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context to run forward passes in: bf16 autocast, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise MrcbenchError(f"precision {precision!r}: resolve 'auto' first (expected fp32 or bf16)")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
