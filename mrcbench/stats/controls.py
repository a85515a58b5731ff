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

Beside it, :func:`compute_operator_contrasts` (``operator_contrasts``): each non-``renorm`` operator minus
``renorm`` per (zone, layer) cell, same statistics, one correction family per (run, variant, metric); and
:func:`compute_specificity` (``specificity``): per grid and zone, the layers where the zone's effect
exceeds its null. The primary continuous measure is :data:`PRIMARY_CONTINUOUS` (``logprob_delta``, the
mean of the start and end log-probability deltas of the unmasked prediction's tokens, per question).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrcbench.stats.common import METRICS, RUN_KEYS, StatsSettings, seeded_rng
from mrcbench.stats.paired import ResamplingDesign, correct_pvalues, summarize_paired
from mrcbench.zones import NULL_PREFIX, NULL_ZONES, null_of

PRIMARY_CONTINUOUS = "logprob_delta"
"""The primary continuous measure: mean of ``start_logprob_delta`` and ``end_logprob_delta`` per question
(both sides of the span weigh equally; a log-probability change, 0 when the cell changes nothing, negative
when masking makes the unmasked prediction less likely). Derived in every contrast table."""

CONTRAST_METRICS = (*METRICS, "start_logprob_delta", "end_logprob_delta", PRIMARY_CONTINUOUS, "start_kl",
                    "end_kl")
"""Grid columns compared zone minus null (those present in the grid; ``logprob_delta`` derived)."""


def with_primary_continuous(grid: pd.DataFrame) -> pd.DataFrame:
    """``grid`` with :data:`PRIMARY_CONTINUOUS` added where both logprob columns exist."""
    if {"start_logprob_delta", "end_logprob_delta"} <= set(grid.columns):
        grid = grid.assign(**{PRIMARY_CONTINUOUS: (grid["start_logprob_delta"] + grid["end_logprob_delta"]) / 2})
    return grid

NULL_CONTRAST_COLUMNS = [
    *RUN_KEYS, "variant", "layer", "zone", "metric", "n_questions", "n_clusters", "resampling", "test",
    "n_seeds", "null_draws", "zone_value", "null_value", "zone_delta", "null_delta", "difference", "ci_low", "ci_high", "p_value",
    "p_holm", "p_bh", "significant_holm", "significant_bh", "removed_mass", "null_removed_mass",
    "mass_match", "feasible_fraction", "feasible",
]
CONTRAST_FAMILY = [*RUN_KEYS, "variant", "metric"]


def _baseline_means(grid: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """The unmasked pass's per-question EM/F1 of one (run, variant), seed-averaged (index qid): the
    variant's own baseline rows when written per variant, else the shared ones; empty without any."""
    selector = np.logical_and.reduce([(grid[c] == v).to_numpy() for c, v in zip(RUN_KEYS, key[:-1], strict=True)])
    base = grid[selector & (grid["mode"].astype(str) == "baseline").to_numpy()]
    own = base[base["variant"] == key[-1]]
    base = (own if len(own) else base).assign(qid=lambda frame: frame["qid"].astype(str))
    return base.drop_duplicates(["seed", "qid"]).groupby("qid")[list(METRICS)].mean()


def _deltas(values: np.ndarray, metric: str, baseline: pd.DataFrame, qids) -> np.ndarray:
    """``values`` (cell means of ``metric``) as changes against the unmasked pass: minus the baseline's
    mean over ``qids`` for EM/F1 (NaN without a baseline); the continuous measures are changes already."""
    if metric not in METRICS:
        return np.asarray(values, dtype=float)
    if baseline.empty:
        return np.full(len(values), np.nan)
    return np.asarray(values, dtype=float) - float(baseline[metric].reindex(qids).mean())


def compute_null_contrasts(grid: pd.DataFrame | None, settings: StatsSettings) -> pd.DataFrame:
    """The ``null_contrasts`` table (one row per run, variant, layer, zone and metric); empty without nulls."""
    empty = pd.DataFrame(columns=NULL_CONTRAST_COLUMNS)
    if grid is None or "null_draw" not in grid.columns:
        return empty
    grid = with_primary_continuous(grid)
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
        baseline = _baseline_means(grid, key)
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
                difference.to_numpy(dtype=float), design, settings, seeded_rng(settings, "null_contrasts", *key, metric)
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
            table["zone_delta"] = _deltas(table["zone_value"], metric, baseline, difference.index)
            table["null_delta"] = _deltas(table["null_value"], metric, baseline, difference.index)
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


# --------------------------------------------------------------------------------------------------
# Operators against renorm
# --------------------------------------------------------------------------------------------------

OPERATOR_CONTRAST_COLUMNS = [
    *RUN_KEYS, "variant", "operator", "layer", "zone", "metric", "n_questions", "n_clusters", "resampling",
    "test", "n_seeds", "operator_value", "renorm_value", "operator_delta", "renorm_delta", "difference", "ci_low", "ci_high", "p_value",
    "p_holm", "p_bh", "significant_holm", "significant_bh", "removed_mass",
]
OPERATOR_FAMILY = [*RUN_KEYS, "variant", "metric"]


def _paired_cells(
    treated: pd.DataFrame, reference: pd.DataFrame, metrics: list[str], articles: pd.Series,
    settings: StatsSettings, rng_key: tuple,
) -> list[pd.DataFrame]:
    """Per metric, the paired per-question difference ``treated - reference`` of every (layer, zone) cell
    (both indexed by layer, zone, qid; values averaged over seeds already): one frame per metric with
    layer, zone, metric, n_questions, n_clusters, resampling, test, treated/reference means and the
    difference's mean, CI and p."""
    joined = treated[metrics].merge(reference[metrics], how="inner", left_index=True, right_index=True,
                                    suffixes=("_t", "_r"))
    frames = []
    for metric in metrics:
        difference = (joined[f"{metric}_t"] - joined[f"{metric}_r"]).unstack(["layer", "zone"])
        difference = difference.dropna(axis=0, how="any")
        if difference.empty:
            continue
        cells = difference.columns.to_frame(index=False)
        design = ResamplingDesign.from_articles(
            articles.reindex(difference.index).tolist(), len(difference), settings.min_clusters
        )
        summary = summarize_paired(difference.to_numpy(dtype=float), design, settings,
                                   seeded_rng(settings, *rng_key, metric))
        means = joined.groupby(level=["layer", "zone"]).mean().reindex(pd.MultiIndex.from_frame(cells))
        table = cells.copy()
        table["metric"] = metric
        table["n_questions"] = len(difference)
        table["n_clusters"] = design.n_articles
        table["resampling"] = design.unit
        table["test"] = summary.test
        table["treated_value"] = means[f"{metric}_t"].to_numpy()
        table["reference_value"] = means[f"{metric}_r"].to_numpy()
        table["qids"] = [tuple(difference.index)] * len(table)
        table["difference"] = summary.mean
        table["ci_low"] = summary.ci_low
        table["ci_high"] = summary.ci_high
        table["p_value"] = summary.p_value
        frames.append(table)
    return frames


def compute_operator_contrasts(grid: pd.DataFrame | None, settings: StatsSettings) -> pd.DataFrame:
    """The ``operator_contrasts`` table: per run, variant, non-renorm operator, layer, zone (the real zones,
    not the nulls) and metric, the paired per-question difference *operator minus renorm* (same questions,
    values averaged over seeds). Holm/BH within (run, variant, metric), apart from every other table's
    family. Empty when the grid has no operator but ``renorm``."""
    empty = pd.DataFrame(columns=OPERATOR_CONTRAST_COLUMNS)
    if grid is None or "operator" not in grid.columns:
        return empty
    grid = with_primary_continuous(grid)
    layer_rows = grid[(grid["mode"].astype(str) == "layer")
                      & ~grid["zone"].astype(str).str.startswith(NULL_PREFIX)]
    operators = layer_rows["operator"].astype(str)
    if not (operators != "renorm").any():
        return empty
    rows = []
    for key, run in layer_rows.groupby([*RUN_KEYS, "variant"], observed=True, sort=True):
        run = run.assign(zone=run["zone"].astype(str), qid=run["qid"].astype(str),
                         operator=run["operator"].astype(str))
        metrics = [metric for metric in CONTRAST_METRICS if metric in run.columns]
        index = ["layer", "zone", "qid"]
        renorm = run[run["operator"] == "renorm"]
        if renorm.empty:
            continue
        reference = renorm.groupby(index)[metrics].mean()
        articles = run.drop_duplicates("qid").set_index("qid")["article"]
        baseline = _baseline_means(grid, key)
        for operator, rows_op in run[run["operator"] != "renorm"].groupby("operator", sort=True):
            treated = rows_op.groupby(index)[[*metrics, "removed_mass"]].mean()
            mass = treated["removed_mass"].groupby(level=["layer", "zone"]).mean()
            for table in _paired_cells(treated, reference, metrics, articles, settings,
                                       ("operator_contrasts", *key, operator)):
                for position, column in enumerate([*RUN_KEYS, "variant"]):
                    table.insert(position, column, key[position])
                table.insert(len(RUN_KEYS) + 1, "operator", operator)
                table["n_seeds"] = int(run["seed"].nunique())
                table = table.rename(columns={"treated_value": "operator_value", "reference_value": "renorm_value"})
                qids = list(table["qids"].iloc[0])
                metric = table["metric"].iloc[0]
                table["operator_delta"] = _deltas(table["operator_value"], metric, baseline, qids)
                table["renorm_delta"] = _deltas(table["renorm_value"], metric, baseline, qids)
                table = table.drop(columns="qids")
                table["removed_mass"] = mass.reindex(
                    pd.MultiIndex.from_frame(table[["layer", "zone"]])).to_numpy()
                rows.append(table)
    if not rows:
        return empty
    frame = correct_pvalues(pd.concat(rows, ignore_index=True), OPERATOR_FAMILY, settings.alpha)
    frame = frame.sort_values([*OPERATOR_FAMILY, "operator", "layer", "zone"])
    return frame[OPERATOR_CONTRAST_COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Specificity: where a zone's effect exceeds its null
# --------------------------------------------------------------------------------------------------

SPECIFICITY_MEASURES = ("f1", PRIMARY_CONTINUOUS)
"""The measures of the specificity summary: F1 and the primary continuous measure."""

SPECIFICITY_COLUMNS = [
    *RUN_KEYS, "variant", "zone", "measure", "control", "n_layers", "n_feasible", "n_infeasible",
    "null_draws", "layers_exceeding", "n_exceeding", "difference", "ci_low", "ci_high", "p_value", "p_holm",
    "significant_holm", "n_questions",
]
SPECIFICITY_FAMILY = [*RUN_KEYS, "variant", "measure"]


def _layer_list(layers) -> str:
    return ",".join(str(int(layer)) for layer in sorted(layers))


def _uniform_effects(grid: pd.DataFrame, key: tuple, zones: list[str]) -> pd.DataFrame:
    """Per (layer, zone, qid) of ``zones``, the ``uniform`` operator's own effect, seed-averaged: masked
    minus the baseline for F1, the value itself for the continuous measure (already relative to the
    unmasked pass). Empty without uniform rows."""
    selector = np.logical_and.reduce([(grid[c] == v).to_numpy() for c, v in zip(RUN_KEYS, key[:-1], strict=True)])
    run = grid[selector]
    run = run.assign(zone=run["zone"].astype(str), qid=run["qid"].astype(str))
    uniform = run[(run["mode"].astype(str) == "layer") & (run["operator"].astype(str) == "uniform")
                  & (run["variant"] == key[-1]) & run["zone"].isin(zones)]
    base = run[run["mode"].astype(str) == "baseline"]
    if uniform.empty or base.empty:
        return pd.DataFrame()
    own = base[base["variant"] == key[-1]]
    base = (own if len(own) else base).drop_duplicates(["seed", "qid"]).set_index(["seed", "qid"])["f1"]
    baseline = base.reindex(pd.MultiIndex.from_frame(uniform[["seed", "qid"]])).to_numpy()
    uniform = uniform.assign(f1=uniform["f1"].to_numpy() - baseline)
    return uniform.groupby(["layer", "zone", "qid"])[[m for m in SPECIFICITY_MEASURES if m in uniform]].mean()


def _summary_row(values: pd.DataFrame, articles: pd.Series, settings: StatsSettings, rng_key: tuple) -> dict:
    """Mean over the columns (layers) of ``values`` (qid x layer) per question: mean, CI, p."""
    values = values.dropna(axis=0, how="any")
    if values.empty or values.shape[1] == 0:
        return {"difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "n_questions": 0}
    per_question = values.mean(axis=1).to_numpy(dtype=float)[:, None]
    design = ResamplingDesign.from_articles(articles.reindex(values.index).tolist(), len(values),
                                            settings.min_clusters)
    summary = summarize_paired(per_question, design, settings, seeded_rng(settings, *rng_key))
    return {"difference": float(summary.mean[0]), "ci_low": float(summary.ci_low[0]),
            "ci_high": float(summary.ci_high[0]), "p_value": float(summary.p_value[0]),
            "n_questions": len(values)}


def compute_specificity(
    grid: pd.DataFrame | None, null_contrasts: pd.DataFrame, settings: StatsSettings
) -> pd.DataFrame:
    """The ``specificity`` table: one row per (run, variant, zone with a null, measure of
    :data:`SPECIFICITY_MEASURES`).

    * ``control`` ``null``: the zone has at least one feasible null cell. ``layers_exceeding`` lists the
      feasible layers whose zone-minus-null difference (``null_contrasts``) is negative with Holm p <
      ``stats.alpha``; ``difference``/CI/p are those of the zone-minus-null difference averaged over the
      feasible layers per question (a layer-averaged specificity). Infeasible cells are never counted
      (their null removes less than the zone).
    * ``control`` ``uniform``: every null cell is infeasible (P2P's, typically) and the grid has the
      ``uniform`` operator: the numbers are the uniform operator's own effect (ΔF1 against the baseline,
      the logprob delta itself), ``layers_exceeding`` the layers where it is negative with Holm p < alpha
      (family: those layers of the run, variant and measure); the mass stays, so an effect is the pattern's.
    * ``control`` ``none``: infeasible null and no ``uniform`` operator; no numbers.

    ``p_holm`` of the layer-averaged numbers: Holm over the zones within (run, variant, measure).
    ``n_feasible``/``n_infeasible``: null cells (layers) of the zone that are / are not feasible.
    """
    empty = pd.DataFrame(columns=SPECIFICITY_COLUMNS)
    if grid is None or null_contrasts is None or null_contrasts.empty:
        return empty
    grid = with_primary_continuous(grid)
    rows = []
    for key, contrasts in null_contrasts.groupby([*RUN_KEYS, "variant"], sort=True):
        selector = np.logical_and.reduce(
            [(grid[column] == value).to_numpy() for column, value in zip([*RUN_KEYS, "variant"], key, strict=True)]
        )
        run = grid[selector & (grid["mode"].astype(str) == "layer")]
        run = run.assign(zone=run["zone"].astype(str), qid=run["qid"].astype(str))
        articles = run.drop_duplicates("qid").set_index("qid")["article"]
        zones = [zone for zone in NULL_ZONES if zone in set(contrasts["zone"])]
        infeasible_zones = [
            zone for zone in zones
            if not contrasts[(contrasts["zone"] == zone) & (contrasts["metric"] == "f1")]["feasible"].any()
        ]
        uniform = _uniform_effects(grid, key, infeasible_zones) if infeasible_zones else pd.DataFrame()
        uniform_layers = {}
        if not uniform.empty:
            for measure in [m for m in SPECIFICITY_MEASURES if m in uniform.columns]:
                wide = uniform[measure].unstack(["layer", "zone"]).dropna(axis=0, how="any")
                if wide.empty:
                    continue
                design = ResamplingDesign.from_articles(articles.reindex(wide.index).tolist(), len(wide),
                                                        settings.min_clusters)
                summary = summarize_paired(wide.to_numpy(dtype=float), design, settings,
                                           seeded_rng(settings, "specificity_uniform", *key, measure))
                cells = wide.columns.to_frame(index=False).assign(
                    difference=summary.mean, p_value=summary.p_value, **dict(zip(RUN_KEYS, key[:-1])),
                    variant=key[-1], metric=measure)
                cells = correct_pvalues(cells, [*RUN_KEYS, "variant", "metric"], settings.alpha)
                uniform_layers[measure] = cells
        for zone in zones:
            null_rows = run[run["zone"] == f"{NULL_PREFIX}{zone}"]
            own_rows = run[(run["zone"] == zone) & (run["operator"].astype(str) == "renorm")]
            for measure in SPECIFICITY_MEASURES:
                cells = contrasts[(contrasts["zone"] == zone) & (contrasts["metric"] == measure)]
                base = dict(zip([*RUN_KEYS, "variant"], key, strict=True))
                f1_cells = contrasts[(contrasts["zone"] == zone) & (contrasts["metric"] == "f1")]
                row = {**base, "zone": zone, "measure": measure, "n_layers": int(f1_cells["layer"].nunique()),
                       "n_feasible": int(f1_cells["feasible"].sum()),
                       "n_infeasible": int((~f1_cells["feasible"].astype(bool)).sum()),
                       "null_draws": int(f1_cells["null_draws"].max()) if len(f1_cells) else 0}
                feasible_layers = sorted(f1_cells.loc[f1_cells["feasible"].astype(bool), "layer"])
                if feasible_layers and not cells.empty:
                    exceeding = cells[cells["layer"].isin(feasible_layers) & (cells["difference"] < 0)
                                      & (cells["p_holm"] < settings.alpha)]["layer"]
                    index = ["layer", "qid"]
                    zone_q = own_rows.groupby(index)[measure].mean()
                    null_q = null_rows.groupby(index)[measure].mean()
                    per_layer = (zone_q - null_q).unstack("layer")
                    per_layer = per_layer[[layer for layer in feasible_layers if layer in per_layer.columns]]
                    row.update(control="null", layers_exceeding=_layer_list(exceeding), n_exceeding=len(exceeding),
                               **_summary_row(per_layer, articles, settings, ("specificity", *key, zone, measure)))
                elif measure in uniform_layers and zone in set(uniform_layers[measure]["zone"]):
                    cells_u = uniform_layers[measure]
                    cells_u = cells_u[cells_u["zone"] == zone]
                    exceeding = cells_u[(cells_u["difference"] < 0) & (cells_u["p_holm"] < settings.alpha)]["layer"]
                    per_layer = uniform[measure].xs(zone, level="zone").unstack("layer")
                    row.update(control="uniform", layers_exceeding=_layer_list(exceeding),
                               n_exceeding=len(exceeding),
                               **_summary_row(per_layer, articles, settings,
                                              ("specificity_uniform_mean", *key, zone, measure)))
                else:
                    row.update(control="none", layers_exceeding="", n_exceeding=0, difference=np.nan,
                               ci_low=np.nan, ci_high=np.nan, p_value=np.nan, n_questions=0)
                rows.append(row)
    if not rows:
        return empty
    frame = pd.DataFrame(rows)
    frame = correct_pvalues(frame.rename(columns={"measure": "metric"}),
                            [*RUN_KEYS, "variant", "metric"], settings.alpha).rename(columns={"metric": "measure"})
    order = {zone: i for i, zone in enumerate(NULL_ZONES)}
    measure_order = {measure: i for i, measure in enumerate(SPECIFICITY_MEASURES)}
    frame = frame.sort_values(
        [*RUN_KEYS, "variant", "measure", "zone"],
        key=lambda column: column.map(order) if column.name == "zone"
        else column.map(measure_order) if column.name == "measure" else column,
    )
    return frame[SPECIFICITY_COLUMNS].reset_index(drop=True)
