"""Controls of the zone grid: each zone against its size-matched random null, per (zone, layer) cell.

For every run, variant, layer and zone with a null (``null_<zone>`` cells of the grid, mode ``layer``,
operator ``renorm``; :mod:`mrcbench.nulls`), the paired per-question difference *zone minus null* (the same
questions; the unmasked baseline cancels, so for F1 it is ΔF1(zone) − ΔF1(null)), for F1/EM and the
continuous measure (:data:`mrcbench.ablation.EFFECT_COLUMNS`). Values are averaged over seeds and, for the
null, over its draws. Bootstrap CI and sign-flip p as for the deltas (:mod:`mrcbench.stats.paired`), Holm
and BH within their own family (run, variant, metric). Each cell also carries the zone's and the null's
removed mass, the null's mean ``mass_match`` and the share of questions whose null matched within the
tolerance (``feasible_fraction``; ``feasible`` only when every question did). An infeasible cell's null
removes less than the zone: its difference is *not* a size-matched control and is marked so.
"""

from __future__ import annotations

import pandas as pd

from mrcbench.stats.common import METRICS, RUN_KEYS, StatsSettings, _rng
from mrcbench.stats.paired import ResamplingDesign, correct_pvalues, summarize_paired
from mrcbench.zones import NULL_PREFIX, NULL_ZONES, null_of

CONTRAST_METRICS = (*METRICS, "start_logprob_delta", "end_logprob_delta", "start_kl", "end_kl")
"""Grid columns compared zone minus null (those present in the grid)."""

NULL_CONTRAST_COLUMNS = [
    *RUN_KEYS, "variant", "layer", "zone", "metric", "n_questions", "n_clusters", "resampling", "test",
    "n_seeds", "null_draws", "zone_value", "null_value", "difference", "ci_low", "ci_high", "p_value",
    "p_holm", "p_bh", "significant_holm", "significant_bh", "removed_mass", "null_removed_mass",
    "mass_match", "feasible_fraction", "feasible",
]
CONTRAST_FAMILY = [*RUN_KEYS, "variant", "metric"]


def compute_null_contrasts(grid: pd.DataFrame | None, settings: StatsSettings) -> pd.DataFrame:
    """The ``null_contrasts`` table (one row per run, variant, layer, zone and metric); empty without nulls."""
    empty = pd.DataFrame(columns=NULL_CONTRAST_COLUMNS)
    if grid is None or "null_draw" not in grid.columns:
        return empty
    layer_rows = grid[(grid["mode"].astype(str) == "layer") & (grid["operator"].astype(str) == "renorm")]
    zones = layer_rows["zone"].astype(str)
    if not zones.str.startswith(NULL_PREFIX).any():
        return empty
    rows = []
    for key, run in layer_rows.groupby([*RUN_KEYS, "variant"], observed=True, sort=True):
        run = run.assign(zone=run["zone"].astype(str), qid=run["qid"].astype(str))
        nulls = run[run["zone"].str.startswith(NULL_PREFIX)].copy()
        if nulls.empty:
            continue
        nulls["zone"] = nulls["zone"].map(null_of)
        own = run[run["zone"].isin(NULL_ZONES)]
        metrics = [metric for metric in CONTRAST_METRICS if metric in run.columns]
        index = ["layer", "zone", "qid"]
        zone_values = own.groupby(index)[[*metrics, "removed_mass"]].mean()
        null_values = nulls.groupby(index).agg(
            **{metric: (metric, "mean") for metric in [*metrics, "removed_mass", "mass_match"]},
            feasible=("null_feasible", lambda values: bool(pd.Series(values).fillna(False).astype(bool).all())),
            draws=("null_draw", "nunique"),
        )
        joined = zone_values.merge(null_values, how="inner", left_index=True, right_index=True,
                                   suffixes=("_zone", "_null"))
        if joined.empty:
            continue
        articles = run.drop_duplicates("qid").set_index("qid")["article"]
        n_seeds = int(run["seed"].nunique())
        for metric in metrics:
            difference = (joined[f"{metric}_zone"] - joined[f"{metric}_null"]).unstack(["layer", "zone"])
            difference = difference.dropna(axis=0, how="any")  # questions with every cell (e.g. a span)
            if difference.empty:
                continue
            cells = difference.columns.to_frame(index=False)
            design = ResamplingDesign.from_articles(
                articles.reindex(difference.index).tolist(), len(difference), settings.min_clusters
            )
            summary = summarize_paired(
                difference.to_numpy(dtype=float), design, settings, _rng(settings, "null_contrasts", *key, metric)
            )
            per_cell = joined.groupby(level=["layer", "zone"])
            means = per_cell.mean(numeric_only=True).reindex(pd.MultiIndex.from_frame(cells))
            feasible = per_cell["feasible"].mean().reindex(pd.MultiIndex.from_frame(cells))
            table = cells.copy()
            for position, column in enumerate([*RUN_KEYS, "variant"]):
                table.insert(position, column, key[position])
            table["metric"] = metric
            table["n_questions"] = len(difference)
            table["n_clusters"] = design.n_articles
            table["resampling"] = design.unit
            table["test"] = summary.test
            table["n_seeds"] = n_seeds
            table["null_draws"] = per_cell["draws"].max().reindex(pd.MultiIndex.from_frame(cells)).to_numpy()
            table["zone_value"] = means[f"{metric}_zone"].to_numpy()
            table["null_value"] = means[f"{metric}_null"].to_numpy()
            table["difference"] = summary.mean
            table["ci_low"] = summary.ci_low
            table["ci_high"] = summary.ci_high
            table["p_value"] = summary.p_value
            table["removed_mass"] = means["removed_mass_zone"].to_numpy()
            table["null_removed_mass"] = means["removed_mass_null"].to_numpy()
            table["mass_match"] = means["mass_match"].to_numpy()
            table["feasible_fraction"] = feasible.to_numpy(dtype=float)
            table["feasible"] = table["feasible_fraction"] == 1.0
            rows.append(table)
    if not rows:
        return empty
    frame = pd.concat(rows, ignore_index=True)
    frame = correct_pvalues(frame, CONTRAST_FAMILY, settings.alpha)
    order = {zone: i for i, zone in enumerate(NULL_ZONES)}
    frame = frame.sort_values(
        [*CONTRAST_FAMILY, "layer", "zone"], key=lambda column: column.map(order) if column.name == "zone" else column
    )
    return frame[NULL_CONTRAST_COLUMNS].reset_index(drop=True)
