"""The mask plan: which (query row, key column) cells each zone blanks, per batch row, layer and head.

:func:`blanked_cells` turns a batch's zone ids (:mod:`mrcbench.zones`) into the cell set of one zone and
variant; a :class:`MaskPlan` says, for every batch row, which cells to blank, whether to lift the padding
mask (``all_paper_quirk``), in which layers and heads, and by which operator. The attention hooks
(:mod:`mrcbench.masking.hooks`) read one layer of it per attention call (:meth:`MaskPlan.for_layer`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mrcbench.errors import MrcbenchError
from mrcbench.zones import PAD, PASSAGE, QUESTION, check_operator, check_variant, check_zone, unmasks_padding


def blanked_cells(zone_ids: torch.Tensor, zone: str, variant: str) -> torch.Tensor:
    """Boolean ``[B, T, T]`` tensor of the cells a zone ablation removes (rows = queries, cols = keys).

    ``zone_ids`` is a ``[B, T]`` integer tensor of :data:`~mrcbench.zones.PAD`/``SPECIAL``/``QUESTION``/
    ``PASSAGE``. See :mod:`mrcbench.zones` for the exact cell sets of each zone and variant;
    ``all_paper_quirk`` blanks nothing (its effect is :func:`mrcbench.zones.unmasks_padding`).
    """
    check_zone(zone)
    check_variant(variant)
    if zone_ids.dim() != 2:
        raise MrcbenchError(f"zone_ids must have shape [batch, seq], got {tuple(zone_ids.shape)}")
    question = zone_ids == QUESTION
    passage = zone_ids == PASSAGE
    if zone == "all_paper_quirk":
        rows = cols = torch.zeros_like(question)
    elif zone == "all":
        rows = cols = question | passage
    elif zone == "q2q":
        rows, cols = question, question
    elif zone == "p2p":
        rows, cols = passage, passage
    elif zone == "q2p":
        rows, cols = (~passage if variant == "paper" else question), passage
    else:  # p2q
        rows, cols = (~question if variant == "paper" else passage), question
    return rows[:, :, None] & cols[:, None, :]


def _selector(selection: int | Sequence[int] | None, size: int, what: str) -> torch.Tensor:
    """Boolean ``[size]`` selector from an int, a sequence of ints, or None (= all)."""
    if selection is None:
        return torch.ones(size, dtype=torch.bool)
    indices = [selection] if isinstance(selection, int) else list(selection)
    if not indices:
        raise MrcbenchError(f"empty {what} selection")
    bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < size]
    if bad:
        raise MrcbenchError(f"{what} index {bad[0]!r} out of range; the model has {size} {what}s (0-based)")
    selector = torch.zeros(size, dtype=torch.bool)
    selector[indices] = True
    return selector


@dataclass
class MaskPlan:
    """Per batch row: which cells to blank, whether to lift the padding mask, in which layers and heads.

    Rows of one plan may carry different zones, layers and heads; the fast ablation grid stacks several
    cells of the same starting layer into one batch this way.
    """

    zone_ids: torch.Tensor  # [B, T] int
    blanked: torch.Tensor  # [B, T, T] bool (rows = queries, cols = keys)
    unmask_padding: torch.Tensor  # [B] bool (replicated authors' "all")
    layers: torch.Tensor  # [B, L] bool
    heads: torch.Tensor | None  # [B, H] bool, or None = all heads in every row
    operator: str = "renorm"  # how the blanked cells are removed (mrcbench.zones.OPERATORS), one per plan

    def __post_init__(self) -> None:
        check_operator(self.operator)
        if self.operator != "renorm" and bool(self.unmask_padding.any()):
            raise MrcbenchError(
                f"operator {self.operator!r} removes blanked cells after softmax; all_paper_quirk (which lifts "
                "the padding mask before it) exists only for the renorm operator"
            )

    @classmethod
    def build(
        cls,
        zone_ids: torch.Tensor,
        zone: str,
        variant: str,
        layers: int | Sequence[int],
        heads: int | Sequence[int] | None,
        n_layers: int,
        n_heads: int,
        operator: str,
    ) -> MaskPlan:
        """One zone, the same layers and heads for every row of the batch."""
        zone_ids = torch.as_tensor(zone_ids)
        batch, device = zone_ids.shape[0], zone_ids.device
        layer_mask = _selector(layers, n_layers, "layer").to(device)
        head_mask = None if heads is None else _selector(heads, n_heads, "head").to(device)
        plan = cls(
            zone_ids=zone_ids,
            blanked=blanked_cells(zone_ids, zone, variant),
            unmask_padding=torch.full((batch,), unmasks_padding(zone), dtype=torch.bool, device=device),
            layers=layer_mask.expand(batch, n_layers),
            heads=None if head_mask is None else head_mask.expand(batch, n_heads),
            operator=operator,
        )
        plan.check_rows_keep_a_key()
        return plan

    @classmethod
    def concat(cls, plans: Sequence[MaskPlan]) -> MaskPlan:
        """Stack plans along the batch dimension (their sequence lengths and operators must agree)."""
        operators = {plan.operator for plan in plans}
        if len(operators) != 1:
            raise MrcbenchError(f"cannot stack plans of different operators {sorted(operators)}")
        heads = None
        if any(plan.heads is not None for plan in plans):
            heads = torch.cat(
                [
                    plan.heads
                    if plan.heads is not None
                    else torch.ones(plan.layers.shape[0], _n_heads_of(plans), dtype=torch.bool, device=plan.layers.device)
                    for plan in plans
                ]
            )
        return cls(
            zone_ids=torch.cat([plan.zone_ids for plan in plans]),
            blanked=torch.cat([plan.blanked for plan in plans]),
            unmask_padding=torch.cat([plan.unmask_padding for plan in plans]),
            layers=torch.cat([plan.layers for plan in plans]),
            heads=heads,
            operator=operators.pop(),
        )

    def check_rows_keep_a_key(self) -> None:
        """Refuse a plan that would leave a real-token query row with no key to attend to."""
        keys_allowed = (self.zone_ids != PAD)[:, None, :] | self.unmask_padding[:, None, None]
        starved = ~(keys_allowed & ~self.blanked).any(-1) & (self.zone_ids != PAD)
        if starved.any():
            batch_row, position = (int(i) for i in starved.nonzero()[0])
            raise MrcbenchError(
                f"zone mask leaves token {position} of batch row {batch_row} with no key to attend to "
                "(are the special tokens missing from zone_ids?)"
            )

    def to(self, device: torch.device) -> MaskPlan:
        return MaskPlan(
            zone_ids=self.zone_ids.to(device),
            blanked=self.blanked.to(device),
            unmask_padding=self.unmask_padding.to(device),
            layers=self.layers.to(device),
            heads=None if self.heads is None else self.heads.to(device),
            operator=self.operator,
        )

    def for_layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(blanked ``[B, h, T, T]``, lift-padding ``[B, h]``) for this layer, h = 1 or H; None if idle."""
        active = self.layers[:, layer]
        if not bool(active.any()):
            return None
        if self.heads is None:
            row_heads = active[:, None]
        else:
            row_heads = active[:, None] & self.heads
        blank = self.blanked[:, None] & row_heads[:, :, None, None]
        return blank, self.unmask_padding[:, None] & row_heads


def _n_heads_of(plans: Sequence[MaskPlan]) -> int:
    return next(plan.heads.shape[1] for plan in plans if plan.heads is not None)
