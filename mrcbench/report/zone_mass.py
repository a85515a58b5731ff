"""Figure of the report's "Attention mass by layer and head" section.

Layer x head heatmaps of mean attention mass per zone, from the ``zone_mass`` table of
:mod:`mrcbench.stats.zone_mass`.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mrcbench.report.blocks import zone_label
from mrcbench.zones import FOUR_ZONES


def head_mass_figure(zone_mass: pd.DataFrame, zones: tuple[str, ...] = FOUR_ZONES, title: str = ""):
    """Layer x head heatmaps of mean attention mass, one per zone (shared colour scale 0..max)."""

    zones = [zone for zone in zones if zone in set(zone_mass["zone"])]
    fig = make_subplots(
        rows=1, cols=len(zones), subplot_titles=[zone_label(z) for z in zones], horizontal_spacing=0.04
    )
    upper = float(zone_mass[zone_mass["zone"].isin(zones)]["mass"].max()) if len(zone_mass) else 1.0
    n_layers = 1
    for col, zone in enumerate(zones, start=1):
        cells = zone_mass[zone_mass["zone"] == zone]
        mass = cells.pivot_table(index="layer", columns="head", values="mass").sort_index()
        sd = cells.pivot_table(index="layer", columns="head", values="mass_seed_sd").reindex_like(mass)
        n_layers = max(n_layers, len(mass))
        fig.add_trace(
            go.Heatmap(
                z=mass.to_numpy(),
                x=[h + 1 for h in mass.columns],
                y=[layer + 1 for layer in mass.index],
                customdata=sd.to_numpy(),
                colorscale="Viridis",
                zmin=0,
                zmax=upper,
                showscale=col == len(zones),
                colorbar={"title": {"text": "mass"}},
                hovertemplate=f"{zone_label(zone)}<br>layer %{{y}}, head %{{x}}<br>mass = %{{z:.3f}}"
                "<br>seed sd = %{customdata:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="head", dtick=1 if len(mass.columns) <= 16 else None, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, row=1, col=col)
    fig.update_layout(
        title=title or None,
        height=max(320, 24 * n_layers + 150),
        width=min(1150, 250 * len(zones) + 120),
        margin={"l": 50, "r": 20, "t": 70 if title else 40, "b": 40},
    )
    return fig


def largest_mass_text(zone_mass: pd.DataFrame) -> str:
    """What to look at first in the mass figure: the zone whose rows put the most attention on it."""
    rows = zone_mass[zone_mass["zone"].isin(FOUR_ZONES)] if len(zone_mass) else zone_mass
    if rows.empty or rows["mass"].isna().all():
        return "no zone mass was recorded"
    means = rows.groupby("zone")["mass"].mean().sort_values(ascending=False)
    top, low = means.index[0], means.index[-1]
    return (f"the brightest panel: {zone_label(top)} rows keep the most attention on their zone (mean "
            f"{means.iloc[0]:.2f}), {zone_label(low)} the least ({means.iloc[-1]:.2f})")
