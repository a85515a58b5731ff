"""Loading the result files the statistics read.

Masking grids (``grid.parquet``), per-question scores (``scores.parquet``), zone statistics
(``zone_stats.parquet``) and the official metrics (``metrics.json``) of every run under a results
directory, refusing two files for one run and a table whose columns differ from its declaration
(:mod:`mrcbench.tables`); and the grid's answerable questions (:func:`answerable_grid`). Feeds every
table of :mod:`mrcbench.stats.command`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mrcbench.errors import MrcbenchError
from mrcbench.runtime import layout
from mrcbench.runtime.files import read_json, read_parquet
from mrcbench.tables import GRID, RUN_KEYS, RUN_SEED_KEYS, SCORES, ZONE_STATS, Table, run_columns
from mrcbench.zones import NULL_PREFIX

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Loading result files
# --------------------------------------------------------------------------------------------------


@dataclass
class ResultTables:
    grid: pd.DataFrame | None
    scores: pd.DataFrame | None
    zone_stats: pd.DataFrame | None
    official: pd.DataFrame  # OFFICIAL_COLUMNS
    controls: pd.DataFrame | None = None  # the whole grid: every operator and the null cells


@dataclass
class ResultFiles:
    """The result files one statistics run reads: in the workflow, exactly the rule's declared inputs
    (a leftover run folder or a copy beside them is never mixed into the tables)."""

    grids: list[Path]
    zone_stats: list[Path]
    scores: list[Path]
    metrics: list[Path]

    @classmethod
    def discover(cls, results_dir: Path) -> ResultFiles:
        """Every result file under ``results_dir`` (for a results tree built outside the workflow)."""
        def found(stage: str, name: str) -> list[Path]:
            return sorted(Path(results_dir).glob(layout.glob(stage, name)))

        return cls(
            grids=found("ablation", "grid.parquet"),
            zone_stats=found("attention", "zone_stats.parquet"),
            scores=found("predict", "scores.parquet"),
            metrics=found("predict", "metrics.json"),
        )


def _refuse_repeated_file(seen: dict[Path, Path], path: Path) -> None:
    """The same file listed twice (under any spelling: ``a/../b``, a symlink) would count its runs twice."""
    resolved = Path(path).resolve()
    if resolved in seen:
        raise MrcbenchError(f"{path}: given twice (also as {seen[resolved]}); list each result file once")
    seen[resolved] = Path(path)


def _refuse_duplicate_runs(owner: dict[tuple, Path], keys: Iterable[tuple], path: Path) -> None:
    """One run's results in one file only: a second file holding the same run is a copy or a stray."""
    for key in keys:
        if key in owner and owner[key].resolve() != Path(path).resolve():
            run = ", ".join(f"{name}={value}" for name, value in zip(RUN_SEED_KEYS, key, strict=True))
            raise MrcbenchError(f"{path} and {owner[key]} both hold the results of {run}: keep one of them")
        owner[key] = path


def _read_parquets(paths: list[Path], table: Table) -> pd.DataFrame | None:
    frames = []
    owner: dict[tuple, Path] = {}
    seen: dict[Path, Path] = {}
    for path in paths:
        _refuse_repeated_file(seen, Path(path))
    for path in paths:
        frame = read_parquet(path)
        table.check(frame, path)
        runs = frame[list(RUN_SEED_KEYS)].drop_duplicates().itertuples(index=False, name=None)
        _refuse_duplicate_runs(owner, [tuple(str(value) for value in run) for run in runs], Path(path))
        frames.append(frame)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


#: The columns of :attr:`ResultTables.official`: a run's official-equivalent EM and F1 (``metrics.json``).
OFFICIAL_COLUMNS = [*RUN_SEED_KEYS, "official_em", "official_f1"]
_EM_KEYS = ("exact", "exact_match", "EM", "em")
_F1_KEYS = ("f1", "F1")


def _official_metrics(paths: list[Path]) -> pd.DataFrame:
    """EM/F1 of the official-equivalent scorer from the runs' ``metrics.json`` files (the run read from
    the path, :func:`mrcbench.runtime.layout.parse`)."""
    rows = []
    owner: dict[tuple, Path] = {}
    seen: dict[Path, Path] = {}
    for path in map(Path, paths):
        _refuse_repeated_file(seen, path)
        run = run_columns(layout.parse(path, "predict", "metrics.json"))
        _refuse_duplicate_runs(owner, [tuple(str(value) for value in run.values())], path)
        payload = read_json(path)
        em = next((payload[key] for key in _EM_KEYS if isinstance(payload.get(key), (int, float))), None)
        f1 = next((payload[key] for key in _F1_KEYS if isinstance(payload.get(key), (int, float))), None)
        rows.append({**run, "official_em": em, "official_f1": f1})
    return pd.DataFrame(rows, columns=OFFICIAL_COLUMNS)


def load_results(results_dir: Path, files: ResultFiles | None = None) -> ResultTables:
    """Read ``files`` (default: every grid, score, zone-statistics and metrics file under ``results_dir``),
    refusing two files that hold the same run."""
    files = files or ResultFiles.discover(results_dir)
    controls = _read_parquets(files.grids, GRID)
    grid = paper_cells(controls)
    scores = _read_parquets(files.scores, SCORES)
    zone_stats = _read_parquets(files.zone_stats, ZONE_STATS)
    return ResultTables(
        grid=grid, scores=scores, zone_stats=zone_stats, official=_official_metrics(files.metrics),
        controls=controls,
    )


def paper_cells(grid: pd.DataFrame | None) -> pd.DataFrame | None:
    """The grid's rows of the paper's operator (``renorm``) and zones: no other operator, no null
    (``null_<zone>``) cells."""
    if grid is None:
        return None
    keep = ~grid["zone"].astype(str).str.startswith(NULL_PREFIX)
    keep &= grid["operator"].astype(str) == "renorm"
    return grid.loc[keep].reset_index(drop=True)


def answerable_grid(grid: pd.DataFrame | None, scores: pd.DataFrame | None) -> pd.DataFrame | None:
    """The grid without the questions ``scores.parquet`` marks as unanswerable (``has_answer`` False).

    Grids are built on answerable questions by default (``ablation.answerable_only``); this keeps the
    headline deltas answerable-only when a grid was built otherwise.
    """
    if grid is None or scores is None or "has_answer" not in scores.columns:
        return grid
    unanswerable = scores.loc[~scores["has_answer"].astype(bool), [*RUN_KEYS, "qid"]].drop_duplicates()
    if unanswerable.empty:
        return grid
    marked = grid.merge(unanswerable.assign(_unanswerable=True), on=[*RUN_KEYS, "qid"], how="left")
    drop = marked["_unanswerable"].fillna(False).astype(bool).to_numpy()
    if drop.any():
        log.info(
            "left %d unanswerable question(s) out of the grids' deltas",
            grid.loc[drop].drop_duplicates([*RUN_KEYS, "qid"]).shape[0],
        )
    return grid.loc[~drop].reset_index(drop=True)
