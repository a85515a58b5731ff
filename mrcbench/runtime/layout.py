"""The run layout: where every result, log and benchmark file of a run lives.

The one file to change to change the layout. The rules (``rules/*.smk``), the commands, the
statistics (:mod:`mrcbench.stats.results`), the report and the manifest take their paths from here;
no other file spells a stage folder or a run's ``MODEL/TRAIN/seedN/EVAL`` path.

A results folder (``results_dir`` in the config, default ``results``) holds::

    config.resolved.yaml                      the config every command reads (config_file)
    manifest.json                             digests of every result (manifest_file)
    data/SPLIT.json, data/SPLIT.summary.json  prepared splits (split_json, split_summary)
    models/MODEL/                             prepared encoders (model_dir)
    finetune/MODEL/TRAIN/seedN/               fine-tuned runs (finetune_dir), checkpoint/ inside
    predict/MODEL/TRAIN/seedN/EVAL/NAME       predictions and scores (predict)
    attention/MODEL/TRAIN/seedN/EVAL/NAME     zone statistics and case studies (attention)
    ablation/MODEL/TRAIN/seedN/EVAL/NAME      masking grids (ablation), parts/PART.parquet (grid_part)
    stats/NAME                                statistics tables (stats)
    benchmarks/RULE[/JOB].tsv                 Snakemake benchmark timings (benchmark)

and the logs, ``LOGS/RULE[/JOB].log`` (log), lie in the folder :func:`logs_root` derives from it.

Every function that takes run keys (``model``, ``train``, ``seed``, ``eval``, ``part``, ``split``)
fills the ones it is not given with Snakemake wildcards (``{model}``, ...): the rules call them
without keys and get the patterns of their outputs, the commands, the statistics and the report call
them with keys (or ``*``, :func:`glob`) and get concrete paths, both from the same template.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrcbench.errors import MrcbenchError

# --------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------

RESULTS_ROOT = "results"
"""The default results folder (``results_dir`` in the config)."""

LOGS_ROOT = "logs"
"""The logs folder of the default results folder; see :func:`logs_root` for the others."""

CONFIG_NAME = "config.resolved.yaml"
"""The resolved config, at the top of the results folder (and a copy beside the statistics tables)."""

MANIFEST_NAME = "manifest.json"
"""The run manifest, at the top of the results folder."""

BENCHMARKS = "benchmarks"
"""The results folder's folder of Snakemake benchmark timings (one TSV per job)."""

LOGS_IN_RESULTS = "logs"
"""The logs folder inside a results folder that lies outside the working directory."""

CHECKPOINT = "checkpoint"
"""The Hugging Face checkpoint folder inside a fine-tuned run's folder."""

STAGES: tuple[str, ...] = ("data", "models", "finetune", "predict", "attention", "ablation", "stats")
"""The DAG's stages in run order: the folders of the results folder that hold results."""

MODEL = "{model}"
FINETUNE_RUN = "{model}/{train}/seed{seed}"
EVAL_RUN = f"{FINETUNE_RUN}/{{eval}}"
GRID_PART = f"{EVAL_RUN}/{{part}}"

STAGE_RUN: dict[str, str] = {
    "data": "",
    "models": MODEL,
    "finetune": FINETUNE_RUN,
    "predict": EVAL_RUN,
    "attention": EVAL_RUN,
    "ablation": EVAL_RUN,
    "stats": "",
}
"""The run folder inside each stage's folder (``""``: the stage's files lie in its folder)."""

RULE_JOB: dict[str, str] = {
    "prepare_data": "",
    "prepare_model": MODEL,
    "finetune": FINETUNE_RUN,
    "predict": EVAL_RUN,
    "extract_attention": EVAL_RUN,
    "ablate": GRID_PART,
    "merge_grid": EVAL_RUN,
    "stats": "",
    "report": "",
    "manifest": "",
}
"""The job name of each rule's log and benchmark (``""``: one job, named after the rule)."""

GRID_PARTS = "parts"
"""The folder of a grid's parts (deleted once they are merged) inside its ablation folder."""

KEYS: tuple[str, ...] = ("model", "train", "seed", "eval", "part", "split")
WILDCARDS: dict[str, str] = {key: f"{{{key}}}" for key in KEYS}
"""Each key's Snakemake wildcard: what a template gets for a key it is not given."""

_KEY_PATTERNS = {"seed": r"\d+"}  # parse(): any other key is one path component


def fill(template: str, **keys: Any) -> str:
    """``template`` with ``keys`` (wildcards for the keys not given; ``None`` counts as not given)."""
    return template.format(**{**WILDCARDS, **{key: value for key, value in keys.items() if value is not None}})


def _join(*parts: str) -> str:
    return "/".join(str(part) for part in parts if str(part))


# --------------------------------------------------------------------------------------------------
# What a config may name
# --------------------------------------------------------------------------------------------------

PROJECT_SOURCES: tuple[str, ...] = (
    ".ci", ".git", ".gitignore", ".importlinter", "CHANGELOG.md", "README.md", "Snakefile", "benchmarks", "config", "config.yaml", "docs",
    "envs", "mrcbench", "profiles", "pyproject.toml", "reference", "reports", "rules", "tests",
)
"""The project's own files and folders (its tracked top level): no results folder may be one of them or
lie in one, and a report is written only into ``reports/`` among them (``tests/unit/test_layout.py`` checks
the list against ``git ls-files``)."""

REPORTS = "reports"
"""The project's report folder: the one folder of the project a report may be read from (``report.qmd``,
the one config key that runs code) or written to (``report.html``)."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _first_part(path: Path, root: Path) -> str | None:
    """The first component of ``path`` below ``root`` (None: ``path`` is not below it)."""
    return path.relative_to(root).parts[0] if root in path.parents else None


def check_results_dir(value: str, cwd: str | os.PathLike | None = None) -> None:
    """Refuse a ``results_dir`` that is not a folder of its own: empty, the working directory (the
    project) or one of its parents (``.``, ``..``, ``/``), one of the project's source folders
    (:data:`PROJECT_SOURCES`) or a folder in one, or a Snakemake pattern (``{...}``)."""
    shown = repr(value)
    if not str(value).strip():
        raise MrcbenchError("results_dir: empty; name a folder of its own (default results)")
    if "{" in value or "}" in value:
        raise MrcbenchError(f"results_dir: {shown} holds '{{' or '}}' (a Snakemake wildcard); name a plain folder")
    root = Path(cwd or os.getcwd()).resolve()
    path = (root / os.path.expanduser(value)).resolve()
    if _inside(root, path):
        raise MrcbenchError(
            f"results_dir: {shown} is the project folder or one of its parents; name a folder of its own "
            "(default results)"
        )
    if _first_part(path, root) in PROJECT_SOURCES:
        raise MrcbenchError(f"results_dir: {shown} lies in the project's source folder "
                            f"'{_first_part(path, root)}'; name a folder of its own (default results)")


def check_report_paths(qmd: str, html: str, results: str, cwd: str | os.PathLike | None = None) -> None:
    """Refuse a ``report.qmd`` outside the project's ``reports/`` folder (the report's Python runs when it
    is rendered), and a ``report.html`` that is not an ``.html`` file in ``reports/``, in the results
    folder or in a folder of the user's own (never a project source file, never the project's top level)."""
    parts = Path(os.path.normpath(qmd)).parts
    if os.path.isabs(qmd) or len(parts) < 2 or parts[0] != REPORTS or ".." in parts or not qmd.endswith(".qmd"):
        raise MrcbenchError(
            f"report.qmd: {qmd!r} is not a .qmd file in the project's {REPORTS}/ folder (the report's code "
            "runs when it is rendered, so only the project's reports are rendered)"
        )
    if "{" in html or "}" in html or not html.endswith(".html"):
        raise MrcbenchError(f"report.html: {html!r} is not a plain .html file name (default reports/report.html)")
    root = Path(cwd or os.getcwd()).resolve()
    path = (root / os.path.expanduser(html)).resolve()
    results_path = (root / os.path.expanduser(results)).resolve()
    if path.parent == root or _inside(root, path):
        raise MrcbenchError(f"report.html: {html!r} lies in the project's top folder; write it to "
                            f"{REPORTS}/, the results folder or a folder of your own")
    first = _first_part(path, root)
    if first in PROJECT_SOURCES and first != REPORTS and not _inside(path, results_path):
        raise MrcbenchError(f"report.html: {html!r} lies in the project's source folder '{first}'; write it "
                            f"to {REPORTS}/, the results folder or a folder of your own")


# --------------------------------------------------------------------------------------------------
# Roots
# --------------------------------------------------------------------------------------------------


def results_root(config: Mapping[str, Any] | None) -> str:
    """The results folder of a config (``results_dir``, default ``results``), normalised."""
    return os.path.normpath((config or {}).get("results_dir", RESULTS_ROOT))


def logs_root(results: str) -> str:
    """The logs folder of a results folder: logs mirror it (``results`` -> ``logs``, ``results/smoke``
    -> ``logs/smoke``, ``other`` -> ``logs/other``); a results folder outside the working directory
    (absolute, or ``../x``) keeps its logs inside: ``DIR/logs``."""
    results = os.path.normpath(results)
    if results == RESULTS_ROOT or results.startswith(RESULTS_ROOT + "/"):
        return f"{LOGS_ROOT}{results[len(RESULTS_ROOT):]}"
    if os.path.isabs(results) or results.split(os.sep)[0] == os.pardir:
        return f"{results}/{LOGS_IN_RESULTS}"
    return f"{LOGS_ROOT}/{results}"


# --------------------------------------------------------------------------------------------------
# Paths (``root``: a results folder; ``""`` gives the path relative to it)
# --------------------------------------------------------------------------------------------------


def stage_path(root: str | os.PathLike, stage: str, name: str = "", **keys: Any) -> str:
    """``root/STAGE/RUN/NAME``: RUN is the stage's run folder (:data:`STAGE_RUN`) filled with ``keys``."""
    if stage not in STAGE_RUN:
        raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
    return _join(os.fspath(root), stage, fill(STAGE_RUN[stage], **keys), name)


def config_file(root: str | os.PathLike) -> str:
    return _join(os.fspath(root), CONFIG_NAME)


def manifest_file(root: str | os.PathLike) -> str:
    return _join(os.fspath(root), MANIFEST_NAME)


def data_dir(root: str | os.PathLike) -> str:
    return stage_path(root, "data")


def split_json(root: str | os.PathLike, split: str | None = None) -> str:
    return stage_path(root, "data", fill("{split}.json", split=split))


def split_summary(root: str | os.PathLike, split: str | None = None) -> str:
    return stage_path(root, "data", fill("{split}.summary.json", split=split))


def model_dir(root: str | os.PathLike, model: str | None = None) -> str:
    return stage_path(root, "models", model=model)


def finetune_dir(root: str | os.PathLike, **keys: Any) -> str:
    """A fine-tuned run's folder (keys ``model``, ``train``, ``seed``)."""
    return stage_path(root, "finetune", **keys)


def checkpoint_dir(finetuned: str | os.PathLike) -> str:
    """The checkpoint inside a fine-tuned run's folder (:func:`finetune_dir`)."""
    return _join(os.fspath(finetuned), CHECKPOINT)


def predict(root: str | os.PathLike, name: str = "", **keys: Any) -> str:
    """A prediction file (keys ``model``, ``train``, ``seed``, ``eval``); ``name=""``: the folder."""
    return stage_path(root, "predict", name, **keys)


def attention(root: str | os.PathLike, name: str = "", **keys: Any) -> str:
    return stage_path(root, "attention", name, **keys)


def ablation(root: str | os.PathLike, name: str = "", **keys: Any) -> str:
    return stage_path(root, "ablation", name, **keys)


def grid_part(root: str | os.PathLike, part: str | None = None, **keys: Any) -> str:
    """One part of a grid (``all``, ``layer0``, ...), merged into its ``grid.parquet``."""
    return ablation(root, _join(GRID_PARTS, fill("{part}.parquet", part=part)), **keys)


def stats(root: str | os.PathLike, name: str = "") -> str:
    return stage_path(root, "stats", name)


def benchmark_dir(root: str | os.PathLike) -> str:
    return _join(os.fspath(root), BENCHMARKS)


def log(logs: str | os.PathLike, rule: str, **keys: Any) -> str:
    """``LOGS/RULE/JOB.log`` (``LOGS/RULE.log`` for a one-job rule); ``logs``: :func:`logs_root`."""
    return _job_file(os.fspath(logs), rule, ".log", keys)


def benchmark(root: str | os.PathLike, rule: str, **keys: Any) -> str:
    """``RESULTS/benchmarks/RULE/JOB.tsv`` (``RESULTS/benchmarks/RULE.tsv`` for a one-job rule)."""
    return _job_file(benchmark_dir(root), rule, ".tsv", keys)


def _job_file(folder: str, rule: str, suffix: str, keys: dict[str, Any]) -> str:
    if rule not in RULE_JOB:
        raise ValueError(f"unknown rule {rule!r} (one of {', '.join(RULE_JOB)})")
    job = fill(RULE_JOB[rule], **keys)
    return _join(folder, rule, job) + suffix if job else _join(folder, rule) + suffix


# --------------------------------------------------------------------------------------------------
# Finding and parsing run files
# --------------------------------------------------------------------------------------------------


def glob(stage: str, name: str) -> str:
    """The glob pattern, relative to a results folder, of one file of every run of ``stage``."""
    return stage_path("", stage, name, **{key: "*" for key in KEYS})


def describe(stage: str, name: str) -> str:
    """The layout of a run file in words: ``predict/MODEL/TRAIN/seedN/EVAL/metrics.json``."""
    return stage_path("", stage, name, **{key: ("N" if key == "seed" else key.upper()) for key in KEYS})


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_KEY_PATTERNS.get(part, '[^/]+')})"
        for i, part in enumerate(parts)
    )
    return re.compile(regex)


def parse(path: str | os.PathLike, stage: str, name: str) -> dict[str, Any]:
    """The run keys of a run file of ``stage`` (the inverse of :func:`stage_path`): ``{"model": ...,
    "train": ..., "seed": int, "eval": ...}`` from ``.../predict/m/t/seed1/e/metrics.json``. Read from
    the file's folder (its own name, ``name`` in the layout, is not checked)."""
    template = STAGE_RUN[stage]
    tail = "/".join(Path(path).parent.parts[-(template.count("/") + 1):])
    match = _pattern(template).fullmatch(tail) if template else None
    if match is None:
        raise MrcbenchError(f"{path}: expected {describe(stage, name)}")
    keys: dict[str, Any] = match.groupdict()
    if "seed" in keys:
        keys["seed"] = int(keys["seed"])
    return keys
