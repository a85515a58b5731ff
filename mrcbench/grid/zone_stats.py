"""Zone statistics of a whole eval split: every window's attention mass per (layer, head, row zone,
column zone), and the long ``zone_stats.parquet`` table of docs/architecture.md.

:func:`collect_zone_stats` runs the model over a split's batches with
:meth:`mrcbench.masking.controller.ZoneAttention.record_stats` (the per-batch statistics are accumulated inside
the attention call, never storing all maps) and keeps full maps of a few case-study windows;
:func:`zone_stats_frame` averages the windows of each question into the long table. The
``extract-attention`` command (:mod:`mrcbench.grid.extraction`) writes both.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mrcbench.errors import MrcbenchError
from mrcbench.masking.controller import ZoneAttention
from mrcbench.qa.features import model_inputs
from mrcbench.tables import RUN_SEED_KEYS
from mrcbench.zones import STAT_ZONES


@dataclass
class ZoneStatsResult:
    """Zone statistics of a whole feature set: ``mass`` ``[N, L, H, 3, 3]`` and case-study ``maps``."""

    mass: np.ndarray
    maps: dict[int, np.ndarray]


def collect_zone_stats(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    case_study_features: Iterable[int] = (),
    progress: bool = False,
) -> ZoneStatsResult:
    """Zone statistics of every feature (in batch order) plus full maps of ``case_study_features``.

    ``batches`` are dicts with ``input_ids``, ``attention_mask``, optional ``token_type_ids`` and
    ``zone_ids`` (as from ``EvalFeatures.batches``); ``case_study_features`` are global feature indices.
    """
    wanted = set(case_study_features)
    device = next(model.parameters()).device
    masses, maps, offset = [], {}, 0
    model.eval()
    with ZoneAttention(model) as controller, torch.inference_mode():
        for batch in tqdm(batches, desc="zone stats", disable=not progress):
            size = batch["input_ids"].shape[0]
            rows = sorted(feature - offset for feature in wanted if offset <= feature < offset + size)
            with controller.record_stats(batch["zone_ids"], maps_for=rows) as stats:
                model(**model_inputs(batch, device))
            masses.append(stats.mass)
            maps.update({offset + row: value for row, value in stats.maps.items()})
            offset += size
    missing = sorted(wanted - set(maps))
    if missing:
        raise MrcbenchError(f"case-study feature {missing[0]} is beyond the {offset} features")
    mass = np.concatenate(masses) if masses else np.empty((0, 0, 0, 3, 3), dtype=np.float32)
    return ZoneStatsResult(mass=mass, maps=maps)


def zone_stats_frame(
    mass: np.ndarray,
    example_ids: Sequence[str],
    keys: Mapping[str, object],
    articles: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Long zone-statistics table of architecture.md (``zone_stats.parquet``).

    ``mass`` is ``[N features, L, H, 3, 3]``; features of the same question (``example_ids``) are
    averaged (windows of one question count equally; NaN entries, i.e. a window without rows of that
    zone, are skipped). ``keys`` gives model, train_set, eval_set and seed.
    """
    missing = [key for key in RUN_SEED_KEYS if key not in keys]
    if missing:
        raise MrcbenchError(f"zone_stats_frame: keys lacks {missing[0]!r}")
    if mass.ndim != 5 or mass.shape[-2:] != (3, 3) or mass.shape[0] != len(example_ids):
        raise MrcbenchError(
            f"zone_stats_frame: mass has shape {mass.shape}, expected [{len(example_ids)}, layers, heads, 3, 3]"
        )
    _, n_layers, n_heads, _, _ = mass.shape
    flat = pd.DataFrame(mass.reshape(len(example_ids), -1).astype(np.float64))
    per_question = flat.groupby(np.asarray(example_ids), sort=False).mean()
    n_questions, n_values = per_question.shape
    layer, head, row_zone, col_zone = np.unravel_index(np.arange(n_values), (n_layers, n_heads, 3, 3))
    qids = per_question.index.to_numpy()
    articles = articles or {}
    frame = pd.DataFrame(
        {
            **{key: pd.Categorical([keys[key]] * (n_questions * n_values)) for key in RUN_SEED_KEYS},
            "qid": pd.Categorical(np.repeat(qids, n_values)),
            "article": pd.Categorical(np.repeat([articles.get(qid, "") for qid in qids], n_values)),
            "layer": np.tile(layer, n_questions).astype(np.int16),
            "head": np.tile(head, n_questions).astype(np.int16),
            "row_zone": pd.Categorical.from_codes(np.tile(row_zone, n_questions), STAT_ZONES),
            "col_zone": pd.Categorical.from_codes(np.tile(col_zone, n_questions), STAT_ZONES),
            "mass": per_question.to_numpy().reshape(-1),
        }
    )
    return frame

