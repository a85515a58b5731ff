"""Comparison of our zone x layer grid with the paper's (docs/method.md §4).

Layers mapped by relative depth, the top-two zones and the per-cell agreement. Writes the
``paper_comparison`` and ``paper_comparison_cells`` tables, shown in the report's "Comparison with the
paper" section (drawn by :mod:`mrcbench.report.paper_comparison`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from mrcbench.stats import paper_reference
from mrcbench.stats.common import StatsSettings, layer_grid, real_top_zones
from mrcbench.tables import PAPER_COMPARISON, PAPER_COMPARISON_CELLS, RUN_KEYS
from mrcbench.zones import FOUR_ZONES, ZONE_ORDER

# --------------------------------------------------------------------------------------------------
# Comparison with the paper's grid (docs/method.md §4)
# --------------------------------------------------------------------------------------------------


def map_layers_by_depth(
    run_layers: int, paper_layers: int = paper_reference.PAPER_GRID_NUM_LAYERS
) -> dict[int, list[int]]:
    """Paper layers (0-based) matched to each run layer by relative depth.

    A run layer l covers the depth band [l/L, (l+1)/L); it takes the paper layers whose centres fall in
    that band (several when the run model is shallower) or, when the band holds no centre (a deeper
    run model), the one paper layer whose band contains the run layer's centre.
    """
    mapping: dict[int, list[int]] = {}
    centres = (np.arange(paper_layers) + 0.5) / paper_layers
    for layer in range(run_layers):
        low, high = layer / run_layers, (layer + 1) / run_layers
        inside = [int(p) for p in np.flatnonzero((centres >= low) & (centres < high))]
        if not inside:
            inside = [min(paper_layers - 1, int((layer + 0.5) / run_layers * paper_layers))]
        mapping[layer] = inside
    return mapping


def _top2(frame: pd.DataFrame, value: str) -> list[str]:
    """The two zones with the most negative mean delta over layers; ``[]`` when ties or zero drops
    leave them undetermined (:func:`mrcbench.stats.common.real_top_zones`)."""
    return real_top_zones(frame.groupby("zone")[value].mean(), top=2)


def compare_with_paper(deltas: pd.DataFrame, settings: StatsSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare every zone x layer grid with the paper's digitised BERT/SQuAD delta-EM grid.

    The comparison is qualitative by nature: the run's model, data and depth usually differ from the
    paper's (the ``model_difference`` column says how). Layers are matched by relative depth; the
    paper's ALL (a padding leak) is compared only with ``all_paper_quirk``. Reported: Spearman's rho
    over the matched cells (NaN when the run's deltas are constant) and whether the two most damaging
    of the four zones agree (``top2_run`` is empty, and ``top2_agree`` False, when ties or zero drops
    leave the run's top two undetermined).
    """
    paper = paper_reference.paper_grid()
    paper_zones = set(paper["zone"])
    rows, cell_rows = [], []
    if deltas.empty:
        return PAPER_COMPARISON.empty(), PAPER_COMPARISON_CELLS.empty()
    layer_cells = layer_grid(deltas)
    for (*run_key, variant, metric), grid in layer_cells.groupby(
        [*RUN_KEYS, "variant", "metric"], sort=True
    ):
        run_layers = int(grid["layer"].max()) + 1
        if grid["layer"].nunique() < settings.min_layers_for_paper:
            continue
        mapping = map_layers_by_depth(run_layers)
        run = grid[grid["zone"].isin(paper_zones)][["layer", "zone", "delta"]]
        if run.empty:
            continue
        paper_values = paper.set_index(["layer", "zone"])["delta_em"]
        matched = run.assign(
            paper_layers=[",".join(str(p + 1) for p in mapping[int(layer)]) for layer in run["layer"]],
            paper_delta=[
                float(np.mean([paper_values[(p, zone)] for p in mapping[int(layer)]]))
                for layer, zone in zip(run["layer"], run["zone"], strict=True)
            ],
        )
        rho, p = (np.nan, np.nan)
        pearson = np.nan
        if len(matched) >= 3 and np.ptp(matched["delta"]) > 0:
            result = sps.spearmanr(matched["delta"], matched["paper_delta"])
            rho, p = float(result.statistic), float(result.pvalue)
            pearson = float(np.corrcoef(matched["delta"], matched["paper_delta"])[0, 1])
        four = matched[matched["zone"].isin(FOUR_ZONES)]
        top_run = _top2(four, "delta")
        top_paper = _top2(four, "paper_delta")
        layer_mapping = (
            "identity (12 layers)"
            if run_layers == 12
            else "; ".join(
                f"{layer + 1}->{'+'.join(str(p + 1) for p in paper_layers)}"
                for layer, paper_layers in mapping.items()
            )
        )
        model, train_set, eval_set = run_key
        rows.append(
            {
                **dict(zip(RUN_KEYS, run_key, strict=True)),
                "variant": variant,
                "metric": metric,
                "run_layers": run_layers,
                "paper_layers": paper_reference.PAPER_GRID_NUM_LAYERS,
                "zones_compared": ",".join(z for z in ZONE_ORDER if z in set(matched["zone"])),
                "n_cells": len(matched),
                "spearman_rho": rho,
                "spearman_p": p,
                "pearson_r": pearson,
                "top2_run": ",".join(top_run),
                "top2_paper": ",".join(top_paper),
                # No agreement is claimed where the run's grid names no two most damaging zones.
                "top2_agree": len(top_run) == 2 and len(top_paper) == 2 and set(top_run) == set(top_paper),
                "layer_mapping": layer_mapping,
                "model_difference": (
                    f"run: {model} ({run_layers} layers) fine-tuned on {train_set}, evaluated on {eval_set}, "
                    f"delta {metric.upper()}, {variant} variant; paper: {paper_reference.PAPER_GRID_MODEL} "
                    f"({paper_reference.PAPER_GRID_NUM_LAYERS} layers) on "
                    f"{paper_reference.PAPER_GRID_EVAL_SET}, "
                    f"delta {paper_reference.PAPER_GRID_METRIC.upper()}"
                ),
                "provenance": paper_reference.PAPER_GRID_PROVENANCE,
            }
        )
        cell_rows.append(
            matched.rename(columns={"delta": "run_delta"}).assign(
                **dict(zip(RUN_KEYS, run_key, strict=True)), variant=variant, metric=metric
            )[PAPER_COMPARISON_CELLS.names]
        )
    cells = pd.concat(cell_rows, ignore_index=True) if cell_rows else PAPER_COMPARISON_CELLS.empty()
    return pd.DataFrame(rows, columns=PAPER_COMPARISON.names), cells
