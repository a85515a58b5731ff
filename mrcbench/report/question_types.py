"""Figure of the report's "Question types" section.

Delta per layer for each question-type bucket, from the ``question_types`` table of
:mod:`mrcbench.stats.question_types`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mrcbench.report.blocks import zone_label
from mrcbench.zones import ZONE_ORDER


def question_type_figure(rows: pd.DataFrame, title: str):
    """Delta per layer for each question-type bucket, one panel per zone (reported buckets only)."""

    zones = [zone for zone in ZONE_ORDER if zone in set(rows["zone"])]
    fig = make_subplots(
        rows=1,
        cols=len(zones),
        shared_yaxes=True,
        subplot_titles=[zone_label(z) for z in zones],
        horizontal_spacing=0.03,
    )
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
    ]
    buckets = list(dict.fromkeys(rows["bucket"]))
    for col, zone in enumerate(zones, start=1):
        for index, bucket in enumerate(buckets):
            cells = rows[(rows["zone"] == zone) & (rows["bucket"] == bucket)].sort_values("layer")
            fig.add_trace(
                go.Scatter(
                    x=cells["layer"] + 1,
                    y=cells["delta"],
                    mode="lines+markers",
                    name=f"{bucket}",
                    legendgroup=bucket,
                    showlegend=col == 1,
                    line={"color": palette[index % len(palette)]},
                    customdata=np.stack([cells["ci_low"], cells["ci_high"], cells["n_questions"]], axis=-1),
                    hovertemplate=(
                        f"{bucket}, {zone_label(zone)}, layer %{{x}}<br>Δ = %{{y:.2f}} "
                        "[%{customdata[0]:.2f}, %{customdata[1]:.2f}], n = %{customdata[2]}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text="Δ", row=1, col=1)
    fig.update_layout(title=title, height=380, width=min(1150, 230 * len(zones) + 200), margin={"t": 70})
    return fig
