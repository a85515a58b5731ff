"""Controls of the zone grid: is a zone's effect about *what* it attends to, or about *how much* attention
masking it removes?

``null_contrasts`` (:func:`compute_null_contrasts`): for every run, variant, layer and zone with a null
(``null_<zone>`` cells of the grid, mode ``layer``, operator ``renorm``; :mod:`mrcbench.masking.nulls`), the paired
per-question difference *zone minus null* on the questions whose null draw matched the zone's mass within the
tolerance (the unmasked baseline cancels, so for F1 it is ΔF1(zone) − ΔF1(null)), for F1/EM and the
continuous measure (:data:`mrcbench.tables.EFFECT_COLUMNS`), averaged over seeds and, for the null, over its
draws. A cell is a *valid control* when at least ``stats.min_null_feasible_share`` of its questions matched;
beside the contrast it records the zone's effect on the matched questions and on all of them, so a reader
sees whether restricting the questions changes the zone's effect. Bootstrap CI and sign-flip p as for the
deltas (:mod:`mrcbench.stats.resampling`); Holm and BH over the valid cells of each (run, variant, metric).

:func:`compute_operator_contrasts` (``operator_contrasts``): each non-``renorm`` operator minus ``renorm``
per (zone, layer) cell, same statistics, one correction family per (run, variant, metric).

:func:`compute_specificity` (``specificity``): per grid and zone, the controls at the zone's most damaging
layer and the verdict (:data:`VERDICTS`): specific (beyond its null), mass-driven (no more than its null),
the pattern matters (``uniform``, which keeps the mass, hurts as much as removal), the amount matters
(``uniform`` harmless), or no valid control. The primary continuous measure is :data:`PRIMARY_CONTINUOUS`
(``logprob_delta``, the mean of the start and end log-probability deltas of the unmasked prediction's tokens,
per question).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrcbench.stats.common import METRICS, StatsSettings, seeded_rng
from mrcbench.stats.multiple_testing import correct_pvalues
from mrcbench.stats.resampling import ResamplingDesign, summarize_paired
from mrcbench.tables import CONTROL_EFFECTS, NULL_CONTRASTS, OPERATOR_CONTRASTS, RUN_KEYS, SPECIFICITY
from mrcbench.zones import FOUR_ZONES, NULL_PREFIX, null_of

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


def _question_feasible(values: pd.Series) -> bool:
    """A question's null is a control when every draw of it matched the zone's mass."""
    flags = pd.Series(values)
    return bool(len(flags)) and bool(flags.fillna(False).astype(bool).all())


def compute_null_contrasts(grid: pd.DataFrame | None, settings: StatsSettings) -> pd.DataFrame:
    """The ``null_contrasts`` table (one row per run, variant, layer, zone and metric); empty without nulls.

    A cell's contrast is paired on the questions whose null matched the zone's mass (``null_feasible`` in
    every draw; ``n_questions`` of ``n_grid_questions``): zone minus null on exactly those questions, with
    ``zone_delta`` the zone's effect on them beside ``zone_delta_all``, its effect on all the cell's
    questions. ``valid_control``: ``feasible_fraction`` (matched questions over all) is at least
    ``stats.min_null_feasible_share``; only valid cells enter the Holm/BH family (run, variant, metric), the
    others keep their numbers with no corrected p-value (no null control there).
    """
    empty = NULL_CONTRASTS.empty()
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
        own = run[run["zone"].isin(FOUR_ZONES)]
        metrics = [metric for metric in CONTRAST_METRICS if metric in run.columns]
        index = ["layer", "zone", "qid"]
        zone_values = own.groupby(index)[[*metrics, "removed_mass"]].mean()
        null_values = nulls.groupby(index).agg(
            **{metric: (metric, "mean") for metric in [*metrics, "removed_mass", "mass_match"]},
            feasible=("null_feasible", _question_feasible),
            draws=("null_draw", "nunique"),
        )
        joined = zone_values.merge(null_values, how="inner", left_index=True, right_index=True,
                                   suffixes=("_zone", "_null"))
        if joined.empty:
            continue
        articles = run.drop_duplicates("qid").set_index("qid")["article"]
        n_seeds = int(run["seed"].nunique())
        baseline = _baseline_means(grid, key)
        for (layer, zone), cell in joined.groupby(level=["layer", "zone"], sort=True):
            cell = cell.droplevel(["layer", "zone"])
            n_grid = len(cell)
            share = float(cell["feasible"].mean()) if n_grid else 0.0
            matched = cell[cell["feasible"].astype(bool)]
            for metric in metrics:
                zone_all = cell[f"{metric}_zone"].dropna()
                pair = matched[[f"{metric}_zone", f"{metric}_null"]].dropna(axis=0, how="any")
                difference = (pair[f"{metric}_zone"] - pair[f"{metric}_null"]).to_numpy(dtype=float)[:, None]
                design = ResamplingDesign.from_articles(articles.reindex(pair.index).tolist(), len(pair),
                                                        settings.min_clusters)
                if len(pair):
                    summary = summarize_paired(difference, design, settings,
                                               seeded_rng(settings, "null_contrasts", *key, metric, layer, zone))
                    stats_ = {"difference": float(summary.mean[0]), "ci_low": float(summary.ci_low[0]),
                              "ci_high": float(summary.ci_high[0]), "p_value": float(summary.p_value[0]),
                              "test": summary.test}
                else:
                    stats_ = {"difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                              "test": "no matched question"}
                zone_value = float(pair[f"{metric}_zone"].mean()) if len(pair) else np.nan
                null_value = float(pair[f"{metric}_null"].mean()) if len(pair) else np.nan
                rows.append({
                    **dict(zip([*RUN_KEYS, "variant"], key, strict=True)), "layer": int(layer), "zone": zone,
                    "metric": metric, "n_questions": len(pair), "n_grid_questions": n_grid,
                    "n_clusters": design.n_articles if len(pair) else 0, "resampling": design.unit,
                    "n_seeds": n_seeds, "null_draws": int(cell["draws"].max()),
                    "zone_value": zone_value, "null_value": null_value,
                    "zone_delta": _deltas([zone_value], metric, baseline, pair.index)[0],
                    "zone_delta_all": _deltas([float(zone_all.mean()) if len(zone_all) else np.nan], metric,
                                              baseline, zone_all.index)[0],
                    "null_delta": _deltas([null_value], metric, baseline, pair.index)[0],
                    **stats_,
                    "removed_mass": float(cell["removed_mass_zone"].mean()),
                    "null_removed_mass": float(cell["removed_mass_null"].mean()),
                    "mass_match": float(cell["mass_match"].mean()),
                    "feasible_fraction": share,
                    "valid_control": bool(share >= settings.min_null_feasible_share and len(pair)),
                })
    if not rows:
        return empty
    frame = pd.DataFrame(rows)
    valid = frame["valid_control"].to_numpy(dtype=bool)
    frame = pd.concat(
        [correct_pvalues(frame[valid], CONTRAST_FAMILY, settings.alpha),
         frame[~valid].assign(p_holm=np.nan, p_bh=np.nan, significant_holm=False, significant_bh=False)],
    ).sort_index().astype({"significant_holm": bool, "significant_bh": bool})
    order = {zone: i for i, zone in enumerate(FOUR_ZONES)}
    frame = frame.sort_values(
        [*CONTRAST_FAMILY, "layer", "zone"], key=lambda column: column.map(order) if column.name == "zone" else column
    )
    return frame[NULL_CONTRASTS.names].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Operators against renorm
# --------------------------------------------------------------------------------------------------

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
    empty = OPERATOR_CONTRASTS.empty()
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
    return frame[OPERATOR_CONTRASTS.names].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Specificity: where a zone's effect exceeds its null
# --------------------------------------------------------------------------------------------------

SPECIFICITY_MEASURES = ("f1", PRIMARY_CONTINUOUS)
"""The measures of the specificity summary: F1 and the primary continuous measure."""

VERDICTS: dict[str, str] = {
    "no significant effect": "the zone's own effect there is not a significant drop (Holm): there is nothing "
                             "for a control to explain",
    "specific": "the zone's effect exceeds its size-matched null (control null): what it attends to matters",
    "mass-driven": "the zone's effect is no larger than its size-matched null's (control null): the amount of "
                   "attention removed explains it",
    "pattern": "the null is no valid control there; uniform (the mass kept, spread evenly over the zone's keys) "
               "hurts significantly and no less than removal: the pattern matters",
    "partly pattern": "no valid null; uniform hurts significantly but less than removal: the pattern explains "
                      "part of the effect, the amount the rest",
    "amount": "no valid null; uniform does not hurt significantly and hurts significantly less than removal: "
              "keeping the amount of attention is enough",
    "inconclusive": "no valid null; uniform neither hurts significantly nor significantly less than removal",
    "no valid control": "neither a valid size-matched null nor the uniform operator at that layer",
}
"""The verdict codes of the ``specificity`` table, each judged at the zone's most damaging layer (by ΔF1);
the report words them (:mod:`mrcbench.report.controls`)."""

SPECIFICITY_FAMILY = [*RUN_KEYS, "variant", "measure"]
"""Families of the own-effect tests this table adds (the zone's continuous effect, uniform's effect): every
layer and zone of one run, variant and measure. The null contrasts keep ``null_contrasts``' family."""


def _layer_list(layers) -> str:
    return ",".join(str(int(layer)) for layer in sorted(layers))


def _own_effects(grid: pd.DataFrame, key: tuple, operator: str) -> pd.DataFrame:
    """Per (layer, zone, qid), seed-averaged, the own effect of the real zones' ``operator`` cells (mode
    layer): masked minus the unmasked pass for F1, the value itself for the continuous measure (a change
    against the unmasked pass already). Empty without such rows or a baseline."""
    selector = np.logical_and.reduce([(grid[c] == v).to_numpy() for c, v in zip(RUN_KEYS, key[:-1], strict=True)])
    run = grid[selector]
    run = run.assign(zone=run["zone"].astype(str), qid=run["qid"].astype(str))
    rows = run[(run["mode"].astype(str) == "layer") & (run["operator"].astype(str) == operator)
               & (run["variant"] == key[-1]) & ~run["zone"].str.startswith(NULL_PREFIX)]
    base = run[run["mode"].astype(str) == "baseline"]
    if rows.empty or base.empty:
        return pd.DataFrame()
    own = base[base["variant"] == key[-1]]
    base = (own if len(own) else base).drop_duplicates(["seed", "qid"]).set_index(["seed", "qid"])["f1"]
    baseline = base.reindex(pd.MultiIndex.from_frame(rows[["seed", "qid"]])).to_numpy()
    rows = rows.assign(f1=rows["f1"].to_numpy() - baseline)
    return rows.groupby(["layer", "zone", "qid"])[[m for m in SPECIFICITY_MEASURES if m in rows]].mean()


def _effect_tests(effects: pd.DataFrame, measure: str, articles: pd.Series, settings: StatsSettings,
                  rng_key: tuple) -> pd.DataFrame:
    """Mean, CI and Holm p (family: every cell of ``effects``) of each (layer, zone) cell's own effect on
    ``measure``, over the questions that have every cell (index layer, zone)."""
    if effects.empty or measure not in effects.columns:
        return pd.DataFrame()
    wide = effects[measure].unstack(["layer", "zone"]).dropna(axis=0, how="any")
    if wide.empty:
        return pd.DataFrame()
    design = ResamplingDesign.from_articles(articles.reindex(wide.index).tolist(), len(wide), settings.min_clusters)
    summary = summarize_paired(wide.to_numpy(dtype=float), design, settings, seeded_rng(settings, *rng_key, measure))
    cells = wide.columns.to_frame(index=False).assign(
        delta=summary.mean, ci_low=summary.ci_low, ci_high=summary.ci_high, p_value=summary.p_value,
        family=0, n_questions=len(wide))
    cells = correct_pvalues(cells, ["family"], settings.alpha)
    return cells.set_index(["layer", "zone"])


def _hurts(delta: float, p_holm: float, alpha: float) -> bool:
    return bool(np.isfinite(delta) and delta < 0 and np.isfinite(p_holm) and p_holm < alpha)


def _verdict(row: dict, alpha: float) -> tuple[str, str]:
    """(control, verdict) of one zone in one layer (:data:`VERDICTS`): no verdict on a zone that does not
    hurt significantly there; else the size-matched null where it is a valid control, else uniform, else
    none. Every test is the Holm-corrected one of its table."""
    control = "null" if row["null_valid"] else "uniform" if row["uniform"] else "none"
    if not _hurts(row["zone_delta"], row["zone_p_holm"], alpha):
        return control, "no significant effect"
    if control == "null":
        return control, "specific" if _hurts(row["null_difference"], row["null_p_holm"], alpha) else "mass-driven"
    if control == "uniform":
        less = (np.isfinite(row["uniform_minus_removal"]) and row["uniform_minus_removal"] > 0
                and np.isfinite(row["uniform_minus_p_holm"]) and row["uniform_minus_p_holm"] < alpha)
        if _hurts(row["uniform_delta"], row["uniform_p_holm"], alpha):
            return control, "partly pattern" if less else "pattern"
        return control, "amount" if less else "inconclusive"
    return control, "no valid control"


def compute_control_effects(
    grid: pd.DataFrame | None, deltas: pd.DataFrame, null_contrasts: pd.DataFrame,
    operator_contrasts: pd.DataFrame, settings: StatsSettings,
) -> pd.DataFrame:
    """The ``control_effects`` table: per (run, variant, zone of :data:`mrcbench.zones.FOUR_ZONES`, measure of
    :data:`SPECIFICITY_MEASURES`, layer) the zone's controls side by side.

    * ``zone_delta``/CI/``zone_p_holm``: the zone's own (renorm) effect: ΔF1 from ``deltas``; the continuous
      measure tested here over every layer and zone of the run (Holm, :data:`SPECIFICITY_FAMILY`).
    * The null (``null_contrasts``): ``null_valid`` (at least ``stats.min_null_feasible_share`` of the
      questions matched), ``feasible_fraction``, the matched questions, the zone's and the null's effect on
      them and their difference (CI, Holm p over the valid cells).
    * ``uniform`` (the grid has that operator for the zone there): its own effect (CI, Holm p over the run's
      uniform cells) and uniform minus removal (``operator_contrasts``).
    * ``control``/``verdict``: :func:`_verdict` (codes in :data:`VERDICTS`).
    """
    empty = CONTROL_EFFECTS.empty()
    if grid is None or deltas is None or deltas.empty:
        return empty
    null_contrasts = null_contrasts if null_contrasts is not None else pd.DataFrame()
    operator_contrasts = operator_contrasts if operator_contrasts is not None else pd.DataFrame()
    if null_contrasts.empty and (operator_contrasts.empty
                                 or not (operator_contrasts["operator"] == "uniform").any()):
        return empty
    grid = with_primary_continuous(grid)
    layer_deltas = deltas[(deltas["mode"].astype(str) == "layer") & (deltas["head"] == -1)
                          & (deltas["metric"] == "f1") & deltas["zone"].isin(FOUR_ZONES)]
    rows = []
    for key, zone_deltas in layer_deltas.groupby([*RUN_KEYS, "variant"], sort=True):
        run = _of_key(grid, key)
        articles = run.assign(qid=run["qid"].astype(str)).drop_duplicates("qid").set_index("qid")["article"]
        renorm = _own_effects(grid, key, "renorm")
        uniform = _own_effects(grid, key, "uniform")
        nulls = _of_key(null_contrasts, key)
        operators = _of_key(operator_contrasts, key)
        for measure in SPECIFICITY_MEASURES:
            renorm_tests = (_effect_tests(renorm, measure, articles, settings, ("specificity_own", *key))
                            if measure != "f1" else None)
            uniform_tests = _effect_tests(uniform, measure, articles, settings, ("specificity_uniform", *key))
            for zone in FOUR_ZONES:
                cells = zone_deltas[zone_deltas["zone"] == zone].dropna(subset=["delta"]).sort_values("layer")
                for _, own in cells.iterrows():
                    layer = int(own["layer"])
                    row = {**dict(zip([*RUN_KEYS, "variant"], key, strict=True)), "zone": zone, "measure": measure,
                           "layer": layer}
                    if renorm_tests is None:
                        row.update(zone_delta=float(own["delta"]), zone_ci_low=float(own["ci_low"]),
                                   zone_ci_high=float(own["ci_high"]), zone_p_holm=float(own["p_holm"]),
                                   n_questions=int(own["n_questions"]))
                    else:
                        tested = _cell(renorm_tests, layer, zone)
                        row.update(zone_delta=tested["delta"], zone_ci_low=tested["ci_low"],
                                   zone_ci_high=tested["ci_high"], zone_p_holm=tested["p_holm"],
                                   n_questions=int(tested["n_questions"]))
                    at = (nulls[(nulls["zone"] == zone) & (nulls["metric"] == measure) & (nulls["layer"] == layer)]
                          if len(nulls) else nulls)
                    at = at.iloc[0] if len(at) else None
                    row.update(
                        null_valid=bool(at is not None and at["valid_control"]),
                        feasible_fraction=float(at["feasible_fraction"]) if at is not None else np.nan,
                        null_n_questions=int(at["n_questions"]) if at is not None else 0,
                        **{name: float(at[column]) if at is not None else np.nan for name, column in (
                            ("zone_delta_matched", "zone_delta"), ("null_delta", "null_delta"),
                            ("null_difference", "difference"), ("null_ci_low", "ci_low"),
                            ("null_ci_high", "ci_high"), ("null_p_holm", "p_holm"))},
                    )
                    own_u = _cell(uniform_tests, layer, zone)
                    contrast = (operators[(operators["operator"] == "uniform") & (operators["metric"] == measure)
                                          & (operators["layer"] == layer) & (operators["zone"] == zone)]
                                if len(operators) else operators)
                    contrast = contrast.iloc[0] if len(contrast) else None
                    row.update(
                        uniform=bool(np.isfinite(own_u["delta"])),
                        uniform_delta=own_u["delta"], uniform_ci_low=own_u["ci_low"],
                        uniform_ci_high=own_u["ci_high"], uniform_p_holm=own_u["p_holm"],
                        **{name: float(contrast[column]) if contrast is not None else np.nan for name, column in (
                            ("uniform_minus_removal", "difference"), ("uniform_minus_ci_low", "ci_low"),
                            ("uniform_minus_ci_high", "ci_high"), ("uniform_minus_p_holm", "p_holm"))},
                    )
                    row["control"], row["verdict"] = _verdict(row, settings.alpha)
                    rows.append(row)
    if not rows:
        return empty
    return _sorted(pd.DataFrame(rows), ["layer"])[CONTROL_EFFECTS.names]


def compute_specificity(effects: pd.DataFrame, settings: StatsSettings) -> pd.DataFrame:
    """The ``specificity`` table: per (run, variant, zone, measure) of ``control_effects``, the row of the
    zone's most damaging layer by ΔF1 (``worst_layer``: the most negative ``zone_delta`` of measure f1, ties
    to the lower layer, as in the ``headline`` table; both measures are judged there) with its controls and
    verdict, plus ``null_valid_layers`` (where the null is a valid control) and ``layers_exceeding`` (those of
    them where zone minus null is negative with Holm p < alpha)."""
    empty = SPECIFICITY.empty()
    if effects is None or effects.empty:
        return empty
    rows = []
    for key, zone_rows in effects.groupby([*RUN_KEYS, "variant", "zone"], sort=False):
        f1 = zone_rows[zone_rows["measure"] == "f1"]
        if f1.empty:
            continue
        worst = int(f1.sort_values(["zone_delta", "layer"], kind="stable").iloc[0]["layer"])
        for measure, cells in zone_rows.groupby("measure", sort=False):
            valid = cells[cells["null_valid"].astype(bool)]
            exceeding = valid[(valid["null_difference"] < 0) & (valid["null_p_holm"] < settings.alpha)]["layer"]
            at = cells[cells["layer"] == worst]
            if at.empty:
                continue
            rows.append({**at.iloc[0].to_dict(), "worst_layer": worst, "n_layers": int(cells["layer"].nunique()),
                         "null_valid_layers": _layer_list(valid["layer"]), "layers_exceeding": _layer_list(exceeding),
                         "n_exceeding": len(exceeding)})
    if not rows:
        return empty
    return _sorted(pd.DataFrame(rows), [])[SPECIFICITY.names]


def _sorted(frame: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    order = {zone: i for i, zone in enumerate(FOUR_ZONES)}
    measure_order = {measure: i for i, measure in enumerate(SPECIFICITY_MEASURES)}
    return frame.sort_values(
        [*RUN_KEYS, "variant", "measure", "zone", *extra],
        key=lambda column: column.map(order) if column.name == "zone"
        else column.map(measure_order) if column.name == "measure" else column,
    ).reset_index(drop=True)


def _of_key(table: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """The rows of one (run, variant) of a contrast table (empty table: itself)."""
    if table is None or table.empty:
        return pd.DataFrame()
    selector = np.logical_and.reduce(
        [(table[column] == value).to_numpy() for column, value in zip([*RUN_KEYS, "variant"], key, strict=True)]
    )
    return table[selector]


def _cell(tests: pd.DataFrame, layer: int, zone: str) -> dict:
    """One (layer, zone) cell of :func:`_effect_tests` (NaNs where it has none)."""
    if tests is None or tests.empty or (layer, zone) not in tests.index:
        return {"delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_holm": np.nan, "n_questions": 0}
    cell = tests.loc[(layer, zone)]
    return {name: float(cell[name]) for name in ("delta", "ci_low", "ci_high", "p_holm")} | {
        "n_questions": int(cell["n_questions"])}
