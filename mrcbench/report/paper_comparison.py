"""Figure of the report's "Comparison with the paper" section.

The paper's digitised grid beside the run's, from the ``paper_comparison_cells`` table of
:mod:`mrcbench.stats.paper_comparison`.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mrcbench.report.blocks import ZONE_COLORS, zone_label
from mrcbench.report.masking import zone_layer_heatmap_trace
from mrcbench.stats import paper_reference
from mrcbench.zones import ZONE_ORDER


def paper_comparison_figure(cells: pd.DataFrame, run_title: str):
    """The paper's digitised grid beside the run's grid (same colour scale), and a cell scatter."""


    paper = paper_reference.paper_grid().rename(columns={"delta_em": "delta"})
    fig = make_subplots(
        rows=1,
        cols=3,
        column_widths=[0.27, 0.27, 0.46],
        horizontal_spacing=0.09,
        subplot_titles=["paper (BERT-base, SQuAD 1.1, ΔEM)", run_title, "cell by cell"],
    )
    fig.update_layout(xaxis3={"domain": [fig.layout.xaxis3.domain[0] + 0.07, 1.0]})
    fig.add_trace(zone_layer_heatmap_trace(paper, show_scale=False), row=1, col=1)
    run_cells = cells.rename(columns={"run_delta": "delta"})
    run_trace = zone_layer_heatmap_trace(run_cells, show_scale=True)
    # The colour bar sits right of the run's heatmap, not over the scatter's legend.
    run_trace.colorbar.x = fig.layout.xaxis2.domain[1] + 0.01
    run_trace.colorbar.len = 0.9
    fig.add_trace(run_trace, row=1, col=2)
    for zone in [z for z in ZONE_ORDER if z in set(cells["zone"])]:
        subset = cells[cells["zone"] == zone]
        fig.add_trace(
            go.Scatter(
                x=subset["paper_delta"],
                y=subset["run_delta"],
                mode="markers",
                name=zone_label(zone),
                marker={"color": ZONE_COLORS.get(zone, "#333"), "size": 9},
                text=[
                    f"run layer {layer + 1} ↔ paper {'layers' if ',' in str(p) else 'layer'} "
                    f"{str(p).replace(',', ', ')}"
                    for layer, p in zip(subset["layer"], subset["paper_layers"], strict=True)
                ],
                hovertemplate="%{text}<br>paper Δ = %{x:.2f}, run Δ = %{y:.2f}<extra>"
                + zone_label(zone)
                + "</extra>",
            ),
            row=1,
            col=3,
        )
    fig.update_xaxes(title_text="paper ΔEM", row=1, col=3)
    fig.update_yaxes(title_text="run Δ", row=1, col=3)
    fig.update_yaxes(title_text="layer", dtick=1, row=1, col=1)
    fig.update_yaxes(dtick=1, row=1, col=2)
    fig.update_layout(height=470, width=1100, margin={"t": 60}, legend={"x": 1.02, "y": 1})
    return fig
