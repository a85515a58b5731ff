"""The report's "Controls" section and the abstract's clause on them.

Per grid: each zone's Δ beside its size-matched null's Δ per layer (F1 and the primary continuous
measure), the operator profiles (Δ per layer under each ablation operator) and the specificity summary.
Every number comes from the ``null_contrasts``, ``operator_contrasts`` and ``specificity`` tables of
:mod:`mrcbench.stats.controls` and the knobs in ``settings.json``; this module only draws and words them.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from mrcbench.report.blocks import (
    details_html,
    figure_html,
    fmt_ci,
    fmt_p,
    grid_counts,
    run_label,
    table_html,
    zone_label,
)
from mrcbench.report.inputs import ReportData
from mrcbench.stats.common import RUN_KEYS, primary_variant
from mrcbench.stats.controls import PRIMARY_CONTINUOUS
from mrcbench.zones import NULL_ZONES

MEASURES = ("f1", PRIMARY_CONTINUOUS)
MEASURE_LABELS = {"f1": "ΔF1", PRIMARY_CONTINUOUS: "Δ log-prob (mean of start/end)"}
OPERATOR_COLOURS = {"renorm": "#1f77b4", "zero": "#d62728", "uniform": "#2ca02c"}


def _of_run(frame: pd.DataFrame, run: tuple, variant: str | None = None) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame(columns=[] if frame is None else frame.columns)
    keep = np.logical_and.reduce([(frame[c] == v).to_numpy() for c, v in zip(RUN_KEYS, run, strict=True)])
    rows = frame[keep]
    return rows[rows["variant"] == variant] if variant is not None else rows


def _layers_text(layers) -> str:
    return ", ".join(str(int(layer) + 1) for layer in sorted(layers))


def infeasible_text(null_rows: pd.DataFrame) -> str:
    """ "infeasible null cells: P2P in layers 1, 2, …" from the F1 rows of ``null_contrasts``; "every null
    cell feasible" when none."""
    f1 = null_rows[null_rows["metric"] == "f1"]
    parts = [
        f"{zone_label(zone)} in layer(s) {_layers_text(cells.loc[~cells['feasible'].astype(bool), 'layer'])}"
        for zone, cells in f1.groupby("zone", sort=False)
        if not cells["feasible"].astype(bool).all()
    ]
    return "infeasible null cells (the rest of the rows cannot supply the zone's mass; not a size-matched " \
        f"control): {'; '.join(parts)}" if parts else "every null cell feasible"


def null_caption(null_rows: pd.DataFrame, settings: dict) -> str:
    """Draws, tolerance and infeasible cells of one grid's nulls."""
    draws = int(null_rows["null_draws"].max()) if len(null_rows) else settings.get("null_draws", "?")
    tolerance = settings.get("null_tolerance")
    tolerance_text = f"±{100 * float(tolerance):g}% of the zone's mass per row" if tolerance is not None else "?"
    return f"{draws} null draw(s) per cell, tolerance {tolerance_text}; {infeasible_text(null_rows)}"


def null_figure(null_rows: pd.DataFrame, title: str = ""):
    """Rows: F1 and the primary continuous measure; columns: zones. Each panel: the zone's Δ (solid) and its
    null's Δ (dashed) per layer; infeasible null cells drawn as open markers."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    zones = [zone for zone in NULL_ZONES if zone in set(null_rows["zone"])]
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
            feasible = cells["feasible"].astype(bool).to_numpy()
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
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = operator_rows[operator_rows["metric"] == measure]
    zones = [z for z in ("all", *NULL_ZONES) if z in set(rows["zone"])]
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


def _summary_phrase(row: pd.Series, label: str, digits: int = 2) -> str:
    p = fmt_p(row["p_holm"])
    p_text = f"Holm p {p}" if p.startswith("<") else f"Holm p = {p}"
    return f"{label} = {fmt_ci(row['difference'], row['ci_low'], row['ci_high'], digits)}, {p_text}"


def specificity_clause(specificity: pd.DataFrame, run: tuple, variant: str = "paper",
                       zones: tuple[str, ...] = ("p2q", "p2p")) -> str:
    """The abstract's clause for one leg: whether each of ``zones`` exceeds its size-matched null (or,
    where every null cell is infeasible, what the ``uniform`` operator shows), with the layer-averaged
    difference, CI and Holm p of the ``specificity`` table; one clause when the grid has no nulls."""
    rows = _of_run(specificity, run)
    if not rows.empty and variant not in set(rows["variant"]):
        variant = min(rows["variant"])
    rows = rows[rows["variant"] == variant] if not rows.empty else rows
    if rows.empty:
        return "This grid has no size-matched nulls (`ablation.null_draws` 0), so it cannot say whether an " \
            "effect exceeds what removing as much random attention does."
    phrases = []
    for zone in zones:
        f1 = rows[(rows["zone"] == zone) & (rows["measure"] == "f1")]
        if f1.empty:
            phrases.append(f"{zone_label(zone)} has no null in this grid")
            continue
        f1 = f1.iloc[0]
        cont = rows[(rows["zone"] == zone) & (rows["measure"] == PRIMARY_CONTINUOUS)]
        cont = cont.iloc[0] if len(cont) else None
        if f1["control"] == "null":
            layers = [int(x) for x in str(f1["layers_exceeding"]).split(",") if x != ""]
            where = (f"exceeds its size-matched null in layer(s) {_layers_text(layers)} of {int(f1['n_feasible'])} "
                     "feasible" if layers else
                     f"exceeds its size-matched null in none of its {int(f1['n_feasible'])} feasible layer(s)")
            if int(f1["n_infeasible"]):
                where += f" ({int(f1['n_infeasible'])} infeasible layer(s) left out)"
            numbers = _summary_phrase(f1, "zone − null ΔF1 over those layers")
            if cont is not None:
                numbers += "; " + _summary_phrase(cont, "Δ log-prob", 3)
            phrases.append(f"{zone_label(zone)} {where} ({numbers})")
        elif f1["control"] == "uniform":
            layers = [int(x) for x in str(f1["layers_exceeding"]).split(",") if x != ""]
            shows = (f"lowers F1 significantly in layer(s) {_layers_text(layers)}" if layers
                     else "lowers F1 significantly in no layer")
            numbers = _summary_phrase(f1, "ΔF1 over layers")
            if cont is not None:
                numbers += "; " + _summary_phrase(cont, "Δ log-prob", 3)
            phrases.append(f"{zone_label(zone)}'s size-matched null is infeasible in all {int(f1['n_infeasible'])} "
                           f"layer(s); the `uniform` operator (same mass, pattern removed) {shows} ({numbers})")
        else:
            phrases.append(f"{zone_label(zone)}'s size-matched null is infeasible in all {int(f1['n_infeasible'])} "
                           "layer(s) and the grid has no `uniform` operator, so its effect has no size control")
    return "Against size-matched controls: " + "; ".join(phrases) + "."


def _cell_table(contrasts: pd.DataFrame) -> pd.DataFrame:
    """A contrasts table's per-cell rows for display: 1-based layer, zone label, difference [CI], p."""
    return contrasts[contrasts["metric"].isin(MEASURES)].assign(
        layer=lambda f: f["layer"] + 1, zone=lambda f: f["zone"].map(zone_label),
        difference_ci=lambda f: [fmt_ci(d, lo, hi, 3) for d, lo, hi in
                                 zip(f["difference"], f["ci_low"], f["ci_high"], strict=True)],
        p_holm=lambda f: f["p_holm"].map(fmt_p))


def controls_section_html(data: ReportData, variant: str | None = None) -> str:
    """The whole "Controls" section: per grid, the null figure and table, the operator profiles and the
    specificity table; a sentence when no grid has nulls or other operators."""
    nulls, operators = data.tables.get("null_contrasts"), data.tables.get("operator_contrasts")
    specificity = data.tables.get("specificity")
    settings = data.settings
    min_clusters = settings.get("min_clusters")
    nulls = nulls if nulls is not None else pd.DataFrame()
    operators = operators if operators is not None else pd.DataFrame()
    specificity = specificity if specificity is not None else pd.DataFrame()
    parts = []
    if nulls.empty:
        parts.append("<p>No grid has size-matched null cells (config <code>ablation.null_draws</code> 0).</p>")
    if operators.empty:
        parts.append("<p>No grid has an ablation operator other than <code>renorm</code> "
                     "(config <code>ablation.operators</code>).</p>")
    runs = sorted({tuple(row) for frame in (nulls, operators) if not frame.empty
                   for row in frame[RUN_KEYS].drop_duplicates().itertuples(index=False)})
    for run in runs:
        label = run_label(*run)
        run_nulls, run_ops = _of_run(nulls, run), _of_run(operators, run)
        variants = sorted(set(run_nulls.get("variant", [])) | set(run_ops.get("variant", [])))
        chosen = variant if variant in variants else primary_variant(variants)
        run_nulls, run_ops = _of_run(nulls, run, chosen), _of_run(operators, run, chosen)
        if not run_nulls.empty:
            counts = grid_counts(run_nulls.head(1), min_clusters)
            parts.append(figure_html(
                null_figure(run_nulls, title=f"{label} · zone vs size-matched null"),
                f"Figure: each zone's Δ (solid) beside its size-matched null's Δ (dashed; open marker: infeasible "
                f"cell) per layer, ΔF1 and {MEASURE_LABELS[PRIMARY_CONTINUOUS]}, {label}, {chosen} variant. "
                f"{html.escape(null_caption(run_nulls, settings), quote=False)}; {counts}."))
            table = _cell_table(run_nulls)
            parts.append(details_html(f"Zone minus null per cell: {label}", table_html(
                table[["metric", "layer", "zone", "zone_delta", "null_delta", "difference_ci", "p_holm",
                       "removed_mass", "null_removed_mass", "mass_match", "feasible_fraction", "feasible"]],
                f"Table: zone minus size-matched null per (zone, layer), Holm within "
                f"({', '.join(settings.get('null_contrast_correction_family', []))}).", digits=3)))
        spec = _of_run(specificity, run, chosen)
        if not spec.empty:
            spec = spec.assign(
                zone=spec["zone"].map(zone_label),
                layers_exceeding=spec["layers_exceeding"].map(
                    lambda text: _layers_text(int(x) for x in str(text).split(",") if x != "") or "none"),
                difference_ci=[fmt_ci(d, lo, hi, 3) for d, lo, hi in
                               zip(spec["difference"], spec["ci_low"], spec["ci_high"])],
                p_holm=spec["p_holm"].map(fmt_p))
            parts.append(table_html(
                spec[["zone", "measure", "control", "layers_exceeding", "n_feasible", "n_infeasible",
                      "difference_ci", "p_holm", "n_questions"]],
                f"Table: specificity, {label}: the layers (1-based) where the zone's effect exceeds its "
                "size-matched null (negative zone − null difference, Holm p < α); difference: averaged over the "
                "feasible layers. Where every null cell is infeasible, control `uniform` gives the uniform "
                "operator's own effect instead (same mass, pattern removed), `none` no control.", digits=3))
        if not run_ops.empty:
            ops = ", ".join(sorted(set(run_ops["operator"])))
            parts.append(figure_html(
                operator_figure(run_ops, "f1", title=f"{label} · operator profiles (ΔF1)"),
                f"Figure: ΔF1 per layer under each ablation operator (renorm: the paper's blank; {ops}), "
                f"{label}, {chosen} variant; {grid_counts(run_ops.head(1), min_clusters)}."))
            table = _cell_table(run_ops)
            parts.append(details_html(f"Operator minus renorm per cell: {label}", table_html(
                table[["operator", "metric", "layer", "zone", "renorm_delta", "operator_delta", "difference_ci",
                       "p_holm", "removed_mass"]],
                "Table: each operator minus renorm per (zone, layer), Holm within "
                f"({', '.join(settings.get('operator_contrast_correction_family', []))}).", digits=3)))
    return "\n".join(parts)
