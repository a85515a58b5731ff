"""The ablation operators as pure tensor functions (:data:`mrcbench.zones.OPERATORS`).

``renorm`` (the paper's) acts before softmax: :func:`edit_mask` sets the blanked cells of the model's own
attention mask to the dtype's most negative value, so ``exp`` underflows to exactly 0 and softmax
renormalises over the remaining keys (docs/masking.md §5). ``zero`` and ``uniform`` act after softmax:
:func:`apply_operator` edits the probabilities of the blanked cells the model's mask allows
(:func:`allowed_cells`).
"""
from __future__ import annotations

import torch

from mrcbench.errors import MrcbenchError
from mrcbench.zones import PAD, check_operator


def edit_mask(
    attention_mask: torch.Tensor | None,
    blank: torch.Tensor,
    lift_padding: torch.Tensor,
    zone_ids: torch.Tensor,
    like: torch.Tensor,
    window: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(edited mask, blanked cells actually applied) for one layer; the model's own mask is kept.

    ``blank`` ``[B, h, T, T]`` and ``lift_padding`` ``[B, h]`` are one layer of a
    :class:`~mrcbench.masking.plan.MaskPlan`; ``like`` gives the device (and, without a mask, the dtype).
    ``attention_mask`` is additive (float: 0 allowed, dtype min masked; None = nothing masked) or, for
    DeBERTa, a keep mask (bool/int: nonzero allowed); the result has the same kind. Blanked cells are
    set (never added) to the dtype's most negative value, so ``exp`` underflows to exactly 0. With
    ``lift_padding`` (``all_paper_quirk``) the PAD rows and columns become attendable in this layer,
    but never outside a sliding ``window`` band. A real-token row left without any key keeps its
    diagonal cell.
    """
    device = like.device
    additive = attention_mask is None or attention_mask.is_floating_point()
    if attention_mask is None:  # no padding in the batch: transformers skipped the mask
        attention_mask = torch.zeros((), dtype=like.dtype, device=device)
    allowed = attention_mask > torch.finfo(attention_mask.dtype).min if additive else attention_mask.bool()
    pad = zone_ids == PAD
    lifted = torch.zeros((), dtype=torch.bool, device=device)
    if bool(lift_padding.any()):  # all_paper_quirk: PAD cells become attendable in this layer
        lifted = lift_padding[:, :, None, None] & (pad[:, None, None, :] | pad[:, None, :, None])
        if window is not None:
            lifted = lifted & window.to(device)
        allowed = allowed | lifted
    starved = ~(allowed & ~blank).any(-1) & ~pad[:, None, :]  # [B, h, T]
    if bool(starved.any()):
        diagonal = torch.eye(blank.shape[-1], dtype=torch.bool, device=device)
        blank = blank & ~(starved[..., None] & diagonal)
    if not additive:
        return (allowed & ~blank), blank
    dtype = attention_mask.dtype
    mask = torch.where(lifted, torch.zeros((), dtype=dtype, device=device), attention_mask)
    negative = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=device)
    return torch.where(blank, negative, mask), blank


def allowed_cells(attention_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Bool cells the model's own mask lets a query attend to (additive float or DeBERTa keep mask)."""
    if attention_mask is None:
        return torch.ones((), dtype=torch.bool, device=like.device)
    if attention_mask.is_floating_point():
        return attention_mask > torch.finfo(attention_mask.dtype).min
    return attention_mask.bool()


def apply_operator(probs: torch.Tensor, cells: torch.Tensor, operator: str) -> torch.Tensor:
    """Attention probabilities ``[B, H, T, T]`` with ``cells`` (bool, broadcastable: the blanked cells the
    model's own mask allows) removed after softmax by ``operator`` (``zero`` or ``uniform``; see
    :data:`mrcbench.zones.OPERATORS`). ``zero``: the cells become 0 (rows then sum to 1 minus their
    zone mass). ``uniform``: each row's mass on its cells is spread evenly over them (rows still sum to 1).
    """
    check_operator(operator)
    cells = cells.expand_as(probs)
    kept = probs.masked_fill(cells, 0)
    if operator == "zero":
        return kept
    if operator != "uniform":
        raise MrcbenchError(f"operator {operator!r} is applied before softmax, not by apply_operator")
    mass = (probs.float() * cells).sum(-1, keepdim=True)
    count = cells.sum(-1, keepdim=True).clamp(min=1)
    return torch.where(cells, (mass / count).to(probs.dtype), kept)
