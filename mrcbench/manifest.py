"""The run manifest (``results/manifest.json``) and the comparison of two runs.

``mrcbench manifest`` (the DAG's last step) records, for every file the DAG produced under the
results folder, its path (relative to that folder), size and SHA-256, together with the environment
that produced it (CPU model and the flags that pick kernels, thread counts per rule, inference
precision, package versions, CUDA device, OS), the digest of the resolved config and the git commit.

``mrcbench compare A B`` (results folders or manifest files; a folder is hashed on the fly exactly
as the manifest does) prints one line per differing file grouped by stage, and for tables (parquet,
CSV/TSV, JSON) read on both sides the largest absolute difference per numeric column and the number
of rows that differ; then the environment differences, the likely cause. Exactly ``identical``
(exit 0) when every file matches, else exit 1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from mrcbench import files, kernels, layout
from mrcbench.errors import MrcbenchError

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

REFERENCE_DIR = "reference"
"""The repository's folder of published run manifests (``reference/default.json``: a fresh-clone run of
``config.yaml``); the report's appendix compares a run with the one made from the same config."""

PACKAGES: tuple[str, ...] = ("torch", "transformers", "tokenizers", "numpy", "pandas", "pyarrow", "scipy")


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


def result_files(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """``{path, size, sha256}`` of every result file under ``results_dir``, sorted by path."""
    root = Path(results_dir)
    if not root.is_dir():
        raise MrcbenchError(f"{root}: results folder not found")
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Another run's results folder inside this one (results/smoke under results) is not ours.
        top = Path(dirpath) == root
        dirnames[:] = sorted(name for name in dirnames if (top and name in layout.STAGES)
                             or not (Path(dirpath) / name / NESTED_RUN_MARK).is_file())
        for name in sorted(filenames):
            path = Path(dirpath) / name
            relative = path.relative_to(root)
            if path.is_file() and _is_result(relative):
                rows.append({"path": relative.as_posix(), "size": path.stat().st_size, "sha256": files.sha256_file(path)})
    return sorted(rows, key=lambda row: row["path"])


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
    for path in Path(results_dir).glob(layout.glob("predict", "metrics.json")):
        value = files.read_json(path).get("precision")
        if value:
            found.add(str(value))
    return sorted(found)


def environment(config: dict, results_dir: str | os.PathLike, cpuinfo: str | None = None) -> dict[str, Any]:
    import torch

    from mrcbench import config as cfg
    from mrcbench import precision

    flags = kernels.cpu_flags(cpuinfo)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rules = [name for name in cfg.schema()["properties"]["resources"]["properties"] if name != "default"]
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
        "cuda": {"device": torch.cuda.get_device_name(0), "version": torch.version.cuda}
        if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "machine": platform.machine(),
    }


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
# Comparison
# --------------------------------------------------------------------------------------------------


class Side:
    """One side of a comparison: a results folder (hashed now) or a manifest file."""

    def __init__(self, spec: str | os.PathLike):
        path = Path(spec)
        if path.is_dir():
            self.folder: Path | None = path
            self.files = {row["path"]: row for row in result_files(path)}
            own = path / layout.MANIFEST_NAME
            self.manifest = files.read_json(own) if own.is_file() else None
        elif path.is_file():
            self.folder = None
            self.manifest = files.read_json(path)
            if not isinstance(self.manifest, dict) or "files" not in self.manifest:
                raise MrcbenchError(f"{path}: not a run manifest (no 'files' key)")
            self.files = {row["path"]: row for row in self.manifest["files"]}
        else:
            raise MrcbenchError(f"{path}: no such results folder or manifest")
        self.name = str(path)

    @property
    def environment(self) -> dict | None:
        if self.manifest is None:
            return None
        env = dict(self.manifest.get("environment") or {})
        env["config_sha256"] = self.manifest.get("config_sha256")
        env["git_commit"] = self.manifest.get("git_commit")
        return env


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON as ``{"a.b.0.c": leaf}``."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: value}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return a == b


MAX_LISTED = 10
"""Up to this many differing JSON values are listed one by one."""

MAX_KEYS_LISTED = 50
"""A JSON object with up to this many top-level keys (metrics) has each differing value listed; a
larger one (keyed by question id: predictions, n-best, null odds) is summarised per value name."""


def _value_name(key: str) -> str:
    """``qid.3.start_logit`` -> ``start_logit``; ``qid`` -> ``value``: the question id and list
    positions are dropped."""
    parts = [part for part in key.split(".")[1:] if not part.isdigit()]
    return ".".join(parts) or "value"


def _json_lines(a_path: Path, b_path: Path) -> list[str]:
    a_raw, b_raw = files.read_json(a_path), files.read_json(b_path)
    a, b = _flatten(a_raw), _flatten(b_raw)
    numeric, text, one_side = [], [], 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            one_side += 1
        elif not _same(a[key], b[key]):
            (numeric if _number(a[key]) and _number(b[key]) else text).append(key)
    lines = []
    top_keys = max(len(raw) if isinstance(raw, (dict, list)) else 1 for raw in (a_raw, b_raw))
    if len(numeric) + len(text) > MAX_LISTED:
        # Listed one by one: the top-level values of a small object (metrics); the rest summarised.
        listed = [key for key in numeric + text if "." not in key and top_keys <= MAX_KEYS_LISTED]
        numeric = [key for key in numeric if key not in listed]
        text = [key for key in text if key not in listed]
    else:
        listed = numeric + text
        numeric, text = [], []
    for key in sorted(listed):
        if _number(a[key]) and _number(b[key]):
            lines.append(f"{key}: {a[key]} vs {b[key]} (|diff| {abs(a[key] - b[key]):.6g})")
        else:
            lines.append(f"{key}: {a[key]!r} vs {b[key]!r}")
    if numeric or text:
        groups: dict[str, list[float]] = {}
        for key in numeric:
            groups.setdefault(_value_name(key), []).append(abs(a[key] - b[key]))
        totals: dict[str, int] = {}
        for key in set(a) & set(b):
            totals[_value_name(key)] = totals.get(_value_name(key), 0) + 1
        for name, diffs in sorted(groups.items()):
            lines.append(f"{name}: max |diff| {max(diffs):.6g}, {len(diffs)} of {totals[name]} values differ")
        if text:
            texts: dict[str, int] = {}
            for key in text:
                texts[_value_name(key)] = texts.get(_value_name(key), 0) + 1
            lines += [f"{name}: {count} of {totals[name]} texts differ" for name, count in sorted(texts.items())]
    if one_side:
        lines.append(f"{one_side} keys on one side only")
    return lines


def _read_table(path: Path):
    import pandas as pd

    if path.suffix == ".parquet":
        return files.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


def _table_lines(a_path: Path, b_path: Path) -> list[str]:
    import numpy as np
    import pandas as pd

    a, b = _read_table(a_path), _read_table(b_path)
    lines = []
    if list(a.columns) != list(b.columns):
        only_a, only_b = sorted(set(a.columns) - set(b.columns)), sorted(set(b.columns) - set(a.columns))
        lines.append(f"columns differ: only in A {only_a}, only in B {only_b}")
    if len(a) != len(b):
        lines.append(f"rows: {len(a)} vs {len(b)}")
        keys = [c for c in a.columns if c in b.columns and not pd.api.types.is_float_dtype(a[c])]
        if not keys or a.duplicated(keys).any() or b.duplicated(keys).any():
            return lines
        merged = a.merge(b, on=keys, how="outer", suffixes=("@A", "@B"), indicator=True)
        lines.append(f"rows only in A: {int((merged['_merge'] == 'left_only').sum())}, "
                     f"only in B: {int((merged['_merge'] == 'right_only').sum())} (keyed by {', '.join(keys)})")
        merged = merged[merged["_merge"] == "both"]
        shared = [c for c in a.columns if c in b.columns]
        a = merged[[c if c in keys else f"{c}@A" for c in shared]].set_axis(shared, axis=1)
        b = merged[[c if c in keys else f"{c}@B" for c in shared]].set_axis(shared, axis=1)
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    for column in [c for c in a.columns if c in b.columns]:
        x, y = a[column], b[column]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) \
                and not pd.api.types.is_bool_dtype(x):
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            differ = ~((xv == yv) | (np.isnan(xv) & np.isnan(yv)))
            if differ.any():
                diff = np.abs(xv - yv)[differ]
                biggest = np.nanmax(diff) if np.isfinite(diff).any() else float("nan")
                lines.append(f"column {column}: max |diff| {biggest:.6g}, {int(differ.sum())} of {len(xv)} rows differ")
        else:
            differ = ~(x.astype(object).fillna("\0nan").to_numpy() == y.astype(object).fillna("\0nan").to_numpy())
            if differ.any():
                lines.append(f"column {column}: {int(differ.sum())} of {len(x)} rows differ")
    return lines


def _content_lines(a: Side, b: Side, path: str) -> list[str]:
    if a.folder is None or b.folder is None:
        return []
    a_path, b_path = a.folder / path, b.folder / path
    try:
        if a_path.suffix in (".parquet", ".csv", ".tsv"):
            return _table_lines(a_path, b_path)
        if a_path.suffix == ".json":
            return _json_lines(a_path, b_path)
    except (MrcbenchError, ValueError, TypeError) as exc:
        return [f"not compared ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"]
    return []


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "(none)"
    return str(value)


def environment_lines(a: dict | None, b: dict | None) -> list[str]:
    if a is None or b is None:
        missing = " and ".join(name for name, env in (("A", a), ("B", b)) if env is None)
        return [f"environment not recorded for {missing} (no manifest.json)"]
    lines = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            for sub in sorted(set(x) | set(y)):
                if x.get(sub) != y.get(sub):
                    lines.append(f"environment differs: {key} {sub} {_show(x.get(sub))} vs {_show(y.get(sub))}")
        elif key == "cpu_flags" and x != y:
            only_a = sorted(set(x or ()) - set(y or ()))
            only_b = sorted(set(y or ()) - set(x or ()))
            lines.append(f"environment differs: cpu_flags only in A: {_show(only_a)}; only in B: {_show(only_b)}")
        elif x != y:
            lines.append(f"environment differs: {key} {_show(x)} vs {_show(y)}")
    # The likeliest cause first.
    order = ("precision", "kernel_env", "cpu_capability", "threads", "training_threads", "cpu_flags", "packages",
             "config_sha256", "git_commit", "cuda")
    rank = {name: i for i, name in enumerate(order)}
    return sorted(lines, key=lambda line: rank.get(line.split()[2], len(order)))


def compare(a_spec: str | os.PathLike, b_spec: str | os.PathLike) -> tuple[bool, list[str]]:
    """(identical, lines to print)."""
    return compare_sides(Side(a_spec), Side(b_spec))


def compare_sides(a: Side, b: Side) -> tuple[bool, list[str]]:
    """:func:`compare` of two sides already read (a folder is hashed once, when its side is made)."""
    paths = sorted(set(a.files) | set(b.files))
    by_stage: dict[str, list[str]] = {}
    counts = {"differ": 0, "only in A": 0, "only in B": 0}
    for path in paths:
        if path not in b.files:
            kind, detail = "only in A", []
        elif path not in a.files:
            kind, detail = "only in B", []
        elif a.files[path]["sha256"] != b.files[path]["sha256"]:
            kind = "differ"
            sizes = f" ({a.files[path]['size']} vs {b.files[path]['size']} bytes)"
            detail = _content_lines(a, b, path)
            if a.folder is None or b.folder is None:
                detail = detail or ["digests differ (a manifest holds no content to read)"]
        else:
            continue
        counts[kind] += 1
        label = "differs" if kind == "differ" else kind
        line = f"  {label}: {path}" + (sizes if kind == "differ" else "")
        by_stage.setdefault(stage_of(path), []).append(line)
        by_stage[stage_of(path)].extend(f"      {text}" for text in detail)
    if not by_stage:
        return True, ["identical"]
    lines = [f"A: {a.name}", f"B: {b.name}"]
    lines += environment_lines(a.environment, b.environment)
    order = {stage: i for i, stage in enumerate(layout.STAGES)}
    stages = sorted(by_stage, key=lambda stage: (order.get(stage, len(layout.STAGES)), stage))
    for stage in stages:
        lines.append(f"{stage}:")
        lines += by_stage[stage]
    differ = f"{counts['differ']} file{'s' if counts['differ'] != 1 else ''} differ{'s' if counts['differ'] == 1 else ''}"
    lines.append(f"{differ}, {counts['only in A']} only in A, {counts['only in B']} only in B;"
                 f" first differing stage: {stages[0]}")
    return False, lines


def reference_manifests_in(folder: str | os.PathLike = REFERENCE_DIR) -> list[str]:
    """The reference manifests (``*.json``) in ``folder`` (the repository's ``reference/``), sorted."""
    return sorted(str(path) for path in Path(folder).glob("*.json"))


def reference_check(results_dir: str | os.PathLike, config: dict, references: list[str]) -> str:
    """One sentence: does this run match the reference manifest made from the same config?

    The reference is the one whose ``config_sha256`` equals this run's config digest (a reference of
    another config says nothing about this run). The results folder is hashed once, now, as ``compare``
    does."""
    digest = config_digest(config)
    matching = []
    for path in references:
        reference = files.read_json(path)
        if isinstance(reference, dict) and reference.get("config_sha256") == digest:
            matching.append((path, reference))
    if not matching:
        return (f"No reference manifest was made from this configuration (config digest `{digest[:12]}`;"
                f" the repository's `{REFERENCE_DIR}/` holds the default's), so there is nothing to match:"
                " compare two runs with `mrcbench compare A B`.")
    path, reference = matching[0]
    run = Side(results_dir)
    rows = list(run.files.values())
    made = reference.get("environment", {}).get("cpu_model") or "an unrecorded CPU"
    commit = (reference.get("git_commit") or "unrecorded")[:12]
    identical, lines = compare_sides(run, Side(path))
    if identical:
        return (f"Reference: this run's {len(rows)} result files (digest `{files_digest(rows)[:16]}`) are"
                f" **identical** to the repository's reference `{path}` (a fresh-clone default run on"
                f" {made}, commit `{commit}`).")
    return (f"Reference: this run **differs** from the repository's reference `{path}` (made on {made},"
            f" commit `{commit}`): {lines[-1]}. `mrcbench compare {results_dir} {path}` lists every"
            " difference and the environment's.")


def main_compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mrcbench compare",
        description="Compare two runs (results folders or manifest.json files); exit 0 when identical, 1 otherwise.")
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args(argv)
    identical, lines = compare(args.a, args.b)
    print("\n".join(lines))
    return 0 if identical else 1

