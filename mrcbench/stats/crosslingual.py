"""Cross-lingual consistency of the masking deltas over parallel eval sets (e.g. XQuAD).

Rank agreement of the zone x layer profiles (Kendall's tau-b) and question-level agreement of the
deltas. Writes the ``crosslingual_rank`` and ``crosslingual_question`` tables, shown in the report's
"Cross-lingual consistency" section (drawn by :mod:`mrcbench.report.crosslingual`).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.inter_rater import cohens_kappa

from mrcbench.stats.common import METRICS, StatsSettings, seeded_rng
from mrcbench.stats.correlations import correlation_summary
from mrcbench.stats.deltas import QuestionMatrix
from mrcbench.stats.resampling import ResamplingDesign
from mrcbench.tables import CELL_KEYS, CROSSLINGUAL_QUESTION, CROSSLINGUAL_QUESTION_SUMMARY, CROSSLINGUAL_RANK

# --------------------------------------------------------------------------------------------------
# Cross-lingual consistency (parallel eval sets, e.g. XQuAD)
# --------------------------------------------------------------------------------------------------


def kendall_tau_b(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b along ``axis``, vectorised over the other axes (for permutation tests).

    Agrees with ``scipy.stats.kendalltau`` (variant "b"); written out because scipy's function takes
    one pair of vectors at a time and the bootstrap needs thousands of them.
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    numerator = (sx * sy).sum(axis=(-2, -1))
    denominator = np.sqrt(np.count_nonzero(sx, axis=(-2, -1)) * np.count_nonzero(sy, axis=(-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def parallel_eval_pairs(
    matrices: list[QuestionMatrix], config: dict | None, min_overlap: float
) -> list[tuple[str, str, str, str, float]]:
    """Pairs of eval sets of one (model, train set) that ask the same questions in two languages.

    Parallel means that at least ``min_overlap`` of the smaller set's question ids occur in the other
    (XQuAD keeps the SQuAD ids in every language), or that the config declares
    ``splits.<b>.same_questions_as: <a>``. Returns (model, train_set, eval_a, eval_b, overlap).
    """
    declared: set[frozenset[str]] = set()
    for name, split in ((config or {}).get("splits") or {}).items():
        if isinstance(split, dict) and split.get("same_questions_as"):
            declared.add(frozenset((name, split["same_questions_as"])))
    qids: dict[tuple[str, str, str], set[str]] = {}
    for matrix in matrices:
        qids.setdefault((matrix.model, matrix.train_set, matrix.eval_set), set()).update(
            map(str, matrix.qids)
        )
    pairs = []
    by_training: dict[tuple[str, str], list[str]] = {}
    for model, train_set, eval_set in sorted(qids):
        by_training.setdefault((model, train_set), []).append(eval_set)
    for (model, train_set), eval_sets in by_training.items():
        for eval_a, eval_b in combinations(sorted(eval_sets), 2):
            a, b = qids[(model, train_set, eval_a)], qids[(model, train_set, eval_b)]
            overlap = len(a & b) / max(1, min(len(a), len(b)))
            if overlap >= min_overlap or (frozenset((eval_a, eval_b)) in declared and a & b):
                pairs.append((model, train_set, eval_a, eval_b, overlap))
    return pairs


def compute_crosslingual(
    matrices: list[QuestionMatrix], config: dict | None, languages: dict[str, str], settings: StatsSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Do two languages rely on the same zones? Profile rank agreement and per-question agreement.

    For each parallel pair (same model and fine-tuning, same questions in two languages), restricted to
    the shared questions and the zone x layer cells both grids have:

    * rank table: Kendall's tau-b between the two zone x layer profiles (mean delta per cell), a
      permutation p-value (cells permuted; it ignores that neighbouring cells correlate, so read it as
      descriptive) and a paired article-cluster bootstrap CI (the same questions resampled in both
      languages), which is the interval to trust.
    * question table: per cell, the Pearson/Spearman correlation of per-question deltas across the two
      languages, and whether the same questions are hurt (delta < 0): agreement rate and Cohen's kappa.
    """
    index = {matrix.key: matrix for matrix in matrices}
    rank_rows: list[dict[str, Any]] = []
    question_rows: list[dict[str, Any]] = []
    for model, train_set, eval_a, eval_b, overlap in parallel_eval_pairs(
        matrices, config, settings.parallel_min_overlap
    ):
        variants = sorted(
            {m.variant for m in matrices if (m.model, m.train_set, m.eval_set) == (model, train_set, eval_a)}
        )
        for variant in variants:
            for metric in METRICS:
                a = index.get((model, train_set, eval_a, variant, metric))
                b = index.get((model, train_set, eval_b, variant, metric))
                if a is None or b is None:
                    continue
                shared = a.qids.intersection(b.qids)
                if len(shared) < 3:
                    continue
                cells_a, cells_b = a.layer_cells(), b.layer_cells()
                cells = cells_a.merge(cells_b, on=list(CELL_KEYS), suffixes=("_a", "_b"))
                if cells.empty:
                    continue
                rows_a, rows_b = a.qids.get_indexer(shared), b.qids.get_indexer(shared)
                delta_a = a.delta[np.ix_(rows_a, cells["column_a"].to_numpy())]
                delta_b = b.delta[np.ix_(rows_b, cells["column_b"].to_numpy())]
                design = ResamplingDesign.from_articles(a.articles[rows_a], len(shared), settings.min_clusters)
                base = {
                    "model": model,
                    "train_set": train_set,
                    "variant": variant,
                    "metric": metric,
                    "eval_a": eval_a,
                    "eval_b": eval_b,
                    "language_a": languages.get(eval_a, ""),
                    "language_b": languages.get(eval_b, ""),
                }
                rank_rows.append(
                    {
                        **base,
                        **_profile_agreement(delta_a, delta_b, design, settings, base),
                        "n_shared_questions": len(shared),
                        "qid_overlap": overlap,
                    }
                )
                for j, cell in cells.reset_index(drop=True).iterrows():
                    question_rows.append(
                        {
                            **base,
                            **{key: cell[key] for key in CELL_KEYS},
                            **_question_agreement(delta_a[:, j], delta_b[:, j]),
                        }
                    )
    return (
        pd.DataFrame(rank_rows, columns=CROSSLINGUAL_RANK.names),
        pd.DataFrame(question_rows, columns=CROSSLINGUAL_QUESTION.names),
    )


def _profile_agreement(
    delta_a: np.ndarray,
    delta_b: np.ndarray,
    design: ResamplingDesign,
    settings: StatsSettings,
    key: dict[str, Any],
) -> dict[str, Any]:
    profile_a, profile_b = delta_a.mean(axis=0), delta_b.mean(axis=0)
    n_cells = len(profile_a)
    out = {
        "n_cells": n_cells,
        "kendall_tau": float(kendall_tau_b(profile_a, profile_b)),
        "p_permutation": np.nan,
        "tau_ci_low": np.nan,
        "tau_ci_high": np.nan,
        "resampling": design.unit,
        "n_clusters": design.n_articles,
    }
    if n_cells < 3 or not np.isfinite(out["kendall_tau"]):
        return out
    rng = seeded_rng(settings, "crosslingual", *key.values())
    test = sps.permutation_test(
        (profile_a, profile_b),
        lambda x, y, axis: kendall_tau_b(x, y, axis=axis),
        permutation_type="pairings",
        vectorized=True,
        n_resamples=settings.permutations,
        alternative="two-sided",
        rng=rng,
    )
    out["p_permutation"] = float(test.pvalue)
    if design.n_clusters >= 2:
        sums_a, sums_b = design.cluster_sums(delta_a), design.cluster_sums(delta_b)
        k = design.n_clusters
        counts = rng.multinomial(k, np.full(k, 1.0 / k), size=settings.bootstrap).astype(np.float64)
        totals = (counts @ design.sizes)[:, None]
        taus = []
        step = max(1, 4_000_000 // (n_cells * n_cells))
        for start in range(0, len(counts), step):
            block = counts[start : start + step]
            taus.append(
                kendall_tau_b(
                    block @ sums_a / totals[start : start + step],
                    block @ sums_b / totals[start : start + step],
                )
            )
        taus = np.concatenate(taus)
        taus = taus[np.isfinite(taus)]
        if len(taus):
            tail = settings.alpha / 2.0
            out["tau_ci_low"], out["tau_ci_high"] = (float(v) for v in np.quantile(taus, [tail, 1 - tail]))
    return out


def _question_agreement(delta_a: np.ndarray, delta_b: np.ndarray) -> dict[str, Any]:
    hurt_a, hurt_b = delta_a < 0, delta_b < 0
    out = {
        "n_questions": len(delta_a),
        "delta_a": float(delta_a.mean()),
        "delta_b": float(delta_b.mean()),
        "pearson_r": np.nan,
        "spearman_rho": np.nan,
        "hurt_rate_a": float(hurt_a.mean()),
        "hurt_rate_b": float(hurt_b.mean()),
        "hurt_agreement": float((hurt_a == hurt_b).mean()),
        "cohen_kappa": np.nan,
    }
    correlations = correlation_summary(delta_a, delta_b)
    out["pearson_r"], out["spearman_rho"] = correlations["pearson_r"], correlations["spearman_rho"]
    table = np.array(
        [
            [np.sum(hurt_a & hurt_b), np.sum(hurt_a & ~hurt_b)],
            [np.sum(~hurt_a & hurt_b), np.sum(~hurt_a & ~hurt_b)],
        ],
        dtype=float,
    )
    expected = (table.sum(1) @ table.sum(0)) / max(table.sum(), 1) ** 2
    if expected < 1:
        with np.errstate(all="ignore"):
            out["cohen_kappa"] = float(cohens_kappa(table, return_results=False))
    return out


#: The averaged columns of ``crosslingual_question_summary`` (its other columns are the key).
CROSS_QUESTION_SUMMARY_VALUES = ["pearson_r", "hurt_agreement", "cohen_kappa"]


def summarise_question_agreement(question: pd.DataFrame) -> pd.DataFrame:
    """The per-question agreement of ``crosslingual_question`` averaged over layers, per zone."""
    columns = CROSSLINGUAL_QUESTION_SUMMARY.names
    if question.empty:
        return CROSSLINGUAL_QUESTION_SUMMARY.empty()
    keys = [column for column in columns if column not in CROSS_QUESTION_SUMMARY_VALUES]
    return question.groupby(keys, sort=True)[CROSS_QUESTION_SUMMARY_VALUES].mean().reset_index()[columns]
