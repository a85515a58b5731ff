"""The one zone x layer result of Cui et al. that can be recovered, as data.

Provenance: the STAR-protocol overview figure (Cui, Zhang, Liu, STAR Protocols 3(3):101481, 2022,
arXiv 2410.20652) shows a single heatmap: BERT-base-cased fine-tuned on SQuAD 1.1, evaluated on the
SQuAD 1.1 dev set, **delta EM** (masked minus unmasked, in EM points) when one zone is blanked in one
layer for all heads. The values below were digitised from that low-resolution heatmap by nearest-colour
lookup against its own colour bar (docs/method.md §4). They are approximate: about +-0.5 EM, about +-1
EM for the darkest cells. The published heatmaps for the other models/datasets were not retrievable.

The paper's ``ALL`` column is not "mask everything": the released code adds -10000 to every cell and
replaces the padding mask, so layer L attends over all 512 positions including padding (docs/masking.md
§4.2). It corresponds to mrcbench's ``all_paper_quirk`` zone, never to ``all``.
"""

from __future__ import annotations

import pandas as pd

from mrcbench import zones

#: Where the numbers come from, shown next to every comparison.
PAPER_GRID_PROVENANCE = (
    "Cui et al. (iScience 2022) via the STAR-protocol overview heatmap: BERT-base-cased, SQuAD 1.1 dev, "
    "delta EM per zone x layer (all heads), digitised by nearest-colour lookup (approx. +-0.5 EM, "
    "+-1 EM for the darkest cells); docs/method.md section 4."
)

#: Model, data and metric of the reference grid.
PAPER_GRID_MODEL = "bert-base-cased"
PAPER_GRID_EVAL_SET = "SQuAD 1.1 dev"
PAPER_GRID_METRIC = "em"
PAPER_GRID_NUM_LAYERS = 12

#: mrcbench zone name of each paper column. The paper's ALL is the padding-leak artefact.
PAPER_COLUMN_TO_ZONE = dict(zones.PAPER_COLUMNS)

#: Delta EM by 1-based layer, columns in the paper's order (ALL*, Q2, Q2P, P2Q, P2).
_PAPER_DELTA_EM_BY_LAYER: dict[int, tuple[float, float, float, float, float]] = {
    12: (0.1, 0.1, 0.1, 0.1, -2.0),
    11: (-1.3, 0.1, 0.0, -4.1, 0.1),
    10: (-1.1, -0.2, -0.3, -1.5, -3.8),
    9: (-1.9, -0.5, -0.3, -1.5, -2.5),
    8: (-1.9, -0.6, 0.0, 0.0, -1.9),
    7: (-1.4, -0.6, 0.0, 0.0, -2.3),
    6: (-1.0, -0.6, 0.0, 0.1, -2.0),
    5: (-3.3, -0.3, -0.2, -3.0, 0.1),
    4: (-0.5, -0.6, 0.1, -1.0, -4.2),
    3: (-0.9, -0.2, -0.2, -0.7, -1.9),
    2: (-0.5, -0.3, -0.2, -0.2, -4.2),
    1: (-2.2, 0.1, 0.0, -0.5, -9.9),
}


def paper_grid() -> pd.DataFrame:
    """The digitised grid in long form: ``layer`` (0-based, as in mrcbench files), ``zone``, ``delta_em``.

    Zones use mrcbench names (``all_paper_quirk``, ``q2q``, ``q2p``, ``p2q``, ``p2p``).
    """
    columns = list(PAPER_COLUMN_TO_ZONE.values())
    rows = [
        {"layer": layer_1based - 1, "zone": zone, "delta_em": value}
        for layer_1based, values in _PAPER_DELTA_EM_BY_LAYER.items()
        for zone, value in zip(columns, values, strict=True)
    ]
    return pd.DataFrame(rows).sort_values(["layer", "zone"], ignore_index=True)
