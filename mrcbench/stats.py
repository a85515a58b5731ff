"""Statistics over the masking grids, zone statistics and per-question scores.

Everything the report shows as a number comes from a table written here (``results/stats/*.parquet``
and ``*.csv``). The choices below decide how those numbers are read, so they are stated once:

* **Units.** Per-question EM/F1 are on the 0-100 scale (``metrics.per_question_scores``); every delta
  is in points. ``delta = masked - baseline``: negative means masking hurts.
* **Seeds.** With several fine-tuning seeds, the delta is first computed per seed and question, then
  averaged over seeds per question. Confidence intervals and tests are over the *questions* of the
  eval set (the population the claim is about); the seed-to-seed spread (sd, min, max of the per-seed
  mean deltas) is reported beside them, not folded in.
* **Resampling unit.** SQuAD-style questions are clustered in articles (several questions share one
  passage), so questions are not independent. When a grid's questions come from at least
  ``stats.min_clusters`` (default 10) articles, the bootstrap resamples *articles* (cluster bootstrap
  of the mean over questions) and the test flips signs of article sums. With fewer articles (or no
  article ids) both work on *questions*: a cluster bootstrap over 4 articles under-covers (about 81%
  at a nominal 95% in a simulation) and an exact sign-flip test over k articles cannot go below
  2/2**k. Question-level resampling ignores the within-article correlation, so its intervals are
  optimistic; the tables say which unit was used (``resampling``: article|question) beside
  ``n_questions`` and ``n_clusters`` (the number of articles the questions come from; without article
  ids, every question is its own cluster).
* **Tests.** The primary p-value is a two-sided paired sign-flip permutation test at the resampling
  unit (exact enumeration when there are few clusters). A Wilcoxon signed-rank test on questions
  (Pratt's zero handling; it ignores clustering) is reported as a second opinion. Holm (family-wise)
  and Benjamini-Hochberg (false discovery rate) corrections run over the cells of one grid: one
  family per (model, train set, eval set, variant, mode, metric). Mode is part of the family so that
  the 100+ head-level cells do not dilute the 60 zone x layer cells. Correlation p-values (Pearson,
  Spearman and the clustered OLS slope) are corrected the same way within one family per (analysis,
  model, train set, eval set, variant, metric, x quantity): the layer x zone cells of one C2/C3 map,
  the zones of one C1 grid.
* **Answerable questions.** The zone deltas use answerable questions only: grids are built on them
  by default (``ablation.answerable_only``), and questions that ``scores.parquet`` marks as without an
  answer are left out of the matrices in any case (counted in the log).
* **Determinism.** Each resampling generator is seeded from ``stats.seed`` and a CRC32 of the table
  key, so a result does not depend on the order in which runs are processed.

Correlations C1-C3, the cross-lingual analysis, question types and the comparison with the paper's
grid are operationalisations of paper-method.md §4.4-4.5 (ours, not the paper's); each function says
what it measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
import statsmodels.api as sm
import yaml
from scipy import stats as sps
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.multitest import multipletests

from mrcbench import config as cfg
from mrcbench import paper_reference
from mrcbench.errors import MrcbenchError
from mrcbench.files import read_json, read_parquet, write_csv, write_parquet, write_text

log = logging.getLogger(__name__)

#: The tables `run_stats` writes (``NAME.parquet`` and ``NAME.csv``), in order; the report and the
#: workflow's rules read this list rather than repeating it.
TABLES = (
    "baselines",
    "deltas",
    "seed_spread",
    "zone_mass",
    "correlations",
    "crosslingual_rank",
    "crosslingual_question",
    "question_types",
    "paper_comparison",
    "paper_comparison_cells",
    "headline",
)

METRICS = ("em", "f1")
RUN_KEYS = ["model", "train_set", "eval_set"]
CELL_KEYS = ["mode", "layer", "head", "zone"]
GRID_COLUMNS = [*RUN_KEYS, "seed", "variant", *CELL_KEYS, "qid", "article", "em", "f1"]
SCORES_COLUMNS = [*RUN_KEYS, "seed", "qid", "article", "question", "em", "f1"]
ZONE_STATS_COLUMNS = [*RUN_KEYS, "seed", "qid", "article", "layer", "head", "row_zone", "col_zone", "mass"]

#: The four zones of the paper, as (query row zone, key column zone) of ``zone_stats.parquet``.
FOUR_ZONES: dict[str, tuple[str, str]] = {
    "q2q": ("question", "question"),
    "q2p": ("question", "passage"),
    "p2q": ("passage", "question"),
    "p2p": ("passage", "passage"),
}
_SHORT = {"question": "q", "passage": "p", "special": "s"}
#: Zone order of the heatmaps (paper order, our extra zones first).
ZONE_ORDER = ["all_paper_quirk", "all", "q2q", "q2p", "p2q", "p2p"]
#: The paper's answer: the two zones whose masking matters most (paper-method.md §4.2).
PAPER_ZONES = ("p2q", "p2p")
#: Fewest article clusters for article-level resampling (config ``stats.min_clusters``).
MIN_CLUSTERS = 10

# Column lists of every table, so that an empty table still has its schema.
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
BASELINE_COLUMNS = [
    *RUN_KEYS,
    "language",
    "metric",
    "n_seeds",
    "n_questions",
    "n_clusters",
    "resampling",
    "value",
    "ci_low",
    "ci_high",
    "seed_sd",
    "seed_min",
    "seed_max",
    "official",
    "grid_baseline",
    "scores_on_grid_questions",
    "source",
]
SEED_COLUMNS = ["quantity", *RUN_KEYS, "variant", *CELL_KEYS, "metric", "seed", "n_questions", "value"]
ZONE_MASS_COLUMNS = [
    *RUN_KEYS,
    "layer",
    "head",
    "zone",
    "row_zone",
    "col_zone",
    "mass",
    "mass_seed_sd",
    "n_seeds",
    "n_questions",
]
CORRELATION_COLUMNS = [
    "analysis",
    *RUN_KEYS,
    "variant",
    "zone",
    "layer",
    "metric",
    "x_quantity",
    "y_quantity",
    "n",
    "pearson_r",
    "pearson_ci_low",
    "pearson_ci_high",
    "pearson_p",
    "spearman_rho",
    "spearman_ci_low",
    "spearman_ci_high",
    "spearman_p",
    "ols_coef",
    "ols_se_cluster",
    "ols_p_cluster",
    "ols_se_naive",
    "ols_cov_type",
    "n_clusters",
    "pearson_p_holm",
    "pearson_p_bh",
    "spearman_p_holm",
    "spearman_p_bh",
    "ols_p_holm",
    "ols_p_bh",
    "significant_holm",
    "significant_bh",
]
#: One correction family of correlations: the cells of one C2/C3 map or the zones of one C1 grid.
CORRELATION_FAMILY = ["analysis", *RUN_KEYS, "variant", "metric", "x_quantity"]
HEADLINE_COLUMNS = [
    *RUN_KEYS,
    "variant",
    "metric",
    "rank",
    "zone",
    "layer",
    "delta",
    "ci_low",
    "ci_high",
    "p_holm",
    "p_bh",
    "significant_holm",
    "ci_excludes_zero",
    "n_questions",
    "n_clusters",
    "resampling",
    "n_layers",
    "paper_zones",
    "agrees_with_paper",
    "verdict",
]
CROSS_RANK_COLUMNS = [
    "model",
    "train_set",
    "variant",
    "metric",
    "eval_a",
    "eval_b",
    "language_a",
    "language_b",
    "n_shared_questions",
    "qid_overlap",
    "n_cells",
    "kendall_tau",
    "p_permutation",
    "tau_ci_low",
    "tau_ci_high",
    "resampling",
    "n_clusters",
]
CROSS_QUESTION_COLUMNS = [
    "model",
    "train_set",
    "variant",
    "metric",
    "eval_a",
    "eval_b",
    "language_a",
    "language_b",
    *CELL_KEYS,
    "n_questions",
    "delta_a",
    "delta_b",
    "pearson_r",
    "spearman_rho",
    "hurt_rate_a",
    "hurt_rate_b",
    "hurt_agreement",
    "cohen_kappa",
]
QUESTION_TYPE_COLUMNS = [
    *RUN_KEYS,
    "language",
    "variant",
    "metric",
    "bucket",
    "n_questions",
    "reported",
    *CELL_KEYS,
    "baseline",
    "delta",
    "ci_low",
    "ci_high",
    "n_clusters",
    "resampling",
]
PAPER_COLUMNS = [
    *RUN_KEYS,
    "variant",
    "metric",
    "run_layers",
    "paper_layers",
    "zones_compared",
    "n_cells",
    "spearman_rho",
    "spearman_p",
    "pearson_r",
    "top2_run",
    "top2_paper",
    "top2_agree",
    "layer_mapping",
    "model_difference",
    "provenance",
]
PAPER_CELL_COLUMNS = [
    *RUN_KEYS,
    "variant",
    "metric",
    "layer",
    "paper_layers",
    "zone",
    "run_delta",
    "paper_delta",
]


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsSettings:
    """Knobs of the statistics (config section ``stats``).

    ``alpha`` is the significance level of the corrected tests and sets the CI level (1 - alpha).
    """

    seed: int = 0
    n_bootstrap: int = 1000
    n_permutations: int = 9999
    alpha: float = 0.05
    min_bucket_size: int = 30
    min_clusters: int = MIN_CLUSTERS
    parallel_min_overlap: float = 0.9
    min_layers_for_paper: int = 4

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @classmethod
    def from_config(cls, config: dict | None) -> StatsSettings:
        section = dict((config or {}).get("stats") or {})
        defaults = cls()
        return cls(
            seed=int(section.get("seed", defaults.seed)),
            n_bootstrap=int(section.get("bootstrap", defaults.n_bootstrap)),
            n_permutations=int(section.get("permutations", defaults.n_permutations)),
            alpha=float(section.get("alpha", defaults.alpha)),
            min_bucket_size=int(section.get("min_bucket_size", defaults.min_bucket_size)),
            min_clusters=int(section.get("min_clusters", defaults.min_clusters)),
        )


def _rng(settings: StatsSettings, *key: Any) -> np.random.Generator:
    """A generator seeded by the stats seed and the table key (independent of processing order)."""
    digest = zlib.crc32("\x1f".join(str(part) for part in key).encode("utf-8"))
    return np.random.default_rng([settings.seed, digest])


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
    article_codes: np.ndarray | None = None  # article of every question (questions without one: own code)
    min_clusters: int = MIN_CLUSTERS

    @property
    def n_articles(self) -> int:
        """Article clusters of the questions (every question is its own when there are no article ids)."""
        if self.article_codes is None:
            return len(self.codes)
        return len(np.unique(self.article_codes))

    @classmethod
    def from_articles(
        cls, articles: Sequence[Any] | None, n_questions: int, min_clusters: int = MIN_CLUSTERS
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
        return cls._choose(article_codes, n_questions, min_clusters)

    @classmethod
    def _choose(cls, article_codes: np.ndarray | None, n_questions: int, min_clusters: int) -> ResamplingDesign:
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
        return ResamplingDesign._choose(article_codes, len(rows), self.min_clusters)

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


def wilcoxon_pvalues(values: np.ndarray) -> np.ndarray:
    """Wilcoxon signed-rank p-value per column (Pratt's zero handling); 1.0 where all deltas are 0."""
    p = np.ones(values.shape[1])
    informative = np.count_nonzero(values, axis=0) > 0
    if informative.any():
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = sps.wilcoxon(values[:, informative], zero_method="pratt", axis=0)
        p[informative] = np.where(np.isfinite(result.pvalue), result.pvalue, 1.0)
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
    replicates = bootstrap_means(deltas, design, settings.n_bootstrap, rng)
    tail = settings.alpha / 2.0
    ci_low, ci_high = np.quantile(replicates, [tail, 1.0 - tail], axis=0)
    if not with_tests:
        nan = np.full(n_cells, np.nan)
        return PairedSummary(mean, ci_low, ci_high, nan, nan, "")
    p_value, test = sign_flip_pvalues(deltas, design, settings.n_permutations, rng)
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


def _adjusted(p_values: pd.Series, method: str, alpha: float) -> pd.Series:
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
    frame["p_holm"] = groups.transform(_adjusted, "holm", alpha)
    frame["p_bh"] = groups.transform(_adjusted, "fdr_bh", alpha)
    frame["significant_holm"] = frame["p_holm"] < alpha
    frame["significant_bh"] = frame["p_bh"] < alpha
    return frame


# --------------------------------------------------------------------------------------------------
# Loading result files
# --------------------------------------------------------------------------------------------------


@dataclass
class ResultTables:
    grid: pd.DataFrame | None
    scores: pd.DataFrame | None
    zone_stats: pd.DataFrame | None
    official: pd.DataFrame  # model, train_set, eval_set, seed, official_em, official_f1


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
        pattern = "{stage}/*/*/seed*/*/{name}"

        def found(stage: str, name: str) -> list[Path]:
            return sorted(Path(results_dir).glob(pattern.format(stage=stage, name=name)))

        return cls(
            grids=found("ablation", "grid.parquet"),
            zone_stats=found("attention", "zone_stats.parquet"),
            scores=found("predict", "scores.parquet"),
            metrics=found("predict", "metrics.json"),
        )


def _refuse_duplicate_runs(owner: dict[tuple, Path], keys: Iterable[tuple], path: Path) -> None:
    """One run's results in one file only: a second file holding the same run is a copy or a stray."""
    for key in keys:
        if key in owner and owner[key] != path:
            run = ", ".join(f"{name}={value}" for name, value in zip([*RUN_KEYS, "seed"], key, strict=True))
            raise MrcbenchError(f"{path} and {owner[key]} both hold the results of {run}: keep one of them")
        owner[key] = path


def _read_parquets(paths: list[Path], required: list[str]) -> pd.DataFrame | None:
    frames = []
    owner: dict[tuple, Path] = {}
    for path in paths:
        frame = read_parquet(path)
        missing = [column for column in required if column not in frame.columns]
        if missing:
            raise MrcbenchError(f"{path}: missing column(s) {', '.join(missing)} (see docs/architecture.md)")
        runs = frame[[*RUN_KEYS, "seed"]].drop_duplicates().itertuples(index=False, name=None)
        _refuse_duplicate_runs(owner, [tuple(str(value) for value in run) for run in runs], Path(path))
        frames.append(frame)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


_EM_KEYS = ("exact", "exact_match", "EM", "em")
_F1_KEYS = ("f1", "F1")


def _official_metrics(paths: list[Path]) -> pd.DataFrame:
    """EM/F1 of the official-equivalent scorer from ``predict/MODEL/TRAIN/seedN/EVAL/metrics.json`` files."""
    rows = []
    owner: dict[tuple, Path] = {}
    for path in map(Path, paths):
        model, train_set, seed_dir, eval_set = path.parts[-5:-1]
        if not seed_dir.startswith("seed") or not seed_dir[4:].isdigit():
            raise MrcbenchError(f"{path}: expected predict/MODEL/TRAIN/seedN/EVAL/metrics.json")
        _refuse_duplicate_runs(owner, [(model, train_set, eval_set, seed_dir[4:])], path)
        payload = read_json(path)
        em = next((payload[key] for key in _EM_KEYS if isinstance(payload.get(key), (int, float))), None)
        f1 = next((payload[key] for key in _F1_KEYS if isinstance(payload.get(key), (int, float))), None)
        rows.append(
            {
                "model": model,
                "train_set": train_set,
                "eval_set": eval_set,
                "seed": int(seed_dir.removeprefix("seed")),
                "official_em": em,
                "official_f1": f1,
            }
        )
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "seed", "official_em", "official_f1"])


def load_results(results_dir: Path, files: ResultFiles | None = None) -> ResultTables:
    """Read ``files`` (default: every grid, score, zone-statistics and metrics file under ``results_dir``),
    refusing two files that hold the same run."""
    files = files or ResultFiles.discover(results_dir)
    grid = _read_parquets(files.grids, GRID_COLUMNS)
    scores = _read_parquets(files.scores, SCORES_COLUMNS)
    zone_stats = _read_parquets(files.zone_stats, ZONE_STATS_COLUMNS)
    return ResultTables(
        grid=grid, scores=scores, zone_stats=zone_stats, official=_official_metrics(files.metrics)
    )


# --------------------------------------------------------------------------------------------------
# Languages
# --------------------------------------------------------------------------------------------------

_CJK = re.compile(r"[\u4e00-\u9fff]")


def eval_language(config: dict | None, eval_set: str, questions: Iterable[str] = ()) -> str:
    """Language code of an eval split: the config's ``datasets.<d>.language``, else detected.

    Detection: "zh" when at least half the questions contain CJK characters; else a trailing
    ``_xx`` language code of the split name (``xquad_de``); else "en".
    """
    try:
        if config:
            dataset = config["splits"][eval_set]["dataset"]
            return str(config["datasets"][dataset]["language"])
    except (KeyError, TypeError):
        pass
    texts = [str(text) for text in questions if isinstance(text, str)]
    if texts and sum(bool(_CJK.search(text)) for text in texts) >= 0.5 * len(texts):
        return "zh"
    match = re.search(r"[_.-]([a-z]{2})$", eval_set)
    return match.group(1) if match else "en"


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

    def design(self, min_clusters: int = MIN_CLUSTERS) -> ResamplingDesign:
        return ResamplingDesign.from_articles(self.articles, len(self.qids), min_clusters)

    def layer_cells(self) -> pd.DataFrame:
        """The zone x layer (all heads) cells, with their column index in ``column``."""
        cells = self.cells.assign(column=np.arange(len(self.cells)))
        return cells[(cells["mode"] == "layer") & (cells["head"] == -1)]


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
        summary = summarize_paired(matrix.delta, design, settings, _rng(settings, "deltas", *matrix.key))
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


def compute_baselines(
    tables: ResultTables, config: dict | None, settings: StatsSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Baseline EM/F1 per run: seed mean, article-bootstrap CI, seed spread, official scorer value.

    The source is ``scores.parquet`` (prediction rule); runs with a grid but no scores fall back to the
    grid's baseline rows. ``grid_baseline`` repeats the grid's own baseline so that a mismatch between
    the prediction and the ablation code paths is visible.
    """
    source = tables.scores
    source_name = "scores.parquet"
    if source is None or source.empty:
        if tables.grid is None:
            return pd.DataFrame(columns=BASELINE_COLUMNS), pd.DataFrame(columns=SEED_COLUMNS)
        source = tables.grid[tables.grid["mode"] == "baseline"].drop_duplicates([*RUN_KEYS, "seed", "qid"])
        source_name = "grid.parquet (baseline rows)"
    grid_base = grid_rows = None
    if tables.grid is not None:
        grid_rows = tables.grid[tables.grid["mode"] == "baseline"].drop_duplicates([*RUN_KEYS, "seed", "qid"])
        grid_base = grid_rows.groupby(RUN_KEYS)[list(METRICS)].mean()
    official = tables.official.groupby(RUN_KEYS)[["official_em", "official_f1"]].mean()
    rows, seed_rows = [], []
    for (model, train_set, eval_set), run in source.groupby(RUN_KEYS, sort=True):
        run = run.drop_duplicates(["seed", "qid"])
        questions = run.get("question", ())
        language = eval_language(config, eval_set, questions)
        for metric in METRICS:
            per_seed = run.groupby("seed")[metric].mean()
            per_question = run.groupby("qid")[metric].mean().dropna()
            articles = run.drop_duplicates("qid").set_index("qid")["article"].reindex(per_question.index)
            design = ResamplingDesign.from_articles(
                articles.to_numpy(dtype=object), len(per_question), settings.min_clusters
            )
            summary = summarize_paired(
                per_question.to_numpy(dtype=float)[:, None],
                design,
                settings,
                _rng(settings, "baseline", model, train_set, eval_set, metric),
                with_tests=False,
            )
            official_value = official[f"official_{metric}"].get((model, train_set, eval_set), np.nan)
            grid_value = (
                grid_base[metric].get((model, train_set, eval_set), np.nan)
                if grid_base is not None
                else np.nan
            )
            # The grid may run on a sub-sample (ablation.max_questions): compare on its questions.
            on_grid_questions = np.nan
            if grid_rows is not None:
                grid_qids = grid_rows.loc[
                    (grid_rows["model"] == model) & (grid_rows["train_set"] == train_set)
                    & (grid_rows["eval_set"] == eval_set), "qid"
                ]
                shared = run[run["qid"].isin(set(grid_qids))]
                if len(shared):
                    on_grid_questions = float(shared.groupby("seed")[metric].mean().mean())
            rows.append(
                {
                    "model": model,
                    "train_set": train_set,
                    "eval_set": eval_set,
                    "language": language,
                    "metric": metric,
                    "n_seeds": int(per_seed.size),
                    "n_questions": int(per_question.size),
                    "n_clusters": design.n_articles,
                    "resampling": design.unit,
                    "value": float(per_seed.mean()),
                    "ci_low": float(summary.ci_low[0]),
                    "ci_high": float(summary.ci_high[0]),
                    "seed_sd": float(per_seed.std(ddof=1)) if per_seed.size > 1 else np.nan,
                    "seed_min": float(per_seed.min()),
                    "seed_max": float(per_seed.max()),
                    "official": official_value,
                    "grid_baseline": grid_value,
                    "scores_on_grid_questions": on_grid_questions,
                    "source": source_name,
                }
            )
            counts = run.groupby("seed")[metric].count()
            for seed, value in per_seed.items():
                seed_rows.append(
                    {
                        "quantity": "baseline",
                        "model": model,
                        "train_set": train_set,
                        "eval_set": eval_set,
                        "variant": "none",
                        "mode": "baseline",
                        "layer": -1,
                        "head": -1,
                        "zone": "none",
                        "metric": metric,
                        "seed": int(seed),
                        "n_questions": int(counts[seed]),
                        "value": float(value),
                    }
                )
    return (pd.DataFrame(rows, columns=BASELINE_COLUMNS), pd.DataFrame(seed_rows, columns=SEED_COLUMNS))


# --------------------------------------------------------------------------------------------------
# Zone attention mass
# --------------------------------------------------------------------------------------------------


def _zone_name(row_zone: str, col_zone: str) -> str:
    return f"{_SHORT.get(row_zone, row_zone)}2{_SHORT.get(col_zone, col_zone)}"


def compute_zone_mass(zone_stats: pd.DataFrame | None) -> pd.DataFrame:
    """Mean attention mass per run, layer, head and (row zone -> column zone), over questions and seeds.

    ``zone`` is the paper's name for the four question/passage blocks (``p2q``: passage rows on question
    columns) and ``q2s``/``p2s``/``s2q``/... where special tokens ([CLS]/[SEP]) are involved.
    ``mass_seed_sd`` is the spread of the per-seed means.
    """
    if zone_stats is None or zone_stats.empty:
        return pd.DataFrame(columns=ZONE_MASS_COLUMNS)
    keys = [*RUN_KEYS, "layer", "head", "row_zone", "col_zone"]
    per_seed = zone_stats.groupby([*keys, "seed"], sort=True)["mass"].mean()
    grouped = per_seed.groupby(level=keys)
    table = pd.DataFrame(
        {"mass": grouped.mean(), "mass_seed_sd": grouped.std(ddof=1), "n_seeds": grouped.size()}
    ).reset_index()
    counts = zone_stats.groupby(keys)["qid"].nunique().rename("n_questions").reset_index()
    table = table.merge(counts, on=keys)
    table["zone"] = [_zone_name(r, c) for r, c in zip(table["row_zone"], table["col_zone"], strict=True)]
    table = table.astype({"layer": "int64", "head": "int64"})
    return table[ZONE_MASS_COLUMNS]


def question_layer_mass(zone_stats: pd.DataFrame | None) -> pd.DataFrame:
    """Per question, layer and zone (the four paper zones), mass averaged over heads and seeds.

    Returns a frame indexed by (model, train_set, eval_set, qid) with columns (layer, zone).
    """
    if zone_stats is None or zone_stats.empty:
        return pd.DataFrame()
    pairs = {pair: zone for zone, pair in FOUR_ZONES.items()}
    frame = zone_stats[
        [(r, c) in pairs for r, c in zip(zone_stats["row_zone"], zone_stats["col_zone"], strict=True)]
    ]
    frame = frame.assign(
        zone=[pairs[(r, c)] for r, c in zip(frame["row_zone"], frame["col_zone"], strict=True)]
    )
    mass = frame.groupby([*RUN_KEYS, "qid", "layer", "zone"])["mass"].mean()
    return mass.unstack(["layer", "zone"])


# --------------------------------------------------------------------------------------------------
# Correlations C1-C3
# --------------------------------------------------------------------------------------------------


def correlation_summary(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """n, Pearson r (Fisher-z CI) and Spearman rho (Fisher-z CI with Fieller's 1.06 variance) with p."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(keep.sum())
    out = {
        "n": n,
        "pearson_r": np.nan,
        "pearson_ci_low": np.nan,
        "pearson_ci_high": np.nan,
        "pearson_p": np.nan,
        "spearman_rho": np.nan,
        "spearman_ci_low": np.nan,
        "spearman_ci_high": np.nan,
        "spearman_p": np.nan,
    }
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    z_crit = sps.norm.ppf(0.5 + confidence / 2.0)
    pearson = sps.pearsonr(x, y)
    out["pearson_r"], out["pearson_p"] = float(pearson.statistic), float(pearson.pvalue)
    spearman = sps.spearmanr(x, y)
    out["spearman_rho"], out["spearman_p"] = float(spearman.statistic), float(spearman.pvalue)
    if n > 3:
        interval = pearson.confidence_interval(confidence_level=confidence)
        out["pearson_ci_low"], out["pearson_ci_high"] = float(interval.low), float(interval.high)
        if np.isfinite(out["spearman_rho"]) and abs(out["spearman_rho"]) < 1:
            z = math.atanh(out["spearman_rho"])
            half = z_crit * math.sqrt(1.06 / (n - 3))
            out["spearman_ci_low"], out["spearman_ci_high"] = math.tanh(z - half), math.tanh(z + half)
        elif np.isfinite(out["spearman_rho"]):
            out["spearman_ci_low"] = out["spearman_ci_high"] = out["spearman_rho"]
    return out


def ols_cluster(
    y: np.ndarray, x: np.ndarray, groups: Sequence[Any] | None, min_clusters: int = MIN_CLUSTERS
) -> dict[str, Any]:
    """OLS of y on x with cluster-robust (by article) standard errors, plus the naive SE for contrast.

    Questions of one article share a passage, so their residuals correlate; the naive OLS SE then
    overstates precision. With fewer than ``min_clusters`` clusters (cluster-robust SEs are unreliable
    with few clusters) or one question per cluster, the heteroskedasticity-robust HC1 SE is used
    instead; ``ols_cov_type`` says which.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    out: dict[str, Any] = {
        "ols_coef": np.nan,
        "ols_se_cluster": np.nan,
        "ols_p_cluster": np.nan,
        "ols_se_naive": np.nan,
        "ols_cov_type": "",
        "n_clusters": 0,
    }
    if keep.sum() < 3 or np.ptp(x[keep]) == 0:
        return out
    design = sm.add_constant(x[keep], has_constant="add")
    model = sm.OLS(y[keep], design)
    naive = model.fit()
    codes = None
    if groups is not None:
        labels = pd.Series(list(groups), dtype=object)[keep].reset_index(drop=True)
        if labels.notna().all():
            codes, uniques = pd.factorize(labels)
            if not max(2, min_clusters) <= len(uniques) < len(codes):
                codes = None
    if codes is not None:
        robust = model.fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
        out["ols_cov_type"], out["n_clusters"] = "cluster(article)", int(codes.max() + 1)
    else:
        robust = model.fit(cov_type="HC1")
        out["ols_cov_type"], out["n_clusters"] = "HC1", int(keep.sum())
    out["ols_coef"] = float(robust.params[1])
    out["ols_se_cluster"] = float(robust.bse[1])
    out["ols_p_cluster"] = float(robust.pvalues[1])
    out["ols_se_naive"] = float(naive.bse[1])
    return out


def _correlation_row(
    analysis: str,
    keys: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    settings: StatsSettings,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    row = {"analysis": analysis, **keys, **correlation_summary(x, y, settings.confidence)}
    if groups is not None:
        row.update(ols_cluster(y, x, groups, settings.min_clusters))
    return row


def compute_correlations(
    matrices: list[QuestionMatrix],
    deltas: pd.DataFrame,
    zone_mass: pd.DataFrame,
    layer_mass: pd.DataFrame,
    settings: StatsSettings,
) -> pd.DataFrame:
    """C1-C3 of paper-method.md §4.5 (our operationalisations).

    * **C1** (layer level, per zone): across layers, the zone's mean attention mass in the unmasked
      model (zone_stats, averaged over heads, questions and seeds) vs the damage of masking that zone in
      that layer (``drop = baseline - masked``, from the delta table). Also against the attention mass
      the mask actually removed (``removed_mass`` of the grid), which includes the special-token rows
      the paper variant blanks.
    * **C2** (question level): per question, the zone's mass in one layer vs the baseline score of that
      question (point-biserial when the score is a single seed's EM). OLS with article-clustered SEs.
    * **C3** (question level, causal): per question, the drop under masking a zone in a layer vs that
      question's mass of the zone in that layer (and vs the mass the mask removed for that question).

    Positive r in C1/C3 means "more attention there, more damage when it is removed"; positive r in
    C2 means "more attention there, better answers".
    """
    rows: list[dict[str, Any]] = []
    zone_layer = pd.Series(dtype=float)
    if not zone_mass.empty:
        zone_layer = (
            zone_mass[zone_mass["zone"].isin(list(FOUR_ZONES))]
            .groupby([*RUN_KEYS, "zone", "layer"])["mass"]
            .mean()
        )
    layer_deltas = (
        deltas[(deltas["mode"] == "layer") & (deltas["head"] == -1)] if not deltas.empty else deltas
    )
    # C1
    for (model, train_set, eval_set, variant, metric, zone), cells in layer_deltas.groupby(
        [*RUN_KEYS, "variant", "metric", "zone"], sort=True
    ):
        keys = {
            "model": model,
            "train_set": train_set,
            "eval_set": eval_set,
            "variant": variant,
            "zone": zone,
            "layer": -1,
            "metric": metric,
            "y_quantity": f"drop_{metric}",
        }
        cells = cells.sort_values("layer")
        drop = -cells["delta"].to_numpy(dtype=float)
        if zone in FOUR_ZONES and (model, train_set, eval_set, zone) in zone_layer.index:
            mass = (
                zone_layer.loc[(model, train_set, eval_set, zone)]
                .reindex(cells["layer"])
                .to_numpy(dtype=float)
            )
            rows.append(_correlation_row("C1", {**keys, "x_quantity": "zone_mass"}, mass, drop, settings))
        if cells["removed_mass"].notna().any():
            rows.append(
                _correlation_row(
                    "C1",
                    {**keys, "x_quantity": "removed_mass"},
                    cells["removed_mass"].to_numpy(dtype=float),
                    drop,
                    settings,
                )
            )
    # C2 (one per run and metric: the variant does not enter)
    seen_c2: set[tuple[str, ...]] = set()
    runs_with_mass = set() if layer_mass.empty else set(layer_mass.index.droplevel("qid"))
    for matrix in matrices:
        run = (matrix.model, matrix.train_set, matrix.eval_set)
        if run not in runs_with_mass:
            continue
        mass = layer_mass.loc[run].reindex(matrix.qids)
        if (*run, matrix.metric) not in seen_c2:
            seen_c2.add((*run, matrix.metric))
            for layer, zone in mass.columns:
                keys = {
                    "model": matrix.model,
                    "train_set": matrix.train_set,
                    "eval_set": matrix.eval_set,
                    "variant": "n/a",
                    "zone": zone,
                    "layer": int(layer),
                    "metric": matrix.metric,
                    "x_quantity": "zone_mass",
                    "y_quantity": f"baseline_{matrix.metric}",
                }
                rows.append(
                    _correlation_row(
                        "C2",
                        keys,
                        mass[(layer, zone)].to_numpy(dtype=float),
                        matrix.baseline,
                        settings,
                        groups=matrix.articles,
                    )
                )
        # C3
        drop = -matrix.delta
        for _, cell in matrix.layer_cells().iterrows():
            keys = {
                "model": matrix.model,
                "train_set": matrix.train_set,
                "eval_set": matrix.eval_set,
                "variant": matrix.variant,
                "zone": cell["zone"],
                "layer": int(cell["layer"]),
                "metric": matrix.metric,
                "y_quantity": f"drop_{matrix.metric}",
            }
            column = int(cell["column"])
            if (cell["layer"], cell["zone"]) in mass.columns:
                rows.append(
                    _correlation_row(
                        "C3",
                        {**keys, "x_quantity": "zone_mass"},
                        mass[(cell["layer"], cell["zone"])].to_numpy(dtype=float),
                        drop[:, column],
                        settings,
                        groups=matrix.articles,
                    )
                )
            if matrix.removed_mass is not None and np.isfinite(matrix.removed_mass[:, column]).any():
                rows.append(
                    _correlation_row(
                        "C3",
                        {**keys, "x_quantity": "removed_mass"},
                        matrix.removed_mass[:, column],
                        drop[:, column],
                        settings,
                        groups=matrix.articles,
                    )
                )
    # C1 rows have no OLS fit: their OLS columns stay empty (nullable integer for the cluster count).
    table = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    table = correct_correlation_pvalues(table, settings.alpha)
    return table.astype({"n": "Int64", "layer": "Int64", "n_clusters": "Int64"})


def correct_correlation_pvalues(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm and BH adjusted p-values of every correlation p-value, within :data:`CORRELATION_FAMILY`.

    ``significant_holm``/``significant_bh`` refer to the Pearson test (the r the report shows).
    """
    table = table.copy()
    if table.empty:
        for column in CORRELATION_COLUMNS[CORRELATION_COLUMNS.index("pearson_p_holm"):]:
            table[column] = pd.Series(dtype=bool if column.startswith("significant") else float)
        return table[CORRELATION_COLUMNS]
    for raw, prefix in (("pearson_p", "pearson_p"), ("spearman_p", "spearman_p"), ("ols_p_cluster", "ols_p")):
        table[raw] = pd.to_numeric(table[raw], errors="coerce").astype(float)
        grouped = table.groupby(CORRELATION_FAMILY, dropna=False, sort=False)[raw]
        table[f"{prefix}_holm"] = grouped.transform(_adjusted, "holm", alpha)
        table[f"{prefix}_bh"] = grouped.transform(_adjusted, "fdr_bh", alpha)
    table["significant_holm"] = table["pearson_p_holm"] < alpha
    table["significant_bh"] = table["pearson_p_bh"] < alpha
    return table[CORRELATION_COLUMNS]


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
                cells = cells_a.merge(cells_b, on=CELL_KEYS, suffixes=("_a", "_b"))
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
        pd.DataFrame(rank_rows, columns=CROSS_RANK_COLUMNS),
        pd.DataFrame(question_rows, columns=CROSS_QUESTION_COLUMNS),
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
    rng = _rng(settings, "crosslingual", *key.values())
    test = sps.permutation_test(
        (profile_a, profile_b),
        lambda x, y, axis: kendall_tau_b(x, y, axis=axis),
        permutation_type="pairings",
        vectorized=True,
        n_resamples=settings.n_permutations,
        alternative="two-sided",
        rng=rng,
    )
    out["p_permutation"] = float(test.pvalue)
    if design.n_clusters >= 2:
        sums_a, sums_b = design.cluster_sums(delta_a), design.cluster_sums(delta_b)
        k = design.n_clusters
        counts = rng.multinomial(k, np.full(k, 1.0 / k), size=settings.n_bootstrap).astype(np.float64)
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


# --------------------------------------------------------------------------------------------------
# Question types (paper-method.md §4.4, our buckets)
# --------------------------------------------------------------------------------------------------

ENGLISH_BUCKETS = ("what", "which", "who", "when", "where", "why", "how", "how many/much", "other")
CHINESE_BUCKETS = ("什么", "谁", "哪", "何时-什么时候", "几-多少", "为什么", "如何-怎么", "是否", "other")

_ENGLISH_WH = {
    "what": "what",
    "which": "which",
    "who": "who",
    "whom": "who",
    "whose": "who",
    "when": "when",
    "where": "where",
    "why": "why",
    "how": "how",
}

#: Chinese interrogatives and the bucket of each. At one position the longest form wins, so
#: 什么时候 is "when" and not "what", and 为什么 (which contains 什么) starts earlier anyway.
_CHINESE_FORMS: tuple[tuple[str, str], ...] = (
    ("什么时候", "何时-什么时候"),
    ("何时", "何时-什么时候"),
    ("几时", "何时-什么时候"),
    ("为什么", "为什么"),
    ("为何", "为什么"),
    ("多少", "几-多少"),
    ("几", "几-多少"),
    ("如何", "如何-怎么"),
    ("怎么", "如何-怎么"),
    ("怎样", "如何-怎么"),
    ("是否", "是否"),
    ("是不是", "是否"),
    ("谁", "谁"),
    ("哪", "哪"),
    ("什么", "什么"),
    ("啥", "什么"),
)
#: Words that contain an interrogative character without asking anything.
_CHINESE_NON_QUESTION = ("几乎", "几何")


def english_question_type(question: str) -> str:
    """Bucket of the first wh-word of an English question ("how many/much" before "how")."""
    tokens = re.findall(r"[a-z]+", question.lower())
    for i, token in enumerate(tokens):
        if token in _ENGLISH_WH:
            if token == "how" and i + 1 < len(tokens) and tokens[i + 1] in ("many", "much"):
                return "how many/much"
            return _ENGLISH_WH[token]
    return "other"


def chinese_question_type(question: str) -> str:
    """Bucket of the first interrogative of a Chinese question (longest form at the first position)."""
    text = question
    for word in _CHINESE_NON_QUESTION:
        text = text.replace(word, "\u3000" * len(word))
    best: tuple[int, int, str] | None = None
    for form, bucket in _CHINESE_FORMS:
        position = text.find(form)
        if position >= 0:
            candidate = (position, -len(form), bucket)
            if best is None or candidate < best:
                best = candidate
    return best[2] if best else "other"


def question_type(question: str, language: str) -> str | None:
    """Bucket for English and Chinese questions; None for other languages (no taxonomy)."""
    if language == "en":
        return english_question_type(question)
    if language == "zh":
        return chinese_question_type(question)
    return None


def compute_question_types(
    matrices: list[QuestionMatrix],
    questions: pd.DataFrame | None,
    languages: dict[str, str],
    settings: StatsSettings,
) -> pd.DataFrame:
    """Per question-type bucket: baseline and delta (with article-bootstrap CI) of every zone x layer cell.

    Buckets smaller than ``min_bucket_size`` are kept but marked ``reported = False``: their deltas
    are too noisy to interpret (paper-method.md §4.4).
    """
    if questions is None or questions.empty:
        return pd.DataFrame(columns=QUESTION_TYPE_COLUMNS)
    text = questions.drop_duplicates(["eval_set", "qid"]).set_index(["eval_set", "qid"])["question"]
    rows: list[pd.DataFrame] = []
    for matrix in matrices:
        language = languages.get(matrix.eval_set, "")
        if language not in ("en", "zh"):
            continue
        cells = matrix.layer_cells()
        if cells.empty:
            continue
        texts = text.reindex(pd.MultiIndex.from_product([[matrix.eval_set], matrix.qids]))
        buckets = np.array(
            [question_type(t, language) if isinstance(t, str) else "other" for t in texts], dtype=object
        )
        design = matrix.design(settings.min_clusters)
        columns = cells["column"].to_numpy()
        for bucket in ENGLISH_BUCKETS if language == "en" else CHINESE_BUCKETS:
            members = np.flatnonzero(buckets == bucket)
            if len(members) == 0:
                continue
            sub_design = design.subset(members)
            deltas = matrix.delta[np.ix_(members, columns)]
            summary = summarize_paired(
                deltas,
                sub_design,
                settings,
                _rng(settings, "question_types", *matrix.key, bucket),
                with_tests=False,
            )
            table = cells[CELL_KEYS].reset_index(drop=True).copy()
            table = table.assign(
                model=matrix.model,
                train_set=matrix.train_set,
                eval_set=matrix.eval_set,
                language=language,
                variant=matrix.variant,
                metric=matrix.metric,
                bucket=bucket,
                n_questions=len(members),
                reported=len(members) >= settings.min_bucket_size,
                baseline=float(matrix.baseline[members].mean()),
                delta=summary.mean,
                ci_low=summary.ci_low,
                ci_high=summary.ci_high,
                n_clusters=sub_design.n_articles,
                resampling=sub_design.unit,
            )
            rows.append(table[QUESTION_TYPE_COLUMNS])
    if not rows:
        return pd.DataFrame(columns=QUESTION_TYPE_COLUMNS)
    return pd.concat(rows, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Comparison with the paper's grid (paper-method.md §4.2)
# --------------------------------------------------------------------------------------------------


def map_layers_by_depth(
    run_layers: int, paper_layers: int = paper_reference.PAPER_GRID_NUM_LAYERS
) -> dict[int, list[int]]:
    """Paper layers (0-based) matched to each run layer by relative depth.

    A run layer l covers the depth band [l/L, (l+1)/L); it takes the paper layers whose centres fall in
    that band (several when the run model is shallower) or, when the band holds no centre (a deeper
    run model), the one paper layer whose band contains the run layer's centre.
    """
    mapping: dict[int, list[int]] = {}
    centres = (np.arange(paper_layers) + 0.5) / paper_layers
    for layer in range(run_layers):
        low, high = layer / run_layers, (layer + 1) / run_layers
        inside = [int(p) for p in np.flatnonzero((centres >= low) & (centres < high))]
        if not inside:
            inside = [min(paper_layers - 1, int((layer + 0.5) / run_layers * paper_layers))]
        mapping[layer] = inside
    return mapping


def _top2(frame: pd.DataFrame, value: str) -> list[str]:
    """The two zones with the most negative mean delta over layers."""
    means = frame.groupby("zone")[value].mean().sort_values(kind="stable")
    return list(means.index[:2])


def compare_with_paper(deltas: pd.DataFrame, settings: StatsSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare every zone x layer grid with the paper's digitised BERT/SQuAD delta-EM grid.

    The comparison is qualitative by nature: the run's model, data and depth usually differ from the
    paper's (the ``model_difference`` column says how). Layers are matched by relative depth; the
    paper's ALL (a padding leak) is compared only with ``all_paper_quirk``. Reported: Spearman's rho
    over the matched cells and whether the two most damaging of the four zones agree.
    """
    paper = paper_reference.paper_grid()
    paper_zones = set(paper["zone"])
    rows, cell_rows = [], []
    if deltas.empty:
        return pd.DataFrame(columns=PAPER_COLUMNS), pd.DataFrame(columns=PAPER_CELL_COLUMNS)
    layer_grid = deltas[(deltas["mode"] == "layer") & (deltas["head"] == -1)]
    for (model, train_set, eval_set, variant, metric), grid in layer_grid.groupby(
        [*RUN_KEYS, "variant", "metric"], sort=True
    ):
        run_layers = int(grid["layer"].max()) + 1
        if grid["layer"].nunique() < settings.min_layers_for_paper:
            continue
        mapping = map_layers_by_depth(run_layers)
        run = grid[grid["zone"].isin(paper_zones)][["layer", "zone", "delta"]]
        if run.empty:
            continue
        paper_values = paper.set_index(["layer", "zone"])["delta_em"]
        matched = run.assign(
            paper_layers=[",".join(str(p + 1) for p in mapping[int(layer)]) for layer in run["layer"]],
            paper_delta=[
                float(np.mean([paper_values[(p, zone)] for p in mapping[int(layer)]]))
                for layer, zone in zip(run["layer"], run["zone"], strict=True)
            ],
        )
        rho, p = (np.nan, np.nan)
        pearson = np.nan
        if len(matched) >= 3 and np.ptp(matched["delta"]) > 0:
            result = sps.spearmanr(matched["delta"], matched["paper_delta"])
            rho, p = float(result.statistic), float(result.pvalue)
            pearson = float(np.corrcoef(matched["delta"], matched["paper_delta"])[0, 1])
        four = matched[matched["zone"].isin(list(FOUR_ZONES))]
        top_run = _top2(four, "delta")
        top_paper = _top2(four, "paper_delta")
        layer_mapping = (
            "identity (12 layers)"
            if run_layers == 12
            else "; ".join(
                f"{layer + 1}->{'+'.join(str(p + 1) for p in paper_layers)}"
                for layer, paper_layers in mapping.items()
            )
        )
        rows.append(
            {
                "model": model,
                "train_set": train_set,
                "eval_set": eval_set,
                "variant": variant,
                "metric": metric,
                "run_layers": run_layers,
                "paper_layers": paper_reference.PAPER_GRID_NUM_LAYERS,
                "zones_compared": ",".join(z for z in ZONE_ORDER if z in set(matched["zone"])),
                "n_cells": len(matched),
                "spearman_rho": rho,
                "spearman_p": p,
                "pearson_r": pearson,
                "top2_run": ",".join(top_run),
                "top2_paper": ",".join(top_paper),
                "top2_agree": len(top_run) == 2 and set(top_run) == set(top_paper),
                "layer_mapping": layer_mapping,
                "model_difference": (
                    f"run: {model} ({run_layers} layers) fine-tuned on {train_set}, evaluated on {eval_set}, "
                    f"delta {metric.upper()}, {variant} variant; paper: {paper_reference.PAPER_GRID_MODEL} "
                    f"({paper_reference.PAPER_GRID_NUM_LAYERS} layers) on "
                    f"{paper_reference.PAPER_GRID_EVAL_SET}, "
                    f"delta {paper_reference.PAPER_GRID_METRIC.upper()}"
                ),
                "provenance": paper_reference.PAPER_GRID_PROVENANCE,
            }
        )
        cell_rows.append(
            matched.rename(columns={"delta": "run_delta"}).assign(
                model=model, train_set=train_set, eval_set=eval_set, variant=variant, metric=metric
            )[PAPER_CELL_COLUMNS]
        )
    cells = pd.concat(cell_rows, ignore_index=True) if cell_rows else pd.DataFrame(columns=PAPER_CELL_COLUMNS)
    return pd.DataFrame(rows, columns=PAPER_COLUMNS), cells


# --------------------------------------------------------------------------------------------------
# The answer per leg: which zones hurt most when masked (the abstract)
# --------------------------------------------------------------------------------------------------


def headline_zones(deltas: pd.DataFrame, zones: Sequence[str] = tuple(FOUR_ZONES), top: int = 2) -> pd.DataFrame:
    """Per grid (model, train set, eval set, variant, metric): the ``top`` zones whose masking hurts most.

    A zone's damage is its most damaging single-layer cell (zone x layer, all heads): the most negative
    delta over layers, with that cell's bootstrap CI and Holm/BH-corrected p-value from the delta table
    (so the selection over layers and zones is covered by the correction over the grid's cells). Zones
    are ranked by that delta; only the paper's four zones compete (ALL is their union).

    ``verdict`` (the same on the rows of one grid) compares the top two with the paper's P2Q + P2P:

    * ``no significant drop``: neither of the top two drops is significant after Holm (whatever the zones);
    * ``agrees``: the same two zones, both with a drop significant after Holm;
    * ``same zones, one significant``: the same two zones, only one drop significant;
    * ``differs``: another zone is among the top two and at least one top drop is significant.
    """
    if deltas.empty:
        return pd.DataFrame(columns=HEADLINE_COLUMNS)
    layer_grid = deltas[(deltas["mode"] == "layer") & (deltas["head"] == -1) & deltas["zone"].isin(list(zones))]
    rows: list[dict[str, Any]] = []
    for (model, train_set, eval_set, variant, metric), grid in layer_grid.groupby(
        [*RUN_KEYS, "variant", "metric"], sort=True
    ):
        grid = grid[grid["delta"].notna()]
        if grid.empty:
            continue
        worst = grid.sort_values(["delta", "layer"], kind="stable").drop_duplicates("zone").head(top)
        top_zones = list(worst["zone"])
        significant = (worst["significant_holm"].astype(bool) & (worst["delta"] < 0)).to_numpy()
        agrees = len(top_zones) == len(PAPER_ZONES) and set(top_zones) == set(PAPER_ZONES)
        if not significant.any():
            verdict = "no significant drop"
        elif agrees:
            verdict = "agrees" if significant.all() else "same zones, one significant"
        else:
            verdict = "differs"
        for rank, (_, cell) in enumerate(worst.iterrows(), start=1):
            rows.append(
                {
                    "model": model,
                    "train_set": train_set,
                    "eval_set": eval_set,
                    "variant": variant,
                    "metric": metric,
                    "rank": rank,
                    "zone": cell["zone"],
                    "layer": int(cell["layer"]),
                    "delta": float(cell["delta"]),
                    "ci_low": float(cell["ci_low"]),
                    "ci_high": float(cell["ci_high"]),
                    "p_holm": float(cell["p_holm"]),
                    "p_bh": float(cell["p_bh"]),
                    "significant_holm": bool(significant[rank - 1]),
                    "ci_excludes_zero": bool(cell["ci_high"] < 0 or cell["ci_low"] > 0),
                    "n_questions": int(cell["n_questions"]),
                    "n_clusters": int(cell["n_clusters"]),
                    "resampling": cell["resampling"],
                    "n_layers": int(grid["layer"].nunique()),
                    "paper_zones": ",".join(PAPER_ZONES),
                    "agrees_with_paper": agrees,
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


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



def _write_table(frame: pd.DataFrame, out_dir: Path, name: str) -> list[Path]:
    parquet, csv = out_dir / f"{name}.parquet", out_dir / f"{name}.csv"
    frame = frame.reset_index(drop=True)
    write_parquet(frame, parquet)
    write_csv(frame, csv)
    return [parquet, csv]


def run_stats(
    results_dir: Path, out_dir: Path, config: dict | None = None, files: ResultFiles | None = None
) -> list[Path]:
    """Compute every statistics table from the result files under ``results_dir``; write them to ``out_dir``.

    ``config`` defaults to ``results_dir/config.resolved.yaml`` when that file exists. Returns the written
    paths (each table as parquet and csv, plus ``settings.json`` with the knobs used). ``files``: the
    result files to read (the workflow passes its declared inputs); default: all under ``results_dir``.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise MrcbenchError(f"results directory not found: {results_dir}")
    if config is None and (results_dir / "config.resolved.yaml").is_file():
        config = cfg.load(results_dir / "config.resolved.yaml")
    settings = StatsSettings.from_config(config)
    if config is not None:
        # The report reads the config of the run beside the tables it describes.
        write_text(out_dir / "config.resolved.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    tables = load_results(results_dir, files)
    if tables.grid is None and tables.scores is None:
        raise MrcbenchError(
            f"{results_dir}: no ablation/*/*/seed*/*/grid.parquet or predict/*/*/seed*/*/scores.parquet found"
        )
    questions = tables.scores[["eval_set", "qid", "question"]] if tables.scores is not None else None
    languages = {}
    for frame in (tables.scores, tables.grid):
        if frame is None:
            continue
        for eval_set in frame["eval_set"].unique():
            if eval_set not in languages:
                texts = (
                    questions.loc[questions["eval_set"] == eval_set, "question"]
                    if questions is not None
                    else ()
                )
                languages[eval_set] = eval_language(config, eval_set, texts)

    log.info("building per-question matrices")
    matrices = build_question_matrices(answerable_grid(tables.grid, tables.scores))
    log.info("deltas: %d grid(s) (run x variant x metric)", len(matrices))
    deltas, delta_seeds = compute_deltas(matrices, settings)
    baselines, baseline_seeds = compute_baselines(tables, config, settings)
    zone_mass = compute_zone_mass(tables.zone_stats)
    log.info("correlations")
    correlations = compute_correlations(
        matrices, deltas, zone_mass, question_layer_mass(tables.zone_stats), settings
    )
    log.info("cross-lingual consistency")
    cross_rank, cross_question = compute_crosslingual(matrices, config, languages, settings)
    log.info("question types")
    question_types = compute_question_types(matrices, questions, languages, settings)
    paper, paper_cells = compare_with_paper(deltas, settings)
    headline = headline_zones(deltas)

    out_dir.mkdir(parents=True, exist_ok=True)
    seed_spread = pd.concat(
        [frame for frame in (baseline_seeds, delta_seeds) if not frame.empty]
        or [pd.DataFrame(columns=SEED_COLUMNS)],
        ignore_index=True,
    )
    written: list[Path] = []
    frames = dict(zip(TABLES, (baselines, deltas, seed_spread, zone_mass, correlations, cross_rank,
                               cross_question, question_types, paper, paper_cells, headline), strict=True))
    for name, frame in frames.items():
        written += _write_table(frame, out_dir, name)
    settings_path = out_dir / "settings.json"
    write_text(
        settings_path,
        json.dumps(
            {
                "seed": settings.seed,
                "bootstrap": settings.n_bootstrap,
                "permutations": settings.n_permutations,
                "alpha": settings.alpha,
                "confidence": settings.confidence,
                "min_bucket_size": settings.min_bucket_size,
                "min_clusters": settings.min_clusters,
                "parallel_min_overlap": settings.parallel_min_overlap,
                "languages": languages,
                "correction_family": [*RUN_KEYS, "variant", "mode", "metric"],
                "correlation_correction_family": CORRELATION_FAMILY,
            },
            indent=2,
            ensure_ascii=False,
        ),
    )
    written.append(settings_path)
    log.info("wrote %d files to %s", len(written), out_dir)
    return written


def main(argv: list[str] | None = None) -> int:
    """``mrcbench stats --results results --out results/stats [--config results/config.resolved.yaml]
    --scores ... [--metrics ...] [--grids ...] [--zone-stats ...]``."""
    parser = argparse.ArgumentParser(prog="mrcbench stats", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="results directory")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: RESULTS/stats)")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="resolved config (default: RESULTS/config.resolved.yaml when present)",
    )
    # The files to read, exactly (the workflow passes its rule's inputs; nothing else is globbed).
    parser.add_argument("--scores", type=Path, nargs="+", required=True, metavar="PARQUET",
                        help="predict/.../scores.parquet of every run")
    parser.add_argument("--metrics", type=Path, nargs="*", default=[], metavar="JSON",
                        help="predict/.../metrics.json of every run (official-equivalent EM/F1)")
    parser.add_argument("--grids", type=Path, nargs="*", default=[], metavar="PARQUET",
                        help="ablation/.../grid.parquet of every ablated run")
    parser.add_argument("--zone-stats", type=Path, nargs="*", default=[], metavar="PARQUET",
                        help="attention/.../zone_stats.parquet of every ablated run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = cfg.load(args.config) if args.config is not None else None
    files = ResultFiles(grids=args.grids, zone_stats=args.zone_stats, scores=args.scores, metrics=args.metrics)
    run_stats(args.results, args.out or args.results / "stats", config, files)
    return 0
