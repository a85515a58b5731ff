"""Figure of the report's "Correlations between attention and performance" section.

Layer x zone heatmaps of the question-level correlations (C2, C3), from the ``correlations`` table of
:mod:`mrcbench.stats.correlations`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mrcbench.report.blocks import zone_label
from mrcbench.tables import RUN_KEYS
from mrcbench.zones import ZONE_ORDER


def correlation_figure(rows: pd.DataFrame, title: str):
    """Question-level correlations (C2 or C3): a layer x zone heatmap of Pearson r per run (eval set)."""

    runs = list(rows.groupby(list(RUN_KEYS), sort=True))
    fig = make_subplots(
        rows=1,
        cols=len(runs),
        horizontal_spacing=0.06,
        subplot_titles=[f"{model} · {eval_set}" for (model, _, eval_set), _ in runs],
    )
    n_layers = 1
    for col, (_, cells) in enumerate(runs, start=1):
        zones = [zone for zone in ZONE_ORDER if zone in set(cells["zone"])]
        pivot = (
            cells.pivot_table(index="layer", columns="zone", values="pearson_r")
            .reindex(columns=zones)
            .sort_index()
        )
        corrected = [v for v in ("pearson_p_holm", "pearson_p_bh") if v in cells.columns]
        custom = np.stack(
            [
                cells.pivot_table(index="layer", columns="zone", values=v, dropna=False)
                .reindex_like(pivot)
                .to_numpy(dtype=float)
                for v in ("pearson_ci_low", "pearson_ci_high", "pearson_p", "n", *corrected)
            ],
            axis=-1,
        )
        marks = np.full(pivot.shape, "", dtype=object)
        if len(corrected) == 2:
            holm, bh = custom[..., 4], custom[..., 5]
            marks = np.where(holm < 0.05, "*", np.where(bh < 0.05, "+", ""))
        n_layers = max(n_layers, len(pivot))
        fig.add_trace(
            go.Heatmap(
                z=pivot.to_numpy(),
                x=[zone_label(z) for z in zones],
                y=[layer + 1 for layer in pivot.index],
                customdata=custom,
                text=marks,
                texttemplate="%{text}",
                colorscale="RdBu",
                reversescale=True,
                zmin=-1,
                zmax=1,
                xgap=1,
                ygap=1,
                showscale=col == len(runs),
                colorbar={"title": {"text": "r"}},
                hovertemplate=(
                    "layer %{y}, %{x}<br>r = %{z:.3f} [%{customdata[0]:.2f}, %{customdata[1]:.2f}]"
                    "<br>p = %{customdata[2]:.3g}, n = %{customdata[3]}"
                    + ("<br>Holm p = %{customdata[4]:.3g}, BH p = %{customdata[5]:.3g}" if len(corrected) == 2 else "")
                    + "<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, row=1, col=col)
    fig.update_layout(
        title=title,
        height=max(320, 24 * n_layers + 150),
        width=min(1150, 300 * len(runs) + 120),
        margin={"l": 50, "r": 20, "t": 80, "b": 40},
    )
    return fig
