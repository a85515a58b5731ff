"""Paired masking deltas: masked minus unmasked per question, with bootstrap CIs, tests and corrections.

Builds the per-question matrices of a grid (:func:`build_question_matrices`), resamples them
(article-cluster or question bootstrap, sign-flip permutation test, Wilcoxon) and corrects p-values
within each family (Holm, Benjamini-Hochberg). Writes the ``deltas`` and ``seed_spread`` tables, shown
in the report's "Zone × layer masking" and "Head-level masking" sections (drawn by
:mod:`mrcbench.report.masking`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from mrcbench.errors import MrcbenchError
from mrcbench.stats.common import (
    CELL_KEYS,
    METRICS,
    RUN_KEYS,
    ZONE_ORDER,
    StatsSettings,
    layer_grid,
    seeded_rng,
)

log = logging.getLogger(__name__)


DELTA_COLUMNS = [
    *RUN_KEYS,
    "variant",
    *CELL_KEYS,
    "metric",
    "n_questions",
    "n_clusters",
    "resampling",
    "test",
    "n_seeds",
    "baseline",
    "masked",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "p_wilcoxon",
    "p_holm",
    "p_bh",
    "significant_holm",
    "significant_bh",
    "seed_delta_sd",
    "seed_delta_min",
    "seed_delta_max",
    "removed_mass",
]


SEED_COLUMNS = ["quantity", *RUN_KEYS, "variant", *CELL_KEYS, "metric", "seed", "n_questions", "value"]


# --------------------------------------------------------------------------------------------------
# Resampling machinery (vectorised over grid cells)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResamplingDesign:
    """Which questions belong together when resampling: articles, or each question on its own.

    ``n_clusters`` counts the resampling units (articles, or questions); ``article_codes`` and
    ``n_articles`` keep the article structure even when questions are resampled, for the tables.
    """

    codes: np.ndarray  # resampling unit of every question, 0..n_clusters-1
    n_clusters: int
    unit: str  # "article" or "question"
    article_codes: np.ndarray | None  # article of every question (questions without one: own code)
    min_clusters: int  # config stats.min_clusters

    @property
    def n_articles(self) -> int:
        """Article clusters of the questions (every question is its own when there are no article ids)."""
        if self.article_codes is None:
            return len(self.codes)
        return len(np.unique(self.article_codes))

    @classmethod
    def from_articles(
        cls, articles: Sequence[Any] | None, n_questions: int, min_clusters: int
    ) -> ResamplingDesign:
        """Article clusters when article ids exist and there are at least ``min_clusters`` of them
        (and fewer than questions); question-level otherwise."""
        article_codes = None
        if articles is not None and n_questions > 0:
            labels = pd.Series(list(articles), dtype=object)
            if labels.notna().any():
                # A question without an article id is its own cluster.
                fill = pd.Series([f"\x00question{i}" for i in range(n_questions)], dtype=object)
                labels = labels.where(labels.notna(), fill)
                codes, _ = pd.factorize(labels)
                article_codes = codes.astype(np.int64)
        return cls.choose(article_codes, n_questions, min_clusters)

    @classmethod
    def choose(cls, article_codes: np.ndarray | None, n_questions: int, min_clusters: int) -> ResamplingDesign:
        if article_codes is not None:
            n_articles = len(np.unique(article_codes))
            if max(2, min_clusters) <= n_articles < n_questions:
                return cls(article_codes, n_articles, "article", article_codes, min_clusters)
        questions = np.arange(n_questions, dtype=np.int64)
        return cls(questions, n_questions, "question", article_codes, min_clusters)

    def subset(self, rows: np.ndarray) -> ResamplingDesign:
        """The design of a subset of questions (e.g. one question-type bucket), by the same rule."""
        article_codes = None
        if self.article_codes is not None:
            article_codes = pd.factorize(self.article_codes[rows])[0].astype(np.int64)
        return ResamplingDesign.choose(article_codes, len(rows), self.min_clusters)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=self.n_clusters).astype(np.float64)

    def cluster_sums(self, values: np.ndarray) -> np.ndarray:
        """Sum of ``values`` [questions, cells] within each cluster -> [clusters, cells]."""
        n = len(self.codes)
        indicator = scipy.sparse.csr_matrix(
            (np.ones(n), (self.codes, np.arange(n))), shape=(self.n_clusters, n)
        )
        return np.asarray(indicator @ values)


def bootstrap_means(
    values: np.ndarray, design: ResamplingDesign, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap replicates of the column means of ``values`` [questions, cells] -> [replicates, cells].

    Clusters are drawn with replacement (multinomial counts); a replicate's mean is the ratio of the
    drawn clusters' sums to their sizes, i.e. the mean over the questions of the drawn clusters. The
    same draws serve every cell, so the intervals of different cells are paired.
    """
    sums = design.cluster_sums(values)
    k = design.n_clusters
    counts = rng.multinomial(k, np.full(k, 1.0 / k), size=n_bootstrap).astype(np.float64)
    totals = counts @ design.sizes
    return (counts @ sums) / totals[:, None]


def sign_flip_pvalues(
    values: np.ndarray, design: ResamplingDesign, n_permutations: int, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """Two-sided paired sign-flip permutation p-values of "mean delta = 0" for every column.

    Under the null hypothesis of no masking effect the cluster sums of the deltas are symmetric about
    zero, so flipping their signs at random gives the null distribution of the total. With at most
    ``log2(n_permutations + 1)`` clusters every sign vector is enumerated (exact test); otherwise
    ``n_permutations`` random sign vectors are drawn and p = (1 + #extreme) / (1 + n_permutations).
    """
    sums = design.cluster_sums(values)
    observed = np.abs(sums.sum(axis=0))
    tolerance = 1e-9 * (1.0 + observed)
    k = design.n_clusters
    if 2**k <= n_permutations + 1:
        patterns = (np.arange(2**k)[:, None] >> np.arange(k)) & 1
        signs = 1.0 - 2.0 * patterns
        extreme = (np.abs(signs @ sums) >= observed - tolerance).sum(axis=0)
        return extreme / float(2**k), f"sign-flip, exact ({2**k} sign vectors)"
    extreme = np.zeros(sums.shape[1], dtype=np.int64)
    chunk = max(1, min(n_permutations, 2_000_000 // max(k, 1)))
    done = 0
    while done < n_permutations:
        size = min(chunk, n_permutations - done)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, k))
        extreme += (np.abs(signs @ sums) >= observed - tolerance).sum(axis=0)
        done += size
    return (1.0 + extreme) / (1.0 + n_permutations), f"sign-flip, {n_permutations} random sign vectors"


#: scipy's ``wilcoxon(method="auto")`` runs an exact sign-flip permutation test when a sample has at
#: most this many pairs and any of them is zero or tied (all 2**n sign vectors; fewer than the
#: 9999 resamples of its default ``PermutationMethod``, so the p-value is deterministic).
WILCOXON_PERMUTATION_MAX_N = 13


def _signed_rank_sum(deltas: np.ndarray, axis: int = -1) -> np.ndarray:
    """Wilcoxon's R+ per slice along ``axis``: the average ranks of |delta| (zeros ranked, Pratt) of the
    positive deltas. Ranks are multiples of 1/2, so the sum is exact in float64 in any order."""
    deltas = np.moveaxis(deltas, axis, -1)
    ranks = sps.rankdata(np.abs(deltas), method="average", axis=-1)
    return np.sum((deltas > 0) * ranks, axis=-1)


def wilcoxon_takes_permutation_path(deltas: np.ndarray) -> bool:
    """scipy's ``method="auto"`` rule (scipy.stats._wilcoxon, 1.15+): a permutation test when n <= 13
    and the matrix holds a zero or a tie in any column (scipy decides once for all columns)."""
    if deltas.shape[0] > WILCOXON_PERMUTATION_MAX_N:
        return False
    magnitudes = np.sort(np.abs(deltas), axis=0)
    return bool((deltas == 0).any() or (magnitudes[1:] == magnitudes[:-1]).any())


def wilcoxon_pvalues(values: np.ndarray) -> np.ndarray:
    """Wilcoxon signed-rank p-value per column (Pratt's zero handling); 1.0 where all deltas are 0.

    The same p-values as ``scipy.stats.wilcoxon(values, zero_method="pratt", axis=0)`` (tested equal
    to the last bit in tests/test_stats.py). Where scipy would run its exact permutation test (at most
    13 questions with zeros or ties), the same ``scipy.stats.permutation_test`` runs here with a
    vectorised statistic: scipy's own call evaluates its statistic once per sign vector and column in
    Python, minutes for a smoke-size grid.
    """
    p = np.ones(values.shape[1])
    informative = np.count_nonzero(values, axis=0) > 0
    if not informative.any():
        return p
    deltas = values[:, informative]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if wilcoxon_takes_permutation_path(deltas):
            pvalue = sps.permutation_test((deltas,), _signed_rank_sum, vectorized=True, permutation_type="samples",
                                          n_resamples=9999, alternative="two-sided", axis=0).pvalue
        else:
            pvalue = sps.wilcoxon(deltas, zero_method="pratt", axis=0).pvalue
    p[informative] = np.where(np.isfinite(pvalue), pvalue, 1.0)
    return p


@dataclass(frozen=True)
class PairedSummary:
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    p_wilcoxon: np.ndarray
    test: str


def summarize_paired(
    deltas: np.ndarray,
    design: ResamplingDesign,
    settings: StatsSettings,
    rng: np.random.Generator,
    with_tests: bool = True,
) -> PairedSummary:
    """Mean, percentile bootstrap CI and paired tests of every column of ``deltas`` [questions, cells]."""
    n_cells = deltas.shape[1]
    mean = deltas.mean(axis=0) if len(deltas) else np.full(n_cells, np.nan)
    if design.n_clusters < 2:
        nan = np.full(n_cells, np.nan)
        return PairedSummary(mean, nan, nan, nan, nan, "too few clusters")
    replicates = bootstrap_means(deltas, design, settings.bootstrap, rng)
    tail = settings.alpha / 2.0
    ci_low, ci_high = np.quantile(replicates, [tail, 1.0 - tail], axis=0)
    if not with_tests:
        nan = np.full(n_cells, np.nan)
        return PairedSummary(mean, ci_low, ci_high, nan, nan, "")
    p_value, test = sign_flip_pvalues(deltas, design, settings.permutations, rng)
    return PairedSummary(mean, ci_low, ci_high, p_value, wilcoxon_pvalues(deltas), test)


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, equal to ``multipletests(p, method="holm")[1]``.

    Written out because statsmodels' Holm branch calls ``gc.collect()`` on every call, which costs
    ~60 ms per family once pandas tables fill the heap (hundreds of families per run).
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def adjusted_p_values(p_values: pd.Series, method: str, alpha: float) -> pd.Series:
    """Adjusted p-values of one family; NaN entries (untestable cells) stay NaN and do not count."""
    p = p_values.to_numpy(dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = (
            holm_adjust(p[finite])
            if method == "holm"
            else multipletests(p[finite], alpha=alpha, method=method)[1]
        )
    return pd.Series(out, index=p_values.index)


def correct_pvalues(frame: pd.DataFrame, family: list[str], alpha: float) -> pd.DataFrame:
    """Holm and Benjamini-Hochberg adjusted p-values of ``p_value`` within each family of rows."""
    frame = frame.copy()
    groups = frame.groupby(family, dropna=False, sort=False)["p_value"]
    frame["p_holm"] = groups.transform(adjusted_p_values, "holm", alpha)
    frame["p_bh"] = groups.transform(adjusted_p_values, "fdr_bh", alpha)
    frame["significant_holm"] = frame["p_holm"] < alpha
    frame["significant_bh"] = frame["p_bh"] < alpha
    return frame


# --------------------------------------------------------------------------------------------------
# Per-question matrices
# --------------------------------------------------------------------------------------------------


@dataclass
class QuestionMatrix:
    """Seed-averaged per-question values of one (model, train set, eval set, variant, metric).

    Rows are questions (``qids``), columns are grid cells (``cells``: mode, layer, head, zone).
    ``seed_deltas`` holds the per-seed mean delta of every cell (seeds x cells) and ``seed_baselines``
    the per-seed baseline mean, for the seed-spread columns.
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
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.model, self.train_set, self.eval_set, self.variant, self.metric)

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
    for (model, train_set, eval_set), run in grid.groupby(RUN_KEYS, sort=True):
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
                wide_mass = masked.set_index(["seed", "qid", *CELL_KEYS])["removed_mass"].unstack(CELL_KEYS)
            for metric in METRICS:
                wide = masked.set_index(["seed", "qid", *CELL_KEYS])[metric].unstack(CELL_KEYS)
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
# Deltas and baselines
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
        for position, column in enumerate(RUN_KEYS):
            table.insert(position, column, getattr(matrix, column))
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
        long = per_seed.stack(CELL_KEYS, future_stack=True).rename("value").reset_index()
        long["n_questions"] = long["seed"].map(matrix.seed_question_counts)
        long = long.assign(
            quantity="delta",
            model=matrix.model,
            train_set=matrix.train_set,
            eval_set=matrix.eval_set,
            variant=matrix.variant,
            metric=matrix.metric,
        )
        seed_rows.append(long[SEED_COLUMNS])
    if not rows:
        return pd.DataFrame(columns=DELTA_COLUMNS), pd.DataFrame(columns=SEED_COLUMNS)
    deltas = pd.concat(rows, ignore_index=True)
    deltas = correct_pvalues(deltas, [*RUN_KEYS, "variant", "mode", "metric"], settings.alpha)
    deltas = _sort_cells(deltas[DELTA_COLUMNS])
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
