"""Names and settings every analysis of :mod:`mrcbench.stats` shares.

The metrics, the zone x layer cells of a grid, the order of the variants, when zones count as the most
damaging, the statistics settings (``stats`` in the config) with the seeded generator of each table key,
and the language of an eval set (which question-type buckets apply, which sets are parallel). The
tables' columns and the run keys are declared in :mod:`mrcbench.tables`.
Shown nowhere on its own; every statistics section of the report depends on it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from mrcbench import zones
from mrcbench.config import Stats

METRICS = ("em", "f1")


def layer_grid(frame: pd.DataFrame) -> pd.DataFrame:
    """The zone x layer cells of a grid or deltas table (mode ``layer``, all heads): the paper's grid."""
    if frame.empty or "mode" not in frame:
        return frame
    return frame[(frame["mode"] == "layer") & (frame["head"] == -1)]


def variant_order(variants) -> list[str]:
    """The variants present, in the order the report shows them: ``zones.VARIANTS`` first (``paper``,
    then ``clean``), any other in sorted order."""
    present = set(variants)
    return [v for v in zones.VARIANTS if v in present] + sorted(present - set(zones.VARIANTS))


def primary_variant(variants) -> str:
    """The variant the report and the abstract lead with: the first of :func:`variant_order`
    (``paper`` when there is none)."""
    ordered = variant_order(variants)
    return ordered[0] if ordered else "paper"


#: Largest |grid baseline - prediction scores on the grid's questions| (EM/F1 points) that still counts
#: as the same number: the grid's unmasked pass must reproduce the prediction step (baselines table).
BASELINE_TOLERANCE = 0.05
# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


#: The statistics settings: the typed ``stats`` section of the config, every default in the schema
#: (build one with :func:`mrcbench.config.stats_config`; ``None`` gives the schema's defaults).
StatsSettings = Stats


def seeded_rng(settings: StatsSettings, *key: Any) -> np.random.Generator:
    """A generator seeded by the stats seed and the table key (independent of processing order)."""
    digest = zlib.crc32("\x1f".join(str(part) for part in key).encode("utf-8"))
    return np.random.default_rng([settings.seed, digest])


# --------------------------------------------------------------------------------------------------
# Languages
# --------------------------------------------------------------------------------------------------

_CJK = re.compile(r"[\u4e00-\u9fff]")


def eval_language(config: dict | None, eval_set: str, questions: Iterable[str] = ()) -> str:
    """Language code of an eval split: the config's ``datasets.<d>.language``, else detected.

    Detection: "zh" when at least half the questions contain CJK characters; else a trailing
    ``_xx`` language code of the split name (``xquad_de``); else "en".
    """
    try:
        if config:
            dataset = config["splits"][eval_set]["dataset"]
            return str(config["datasets"][dataset]["language"])
    except (KeyError, TypeError):
        pass
    texts = [str(text) for text in questions if isinstance(text, str)]
    if texts and sum(bool(_CJK.search(text)) for text in texts) >= 0.5 * len(texts):
        return "zh"
    match = re.search(r"[_.-]([a-z]{2})$", eval_set)
    return match.group(1) if match else "en"


#: Two drops closer than this are a tie (deltas are in score points, 0-100).
TIE_TOLERANCE = 1e-9


def real_top_zones(damage: dict[str, float] | Any, top: int = 2) -> list[str]:
    """The ``top`` most damaging zones, or ``[]`` when the grid does not single them out.

    ``damage`` maps zone -> delta (negative: masking hurts). The ``top`` zones exist only when each of
    them is a real drop (delta < 0) and the last of them drops strictly more than the next zone, so the
    selection does not depend on how ties are ordered (a flat or all-zero grid names no zone).
    """
    values = sorted(((float(v), str(z)) for z, v in dict(damage).items() if np.isfinite(v)))
    if len(values) < top:
        return []
    chosen = values[:top]
    if any(delta >= -TIE_TOLERANCE for delta, _ in chosen):
        return []
    if len(values) > top and values[top][0] - chosen[-1][0] <= TIE_TOLERANCE:
        return []
    return [zone for _, zone in chosen]
