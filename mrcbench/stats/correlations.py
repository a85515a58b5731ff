"""Correlations between attention and performance (C1-C3, docs/method.md §6).

Pearson and Spearman with CIs and a clustered OLS slope, corrected within each family. Writes the
``correlations`` table, shown in the report's "Correlations between attention and performance"
section (drawn by :mod:`mrcbench.report.correlations`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as sps

from mrcbench.stats.common import StatsSettings, layer_grid
from mrcbench.stats.deltas import QuestionMatrix
from mrcbench.stats.multiple_testing import adjusted_p_values
from mrcbench.tables import CORRELATIONS, RUN_KEYS
from mrcbench.zones import FOUR_ZONES

#: One correction family of correlations: the cells of one C2/C3 map or the zones of one C1 grid.
CORRELATION_FAMILY = ["analysis", *RUN_KEYS, "variant", "metric", "x_quantity"]


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
    y: np.ndarray, x: np.ndarray, groups: Sequence[Any] | None, min_clusters: int
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
    """C1-C3 of docs/method.md §6 (our operationalisations).

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
            zone_mass[zone_mass["zone"].isin(FOUR_ZONES)]
            .groupby([*RUN_KEYS, "zone", "layer"])["mass"]
            .mean()
        )
    layer_deltas = layer_grid(deltas)
    # C1
    for (*run, variant, metric, zone), cells in layer_deltas.groupby(
        [*RUN_KEYS, "variant", "metric", "zone"], sort=True
    ):
        keys = {
            **dict(zip(RUN_KEYS, run, strict=True)),
            "variant": variant,
            "zone": zone,
            "layer": -1,
            "metric": metric,
            "y_quantity": f"drop_{metric}",
        }
        cells = cells.sort_values("layer")
        drop = -cells["delta"].to_numpy(dtype=float)
        if zone in FOUR_ZONES and (*run, zone) in zone_layer.index:
            mass = (
                zone_layer.loc[(*run, zone)]
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
        run = matrix.run
        if run not in runs_with_mass:
            continue
        mass = layer_mass.loc[run].reindex(matrix.qids)
        if (*run, matrix.metric) not in seen_c2:
            seen_c2.add((*run, matrix.metric))
            for layer, zone in mass.columns:
                keys = {
                    **dict(zip(RUN_KEYS, run, strict=True)),
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
                **dict(zip(RUN_KEYS, run, strict=True)),
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
    table = pd.DataFrame(rows, columns=CORRELATIONS.names)
    table = correct_correlation_pvalues(table, settings.alpha)
    return table.astype({"n": "Int64", "layer": "Int64", "n_clusters": "Int64"})


def correct_correlation_pvalues(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm and BH adjusted p-values of every correlation p-value, within :data:`CORRELATION_FAMILY`.

    ``significant_holm``/``significant_bh`` refer to the Pearson test (the r the report shows).
    """
    table = table.copy()
    if table.empty:
        columns = CORRELATIONS.names
        for column in columns[columns.index("pearson_p_holm"):]:
            table[column] = pd.Series(dtype=bool if column.startswith("significant") else float)
        return table[columns]
    for raw, prefix in (("pearson_p", "pearson_p"), ("spearman_p", "spearman_p"), ("ols_p_cluster", "ols_p")):
        table[raw] = pd.to_numeric(table[raw], errors="coerce").astype(float)
        grouped = table.groupby(CORRELATION_FAMILY, dropna=False, sort=False)[raw]
        table[f"{prefix}_holm"] = grouped.transform(adjusted_p_values, "holm", alpha)
        table[f"{prefix}_bh"] = grouped.transform(adjusted_p_values, "fdr_bh", alpha)
    table["significant_holm"] = table["pearson_p_holm"] < alpha
    table["significant_bh"] = table["pearson_p_bh"] < alpha
    return table[CORRELATIONS.names]
