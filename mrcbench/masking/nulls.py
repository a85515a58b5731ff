"""Size-matched random nulls: for a zone masked in one layer, a random key mask that removes the same mass.

A zone's effect mixes *which* attention it removes with *how much* (zones differ hugely in size). The null
of a (zone, layer) cell (grid zone name :func:`mrcbench.zones.null_zone_name`, e.g. ``null_p2q``) blanks,
over the same query rows as the zone (its non-PAD rows), random keys that

* lie outside the zone's key columns, and are never special tokens and never padding;
* carry, per row, the zone's attention mass in that row: the head-averaged probability of the unmasked
  model at that layer (the quantity ``removed_mass`` averages), within a relative ``tolerance``.

Selection per row is a seeded greedy random draw: the candidate keys are shuffled and added until the
row's zone mass is reached; the key that crosses it is kept if that lands closer to the target (and within
the tolerance). A row still short of the tolerance then takes, in the same shuffled order, further keys
that fit under its upper bound (up to :data:`REFILL_PASSES` passes), so that one heavy key at the crossing
does not decide the match. Where the
candidates cannot supply the mass (P2P's passage rows: the question keys hold little), every candidate is
blanked and the row is *infeasible*; a row whose greedy draw ends outside the tolerance is infeasible too.
Nothing is silently weakened: per window the achieved and target masses and the feasibility are returned,
and the grid records the achieved fraction (``mass_match``) and ``null_feasible`` per question.

Seeds: one per (question, variant, zone, layer, draw) from ``ablation.null_seed`` (:func:`question_seed`,
recorded in the grid column ``null_seed``); each window of the question draws from that seed and its window
ordinal, over its own real tokens only, so the draw does not depend on batching or padding. The fast and the
naive grid build the same masks from the same unmasked probabilities.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mrcbench.errors import MrcbenchError
from mrcbench.masking.plan import blanked_cells
from mrcbench.zones import PAD, PASSAGE, QUESTION

SEED_MASK = (1 << 63) - 1
REFILL_PASSES = 16
"""Further passes over the shuffled keys for rows the first greedy pass leaves outside the tolerance."""


@dataclass(frozen=True)
class NullSettings:
    """``ablation.null_tolerance`` (relative) and ``ablation.null_seed`` (base seed)."""

    tolerance: float
    seed: int

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 1:
            raise MrcbenchError(f"ablation.null_tolerance must be in (0, 1), got {self.tolerance!r}")


def question_seed(base: int, qid: str, variant: str, zone: str, layer: int, draw: int) -> int:
    """The recorded seed of one question's null draw (63-bit, stable across runs and platforms)."""
    text = f"{base}|{qid}|{variant}|{zone}|{layer}|{draw}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & SEED_MASK


def _window_seed(question: int, window: int) -> int:
    text = f"{question}|{window}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & SEED_MASK


@dataclass
class NullMasks:
    """Null masks of one batch: ``blanked`` ``[B, T, T]`` and per window (batch row) the mean over the
    zone's rows of the target (zone) and achieved (null) mass, whether every row matched within the
    tolerance, and the recorded question seed."""

    blanked: torch.Tensor
    target: np.ndarray  # [B]
    achieved: np.ndarray  # [B]
    feasible: np.ndarray  # [B] bool
    seeds: np.ndarray  # [B] int64


def null_masks(
    zone_ids: torch.Tensor,
    mean_probs: torch.Tensor,
    zone: str,
    variant: str,
    layer: int,
    draw: int,
    qids: Sequence[str],
    windows: Sequence[int],
    settings: NullSettings,
) -> NullMasks:
    """Size-matched null masks for ``zone`` in ``layer`` of one batch (see the module docstring).

    ``mean_probs`` ``[B, T, T]``: the unmasked model's attention probabilities at ``layer``, averaged over
    heads. ``qids``/``windows``: each batch row's question id and window ordinal within the question.
    """
    zone_ids = torch.as_tensor(zone_ids)
    batch, length = zone_ids.shape
    if mean_probs.shape != (batch, length, length):
        raise MrcbenchError(f"null masks: probabilities have shape {tuple(mean_probs.shape)}, expected "
                            f"[{batch}, {length}, {length}]")
    if len(qids) != batch or len(windows) != batch:
        raise MrcbenchError(f"null masks: {len(qids)} question ids and {len(windows)} windows for {batch} rows")
    device = mean_probs.device
    zone_ids = zone_ids.to(device)
    probs = mean_probs.double()
    zone_blank = blanked_cells(zone_ids, zone, variant)
    rows = zone_blank.any(-1) & (zone_ids != PAD)  # [B, T] the zone's query rows
    real_key = (zone_ids == QUESTION) | (zone_ids == PASSAGE)  # never special tokens, never padding
    candidates = real_key & ~zone_blank.any(1)  # [B, T] keys outside the zone's key columns
    # a row whose every attendable key is in the zone keeps its diagonal, as the zone's own mask does
    # (only inside a sliding window; attendable = nonzero probability in the unmasked model)
    starved = ~((probs > 0) & ~zone_blank).any(-1) & rows
    zone_blank = zone_blank & ~(starved[..., None] & torch.eye(length, dtype=torch.bool, device=device))
    target = (probs * zone_blank).sum(-1) * rows  # [B, T] per row
    seeds = np.asarray(
        [question_seed(settings.seed, qid, variant, zone, layer, draw) for qid in qids], dtype=np.int64
    )
    priority = torch.full((batch, length, length), 2.0, dtype=torch.float64)
    real = (zone_ids != PAD).cpu()
    for row in range(batch):  # one generator per window, over its real tokens only
        positions = real[row].nonzero().flatten()
        generator = torch.Generator().manual_seed(_window_seed(int(seeds[row]), int(windows[row])))
        draws = torch.rand((len(positions), len(positions)), generator=generator, dtype=torch.float64)
        priority[row, positions[:, None], positions[None, :]] = draws
    priority = priority.to(device).masked_fill(~candidates[:, None, :], 2.0)
    order = priority.argsort(dim=-1, stable=True)  # candidates first, in shuffled order
    supply = torch.gather(probs * candidates[:, None, :], -1, order)
    cumulative = supply.cumsum(-1)
    n_candidates = candidates.sum(-1, keepdim=True).expand(batch, length)  # [B, T]
    below = (cumulative < target[..., None]).sum(-1)  # keys strictly below the target
    crossing = below.clamp(max=length - 1)
    over = cumulative.gather(-1, crossing[..., None])[..., 0]
    under = torch.where(
        below > 0, cumulative.gather(-1, (below - 1).clamp(min=0)[..., None])[..., 0], torch.zeros_like(over)
    )
    upper = target * (1 + settings.tolerance)
    lower = target * (1 - settings.tolerance)
    closer = (over - target) <= (target - under)
    take = torch.where(closer & (over <= upper), below + 1, below)  # the crossing key only if closer and within
    take = torch.minimum(take, n_candidates)
    take = torch.where((target > 0) & rows, take, torch.zeros_like(take))
    chosen_sorted = torch.arange(length, device=device)[None, None, :] < take[..., None]
    chosen = torch.zeros_like(chosen_sorted).scatter(-1, order, chosen_sorted) & candidates[:, None, :]
    achieved = (probs * chosen).sum(-1)
    for _ in range(REFILL_PASSES):  # still short of the tolerance: add, in the same order, keys that fit
        need = rows & (target > 0) & (achieved < lower)
        if not bool(need.any()):
            break
        room = upper - achieved
        fits = candidates[:, None, :] & ~chosen & (probs <= room[..., None]) & need[..., None]
        fits_sorted = torch.gather(fits, -1, order)
        mass_sorted = torch.gather(probs * fits, -1, order)
        running = mass_sorted.cumsum(-1)
        adds = fits_sorted & (running <= room[..., None]) & (running - mass_sorted < (target - achieved)[..., None])
        if not bool(adds.any()):
            break
        chosen = chosen | torch.zeros_like(adds).scatter(-1, order, adds)
        achieved = (probs * chosen).sum(-1)
    row_ok = (achieved - target).abs() <= settings.tolerance * target + 1e-12
    counted = rows.sum(-1).clamp(min=1)
    mean_target = ((target * rows).sum(-1) / counted).cpu().numpy()
    mean_achieved = ((achieved * rows).sum(-1) / counted).cpu().numpy()
    feasible = (row_ok | ~rows).all(-1).cpu().numpy()
    return NullMasks(blanked=chosen & rows[..., None], target=mean_target, achieved=mean_achieved,
                     feasible=feasible, seeds=seeds)
