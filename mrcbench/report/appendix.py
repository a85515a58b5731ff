"""The report's "Appendix: reproducibility": package versions, git commit, data provenance, timings.

Read from the environment and the raw result files (``benchmarks/``, dataset checksums); no
statistics table is involved.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrcbench import config as cfg
from mrcbench.provenance import compare, environment, manifest
from mrcbench.runtime import layout


def package_versions(
    names: tuple[str, ...] = (
        "mrcbench",
        "torch",
        "transformers",
        "tokenizers",
        "datasets",
        "numpy",
        "pandas",
        "scipy",
        "statsmodels",
        "plotly",
        "snakemake",
        "nbclient",
        "pypandoc-binary",
    ),
) -> pd.DataFrame:
    rows = [{"package": "python", "version": sys.version.split()[0]}]
    for name in names:
        try:
            rows.append({"package": name, "version": metadata.version(name)})
        except metadata.PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return pd.DataFrame(rows)


def git_commit(path: Path) -> str:
    """Commit of the checkout holding ``path`` (with ``-dirty`` when it has uncommitted changes)."""
    commit = environment.git_commit(path)
    return commit if commit is not None else "not recorded (not a git checkout, or git unavailable)"


def precision_note(results_dir: Path, config: dict[str, Any] | None = None) -> str:
    """One sentence: the precision the forward passes ran in and, unless fp32, what that costs."""
    recorded = environment.recorded_precisions(results_dir)
    setting = cfg.inference_config(config).precision
    if not recorded:
        return f"Inference precision: not recorded (setting `{setting}`)."
    used = ", ".join(recorded)
    text = f"Inference precision: **{used}** (setting `inference.precision: {setting}`)."
    if recorded != ["fp32"]:
        text += (" These numbers differ from fp32 runs (the default's, and the published reference): bf16"
                 " autocast moves every F1, grid cell, CI and p-value; set `inference.precision: fp32`"
                 " to reproduce them.")
    return text


def reference_note(results_dir: Path, config: dict[str, Any] | None, reference_dir: str | Path | None) -> str:
    """Whether this run's result files match the repository's reference manifest of the same config."""
    references = manifest.reference_manifests_in(reference_dir) if reference_dir else []
    return compare.reference_check(results_dir, config or {}, references)


def reference_verdict(results_dir: Path, reference: str | Path | None = None, config: dict[str, Any] | None = None,
                      max_rows: int = 15) -> tuple[str, pd.DataFrame]:
    """The verdict of this run against a reference folder and its largest differences, for the appendix:
    ``(sentence, table)``.

    ``reference`` is a folder written by ``mrcbench reference export`` (``reference/default``); without
    it, the repository's reference folder made from ``config`` (same config digest). The table has one
    row per differing file (what changed in meaning first, then floats beyond and within their
    tolerance), at most ``max_rows``; it is empty when the run is identical or there is no reference."""
    columns = ["file", "column", "status", "max |diff|", "tolerance", "detail"]
    if reference is not None:
        folders = [Path(reference)]
    else:
        digest = manifest.config_digest(config or {})
        folders = [folder for folder in compare.reference_folders_in(manifest.REFERENCE_DIR)
                   if _reference_config_digest(folder) == digest]
    folders = [folder for folder in folders if (folder / compare.REFERENCE_INDEX).is_file()]
    if not folders:
        return (("No reference tables of this configuration were found (`mrcbench reference export` writes"
                 " them), so only `mrcbench compare` of two runs can say whether results agree."),
                pd.DataFrame(columns=columns))
    verdict = compare.compare(results_dir, folders[0])
    rows = compare.largest_differences(verdict)
    table = pd.DataFrame(rows[:max_rows], columns=columns)
    more = f" ({len(rows) - max_rows} more files not shown)" if len(rows) > max_rows else ""
    return f"Against the reference `{folders[0]}`: {verdict.summary}{more}", table


def _reference_config_digest(folder: Path) -> str | None:
    try:
        index = json.loads((folder / compare.REFERENCE_INDEX).read_text(encoding="utf-8"))
        return index["manifest"]["config_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def environment_table(results_dir: Path, config: dict[str, Any] | None = None) -> pd.DataFrame:
    """The environment the run manifest records (CPU, kernel flags, threads, precision, CUDA, OS)."""
    env = environment.record(config or {}, results_dir)
    rows = []
    for key, value in env.items():
        if key == "packages":
            continue  # the versions table
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {'not set' if v is None else v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = " ".join(map(str, value)) or "-"
        rows.append({"item": key, "value": "none" if value is None else str(value)})
    return pd.DataFrame(rows, columns=["item", "value"])


def data_provenance(results_dir: Path, config: dict[str, Any] | None = None) -> pd.DataFrame:
    """Split, source file, SHA-256 and sizes of every split.

    Read from ``data/{split}.summary.json``, written by ``mrcbench prepare-data``: its ``provenance``
    holds the source file (or hub spec) and the file's SHA-256 taken when the data were prepared,
    ``counts`` the articles and questions kept.
    """
    results_dir = Path(results_dir)
    rows = []
    for path in sorted(Path(results_dir).glob(layout.split_summary("", "*"))):
        summary = json.loads(path.read_text(encoding="utf-8"))
        provenance = summary.get("provenance") or {}
        counts = summary.get("counts") or {}
        hub = provenance.get("hub") or {}
        source = provenance.get("local") or " ".join(str(v) for v in (hub.get("path"), hub.get("name"), hub.get("split")) if v)
        rows.append(
            {
                "split": path.name.removesuffix(".summary.json"),
                "source_file": source or "not recorded",
                "sha256": provenance.get("sha256", "not recorded (hub)" if hub else "not recorded"),
                "articles": counts.get("articles"),
                "questions": counts.get("questions"),
                "answerable": counts.get("answerable"),
            }
        )
    return pd.DataFrame(rows, columns=["split", "source_file", "sha256", "articles", "questions", "answerable"])


def fine_tuning_seeds(config: dict[str, Any] | None) -> str:
    """The fine-tuning seeds of every experiment (``experiments.<name>.seeds``, default
    the schema's, :attr:`mrcbench.config.Experiment.seeds`): ``"7"`` when all experiments share them, else
    ``"english: 1, 2 | crosslingual: 42"``; ``"not recorded"`` without experiments."""
    experiments = cfg.experiments(config) if (config or {}).get("experiments") else {}
    seeds = {name: ", ".join(str(seed) for seed in experiment.seeds) for name, experiment in experiments.items()}
    if not seeds:
        return "not recorded"
    if len(set(seeds.values())) == 1:
        return next(iter(seeds.values()))
    return " | ".join(f"{name}: {value}" for name, value in seeds.items())


def benchmark_table(results_dir: Path) -> pd.DataFrame:
    """Wall time and peak memory per Snakemake rule from the ``benchmark:`` TSVs."""
    rows = []
    root = Path(layout.benchmark_dir(results_dir))
    for path in sorted(root.glob("**/*.tsv")):
        try:
            frame = pd.read_csv(path, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if "s" not in frame.columns:
            continue
        relative = path.relative_to(root)
        rule = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        rows.append(
            {
                "rule": rule,
                "job": str(relative.with_suffix("")),
                "seconds": float(frame["s"].mean()),
                "max_rss_mb": float(pd.to_numeric(frame.get("max_rss"), errors="coerce").max())
                if "max_rss" in frame
                else np.nan,
            }
        )
    jobs = pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb"])
    if jobs.empty:
        return pd.DataFrame(columns=["rule", "jobs", "total_s", "mean_s", "max_s", "max_rss_mb"])
    grouped = jobs.groupby("rule")
    return (
        pd.DataFrame(
            {
                "jobs": grouped.size(),
                "total_s": grouped["seconds"].sum(),
                "mean_s": grouped["seconds"].mean(),
                "max_s": grouped["seconds"].max(),
                "max_rss_mb": grouped["max_rss_mb"].max(),
            }
        )
        .reset_index()
        .sort_values("total_s", ascending=False)
    )
