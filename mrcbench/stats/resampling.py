"""Resampling the per-question values of a grid: bootstrap, sign-flip and Wilcoxon tests.

The resampling unit of a set of questions (:class:`ResamplingDesign`: article clusters, or each question
on its own), cluster-bootstrap replicates of column means, the paired sign-flip permutation test at that
unit, Wilcoxon's signed-rank test on questions, and their summary for every column of a matrix
(:func:`summarize_paired`). Vectorised over grid cells; every table with a CI or a paired test uses it
(:mod:`mrcbench.stats.deltas`, ``baselines``, ``question_types``, ``crosslingual``, ``controls``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
from scipy import stats as sps

from mrcbench.stats.common import StatsSettings


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
    to the last bit in tests/unit/test_stats.py). Where scipy would run its exact permutation test (at most
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
