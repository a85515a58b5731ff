"""Attention mass per zone, layer and head, from the zone statistics.

Writes the ``zone_mass`` table, shown in the report's "Attention mass by layer and head" section
(drawn by :mod:`mrcbench.report.zone_mass`), and the per-question layer mass the correlations use.
"""

from __future__ import annotations

import pandas as pd

from mrcbench.tables import ATTENTION_SINKS, RUN_KEYS, SINK_ZONES, ZONE_MASS
from mrcbench.zones import ZONE_SIDES

#: The one-letter name of each row/column zone of the zone statistics in a zone name (``q2s``).
ZONE_SHORT = {"question": "q", "passage": "p", "special": "s"}


# --------------------------------------------------------------------------------------------------
# Zone attention mass
# --------------------------------------------------------------------------------------------------


def _zone_name(row_zone: str, col_zone: str) -> str:
    return f"{ZONE_SHORT.get(row_zone, row_zone)}2{ZONE_SHORT.get(col_zone, col_zone)}"


def compute_zone_mass(zone_stats: pd.DataFrame | None) -> pd.DataFrame:
    """Mean attention mass per run, layer, head and (row zone -> column zone), over questions and seeds.

    ``zone`` is the paper's name for the four question/passage blocks (``p2q``: passage rows on question
    columns) and ``q2s``/``p2s``/``s2q``/... where special tokens ([CLS]/[SEP]) are involved.
    ``mass_seed_sd`` is the spread of the per-seed means.
    """
    if zone_stats is None or zone_stats.empty:
        return ZONE_MASS.empty()
    keys = [*RUN_KEYS, "layer", "head", "row_zone", "col_zone"]
    per_seed = zone_stats.groupby([*keys, "seed"], sort=True)["mass"].mean()
    grouped = per_seed.groupby(level=keys)
    table = pd.DataFrame(
        {"mass": grouped.mean(), "mass_seed_sd": grouped.std(ddof=1), "n_seeds": grouped.size()}
    ).reset_index()
    counts = zone_stats.groupby(keys)["qid"].nunique().rename("n_questions").reset_index()
    table = table.merge(counts, on=keys)
    table["zone"] = [_zone_name(r, c) for r, c in zip(table["row_zone"], table["col_zone"], strict=True)]
    table = table.astype({"layer": "int64", "head": "int64"})
    return table[ZONE_MASS.names]


def question_layer_mass(zone_stats: pd.DataFrame | None) -> pd.DataFrame:
    """Per question, layer and zone (the four paper zones), mass averaged over heads and seeds.

    Returns a frame indexed by (model, train_set, eval_set, qid) with columns (layer, zone).
    """
    if zone_stats is None or zone_stats.empty:
        return pd.DataFrame()
    pairs = {pair: zone for zone, pair in ZONE_SIDES.items()}
    frame = zone_stats[
        [(r, c) in pairs for r, c in zip(zone_stats["row_zone"], zone_stats["col_zone"], strict=True)]
    ]
    frame = frame.assign(
        zone=[pairs[(r, c)] for r, c in zip(frame["row_zone"], frame["col_zone"], strict=True)]
    )
    mass = frame.groupby([*RUN_KEYS, "qid", "layer", "zone"])["mass"].mean()
    return mass.unstack(["layer", "zone"])



def attention_sinks(zone_mass: pd.DataFrame) -> pd.DataFrame:
    """Mean mass on special tokens ([CLS]/[SEP]) of question rows (``q2s``) and passage rows (``p2s``)
    per run, over layers and heads (of the zone-mass table): the sinks that absorb the renormalised mass
    when a zone is blanked."""
    if zone_mass.empty:
        return ATTENTION_SINKS.empty()
    sinks = (zone_mass[zone_mass["zone"].isin(SINK_ZONES)]
             .groupby([*RUN_KEYS, "zone"], sort=True)["mass"].mean().unstack("zone"))
    sinks = sinks.reindex(columns=list(SINK_ZONES)).rename_axis(columns=None).reset_index()
    return sinks[ATTENTION_SINKS.names]
