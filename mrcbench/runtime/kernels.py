"""Which CPU kernels compute the numbers: ``portable`` (AVX2 paths, the same bits on every Intel
x86-64 CPU with AVX2, whatever wider instructions it has) or ``native`` (the widest this CPU has).

PyTorch's CPU build picks its kernels at run time from the processor: ATen's vectorised operations
(softmax, LayerNorm, GELU, fused attention) use AVX512 where the CPU has it and AVX2 otherwise, and
MKL's matrix products pick their own code path per processor. Each path sums in another order, so
the last bits of an fp32 result differ between an AVX2 and an AVX512 machine; over a fine-tuning
run the differences grow into other checkpoints, other logits and, now and then, another answer.
The ``portable`` setting (the default, config key ``cpu_kernels``) pins both to their AVX2 paths:

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's dispatch level (``torch.backends.cpu.get_cpu_capability()``),
  on every x86-64 CPU with AVX2 and FMA, Intel or AMD;
- ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility, its AVX2 branch (which also removes
  MKL's dependence on how the inputs happen to be aligned in memory). MKL honours named branches on
  Intel processors only: on AMD it ignores the branch and keeps its own choice (reproducible run to
  run, but not equal to Intel's). The one branch both vendors share, ``COMPATIBLE`` (SSE2), made the
  matrix products 3.7x slower than native here, so mrcbench does not use it; an AMD and an Intel
  machine therefore agree on the data, the models, and (measured on the default's MiniLM leg) the
  answers and scores, but not on the fine-tuned weights' last bits (README, "Check your run").

Both are read by the libraries once, when the first operation runs, so they are set before torch
loads, by an explicit call of :func:`apply`: every ``mrcbench`` command makes it before it imports its
module (:func:`mrcbench.cli.main`); a notebook or script that computes with mrcbench calls it first
(the benchmarks do). Importing ``mrcbench`` sets nothing. The workflow exports the config's choice
to every job (``MRCBENCH_CPU_KERNELS``, :func:`export`); a variable the user set beforehand wins. Nothing is pinned on a CPU without AVX2 and FMA (where
ATen would fault on AVX2 code), on other architectures, or with ``native``; the run manifest
records the dispatch level and the variables, and ``mrcbench compare`` names a difference in them
as the likely cause of differing results. CUDA kernels are not affected.

``benchmarks/cpu_kernels.py`` measures what ``portable`` costs against ``native`` on the machine it
runs on (Intel Xeon with AVX512/AMX: forward passes 1.33x, training steps 1.27x slower; on an
AVX2-only CPU the two settings run the same code).
"""
from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path

from mrcbench.errors import MrcbenchError

SETTINGS: tuple[str, ...] = ("portable", "native")
"""Values of the config key ``cpu_kernels`` (schema default ``portable``)."""

ENV = "MRCBENCH_CPU_KERNELS"
"""The environment variable through which the workflow passes ``cpu_kernels`` to each job."""

PORTABLE_ENV: dict[str, str] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
"""What ``portable`` sets: the variables of :data:`RECORDED` that pin the kernels."""

RECORDED: tuple[str, ...] = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", ENV)
"""Variables that choose CPU kernels; the run manifest records them."""

REQUIRED_FLAGS: tuple[str, ...] = ("avx2", "fma")

CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (or of the given text); empty where not readable."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def setting(environ: Mapping[str, str] | None = None) -> str:
    """The requested setting: ``$MRCBENCH_CPU_KERNELS``, ``portable`` when unset."""
    value = (os.environ if environ is None else environ).get(ENV, "portable") or "portable"
    return checked(value, ENV)


def checked(value: str, where: str) -> str:
    """``value`` if it is one of :data:`SETTINGS`; else one line naming ``where`` it came from."""
    if value not in SETTINGS:
        raise MrcbenchError(f"{where}: {value!r} is not one of {', '.join(SETTINGS)}")
    return value


def portable_supported(flags: Iterable[str] | None = None, machine: str | None = None) -> bool:
    """True on an x86-64 CPU with AVX2 and FMA (the paths ``portable`` pins exist there)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags() if flags is None else set(flags)
    return all(flag in flags for flag in REQUIRED_FLAGS)


def apply(environ: MutableMapping[str, str] | None = None, flags: Iterable[str] | None = None,
          machine: str | None = None) -> dict[str, str]:
    """Set the pinning variables of the requested setting (:func:`setting`); return those this call set.

    Call it before torch loads. A variable already present in the environment is left as it is (the
    user's choice wins); an unknown ``$MRCBENCH_CPU_KERNELS`` is refused in one line."""
    environ = os.environ if environ is None else environ
    if setting(environ) != "portable" or not portable_supported(flags, machine):
        return {}
    added = {}
    for name, value in PORTABLE_ENV.items():
        if name not in environ:
            environ[name] = value
            added[name] = value
    return added


def export(value: str, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The workflow's side (rules/common.smk): pass the config's ``cpu_kernels`` to every job.

    Sets ``MRCBENCH_CPU_KERNELS`` and, with ``portable``, the pins in this (Snakemake's) environment,
    which each job inherits (its command's own :func:`apply` then finds them set). Returns the kernel
    variables the jobs will see."""
    environ = os.environ if environ is None else environ
    environ[ENV] = checked(value, "cpu_kernels")
    apply(environ)
    return recorded(environ)


def recorded(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The kernel-choosing variables as this process sees them (the manifest's ``kernel_env``)."""
    environ = os.environ if environ is None else environ
    return {name: environ.get(name) for name in RECORDED}
