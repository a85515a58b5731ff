"""Figure of the report's "Cross-lingual consistency" section.

One language's zone x layer profile against the other's, from the ``crosslingual_rank`` and
``crosslingual_question`` tables of :mod:`mrcbench.stats.crosslingual`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mrcbench.report.blocks import ZONE_COLORS, fmt_ci, zone_label
from mrcbench.zones import ZONE_ORDER


def crosslingual_figure(question_rows: pd.DataFrame, rank_row: pd.Series):
    """Zone x layer profile of one language against the other (one point per cell, coloured by zone)."""

    fig = go.Figure()
    for zone in [z for z in ZONE_ORDER if z in set(question_rows["zone"])]:
        cells = question_rows[question_rows["zone"] == zone]
        fig.add_trace(
            go.Scatter(
                x=cells["delta_a"],
                y=cells["delta_b"],
                mode="markers",
                name=zone_label(zone),
                marker={"color": ZONE_COLORS.get(zone, "#333"), "size": 9},
                text=[f"layer {layer + 1}" for layer in cells["layer"]],
                customdata=np.stack([cells["pearson_r"], cells["hurt_agreement"]], axis=-1),
                hovertemplate=(
                    f"{zone_label(zone)}, %{{text}}<br>Δ {rank_row['language_a']} = %{{x:.2f}}"
                    f"<br>Δ {rank_row['language_b']} = %{{y:.2f}}<br>per-question r = %{{customdata[0]:.2f}}"
                    "<br>hurt agreement = %{customdata[1]:.2f}<extra></extra>"
                ),
            )
        )
    values = pd.concat([question_rows["delta_a"], question_rows["delta_b"]])
    low, high = float(min(values.min(), 0)), float(max(values.max(), 0))
    fig.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            name="y = x",
            line={"color": "#999", "dash": "dot"},
            hoverinfo="skip",
        )
    )
    metric = str(rank_row["metric"]).upper()
    title = (
        f"{rank_row['eval_a']} vs {rank_row['eval_b']} ({rank_row['variant']}): Kendall τ = "
        f"{fmt_ci(rank_row['kendall_tau'], rank_row['tau_ci_low'], rank_row['tau_ci_high'], 2)}"
    )
    fig.update_layout(
        title=title,
        width=560,
        height=470,
        xaxis={"title": f"Δ{metric} ({rank_row['language_a']})"},
        yaxis={"title": f"Δ{metric} ({rank_row['language_b']})"},
        margin={"t": 60},
    )
    return fig
