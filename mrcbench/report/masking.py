"""Figures of the report's "Zone × layer masking" and "Head-level masking" sections.

Zone x layer heatmaps of the masking deltas (the paper's seismic colour scale and range) and the
head-level deltas, from the ``deltas`` table of :mod:`mrcbench.stats.deltas`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib import colormaps
from plotly.subplots import make_subplots

from mrcbench.report.blocks import DELTA_RANGE, zone_label
from mrcbench.zones import ZONE_ORDER

# ==================================================================================================
# Figures
# ==================================================================================================


def seismic_colorscale(
    zmin: float = DELTA_RANGE[0], zmax: float = DELTA_RANGE[1], steps: int = 11
) -> list[list[Any]]:
    """matplotlib's ``seismic`` re-centred so that white sits at 0 on [zmin, zmax].

    Like seaborn's ``center=0``: the blue half spans [zmin, 0] and the red half [0, zmax], so blue
    means a drop and red a gain whatever the asymmetry of the range.
    """

    cmap = colormaps["seismic"]
    centre = -zmin / (zmax - zmin)
    scale = []
    for fraction in np.linspace(0.0, 1.0, steps):
        scale.append([centre * fraction, cmap(0.5 * fraction)])
    for fraction in np.linspace(0.0, 1.0, steps)[1:]:
        scale.append([centre + (1 - centre) * fraction, cmap(0.5 + 0.5 * fraction)])
    colours = [
        [float(pos), "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * np.array(rgba[:3])))] for pos, rgba in scale
    ]
    colours[steps - 1][1] = "rgb(255,255,255)"  # exactly white at 0 (the 256-entry LUT is a step off)
    return colours


def _significance_mark(row: pd.Series) -> str:
    if bool(row.get("significant_holm", False)):
        return "*"
    if bool(row.get("significant_bh", False)):
        return "+"
    return ""


def zone_layer_heatmap_trace(
    cells: pd.DataFrame, zmin: float = DELTA_RANGE[0], zmax: float = DELTA_RANGE[1], show_scale: bool = True
):
    """One paper-style heatmap: x = zones, y = layers (1 at the bottom), colour = delta, marks = tests.

    Values beyond the colour range saturate; the hover and the tables carry the raw numbers.
    """

    zones = [zone for zone in ZONE_ORDER if zone in set(cells["zone"])]
    layers = sorted(int(layer) for layer in cells["layer"].unique())
    table = cells.set_index(["layer", "zone"])
    z, text, custom = [], [], []
    for layer in layers:
        z_row, text_row, custom_row = [], [], []
        for zone in zones:
            if (layer, zone) in table.index:
                row = table.loc[(layer, zone)]
                z_row.append(float(row["delta"]))
                text_row.append(_significance_mark(row))
                custom_row.append(
                    [
                        row.get("ci_low", np.nan),
                        row.get("ci_high", np.nan),
                        row.get("p_holm", np.nan),
                        row.get("p_bh", np.nan),
                        row.get("seed_delta_sd", np.nan),
                        row.get("removed_mass", np.nan),
                        row.get("n_questions", np.nan),
                    ]
                )
            else:
                z_row.append(None)
                text_row.append("")
                custom_row.append([np.nan] * 7)
        z.append(z_row)
        text.append(text_row)
        custom.append(custom_row)
    return go.Heatmap(
        z=z,
        x=[zone_label(zone) for zone in zones],
        y=[layer + 1 for layer in layers],
        text=text,
        texttemplate="%{text}",
        textfont={"size": 14},
        customdata=custom,
        colorscale=seismic_colorscale(zmin, zmax),
        zmin=zmin,
        zmax=zmax,
        showscale=show_scale,
        colorbar={"title": {"text": "Δ"}, "len": 0.9},
        hovertemplate=(
            "layer %{y}, %{x}<br>Δ = %{z:.2f} [%{customdata[0]:.2f}, %{customdata[1]:.2f}]"
            "<br>Holm p = %{customdata[2]:.3g}, BH p = %{customdata[3]:.3g}"
            "<br>seed sd = %{customdata[4]:.2f}, removed mass = %{customdata[5]:.3f}"
            "<br>n = %{customdata[6]} questions<extra></extra>"
        ),
        xgap=1,
        ygap=1,
    )


def zone_layer_figure(deltas: pd.DataFrame, panels: list[tuple[str, str]], title: str = ""):
    """Heatmaps side by side, one per (variant, metric) panel, for one run."""

    fig = make_subplots(
        rows=1,
        cols=len(panels),
        horizontal_spacing=0.06,
        subplot_titles=[f"Δ{metric.upper()} · {variant}" for variant, metric in panels],
    )
    n_layers = 1
    for col, (variant, metric) in enumerate(panels, start=1):
        cells = deltas[(deltas["variant"] == variant) & (deltas["metric"] == metric)]
        n_layers = max(n_layers, cells["layer"].nunique())
        fig.add_trace(zone_layer_heatmap_trace(cells, show_scale=col == len(panels)), row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, row=1, col=col)
    fig.update_layout(
        title=title or None,
        height=max(330, 26 * n_layers + 150),
        width=min(1150, 260 * len(panels) + 120),
        margin={"l": 50, "r": 20, "t": 70 if title else 40, "b": 40},
        plot_bgcolor="white",
    )
    return fig


def head_delta_figure(
    cells: pd.DataFrame, title: str = "", zmin: float = DELTA_RANGE[0], zmax: float = DELTA_RANGE[1]
):
    """Head-level masking: one layer x head heatmap of delta per zone (layer 1 at the bottom)."""

    zones = [zone for zone in ZONE_ORDER if zone in set(cells["zone"])]
    fig = make_subplots(
        rows=1, cols=len(zones), subplot_titles=[zone_label(z) for z in zones], horizontal_spacing=0.05
    )
    n_layers = 1
    for col, zone in enumerate(zones, start=1):
        subset = cells[cells["zone"] == zone]
        delta = subset.pivot_table(index="layer", columns="head", values="delta").sort_index()
        marks = (
            subset.assign(mark=[_significance_mark(row) for _, row in subset.iterrows()])
            .pivot(index="layer", columns="head", values="mark")
            .reindex_like(delta)
            .fillna("")
        )
        custom = np.stack(
            [
                subset.pivot_table(index="layer", columns="head", values=v).reindex_like(delta).to_numpy()
                for v in ("ci_low", "ci_high", "p_holm")
            ],
            axis=-1,
        )
        n_layers = max(n_layers, len(delta))
        fig.add_trace(
            go.Heatmap(
                z=delta.to_numpy(),
                x=[h + 1 for h in delta.columns],
                y=[layer + 1 for layer in delta.index],
                text=marks.to_numpy(),
                texttemplate="%{text}",
                customdata=custom,
                colorscale=seismic_colorscale(zmin, zmax),
                zmin=zmin,
                zmax=zmax,
                showscale=col == len(zones),
                colorbar={"title": {"text": "Δ"}},
                xgap=1,
                ygap=1,
                hovertemplate=(
                    f"{zone_label(zone)}, layer %{{y}}, head %{{x}}<br>Δ = %{{z:.2f}} "
                    "[%{customdata[0]:.2f}, %{customdata[1]:.2f}]"
                    "<br>Holm p = %{customdata[2]:.3g}<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="head", dtick=1 if len(delta.columns) <= 16 else None, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, row=1, col=col)
    fig.update_layout(
        title=title or None,
        height=max(320, 24 * n_layers + 150),
        width=min(1150, 300 * len(zones) + 120),
        margin={"l": 50, "r": 20, "t": 70 if title else 40, "b": 40},
        plot_bgcolor="white",
    )
    return fig


def strongest_drop_text(cells: pd.DataFrame, metric: str = "f1", variant: str | None = None) -> str:
    """The sentence that opens a zone × layer (or layer × head) grid's caption: what to look at first,
    its most damaging cell, e.g. "Look first at the darkest blue cell: masking P2P in layer 1 costs
    13.0 F1 points (paper variant)."; layers and heads numbered from 1."""
    rows = cells[cells["metric"] == metric] if "metric" in cells else cells
    if variant is not None and "variant" in rows:
        rows = rows[rows["variant"] == variant]
    rows = rows[np.isfinite(pd.to_numeric(rows["delta"], errors="coerce"))] if len(rows) else rows
    which = f" ({variant} variant)" if variant else ""
    if rows.empty:
        return f"No cell has a finite Δ{metric.upper()}{which}."
    worst = rows.loc[rows["delta"].idxmin()]
    where = f"{zone_label(worst['zone'])} in layer {int(worst['layer']) + 1}"
    if worst.get("mode") == "head" and pd.notna(worst.get("head")) and int(worst["head"]) >= 0:
        where += f", head {int(worst['head']) + 1}"
    if worst["delta"] >= 0:
        if float(rows["delta"].abs().max()) == 0.0:
            return f"Masking changes no {metric.upper()} score in this grid{which}: every cell is white."
        best = rows.loc[rows["delta"].idxmax()]
        return (f"No cell lowers {metric.upper()}{which}; look at the red cells, gains of up to "
                f"{best['delta']:.1f} points.")
    return f"Look first at the darkest blue cell: masking {where} costs {-worst['delta']:.1f} {metric.upper()} points{which}."
