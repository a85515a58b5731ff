"""The report's "Controls" section and the abstract's verdict table.

The section opens with one figure: for P2Q and P2P in every grid, the zone's ΔF1 per layer under removal
(renorm), its size-matched null's (on the questions whose draw matched) and ``uniform``'s. Then per grid:
the controls of P2Q and P2P layer by layer with CIs and corrected p (``control_effects``), each zone's Δ
beside its null's for all four zones, the operator profiles, and the per-cell contrast tables. The verdict
per zone (:data:`VERDICT_WORDS`) is judged at the zone's most damaging layer (``specificity``). Every number
comes from the ``null_contrasts``, ``operator_contrasts``, ``control_effects`` and ``specificity`` tables of
:mod:`mrcbench.stats.controls` and the knobs in ``settings.json``; this module only draws and words them.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mrcbench.report.blocks import (
    details_html,
    figure_caption,
    figure_html,
    fmt_ci,
    fmt_p,
    grid_counts,
    p_text,
    run_label,
    table_caption,
    table_html,
    zone_label,
)
from mrcbench.report.inputs import ReportData
from mrcbench.stats.common import primary_variant
from mrcbench.stats.controls import PRIMARY_CONTINUOUS
from mrcbench.tables import RUN_KEYS
from mrcbench.zones import FOUR_ZONES, PAPER_ZONES

MEASURES = ("f1", PRIMARY_CONTINUOUS)
MEASURE_LABELS = {"f1": "ΔF1", PRIMARY_CONTINUOUS: "Δ log-prob (mean of start/end)"}
OPERATOR_COLOURS = {"renorm": "#1f77b4", "zero": "#d62728", "uniform": "#2ca02c"}
NULL_COLOUR = "#7f7f7f"

VERDICT_WORDS = {
    "no significant effect": "no significant effect to control",
    "specific": "specific (beyond a size-matched null)",
    "mass-driven": "mass-driven (no more than its null)",
    "pattern": "the pattern matters (uniform as damaging as removal)",
    "partly pattern": "partly the pattern (uniform hurts, less than removal)",
    "amount": "the amount matters (uniform harmless)",
    "inconclusive": "inconclusive (uniform neither clearly harmful nor clearly less harmful than removal)",
    "no valid control": "no valid control",
}
"""How the report words each verdict code of the ``specificity`` table (mrcbench.stats.controls.VERDICTS)."""


def _of_run(frame: pd.DataFrame, run: tuple, variant: str | None = None) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame(columns=[] if frame is None else frame.columns)
    keep = np.logical_and.reduce([(frame[c] == v).to_numpy() for c, v in zip(RUN_KEYS, run, strict=True)])
    rows = frame[keep]
    return rows[rows["variant"] == variant] if variant is not None else rows


def _layers_text(layers) -> str:
    return ", ".join(str(int(layer) + 1) for layer in sorted(layers))


def infeasible_text(null_rows: pd.DataFrame) -> str:
    """ "no valid null: P2P in layers 1, 2, …" from the F1 rows of ``null_contrasts``; "a valid null in every
    cell" when none."""
    f1 = null_rows[null_rows["metric"] == "f1"]
    parts = [
        f"{zone_label(zone)} in {_layers_phrase(cells.loc[~cells['valid_control'].astype(bool), 'layer'])}"
        for zone, cells in f1.groupby("zone", sort=False)
        if not cells["valid_control"].astype(bool).all()
    ]
    return "no valid null (too few questions whose draw matched the zone's mass): " \
        f"{'; '.join(parts)}" if parts else "a valid null in every cell"


def _layers_phrase(layers) -> str:
    layers = sorted(int(layer) for layer in layers)
    return ("layer " if len(layers) == 1 else "layers ") + _layers_text(layers)


def null_caption(null_rows: pd.DataFrame, settings: dict) -> str:
    """Draws, tolerance, the validity rule and the cells without a valid null of one grid's nulls."""
    draws = int(null_rows["null_draws"].max()) if len(null_rows) else settings.get("null_draws", "?")
    tolerance = settings.get("null_tolerance")
    tolerance_text = f"±{100 * float(tolerance):g}% of the zone's mass per row" if tolerance is not None else "?"
    share = settings.get("min_null_feasible_share")
    rule = (f"a null cell is a valid control where at least {100 * float(share):g}% of its questions' draws "
            "matched, and is compared on those questions only" if share is not None else "")
    draws_text = "1 null draw" if draws == 1 else f"{draws} null draws"
    return f"{draws_text} per cell, tolerance {tolerance_text}; {rule}; {infeasible_text(null_rows)}"


def null_figure(null_rows: pd.DataFrame, title: str = ""):
    """Rows: F1 and the primary continuous measure; columns: zones. Each panel: the zone's Δ (solid) and its
    null's Δ on the matched questions (dashed) per layer; cells without a valid null drawn as open markers."""

    zones = [zone for zone in FOUR_ZONES if zone in set(null_rows["zone"])]
    measures = [m for m in MEASURES if m in set(null_rows["metric"])]
    fig = make_subplots(rows=len(measures), cols=len(zones), shared_xaxes=True,
                        subplot_titles=[f"{zone_label(z)} · {MEASURE_LABELS[m]}" for m in measures for z in zones],
                        horizontal_spacing=0.05, vertical_spacing=0.12)
    for row, measure in enumerate(measures, start=1):
        for col, zone in enumerate(zones, start=1):
            cells = null_rows[(null_rows["metric"] == measure) & (null_rows["zone"] == zone)].sort_values("layer")
            layers = cells["layer"] + 1
            fig.add_trace(go.Scatter(x=layers, y=cells["zone_delta"], mode="lines+markers", name="zone",
                                     line={"color": "#1f77b4"}, showlegend=row == 1 and col == 1,
                                     hovertemplate=f"{zone_label(zone)} layer %{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=row, col=col)
            feasible = cells["valid_control"].astype(bool).to_numpy()
            fig.add_trace(go.Scatter(
                x=layers, y=cells["null_delta"], mode="lines+markers", name="size-matched null",
                line={"color": "#7f7f7f", "dash": "dash"},
                marker={"symbol": ["circle" if ok else "circle-open" for ok in feasible], "size": 8},
                showlegend=row == 1 and col == 1,
                hovertemplate=f"null of {zone_label(zone)} layer %{{x}}: %{{y:.3f}}<extra></extra>"),
                row=row, col=col)
            fig.update_xaxes(title_text="layer" if row == len(measures) else None, dtick=1, row=row, col=col)
    fig.update_layout(title=title or None, height=260 * max(1, len(measures)) + 80,
                      width=min(1150, 260 * max(1, len(zones)) + 120),
                      margin={"l": 50, "r": 20, "t": 70 if title else 40, "b": 40})
    return fig


def operator_figure(operator_rows: pd.DataFrame, measure: str = "f1", title: str = ""):
    """One panel per zone: Δ per layer under renorm and under each other operator."""

    rows = operator_rows[operator_rows["metric"] == measure]
    zones = [z for z in ("all", *FOUR_ZONES) if z in set(rows["zone"])]
    fig = make_subplots(rows=1, cols=max(1, len(zones)), subplot_titles=[zone_label(z) for z in zones],
                        horizontal_spacing=0.04)
    for col, zone in enumerate(zones, start=1):
        cells = rows[rows["zone"] == zone].sort_values("layer")
        renorm = cells.drop_duplicates("layer")
        fig.add_trace(go.Scatter(x=renorm["layer"] + 1, y=renorm["renorm_delta"], mode="lines+markers",
                                 name="renorm", line={"color": OPERATOR_COLOURS["renorm"]}, showlegend=col == 1),
                      row=1, col=col)
        for operator, op_cells in cells.groupby("operator", sort=True):
            fig.add_trace(go.Scatter(x=op_cells["layer"] + 1, y=op_cells["operator_delta"], mode="lines+markers",
                                     name=operator, line={"color": OPERATOR_COLOURS.get(operator, "#000")},
                                     showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=col)
    fig.update_layout(title=title or None, height=340, width=min(1150, 230 * max(1, len(zones)) + 120),
                      margin={"l": 50, "r": 20, "t": 70 if title else 40, "b": 40})
    return fig


def verdict_text(row: pd.Series | dict) -> str:
    """The verdict of one ``specificity`` row in words, with the layers (1-based) where the zone exceeds its
    null when there are any: "specific (beyond a size-matched null in layers 2, 3, 4)"."""
    words = VERDICT_WORDS.get(str(row["verdict"]), str(row["verdict"]))
    layers = [int(x) for x in str(row.get("layers_exceeding", "") or "").split(",") if x != ""]
    if layers and row["verdict"] == "specific":
        return f"{words[:-1]} in {_layers_phrase(layers)})"
    if layers:
        return f"{words}; beyond its null in {_layers_phrase(layers)}"
    return words


def control_result(row: pd.Series | dict) -> str:
    """What the deciding control showed at the zone's most damaging layer, as one short phrase."""
    if row["control"] == "null":
        share = f"{100 * float(row['feasible_fraction']):.0f}% of questions matched"
        return (f"zone − null ΔF1 {fmt_ci(row['null_difference'], row['null_ci_low'], row['null_ci_high'])}, "
                f"Holm {p_text(row['null_p_holm'])} ({share})")
    if row["control"] == "uniform":
        return (f"uniform ΔF1 {fmt_ci(row['uniform_delta'], row['uniform_ci_low'], row['uniform_ci_high'])}, "
                f"Holm {p_text(row['uniform_p_holm'])}")
    return "–"


def control_name(row: pd.Series | dict) -> str:
    if row["control"] == "null":
        return "size-matched null"
    if row["control"] == "uniform":
        share = row.get("feasible_fraction")
        why = (f"null matched on {100 * float(share):.0f}% of questions" if share is not None and np.isfinite(share)
               else "no null")
        return f"uniform ({why})"
    return "none"


def verdict_table(specificity: pd.DataFrame, headline: pd.DataFrame | None = None, variant: str | None = None,
                  zones: tuple[str, ...] = PAPER_ZONES) -> pd.DataFrame:
    """The abstract's verdict table: one row per leg (model x eval set) and headline zone (the paper's two
    and any other zone the ``headline`` table ranks in a leg's top two), F1 rows of ``specificity``: the most
    damaging layer (1-based), ΔF1 [CI], the control used and what it showed, the verdict in words."""
    columns = ["model", "evaluated on", "zone", "layer", "ΔF1 [CI]", "control", "control result", "verdict"]
    if specificity is None or specificity.empty:
        return pd.DataFrame(columns=columns)
    rows = specificity[specificity["measure"] == "f1"]
    variants = set(rows["variant"])
    chosen = variant if variant in variants else primary_variant(variants)
    rows = rows[rows["variant"] == chosen]
    top = {}
    if headline is not None and not headline.empty:
        lead = headline[(headline["metric"] == "f1") & (headline["variant"] == chosen)]
        for run, leg in lead.groupby(list(RUN_KEYS), sort=False):
            top[run] = set(leg["zone"])
    order = {zone: i for i, zone in enumerate(FOUR_ZONES)}
    out = []
    for run, leg in rows.groupby(list(RUN_KEYS), sort=True):
        wanted = set(zones) | top.get(run, set())
        for _, row in sorted(leg.iterrows(), key=lambda item: order.get(item[1]["zone"], 99)):
            if row["zone"] not in wanted:
                continue
            out.append({
                "model": row["model"], "evaluated on": row["eval_set"], "zone": zone_label(row["zone"]),
                "layer": int(row["worst_layer"]) + 1,
                "ΔF1 [CI]": fmt_ci(row["zone_delta"], row["zone_ci_low"], row["zone_ci_high"]),
                "control": control_name(row), "control result": control_result(row), "verdict": verdict_text(row),
            })
    return pd.DataFrame(out, columns=columns)


def verdict_counts(specificity: pd.DataFrame, zone: str, variant: str | None = None,
                   measure: str = "f1") -> dict[str, int]:
    """How many grids give each verdict for ``zone`` (rows of ``measure``, the primary variant)."""
    if specificity is None or specificity.empty:
        return {}
    rows = specificity[(specificity["measure"] == measure) & (specificity["zone"] == zone)]
    if rows.empty:
        return {}
    chosen = variant if variant in set(rows["variant"]) else primary_variant(set(rows["variant"]))
    return rows[rows["variant"] == chosen]["verdict"].value_counts().to_dict()


def overview_figure(effects: pd.DataFrame, variant: str, zones: tuple[str, ...] = PAPER_ZONES):
    """One row per grid, one column per zone of ``zones``: ΔF1 per layer (1-based) under removal (renorm,
    bootstrap CI as error bars), under the size-matched null on its matched questions (filled markers where it
    is a valid control, open where not) and under uniform (CI as error bars)."""

    rows = effects[(effects["measure"] == "f1") & (effects["variant"] == variant) & effects["zone"].isin(zones)]
    runs = sorted({tuple(run) for run in rows[list(RUN_KEYS)].drop_duplicates().itertuples(index=False)})
    titles = [f"{run[0]} · {run[2]} · {zone_label(zone)}" for run in runs for zone in zones]
    fig = make_subplots(rows=max(1, len(runs)), cols=len(zones), shared_xaxes=False, subplot_titles=titles,
                        horizontal_spacing=0.08, vertical_spacing=0.25 / max(1, len(runs)))
    legend = set()

    def bars(frame, value, low, high):
        return {"type": "data", "symmetric": False, "array": (frame[high] - frame[value]).to_numpy(),
                "arrayminus": (frame[value] - frame[low]).to_numpy(), "thickness": 1}

    for r, run in enumerate(runs, start=1):
        run_rows = _of_run(rows, run)
        for c, zone in enumerate(zones, start=1):
            cells = run_rows[run_rows["zone"] == zone].sort_values("layer")
            layers = cells["layer"] + 1
            fig.add_trace(go.Scatter(
                x=layers, y=cells["zone_delta"], mode="lines+markers", name="removal (renorm)",
                line={"color": OPERATOR_COLOURS["renorm"]}, error_y=bars(cells, "zone_delta", "zone_ci_low", "zone_ci_high"),
                showlegend="renorm" not in legend, legendgroup="renorm"), row=r, col=c)
            legend.add("renorm")
            matched = cells[np.isfinite(cells["null_delta"].astype(float))]
            if len(matched):
                valid = matched["null_valid"].astype(bool).to_numpy()
                fig.add_trace(go.Scatter(
                    x=matched["layer"] + 1, y=matched["null_delta"], mode="lines+markers",
                    name="size-matched null (open: not a valid control)", line={"color": NULL_COLOUR, "dash": "dash"},
                    marker={"symbol": ["circle" if ok else "circle-open" for ok in valid], "size": 8},
                    customdata=(100 * matched["feasible_fraction"]).to_numpy(),
                    hovertemplate="layer %{x}: null ΔF1 %{y:.1f} (%{customdata:.0f}% of questions matched)<extra></extra>",
                    showlegend="null" not in legend, legendgroup="null"), row=r, col=c)
                legend.add("null")
            uniform = cells[cells["uniform"].astype(bool)]
            if len(uniform):
                fig.add_trace(go.Scatter(
                    x=uniform["layer"] + 1, y=uniform["uniform_delta"], mode="lines+markers", name="uniform (mass kept)",
                    line={"color": OPERATOR_COLOURS["uniform"]},
                    error_y=bars(uniform, "uniform_delta", "uniform_ci_low", "uniform_ci_high"),
                    showlegend="uniform" not in legend, legendgroup="uniform"), row=r, col=c)
                legend.add("uniform")
            fig.update_xaxes(title_text="layer" if r == len(runs) else None, dtick=1, row=r, col=c)
            fig.update_yaxes(title_text="ΔF1" if c == 1 else None, row=r, col=c)
    fig.update_layout(height=230 * max(1, len(runs)) + 90, width=min(1100, 420 * len(zones) + 120),
                      margin={"l": 50, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.08 if len(runs) > 2 else -0.2})
    return fig


def _effects_table(effects: pd.DataFrame) -> pd.DataFrame:
    """``control_effects`` rows for display: per measure and layer (1-based), removal, null and uniform."""
    digits = {"f1": 1, PRIMARY_CONTINUOUS: 3}
    out = []
    for _, row in effects.iterrows():
        d = digits.get(row["measure"], 3)
        out.append({
            "measure": MEASURE_LABELS.get(row["measure"], row["measure"]), "zone": zone_label(row["zone"]),
            "layer": int(row["layer"]) + 1,
            "removal [CI]": fmt_ci(row["zone_delta"], row["zone_ci_low"], row["zone_ci_high"], d),
            "Holm p": fmt_p(row["zone_p_holm"]),
            "matched": f"{100 * row['feasible_fraction']:.0f}%" if np.isfinite(row["feasible_fraction"]) else "–",
            "null": fmt_ci(row["null_delta"], np.nan, np.nan, d),
            "zone − null [CI]": fmt_ci(row["null_difference"], row["null_ci_low"], row["null_ci_high"], d)
            + ("" if row["null_valid"] or not np.isfinite(row["null_difference"]) else " (no valid null)"),
            "Holm p ": fmt_p(row["null_p_holm"]),
            "uniform [CI]": fmt_ci(row["uniform_delta"], row["uniform_ci_low"], row["uniform_ci_high"], d),
            "Holm p  ": fmt_p(row["uniform_p_holm"]),
            "verdict": VERDICT_WORDS.get(row["verdict"], row["verdict"]),
        })
    return pd.DataFrame(out)


def _cell_table(contrasts: pd.DataFrame) -> pd.DataFrame:
    """A contrasts table's per-cell rows for display: 1-based layer, zone label, difference [CI], p."""
    return contrasts[contrasts["metric"].isin(MEASURES)].assign(
        layer=lambda f: f["layer"] + 1, zone=lambda f: f["zone"].map(zone_label),
        difference_ci=lambda f: [fmt_ci(d, lo, hi, 3) for d, lo, hi in
                                 zip(f["difference"], f["ci_low"], f["ci_high"], strict=True)],
        p_holm=lambda f: f["p_holm"].map(fmt_p))


def controls_section_html(data: ReportData, variant: str | None = None) -> str:
    """The whole "Controls" section: the overview figure, then per grid the controls of P2Q and P2P layer by
    layer, the null figure and table for all four zones, the operator profiles; a sentence when no grid has
    nulls or other operators."""
    nulls, operators = data.tables.get("null_contrasts"), data.tables.get("operator_contrasts")
    effects = data.tables.get("control_effects")
    settings = data.settings
    min_clusters = settings.get("min_clusters")
    nulls = nulls if nulls is not None else pd.DataFrame()
    operators = operators if operators is not None else pd.DataFrame()
    effects = effects if effects is not None else pd.DataFrame()
    parts = []
    if nulls.empty:
        parts.append("<p>No grid has size-matched null cells (config <code>ablation.null_draws</code> 0).</p>")
    if operators.empty:
        parts.append("<p>No grid has an ablation operator other than <code>renorm</code> "
                     "(config <code>ablation.operators</code>, <code>ablation.zone_operators</code>).</p>")
    if not effects.empty:
        chosen = variant if variant in set(effects["variant"]) else primary_variant(set(effects["variant"]))
        share = settings.get("min_null_feasible_share")
        share_text = f"at least {100 * float(share):g}%" if share is not None else "enough"
        parts.append(figure_html(
            overview_figure(effects, chosen),
            figure_caption(
            "Look first at each zone's most damaging layer: removal far below a valid null means the zone matters "
            "for what it attends to; uniform as low as removal means its pattern matters. "
            "P2Q and P2P in every grid, ΔF1 per layer (1-based) under removal (blue, the paper's blank), "
            "under a size-matched random null that removes the same attention mass from other keys of the same "
            f"rows (grey, dashed; on the questions whose draw matched; filled where {share_text} of them did, "
            "so that it is a valid control) and under uniform, which keeps the zone's mass but spreads it evenly "
            f"over its keys (green); bars: {100 * float(settings.get('confidence', 0.95)):g}% bootstrap CIs; "
            f"{chosen} variant.", label="controls-overview")))
    runs = sorted({tuple(row) for frame in (nulls, operators) if not frame.empty
                   for row in frame[list(RUN_KEYS)].drop_duplicates().itertuples(index=False)})
    for run in runs:
        label = run_label(*run)
        run_nulls, run_ops = _of_run(nulls, run), _of_run(operators, run)
        variants = sorted(set(run_nulls.get("variant", [])) | set(run_ops.get("variant", [])))
        chosen = variant if variant in variants else primary_variant(variants)
        run_nulls, run_ops = _of_run(nulls, run, chosen), _of_run(operators, run, chosen)
        run_effects = _of_run(effects, run, chosen)
        run_effects = run_effects[run_effects["zone"].isin(PAPER_ZONES)] if not run_effects.empty else run_effects
        if not run_effects.empty:
            parts.append(table_html(
                _effects_table(run_effects),
                table_caption(
                "Read the verdict column at the zone's most damaging layer first. "
                f"The controls of P2Q and P2P per layer (1-based), {label}: the zone's effect under removal, "
                "the share of questions whose null matched, the null's effect on them and zone − null paired on "
                "them (Holm over the grid's valid null cells), uniform's effect (Holm over the grid's uniform "
                "cells), and the verdict that layer's controls give. The abstract's verdict is the one at the "
                "zone's most damaging layer.")))
        if not run_nulls.empty:
            counts = grid_counts(run_nulls.head(1).assign(n_questions=run_nulls["n_grid_questions"].head(1)),
                                 min_clusters)
            parts.append(figure_html(
                null_figure(run_nulls, title=f"{label} · zone vs size-matched null"),
                figure_caption(
                "Where the solid line falls below the dashed one at a filled marker, the zone hurts more than "
                "removing as much random attention. "
                f"Each zone's Δ (solid) beside its size-matched null's Δ (dashed; open marker: not a valid "
                f"control) per layer, on the questions whose null draw matched, ΔF1 and "
                f"{MEASURE_LABELS[PRIMARY_CONTINUOUS]}, {label}, {chosen} variant. "
                f"{html.escape(null_caption(run_nulls, settings), quote=False)}; {counts}.")))
            table = _cell_table(run_nulls)
            parts.append(details_html(f"Zone minus null per cell: {label}", table_html(
                table[["metric", "layer", "zone", "n_questions", "n_grid_questions", "zone_delta", "zone_delta_all",
                       "null_delta", "difference_ci", "p_holm", "removed_mass", "null_removed_mass", "mass_match",
                       "feasible_fraction", "valid_control"]],
                table_caption(
                "Zone minus size-matched null per (zone, layer), on the questions whose null matched "
                "(n_questions of n_grid_questions); zone_delta on those questions, zone_delta_all on all of them; "
                f"Holm over the valid cells of ({', '.join(settings.get('null_contrast_correction_family', []))})."),
                digits=3)))
        if not run_ops.empty:
            ops = ", ".join(sorted(set(run_ops["operator"])))
            parts.append(figure_html(
                operator_figure(run_ops, "f1", title=f"{label} · operator profiles (ΔF1)"),
                figure_caption(
                "A line close to renorm's means the operator hurts as much as the paper's blank. "
                f"ΔF1 per layer under each ablation operator (renorm: the paper's blank; {ops}), "
                f"{label}, {chosen} variant; {grid_counts(run_ops.head(1), min_clusters)}.")))
            table = _cell_table(run_ops)
            parts.append(details_html(f"Operator minus renorm per cell: {label}", table_html(
                table[["operator", "metric", "layer", "zone", "renorm_delta", "operator_delta", "difference_ci",
                       "p_holm", "removed_mass"]],
                table_caption(
                "Each operator minus renorm per (zone, layer), Holm within "
                f"({', '.join(settings.get('operator_contrast_correction_family', []))})."), digits=3)))
    return "\n".join(parts)
