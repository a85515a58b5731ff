"""The answer per leg: which zones hurt most when masked (the abstract).

Writes the ``headline`` table, which the report's "Abstract" turns into sentences
(:mod:`mrcbench.report.abstract`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mrcbench.stats.common import TIE_TOLERANCE, layer_grid, real_top_zones
from mrcbench.tables import HEADLINE, RUN_KEYS
from mrcbench.zones import FOUR_ZONES, PAPER_ZONES

# --------------------------------------------------------------------------------------------------
# The answer per leg: which zones hurt most when masked (the abstract)
# --------------------------------------------------------------------------------------------------


def headline_zones(deltas: pd.DataFrame, zones: Sequence[str] = FOUR_ZONES, top: int = 2) -> pd.DataFrame:
    """Per grid (model, train set, eval set, variant, metric): the ``top`` zones whose masking hurts most.

    A zone's damage is its most damaging single-layer cell (zone x layer, all heads): the most negative
    delta over layers, with that cell's bootstrap CI and Holm/BH-corrected p-value from the delta table
    (so the selection over layers and zones is covered by the correction over the grid's cells). Zones
    are ranked by that delta; only the paper's four zones compete (ALL is their union).

    ``verdict`` (the same on the rows of one grid) compares the top two with the paper's P2Q + P2P:

    * ``no change``: no cell of the grid changes the score (every delta is 0), so no zone is named;
    * ``tied``: the top ``top`` zones are not singled out (a drop ties with the next zone's, or is not a
      drop at all, :func:`mrcbench.stats.common.real_top_zones`), so no zone is claimed most damaging;
    * ``no significant drop``: neither of the top two drops is significant after Holm (whatever the zones);
    * ``agrees``: the same two zones, both with a drop significant after Holm;
    * ``same zones, one significant``: the same two zones, only one drop significant;
    * ``differs``: another zone is among the top two and at least one top drop is significant.
    """
    if deltas.empty:
        return HEADLINE.empty()
    layer_cells = layer_grid(deltas)
    layer_cells = layer_cells[layer_cells["zone"].isin(list(zones))]
    rows: list[dict[str, Any]] = []
    for (*run, variant, metric), grid in layer_cells.groupby(
        [*RUN_KEYS, "variant", "metric"], sort=True
    ):
        grid = grid[grid["delta"].notna()]
        if grid.empty:
            continue
        per_zone = grid.sort_values(["delta", "layer"], kind="stable").drop_duplicates("zone")
        worst = per_zone.head(top)
        top_zones = real_top_zones(dict(zip(per_zone["zone"], per_zone["delta"], strict=True)), top)
        significant = (worst["significant_holm"].astype(bool) & (worst["delta"] < 0)).to_numpy()
        agrees = len(top_zones) == len(PAPER_ZONES) and set(top_zones) == set(PAPER_ZONES)
        if (grid["delta"].abs() <= TIE_TOLERANCE).all():
            verdict = "no change"
        elif not top_zones:
            verdict = "tied"
        elif not significant.any():
            verdict = "no significant drop"
        elif agrees:
            verdict = "agrees" if significant.all() else "same zones, one significant"
        else:
            verdict = "differs"
        for rank, (_, cell) in enumerate(worst.iterrows(), start=1):
            rows.append(
                {
                    **dict(zip(RUN_KEYS, run, strict=True)),
                    "variant": variant,
                    "metric": metric,
                    "rank": rank,
                    "zone": cell["zone"],
                    "layer": int(cell["layer"]),
                    "delta": float(cell["delta"]),
                    "ci_low": float(cell["ci_low"]),
                    "ci_high": float(cell["ci_high"]),
                    "p_holm": float(cell["p_holm"]),
                    "p_bh": float(cell["p_bh"]),
                    "significant_holm": bool(significant[rank - 1]),
                    "ci_excludes_zero": bool(cell["ci_high"] < 0 or cell["ci_low"] > 0),
                    "n_questions": int(cell["n_questions"]),
                    "n_clusters": int(cell["n_clusters"]),
                    "resampling": cell["resampling"],
                    "n_layers": int(grid["layer"].nunique()),
                    "paper_zones": ",".join(PAPER_ZONES),
                    "agrees_with_paper": agrees,
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(rows, columns=HEADLINE.names)
