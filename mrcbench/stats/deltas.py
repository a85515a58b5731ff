"""Paired masking deltas: masked minus unmasked per question, with bootstrap CIs, tests and corrections.

Builds the per-question matrices of a grid (:func:`build_question_matrices`: seeds averaged per question,
with each seed's mean delta kept) and summarises every cell (:mod:`mrcbench.stats.resampling`), with
p-values corrected within each family (:mod:`mrcbench.stats.multiple_testing`). Writes the ``deltas`` and
``seed_spread`` tables, shown in the report's "Zone × layer masking" and "Head-level masking" sections
(drawn by :mod:`mrcbench.report.masking`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrcbench.errors import MrcbenchError
from mrcbench.stats.common import METRICS, StatsSettings, layer_grid, seeded_rng
from mrcbench.stats.multiple_testing import correct_pvalues
from mrcbench.stats.resampling import ResamplingDesign, summarize_paired
from mrcbench.tables import CELL_KEYS, DELTAS, RUN_KEYS, SEED_SPREAD
from mrcbench.zones import ZONE_ORDER

log = logging.getLogger(__name__)

#: One correction family of deltas: the cells of one grid and mode (the 100+ head-level cells do not
#: dilute the zone x layer cells).
DELTA_FAMILY = [*RUN_KEYS, "variant", "mode", "metric"]

@dataclass
class QuestionMatrix:
    """Seed-averaged per-question values of one (model, train set, eval set, variant, metric).

    Rows are questions (``qids``), columns are grid cells (``cells``: mode, layer, head, zone).
    ``seed_deltas`` holds the per-seed mean delta of every cell (seeds x cells) and
    ``seed_question_counts`` the questions of each seed, for the ``seed_spread`` table.
    """

    model: str
    train_set: str
    eval_set: str
    variant: str
    metric: str
    qids: pd.Index
    articles: np.ndarray
    cells: pd.DataFrame
    baseline: np.ndarray
    masked: np.ndarray
    removed_mass: np.ndarray | None
    seed_deltas: pd.DataFrame
    seed_question_counts: pd.Series
    n_seeds: int

    @property
    def run(self) -> tuple[str, str, str]:
        """The values of :data:`mrcbench.tables.RUN_KEYS`."""
        return (self.model, self.train_set, self.eval_set)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (*self.run, self.variant, self.metric)

    @property
    def delta(self) -> np.ndarray:
        return self.masked - self.baseline[:, None]

    def design(self, min_clusters: int) -> ResamplingDesign:
        return ResamplingDesign.from_articles(self.articles, len(self.qids), min_clusters)

    def layer_cells(self) -> pd.DataFrame:
        """The zone x layer (all heads) cells, with their column index in ``column``."""
        cells = self.cells.assign(column=np.arange(len(self.cells)))
        return layer_grid(cells)


def _baseline_rows(run: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Baseline rows of a run for a variant: its own when written per variant, else the shared ones."""
    base = run[run["mode"] == "baseline"]
    own = base[base["variant"] == variant]
    chosen = own if len(own) else base
    return chosen.drop_duplicates(["seed", "qid"])


def build_question_matrices(grid: pd.DataFrame | None) -> list[QuestionMatrix]:
    """Turn the long grid into one :class:`QuestionMatrix` per run, variant and metric."""
    if grid is None or grid.empty:
        return []
    matrices: list[QuestionMatrix] = []
    grid = grid.astype({"layer": "int64", "head": "int64", "seed": "int64"})
    for (model, train_set, eval_set), run in grid.groupby(list(RUN_KEYS), sort=True):
        masked_rows = run[run["mode"] != "baseline"]
        if run[run["mode"] == "baseline"].empty:
            raise MrcbenchError(
                f"grid.parquet of {model}/{train_set}/{eval_set}: no baseline rows (mode 'baseline')"
            )
        articles = run.drop_duplicates("qid").set_index("qid")["article"]
        for variant, masked in masked_rows.groupby("variant", sort=True):
            base = _baseline_rows(run, variant).set_index(["seed", "qid"])
            has_mass = "removed_mass" in masked.columns
            wide_mass = None
            if has_mass:
                wide_mass = masked.set_index(["seed", "qid", *CELL_KEYS])["removed_mass"].unstack(list(CELL_KEYS))
            for metric in METRICS:
                wide = masked.set_index(["seed", "qid", *CELL_KEYS])[metric].unstack(list(CELL_KEYS))
                rows = wide.index.intersection(base.index)
                rows = rows[base.loc[rows, metric].notna().to_numpy()]
                wide = wide.loc[rows]
                baseline = base.loc[rows, metric]
                delta = wide.sub(baseline, axis=0)
                seed_deltas = delta.groupby(level="seed").mean()
                seed_counts = delta.groupby(level="seed").size()
                masked_q = wide.groupby(level="qid").mean()
                baseline_q = baseline.groupby(level="qid").mean()
                complete = masked_q.notna().all(axis=1)
                if not complete.all():
                    log.warning(
                        "%s/%s/%s %s %s: %d question(s) without a score in some cell are left out",
                        model,
                        train_set,
                        eval_set,
                        variant,
                        metric,
                        int((~complete).sum()),
                    )
                masked_q = masked_q[complete]
                qids = masked_q.index
                mass_q = None
                if wide_mass is not None:
                    mass_q = (
                        wide_mass.loc[rows]
                        .groupby(level="qid")
                        .mean()
                        .reindex(index=qids, columns=masked_q.columns)
                        .to_numpy(dtype=float)
                    )
                cells = masked_q.columns.to_frame(index=False)
                matrices.append(
                    QuestionMatrix(
                        model=model,
                        train_set=train_set,
                        eval_set=eval_set,
                        variant=variant,
                        metric=metric,
                        qids=qids,
                        articles=articles.reindex(qids).to_numpy(dtype=object),
                        cells=cells,
                        baseline=baseline_q.reindex(qids).to_numpy(dtype=float),
                        masked=masked_q.to_numpy(dtype=float),
                        removed_mass=mass_q,
                        seed_deltas=seed_deltas,
                        seed_question_counts=seed_counts,
                        n_seeds=len(seed_deltas),
                    )
                )
    return matrices


# --------------------------------------------------------------------------------------------------
# Deltas and their seed spread
# --------------------------------------------------------------------------------------------------


def compute_deltas(
    matrices: list[QuestionMatrix], settings: StatsSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The delta table (one row per cell and metric) and the per-seed delta rows."""
    rows: list[pd.DataFrame] = []
    seed_rows: list[pd.DataFrame] = []
    for matrix in matrices:
        design = matrix.design(settings.min_clusters)
        summary = summarize_paired(matrix.delta, design, settings, seeded_rng(settings, "deltas", *matrix.key))
        seed_values = matrix.seed_deltas.to_numpy(dtype=float)
        table = matrix.cells.copy()
        table.insert(0, "variant", matrix.variant)
        for position, (column, value) in enumerate(zip(RUN_KEYS, matrix.run, strict=True)):
            table.insert(position, column, value)
        table["metric"] = matrix.metric
        table["n_questions"] = len(matrix.qids)
        table["n_clusters"] = design.n_articles
        table["resampling"] = design.unit
        table["test"] = summary.test
        table["n_seeds"] = matrix.n_seeds
        table["baseline"] = float(matrix.baseline.mean()) if len(matrix.baseline) else np.nan
        table["masked"] = matrix.masked.mean(axis=0) if len(matrix.masked) else np.nan
        table["delta"] = summary.mean
        table["ci_low"] = summary.ci_low
        table["ci_high"] = summary.ci_high
        table["p_value"] = summary.p_value
        table["p_wilcoxon"] = summary.p_wilcoxon
        table["seed_delta_sd"] = (
            np.std(seed_values, axis=0, ddof=1) if matrix.n_seeds > 1 else np.full(len(table), np.nan)
        )
        table["seed_delta_min"] = seed_values.min(axis=0)
        table["seed_delta_max"] = seed_values.max(axis=0)
        # NaN marks cells that blank nothing for a question; pandas' mean skips them without warnings.
        table["removed_mass"] = (
            pd.DataFrame(matrix.removed_mass).mean(axis=0).to_numpy()
            if matrix.removed_mass is not None
            else np.nan
        )
        rows.append(table)

        per_seed = matrix.seed_deltas.copy()
        per_seed.columns = pd.MultiIndex.from_frame(matrix.cells)
        long = per_seed.stack(list(CELL_KEYS), future_stack=True).rename("value").reset_index()
        long["n_questions"] = long["seed"].map(matrix.seed_question_counts)
        long = long.assign(
            quantity="delta",
            **dict(zip(RUN_KEYS, matrix.run, strict=True)),
            variant=matrix.variant,
            metric=matrix.metric,
        )
        seed_rows.append(long[SEED_SPREAD.names])
    if not rows:
        return DELTAS.empty(), SEED_SPREAD.empty()
    deltas = pd.concat(rows, ignore_index=True)
    deltas = correct_pvalues(deltas, DELTA_FAMILY, settings.alpha)
    deltas = _sort_cells(deltas[DELTAS.names])
    return deltas, pd.concat(seed_rows, ignore_index=True)


def _sort_cells(frame: pd.DataFrame) -> pd.DataFrame:
    order = {zone: i for i, zone in enumerate(ZONE_ORDER)}
    keys = [column for column in [*RUN_KEYS, "variant", "metric", "mode", "layer", "head"] if column in frame]
    return (
        frame.assign(_zone_order=frame["zone"].map(order).fillna(len(order)))
        .sort_values([*keys, "_zone_order"], kind="stable")
        .drop(columns="_zone_order")
        .reset_index(drop=True)
    )
