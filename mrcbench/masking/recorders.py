"""What the attention hooks record after softmax: the removed-mass meter, the zone statistics and the
head-averaged probabilities.

Each recorder is fed one layer's probabilities ``[B, H, T, T]`` at a time by
:meth:`mrcbench.masking.hooks.ZoneHooks.hook_pattern`; the per-layer quantities themselves are pure tensor
functions (:func:`removed_mass`, :func:`zone_mass_from_probs`), testable without a model.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mrcbench.errors import MrcbenchError
from mrcbench.zones import PAD, STAT_ZONE_IDS


# --------------------------------------------------------------------------------------------------
# removed attention mass
# --------------------------------------------------------------------------------------------------
def removed_mass(unmasked_probs: torch.Tensor, blank: torch.Tensor, zone_ids: torch.Tensor) -> torch.Tensor:
    """``[B]`` mean over masked heads and blanked non-PAD rows of the probability on blanked keys."""
    batch, heads, length, _ = unmasked_probs.shape
    per_row = (unmasked_probs.float() * blank).sum(-1)  # [B, H, T]
    rows = (blank.any(-1) & (zone_ids != PAD)[:, None, :]).expand(batch, heads, length)
    return (per_row * rows).sum((1, 2)) / rows.sum((1, 2))


@dataclass
class InterventionResult:
    """Filled while an intervention is active.

    ``removed_mass[b, l]``: in masked layer ``l``, the attention probability the blanked cells carried
    just before masking (summed over the blanked keys of a row), averaged over the blanked non-PAD
    rows and the masked heads. NaN where layer ``l`` was not masked for row ``b`` or no cell was
    blanked (``all_paper_quirk``). The value at the lowest masked layer is exactly the unmasked model's;
    higher layers (``from_layer`` mode) see inputs already changed by the masking below.
    """

    removed_mass: np.ndarray

    def first_masked_layer_mass(self) -> np.ndarray:
        """``[B]``: removed mass at each row's lowest masked layer (NaN if none)."""
        mass = self.removed_mass
        first = np.full(mass.shape[0], np.nan)
        masked = ~np.isnan(mass)
        has_any = masked.any(axis=1)
        first[has_any] = mass[has_any, masked[has_any].argmax(axis=1)]
        return first


class RemovedMassMeter:
    """``[B, L]`` removed mass of one intervention (NaN where nothing was measured), layer by layer."""

    def __init__(self, batch: int, n_layers: int):
        self.mass = torch.full((batch, n_layers), float("nan"))

    def add(self, layer: int, unmasked_probs: torch.Tensor, blank: torch.Tensor, zone_ids: torch.Tensor) -> None:
        self.mass[:, layer] = removed_mass(unmasked_probs, blank, zone_ids).cpu()

    def result(self) -> np.ndarray:
        return self.mass.numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------------
# zone statistics
# --------------------------------------------------------------------------------------------------
def stat_zone_onehot(zone_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, T, 3]`` one-hot of (question, passage, special) per token; PAD tokens are all-zero."""
    return torch.stack([zone_ids == zone_id for zone_id in STAT_ZONE_IDS], dim=-1).to(dtype)


def zone_mass_from_probs(probs: torch.Tensor, zone_ids: torch.Tensor) -> torch.Tensor:
    """``[B, H, 3, 3]`` zone statistics of one layer's attention probabilities ``[B, H, T, T]``.

    Costs one ``[T, T] @ [T, 3]`` product per head; the maps themselves are not kept. Accumulated in
    fp32 also under bf16 autocast (which would otherwise run both products in bf16).
    """
    onehot = stat_zone_onehot(zone_ids.to(probs.device))  # [B, T, 3]
    with torch.autocast(device_type=probs.device.type, enabled=False):
        per_row = torch.matmul(probs.float(), onehot[:, None])  # [B, H, T(row), 3 col zones]
        summed = torch.einsum("bhtc,btr->bhrc", per_row, onehot)  # [B, H, 3 row zones, 3 col zones]
    counts = onehot.sum(1)  # [B, 3]
    return summed / counts[:, None, :, None]  # 0/0 -> NaN for empty row zones


@dataclass
class ZoneStats:
    """Zone statistics of one batch, filled while :meth:`~mrcbench.masking.controller.ZoneAttention.record_stats`
    is active.

    ``mass[b, l, h, r, c]``: mean over the rows of zone ``r`` of feature ``b`` of the attention
    probability that layer ``l``, head ``h`` puts on the columns of zone ``c``; zones are ordered as
    :data:`mrcbench.zones.STAT_ZONES` (question, passage, special). NaN where feature ``b`` has no row of
    zone ``r``. ``maps[b]``: full ``[L, H, t, t]`` maps of requested batch rows, cropped to their ``t``
    non-PAD tokens.
    """

    mass: np.ndarray
    maps: dict[int, np.ndarray] = field(default_factory=dict)


class ZoneStatsRecorder:
    """Zone statistics of every layer of one batch, and the full maps of the batch rows ``maps_for``."""

    def __init__(self, zone_ids: torch.Tensor, n_layers: int, n_heads: int, maps_for: Sequence[int]):
        self.zone_ids = zone_ids
        self.mass = torch.full((zone_ids.shape[0], n_layers, n_heads, 3, 3), float("nan"))
        self.maps_for = list(maps_for)
        self.maps: dict[int, list[torch.Tensor | None]] = {row: [None] * n_layers for row in self.maps_for}

    def add(self, layer: int, probs: torch.Tensor) -> None:
        self.zone_ids = self.zone_ids.to(probs.device)
        self.mass[:, layer] = zone_mass_from_probs(probs, self.zone_ids).cpu()
        for row in self.maps_for:
            real = (self.zone_ids[row] != PAD).nonzero().flatten().to(probs.device)
            self.maps[row][layer] = probs[row][:, real][:, :, real].float().cpu()

    def result(self) -> ZoneStats:
        maps = {}
        for row, layers in self.maps.items():
            if any(layer is None for layer in layers):
                raise MrcbenchError("record_stats: not every layer was run, so the case-study maps are incomplete")
            maps[row] = torch.stack(layers).numpy()
        return ZoneStats(mass=self.mass.numpy(), maps=maps)


# --------------------------------------------------------------------------------------------------
# head-averaged probabilities (the size-matched null's reference)
# --------------------------------------------------------------------------------------------------
class MeanProbsRecorder:
    """The head-averaged attention probabilities ``[B, T, T]`` (fp32) of ``layers``; None until run."""

    def __init__(self, layers: Iterable[int]):
        self.probs: dict[int, torch.Tensor | None] = {int(layer): None for layer in layers}

    def add(self, layer: int, probs: torch.Tensor) -> None:
        if layer in self.probs:
            self.probs[layer] = probs.float().mean(1)
