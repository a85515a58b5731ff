"""``mrcbench compare A B``: a verdict on whether two runs agree, and the reference tables it reads.

A and B are results folders, reference folders (``reference/default/``, written by
``mrcbench reference export``) or manifest files. The comparison ends with one verdict:

``identical`` (exit 0)
    every result file has the same bytes (the same SHA-256) on both sides;
``equivalent`` (exit 0)
    some bytes differ, but every value that carries meaning is the same (answer texts, EM/F1, per-question
    scores, test decisions ``significant_*``, ranks, verdict strings, counts, the input data and config)
    and every float is within its tolerance (:data:`TOLERANCES`, chosen per column by :data:`RULES`); the
    largest difference of each table is printed;
``differs`` (exit 1)
    what changed in meaning first (answers, scores, decisions, headline), then the floats beyond
    tolerance, then the environment differences that are their likely causes.

Which column is meaning and which a float with a tolerance is declared once, below: a column no rule
names is judged by its type (bool, integer, string: meaning; float: the ``default`` tolerance), so a
column a statistics table gains later is compared without a change here. A manifest holds only
digests: against one, the verdict is ``identical`` or ``differs`` with the files named, and the
reference tables are pointed at. ``Nothing to compare`` (no result file on a side) is an error.
"""
from __future__ import annotations

import argparse
import fnmatch
import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mrcbench.errors import MrcbenchError
from mrcbench.provenance import manifest
from mrcbench.runtime import files, layout

# --------------------------------------------------------------------------------------------------
# What is meaning, and the tolerance of every float
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """``|a - b| <= absolute + relative * max(|a|, |b|)``; NaN equals only NaN."""

    absolute: float
    relative: float
    why: str

    def describe(self) -> str:
        parts = ([f"abs {self.absolute:g}"] if self.absolute else []) + (
            [f"rel {self.relative:g}"] if self.relative else [])
        return " + ".join(parts) or "exact"


MEANING = "meaning"
"""A column compared exactly: a different value is a different result."""

TOLERANCES: dict[str, Tolerance] = {
    # Measured (issue 28): the smoke run with native AVX512 kernels against the AVX2 reference on one Xeon
    # (checkpoints differ in their last bits; every answer, score and decision the same): logits and
    # null odds moved by up to 2.3e-6, log-prob deltas by 1.9e-6, attention masses by 7.2e-7, and an exact
    # sign-flip p-value by one step (2/256 = 0.0078).
    "mass": Tolerance(1e-5, 0.0, "attention masses, removed mass, shares, rates and probabilities lie in"
                      " [0, 1]: kernels that sum in another order, and checkpoints whose last bits differ, move"
                      " them by ~1e-6; absolute, since relative error is meaningless near 0"),
    "correlation": Tolerance(1e-5, 0.0, "correlation coefficients, kappa, tau and their bounds lie in [-1, 1]:"
                             " absolute, like masses"),
    "p_value": Tolerance(1e-2, 0.0, "p-values: the decisions they make (significant_*) are compared exactly;"
                         " exact and permutation p-values move in steps (2/256 for 8 clusters) when a near-tie"
                         " in the statistic resolves the other way"),
    "logit": Tolerance(1e-4, 1e-4, "logits, null odds, no-answer thresholds, regression coefficients and"
                       " losses are unbounded and carry the checkpoint's last-bit differences (~2e-6):"
                       " relative, with a floor for values near 0"),
    "log_ratio": Tolerance(1e-5, 1e-4, "log-probability deltas and KL divergences: relative, with a floor for"
                           " the many values near 0 (which move by ~2e-6 like the logits they come from)"),
    "default": Tolerance(1e-5, 1e-4, "any other float (effects, confidence bounds, spreads, a column added"
                         " later): relative 1e-4 with a 1e-5 floor"),
}

RULES: tuple[tuple[str, str, str], ...] = (
    # (file glob, column glob, MEANING or a TOLERANCES key): the first match wins. A column is the
    # table's column name, or a JSON value's last key (``start_logit``; ``value`` for a map of
    # question ids to values, ``predictions.json``'s answers and ``null_odds.json``'s odds).
    ("*", "significant*", MEANING),              # test decisions after correction
    ("*", "*verdict*", MEANING),
    ("*", "rank", MEANING),
    ("*", "*_thresh", "logit"),                  # SQuAD 2.0's best_*_thresh: a null-odds value
    ("*", "em", MEANING),                        # per-question scores and the official metrics
    ("*", "f1", MEANING),
    ("*", "*exact*", MEANING),
    ("*", "*_f1", MEANING),
    ("*/null_odds.json", "*", "logit"),
    ("*", "*logit*", "logit"),
    ("*", "*loss*", "logit"),
    ("*", "ols_*", "logit"),
    ("*", "*kl*", "log_ratio"),
    ("*", "*log_prob*", "log_ratio"),
    ("*", "*logprob*", "log_ratio"),
    ("*", "p_*", "p_value"),
    ("*", "*_p", "p_value"),
    ("*", "*_p_*", "p_value"),
    ("*", "pearson_*", "correlation"),
    ("*", "spearman_*", "correlation"),
    ("*", "*kendall*", "correlation"),
    ("*", "tau_*", "correlation"),
    ("*", "*kappa*", "correlation"),
    ("*", "*mass*", "mass"),
    ("*", "q2s", "mass"),
    ("*", "p2s", "mass"),
    ("*", "*probability*", "mass"),
    ("*", "*share*", "mass"),
    ("*", "*fraction*", "mass"),
    ("*", "*rate*", "mass"),
    ("*", "*agreement*", "mass"),
    ("*", "*overlap*", "mass"),
    ("*", "learning_rate", MEANING),
)

INPUTS: tuple[str, ...] = (layout.CONFIG_NAME, layout.glob("stats", layout.CONFIG_NAME), layout.glob("data", "*"))
"""Files whose bytes are the run's inputs (config, data splits): a different digest is a different run."""

MEANING_ORDER: tuple[str, ...] = (
    layout.CONFIG_NAME, layout.glob("data", "*"), "*/predictions*.json", "*/nbest.json", "*/scores.parquet",
    "*/metrics.json", layout.glob("predict", "*"), layout.glob("ablation", "*"), layout.glob("stats", "headline*"),
    layout.glob("stats", "paper_comparison*"), layout.glob("stats", "*"))
"""The order meaning changes are listed in: inputs, answers, scores, then the statistics' decisions,
with the headline last (it restates the decisions the tables above it make)."""


def column_class(path: str, column: str, is_float: bool) -> str:
    """MEANING or a TOLERANCES key for ``column`` of the file ``path`` (relative to its results folder)."""
    for file_glob, column_glob, kind in RULES:
        if fnmatch.fnmatchcase(path, file_glob) and fnmatch.fnmatchcase(column, column_glob):
            return kind
    return "default" if is_float else MEANING


def tolerance_table() -> list[dict[str, str]]:
    """The tolerance classes and the columns that use them, for the README and the report."""
    rows = []
    for name, tol in TOLERANCES.items():
        columns = [column for _, column, kind in RULES if kind == name]
        rows.append({"class": name, "tolerance": tol.describe(), "columns": ", ".join(columns) or "(any other float)",
                     "why": tol.why})
    return rows


# --------------------------------------------------------------------------------------------------
# One side: a results folder, a reference folder, or a manifest
# --------------------------------------------------------------------------------------------------

REFERENCE_INDEX = manifest.REFERENCE_INDEX
"""The index of a reference folder: the run's manifest and, for each exported file, where it is stored."""

REFERENCE_VERSION = 1

EXPORTED: tuple[str, ...] = (
    layout.CONFIG_NAME, layout.glob("data", "*.summary.json"),
    *(layout.glob("predict", name) for name in ("metrics.json", "predictions.json", "predictions_non_null.json",
                                                 "null_odds.json", "nbest.json", "scores.parquet")),
    layout.glob("attention", "zone_stats.parquet"), layout.glob("attention", "case_studies.json"),
    layout.glob("ablation", "grid.parquet"), layout.glob("finetune", "training_log.jsonl"),
    layout.glob("stats", "*.parquet"), layout.glob("stats", "settings.json"),
)
"""The files a reference folder keeps (the small result tables; no checkpoint, no data, no attention
maps, and no CSV copy of a statistics table: its parquet twin holds the same values)."""

READABLE = (".parquet", ".csv", ".tsv", ".json", ".jsonl", ".npz", ".yaml")


class Side:
    """One side of a comparison: ``files`` maps a path to its ``{path, size, sha256}`` row."""

    def __init__(self, spec: str | os.PathLike):
        path = Path(spec)
        self.name = str(path)
        self.manifest: dict | None = None
        self.kind = "folder"
        self.on_disk: dict[str, Path] = {}
        self.stored: dict[str, Path] = {}
        self.nested: list[str] = []
        if path.is_dir() and (path / REFERENCE_INDEX).is_file():
            self.kind = "reference"
            index = files.read_json(path / REFERENCE_INDEX)
            if not isinstance(index, dict) or not isinstance(index.get("stored"), dict):
                raise MrcbenchError(f"{path / REFERENCE_INDEX}: not a reference index (no 'stored' object)")
            self.manifest = manifest.check(index.get("manifest"), path / REFERENCE_INDEX)
            self.files = {row["path"]: row for row in self.manifest["files"]}
            for name, stored in index["stored"].items():
                if not isinstance(stored, str) or Path(stored).is_absolute() or ".." in Path(stored).parts:
                    raise MrcbenchError(f"{path / REFERENCE_INDEX}: stored[{name!r}] is not a path inside the folder")
                self.stored[name] = path / stored
        elif path.is_dir():
            found, self.nested = manifest.walk_results(path)
            self.files = {row["path"]: row for row, _ in found}
            self.on_disk = {row["path"]: disk for row, disk in found if "link" not in row}
            own = path / layout.MANIFEST_NAME
            self.manifest = manifest.load(own) if own.is_file() and not own.is_symlink() else None
        elif path.is_file():
            self.kind = "manifest"
            self.manifest = manifest.load(path)
            self.files = {row["path"]: row for row in self.manifest["files"]}
        else:
            raise MrcbenchError(f"{path}: no such results folder or manifest")
        if not self.files:
            where = f" (other runs inside it: {', '.join(self.nested[:5])}; compare those)" if self.nested else ""
            raise MrcbenchError(f"{path}: nothing to compare: no result file{where}")

    @property
    def environment(self) -> dict | None:
        if self.manifest is None:
            return None
        env = dict(self.manifest.get("environment") or {})
        env["config_sha256"] = self.manifest.get("config_sha256")
        env["git_commit"] = self.manifest.get("git_commit")
        return env

    def has_content(self, path: str) -> bool:
        return path in self.on_disk or path in self.stored

    def read(self, path: str) -> Any:
        """The content of a readable file: a DataFrame (tables), parsed JSON, a dict of arrays (npz), text."""
        if path in self.on_disk:
            return _read(self.on_disk[path], Path(path).suffix)
        return _read(self.stored[path], Path(path).suffix)


def _read(where: Path, suffix: str) -> Any:

    try:
        if suffix == ".parquet":
            return files.read_parquet(where)
        raw = where.read_bytes()
        if where.suffix == ".gz":
            raw = gzip.decompress(raw)
        if suffix == ".npz":


            with np.load(io.BytesIO(raw), allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}
        text = raw.decode("utf-8")
        if suffix in (".csv", ".tsv"):

            return pd.read_csv(io.StringIO(text), sep="\t" if suffix == ".tsv" else ",")
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return text
    except RecursionError:
        raise MrcbenchError(f"{where}: nested too deeply to read") from None
    except (ValueError, OSError, EOFError) as exc:  # JSONDecodeError, UnicodeDecodeError, bad gzip / npz
        raise files.corrupt(where, exc) from None


# --------------------------------------------------------------------------------------------------
# Comparing the content of one file
# --------------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """What one column (or JSON value name) of one file does between the two sides."""

    path: str
    column: str
    kind: str                      # MEANING, "beyond" (a float past its tolerance), "within"
    text: str
    max_diff: float = 0.0
    tolerance: str = ""


@dataclass
class FileResult:
    path: str
    findings: list[Finding] = field(default_factory=list)
    note: str = ""                 # why the content was not compared

    @property
    def meaning(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == MEANING]

    @property
    def beyond(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "beyond"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(value: Any) -> dict[str, Any]:
    """Nested JSON as ``{"a.b.0.c": leaf}`` (iterative: a deep file is no RecursionError)."""
    out: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        prefix, item = stack.pop()
        if isinstance(item, dict) and item:
            stack.extend((f"{prefix}.{key}" if prefix else str(key), sub) for key, sub in item.items())
        elif isinstance(item, list) and item:
            stack.extend((f"{prefix}.{i}" if prefix else str(i), sub) for i, sub in enumerate(item))
        else:
            out[prefix] = item
    return out


MAX_KEYS_NAMED = 50
"""A JSON object with up to this many top-level keys (metrics) names each value by its key; a larger one
(keyed by question id: predictions, n-best, null odds) by the key below the question id."""


KEYED_BY_ID: tuple[str, ...] = ("*/predictions*.json", "*/nbest.json", "*/null_odds.json")
"""JSON files that map question ids to values, however few questions they hold."""


def _value_name(key: str, keyed_by_id: bool) -> str:
    parts = key.split(".")
    if keyed_by_id:
        parts = parts[1:]
    parts = [part for part in parts if not part.isdigit()]
    return parts[-1] if parts else "value"


def _float_finding(path: str, column: str, kind: str, diffs, total: int) -> Finding:
    """The finding for the differing values ``diffs`` (pairs, or an (n, 2) array) of one float column."""

    tol = TOLERANCES[kind]
    pairs = np.asarray(diffs, dtype=float).reshape(-1, 2)
    a, b = pairs[:, 0], pairs[:, 1]
    with np.errstate(invalid="ignore"):
        gap = np.abs(a - b)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        within = same | (gap <= tol.absolute + tol.relative * np.maximum(np.abs(a), np.abs(b)))
    finite = np.isfinite(gap)
    biggest = float(gap[finite].max()) if finite.any() else float("nan")
    if not finite.all() and not same[~finite].all():
        biggest = float("inf")
    beyond = int((~within).sum())
    count = beyond if beyond else len(pairs)
    text = (f"{column}: max |diff| {biggest:.3g}, {count} of {total} values"
            f" {'beyond' if beyond else 'within'} {kind} tolerance ({tol.describe()})")
    return Finding(path, column, "beyond" if beyond else "within", text, biggest, tol.describe())


def _compare_json(path: str, a_raw: Any, b_raw: Any) -> list[Finding]:
    a, b = _flatten(a_raw), _flatten(b_raw)
    keyed = any(fnmatch.fnmatchcase(path, pattern) for pattern in KEYED_BY_ID) or max(
        len(raw) if isinstance(raw, (dict, list)) else 1 for raw in (a_raw, b_raw)) > MAX_KEYS_NAMED
    floats: dict[tuple[str, str], list[tuple[float, float]]] = {}
    meaning: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    for key in sorted(set(a) | set(b)):
        name = _value_name(key, keyed)
        totals[name] = totals.get(name, 0) + 1
        if key not in a or key not in b:
            meaning.setdefault(name, []).append(f"{key} only in {'A' if key in a else 'B'}")
            continue
        x, y = a[key], b[key]
        if x == y and type(x) is type(y) or (_is_number(x) and _is_number(y) and x == y):
            continue
        is_float = _is_number(x) and _is_number(y) and (isinstance(x, float) or isinstance(y, float))
        kind = column_class(path, name, is_float)
        if kind == MEANING or not is_float:
            meaning.setdefault(name, []).append(f"{key}: {x!r} vs {y!r}")
        else:
            floats.setdefault((name, kind), []).append((float(x), float(y)))
    findings = []
    for name, changes in sorted(meaning.items()):
        shown = "; ".join(changes[:3]) + (f"; ... ({len(changes)} in all)" if len(changes) > 3 else "")
        findings.append(Finding(path, name, MEANING, f"{name}: {len(changes)} of {totals[name]} differ: {shown}"))
    for (name, kind), diffs in sorted(floats.items()):
        findings.append(_float_finding(path, name, kind, diffs, totals[name]))
    return findings


def _compare_frames(path: str, a, b) -> list[Finding]:

    findings = []
    columns = [c for c in a.columns if c in b.columns]
    for side, only in (("A", [c for c in a.columns if c not in b.columns]),
                       ("B", [c for c in b.columns if c not in a.columns])):
        if only:
            findings.append(Finding(path, ", ".join(map(str, only)), MEANING, f"columns only in {side}: {only}"))

    def is_float(frame, column) -> bool:
        return pd.api.types.is_float_dtype(frame[column])

    if len(a) != len(b):
        keys = [c for c in columns if not is_float(a, c) and not is_float(b, c)]
        text = f"rows: {len(a)} vs {len(b)}"
        if keys and not a.duplicated(keys).any() and not b.duplicated(keys).any():
            merged = a[columns].merge(b[columns], on=keys, how="outer", suffixes=("@A", "@B"), indicator=True)
            text += (f" ({int((merged['_merge'] == 'left_only').sum())} only in A,"
                     f" {int((merged['_merge'] == 'right_only').sum())} only in B, keyed by {', '.join(keys)})")
            findings.append(Finding(path, "rows", MEANING, text))
            merged = merged[merged["_merge"] == "both"]
            a = merged[[c if c in keys else f"{c}@A" for c in columns]].set_axis(columns, axis=1)
            b = merged[[c if c in keys else f"{c}@B" for c in columns]].set_axis(columns, axis=1)
        else:
            findings.append(Finding(path, "rows", MEANING, text))
            return findings
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    for column in columns:
        x, y = a[column], b[column]
        both_float = is_float(a, column) and is_float(b, column)
        kind = column_class(path, str(column), both_float)
        if both_float and kind != MEANING:
            xv, yv = x.to_numpy(dtype=float, na_value=np.nan), y.to_numpy(dtype=float, na_value=np.nan)
            differ = ~((xv == yv) | (np.isnan(xv) & np.isnan(yv)))
            if differ.any():
                findings.append(_float_finding(path, str(column), kind, np.stack([xv[differ], yv[differ]], axis=1),
                                               len(xv)))
            continue
        xo, yo = x.astype(object).to_numpy(), y.astype(object).to_numpy()
        differ = _differ(x, y)
        if differ.any():
            rows = np.flatnonzero(differ)
            shown = "; ".join(f"row {i}{_row_label(a, i)}: {xo[i]!r} vs {yo[i]!r}" for i in rows[:3])
            findings.append(Finding(path, str(column), MEANING,
                                    f"{column}: {len(rows)} of {len(xo)} rows differ: {shown}"))
    return findings


def _row_label(frame, i: int) -> str:
    for key in ("qid", "id", "zone"):
        if key in frame.columns:
            return f" ({key} {frame[key].iloc[i]})"
    return ""


def _same(p: Any, q: Any) -> bool:

    if pd.api.types.is_scalar(p) and pd.api.types.is_scalar(q):
        p_missing, q_missing = bool(pd.isna(p)), bool(pd.isna(q))
        if p_missing or q_missing:
            return p_missing and q_missing
        return bool(p == q)
    try:  # a list or array in a cell
        return bool(np.array_equal(np.asarray(p, dtype=object), np.asarray(q, dtype=object)))
    except (TypeError, ValueError):
        return repr(p) == repr(q)


def _differ(x, y):
    """Boolean array: the cells of two columns (any dtype) that differ; missing equals missing."""

    xs, ys = x.astype(object), y.astype(object)
    try:
        equal = (xs == ys).fillna(False).astype(bool).to_numpy()
        return ~(equal | (xs.isna() & ys.isna()).to_numpy())
    except (TypeError, ValueError):
        return np.array([not _same(p, q) for p, q in zip(xs, ys)], dtype=bool)


def _compare_arrays(path: str, a: dict, b: dict) -> list[Finding]:

    findings = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b or a[name].shape != b[name].shape:
            findings.append(Finding(path, name, MEANING, f"{name}: array on one side only or of another shape"))
            continue
        x, y = a[name], b[name]
        if np.issubdtype(x.dtype, np.floating) and np.issubdtype(y.dtype, np.floating):
            xv, yv = x.astype(float).ravel(), y.astype(float).ravel()
            differ = ~((xv == yv) | (np.isnan(xv) & np.isnan(yv)))
            if differ.any():
                findings.append(_float_finding(path, name, column_class(path, name, True) if
                                               column_class(path, name, True) != MEANING else "mass",
                                               np.stack([xv[differ], yv[differ]], axis=1), xv.size))
        elif not np.array_equal(x, y):
            findings.append(Finding(path, name, MEANING, f"{name}: values differ"))
    return findings


def compare_content(path: str, a: Any, b: Any) -> list[Finding]:

    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        return _compare_frames(path, a, b)
    if isinstance(a, dict) and isinstance(b, dict) and Path(path).suffix == ".npz":
        return _compare_arrays(path, a, b)
    if isinstance(a, str) and isinstance(b, str):
        return [] if a == b else [Finding(path, "text", MEANING, "text differs")]
    return _compare_json(path, a, b)


# --------------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    verdict: str                   # "identical", "equivalent", "differs"
    lines: list[str]
    results: list[FileResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict in ("identical", "equivalent") else 1

    @property
    def summary(self) -> str:
        return self.lines[-1]


def _is_input(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in INPUTS)


def _order(path: str) -> tuple[int, int, str]:
    """Where ``path`` is listed: by :data:`MEANING_ORDER`, then by stage in run order."""
    stages = {stage: i for i, stage in enumerate(layout.STAGES)}
    stage = stages.get(path.split("/")[0], len(stages))
    for i, pattern in enumerate(MEANING_ORDER):
        if fnmatch.fnmatchcase(path, pattern):
            return i, stage, path
    return len(MEANING_ORDER), stage, path


def _parquet_twin(path: str, side: Side) -> str | None:
    if path.endswith(".csv"):
        twin = path[: -len(".csv")] + ".parquet"
        if twin in side.files:
            return twin
    return None


def compare_sides(a: Side, b: Side) -> Verdict:
    paths = sorted(set(a.files) | set(b.files))
    only_a = [p for p in paths if p not in b.files]
    only_b = [p for p in paths if p not in a.files]
    differing = [p for p in paths if p in a.files and p in b.files and a.files[p]["sha256"] != b.files[p]["sha256"]]
    if not (only_a or only_b or differing):
        return Verdict("identical", ["identical"])
    header = [f"A: {a.name}", f"B: {b.name}"]
    env = manifest_environment_lines(a.environment, b.environment)
    if "manifest" in (a.kind, b.kind):
        return _digest_verdict(a, b, header, env, only_a, only_b, differing)

    results: list[FileResult] = []
    for path in differing:
        result = FileResult(path)
        links = [side.files[path].get("link") for side in (a, b)]
        readable = Path(path).suffix in READABLE and links == [None, None]
        if links != [None, None]:  # a symbolic link is compared by its target, never read through
            result.findings = [Finding(path, "link", MEANING, f"link: {_show(links[0])} vs {_show(links[1])}"
                                       " (a symbolic link: its target, not read)")]
        elif readable and a.has_content(path) and b.has_content(path):
            result.findings = compare_content(path, a.read(path), b.read(path))
            if not result.findings:
                result.note = "bytes differ, every value the same"
        elif _is_input(path):
            result.findings = [Finding(path, "bytes", MEANING, "input differs (digest)")]
        elif (twin := _parquet_twin(path, a)) and a.has_content(twin) and b.has_content(twin):
            result.note = f"not read here: its values are those of {Path(twin).name}"
        else:
            missing = " and ".join(s for s, side in (("A", a), ("B", b)) if not side.has_content(path))
            result.note = (f"bytes differ (not read: {missing} holds no content of it)" if missing and readable
                           else "bytes differ (weights or arrays: their effect is in the tables read here)")
        results.append(result)

    meaning = sorted((r for r in results if r.meaning), key=lambda r: _order(r.path))
    beyond = sorted((r for r in results if r.beyond and not r.meaning), key=lambda r: _order(r.path))
    beyond_also = [r for r in results if r.beyond and r.meaning]
    lines = list(header)
    changed = sorted([(_order(path), [f"  only in {'A' if path in a.files else 'B'}: {path}"])
                      for path in only_a + only_b]
                     + [(_order(r.path), [f"  {r.path}:"] + [f"      {f.text}" for f in r.meaning]) for r in meaning])
    if changed:
        lines.append("changed in meaning (answers, scores, decisions, headline):")
        for _, block in changed:
            lines += block
    if beyond or beyond_also:
        lines.append("floats beyond tolerance:")
        for result in sorted(beyond + beyond_also, key=lambda r: _order(r.path)):
            lines.append(f"  {result.path}:")
            lines += [f"      {f.text}" for f in result.beyond]
    within = [r for r in results if not r.meaning and not r.beyond]
    if within:
        lines.append("within tolerance (largest difference per file):")
        for result in sorted(within, key=lambda r: (_order(r.path)[1], r.path)):  # in run order
            floats = [f for f in result.findings if f.kind == "within"]
            if floats:
                top = max(floats, key=lambda f: f.max_diff)
                lines.append(f"  {result.path}: {top.text}")
            else:
                lines.append(f"  {result.path}: {result.note}")
    if env:
        lines.append("environment differences (likely causes, likeliest first):")
        lines += env
    n_meaning = len(meaning) + len(only_a) + len(only_b)
    if n_meaning or beyond or beyond_also:
        first = [key[-1] for key, _ in changed[:1]] or [r.path for r in beyond + beyond_also][:1]
        lines.append(f"differs: {n_meaning} file{'s' if n_meaning != 1 else ''} changed in meaning,"
                     f" {len(beyond) + len(beyond_also)} with floats beyond tolerance; first: {first[0]}")
        return Verdict("differs", lines, results)
    lines.append(f"equivalent: {len(differing)} file{'s' if len(differing) != 1 else ''} differ in bytes only;"
                 " every answer, score and decision the same, every float within tolerance")
    return Verdict("equivalent", lines, results)


def _digest_verdict(a: Side, b: Side, header, env, only_a, only_b, differing) -> Verdict:
    lines = list(header)
    by_stage: dict[str, list[str]] = {}
    for path in only_a + only_b + differing:
        label = "only in A" if path in only_a else "only in B" if path in only_b else "differs"
        by_stage.setdefault(manifest.stage_of(path), []).append(f"  {label}: {path}")
    order = {stage: i for i, stage in enumerate(layout.STAGES)}
    stages = sorted(by_stage, key=lambda stage: (order.get(stage, len(layout.STAGES)), stage))
    for stage in stages:
        lines.append(f"{stage}:")
        lines += sorted(by_stage[stage])
    if env:
        lines.append("environment differences (likely causes, likeliest first):")
        lines += env
    manifest_side = a if a.kind == "manifest" else b
    hint = (f"compare with the reference tables instead (mrcbench compare RESULTS {_reference_folder(manifest_side.name)})"
            if _reference_folder(manifest_side.name) else
            "compare two results folders, or a folder with a reference folder (mrcbench reference export)")
    lines.append(f"differs: {len(differing)} file{'s differ' if len(differing) != 1 else ' differs'} in digest,"
                 f" {len(only_a)} only in A, {len(only_b)} only in B; first differing stage: {stages[0]}."
                 f" A manifest holds only digests, so only digests can be compared: {hint}")
    return Verdict("differs", lines)


def _reference_folder(manifest_path: str) -> str | None:
    """``reference/default`` for ``reference/default.json`` when that folder holds reference tables."""
    path = Path(manifest_path)
    folder = path.parent / path.name.removesuffix(".json")
    return str(folder) if path.name.endswith(".json") and (folder / REFERENCE_INDEX).is_file() else None


def manifest_environment_lines(a: dict | None, b: dict | None) -> list[str]:
    """The environment differences, likeliest cause first (package and library versions named)."""
    if a is None or b is None:
        missing = " and ".join(name for name, env in (("A", a), ("B", b)) if env is None)
        return [f"environment not recorded for {missing} (no manifest.json)"]
    lines = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) or isinstance(y, dict):
            x, y = (x if isinstance(x, dict) else {}), (y if isinstance(y, dict) else {})
            for sub in sorted(set(x) | set(y)):
                if x.get(sub) != y.get(sub):
                    lines.append(f"environment differs: {key} {sub} {_show(x.get(sub))} vs {_show(y.get(sub))}")
        elif key == "cpu_flags" and x != y:
            only_a = sorted(set(x or ()) - set(y or ()))
            only_b = sorted(set(y or ()) - set(x or ()))
            lines.append(f"environment differs: cpu_flags only in A: {_show(only_a)}; only in B: {_show(only_b)}")
        elif x != y:
            lines.append(f"environment differs: {key} {_show(x)} vs {_show(y)}")
    order = ("precision", "kernel_env", "cpu_capability", "threads", "training_threads", "packages", "libraries",
             "cpu_flags", "config_sha256", "git_commit", "cuda")
    rank = {name: i for i, name in enumerate(order)}
    return sorted(lines, key=lambda line: rank.get(line.split()[2], len(order)))


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "(none)"
    return str(value)


def compare(a_spec: str | os.PathLike, b_spec: str | os.PathLike) -> Verdict:
    return compare_sides(Side(a_spec), Side(b_spec))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mrcbench compare",
        description="Compare two runs (results folders, reference folders or manifest.json files): identical or"
                    " equivalent (exit 0), or differs (exit 1).")
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args(argv)
    verdict = compare(args.a, args.b)
    print("\n".join(verdict.lines))
    return verdict.exit_code


# --------------------------------------------------------------------------------------------------
# Reference folders
# --------------------------------------------------------------------------------------------------


def export_reference(results_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir`` (``reference/default``): the run's small result tables and an index holding its
    manifest, and the manifest beside it (``reference/default.json``). Deterministic: the same run gives
    the same bytes (parquet rewritten with zstd, text gzipped without a time stamp)."""

    results, out = Path(results_dir), Path(out_dir)
    own = results / layout.MANIFEST_NAME
    if not own.is_file():
        raise MrcbenchError(f"{own}: no manifest; export a finished run (its last step writes it)")
    run_manifest = manifest.load(own)
    if (out.exists() or out.is_symlink()) and not (out / REFERENCE_INDEX).is_file():
        raise MrcbenchError(f"{out}: exists and is not a reference folder (no {REFERENCE_INDEX}); name a new one,"
                            " e.g. reference/default")
    found = {row["path"]: disk for row, disk in manifest.walk_results(results)[0] if "link" not in row}
    exported = [row for row in run_manifest["files"]
                if any(fnmatch.fnmatchcase(row["path"], pattern) for pattern in EXPORTED)]
    for row in exported:
        if row["path"] not in found:
            raise MrcbenchError(f"{results / row['path']}: listed in {own} but missing (or a link); re-run the workflow")
        if files.sha256_file(found[row["path"]]) != row["sha256"]:
            raise MrcbenchError(f"{results / row['path']}: changed since {own} was written; re-run `mrcbench manifest`")
    staging = files.staging_dir(out)
    staging.mkdir(parents=True)
    stored = {}
    for row in exported:
        path = row["path"]
        if path.endswith(".parquet"):
            name = path
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pq.read_table(found[path]), target, compression="zstd", compression_level=19)
        else:
            name = path + ".gz"
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(gzip.compress(found[path].read_bytes(), compresslevel=9, mtime=0))
        stored[path] = name
    index = {"reference_version": REFERENCE_VERSION, "stored": stored, "manifest": run_manifest}
    files.write_json(staging / REFERENCE_INDEX, index)
    files.replace_directory(staging, out)
    files.write_json(manifest_beside(out), run_manifest)
    return out


def manifest_beside(folder: str | os.PathLike) -> Path:
    """``reference/default.json`` for the reference folder ``reference/default``."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.json"


def reference_folders_in(folder: str | os.PathLike = manifest.REFERENCE_DIR) -> list[Path]:
    return sorted(path.parent for path in Path(folder).glob(f"*/{REFERENCE_INDEX}"))


def main_reference(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrcbench reference", description="Reference tables of a finished run.")
    sub = parser.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", help="write OUT (reference/default) and OUT.json from a finished run")
    export.add_argument("results", help="the finished run's results folder (holding manifest.json)")
    export.add_argument("out", help="the reference folder to write, e.g. reference/default")
    args = parser.parse_args(argv)
    out = export_reference(args.results, args.out)
    total = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    print(f"{out}: {len(files.read_json(out / REFERENCE_INDEX)['stored'])} tables, {total / 1e6:.1f} MB;"
          f" manifest {manifest_beside(out)}")
    return 0


# --------------------------------------------------------------------------------------------------
# The report's appendix
# --------------------------------------------------------------------------------------------------


def reference_check(results_dir: str | os.PathLike, config: dict, references: list[str]) -> str:
    """One sentence: does this run match the reference made from the same config?

    The reference is the manifest (``reference/*.json``) whose ``config_sha256`` equals this run's config
    digest; its tables (the folder of the same name), when shipped, make the verdict ``equivalent``
    possible; without them only the digests are compared."""
    digest = manifest.config_digest(config)
    matching = []
    for path in references:
        try:
            reference = manifest.load(path)
        except MrcbenchError:
            continue
        if reference.get("config_sha256") == digest:
            matching.append((path, reference))
    if not matching:
        return (f"No reference manifest was made from this configuration (config digest `{digest[:12]}`;"
                f" the repository's `{manifest.REFERENCE_DIR}/` holds the default's), so there is nothing to match:"
                " compare two runs with `mrcbench compare A B`.")
    path, reference = matching[0]
    folder = _reference_folder(path)
    run = Side(results_dir)
    made = (reference.get("environment") or {}).get("cpu_model") or "an unrecorded CPU"
    commit = (reference.get("git_commit") or "unrecorded")[:12]
    verdict = compare_sides(run, Side(folder or path))
    target = folder or path
    if verdict.verdict == "identical":
        rows = list(run.files.values())
        return (f"Reference: this run's {len(rows)} result files (digest `{manifest.files_digest(rows)[:16]}`) are"
                f" **identical** to the repository's reference `{target}` (a fresh-clone default run on"
                f" {made}, commit `{commit}`).")
    relation = "**equivalent** to" if verdict.verdict == "equivalent" else "**differs** from"
    return (f"Reference: this run {'is ' if verdict.verdict == 'equivalent' else ''}{relation} the repository's"
            f" reference `{target}` (made on {made}, commit `{commit}`): {verdict.summary}."
            f" `mrcbench compare {results_dir} {target}` lists every difference and the environment's.")


def largest_differences(verdict: Verdict) -> list[dict[str, Any]]:
    """One row per differing file: what differs and by how much (the report's appendix table)."""
    rows = []
    for result in verdict.results:
        if result.meaning:
            top = result.meaning[0]
            rows.append({"file": result.path, "column": top.column, "status": "changed in meaning",
                         "max |diff|": None, "tolerance": "exact", "detail": top.text})
        elif result.findings:
            top = max((f for f in result.findings), key=lambda f: (f.kind == "beyond", f.max_diff))
            rows.append({"file": result.path, "column": top.column,
                         "status": "beyond tolerance" if top.kind == "beyond" else "within tolerance",
                         "max |diff|": top.max_diff, "tolerance": top.tolerance, "detail": top.text})
        else:
            rows.append({"file": result.path, "column": "", "status": "bytes only", "max |diff|": None,
                         "tolerance": "", "detail": result.note})
    order = {"changed in meaning": 0, "beyond tolerance": 1, "within tolerance": 2, "bytes only": 3}
    return sorted(rows, key=lambda row: (order[row["status"]], -(row["max |diff|"] or 0), row["file"]))
