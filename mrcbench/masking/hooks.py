"""The two hook points of every self-attention call, after TransformerLens' ``hook_attn_scores`` and
``hook_pattern``.

Both ways into a model's attention, the registered ``"mrcbench"`` attention function
(:mod:`mrcbench.masking.attention_function`) and the per-family adapters
(:mod:`mrcbench.masking.adapters`), make every call go through the same steps of one :class:`ZoneHooks`:

1. :meth:`ZoneHooks.take_layer` counts the layer of the call;
2. :meth:`ZoneHooks.hook_scores`, before softmax, turns the active :class:`~mrcbench.masking.plan.MaskPlan`'s
   layer into a :class:`LayerEdit`: the attention mask with the zone's cells blanked (:func:`~mrcbench.masking.operators.edit_mask`,
   the ``renorm`` operator) and the cells a post-softmax operator edits;
3. for a ``renorm`` edit that blanks anything, the caller computes the unmasked probabilities once more
   and shows them to :meth:`ZoneHooks.hook_pattern` with ``reference=True`` (the removed-mass meter reads them);
4. :meth:`ZoneHooks.hook_pattern`, after softmax, edits the probabilities by a ``zero``/``uniform`` edit
   (metering the removed mass first) and hands them to the active recorders (:mod:`mrcbench.masking.recorders`).

The hooks hold only the state these steps read: the layer counter, the plan and the recorders, which the
controller (:class:`mrcbench.masking.controller.ZoneAttention`) sets for the length of its contexts. With
none of them active, every call is the model's own attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mrcbench.errors import MrcbenchError
from mrcbench.masking.operators import allowed_cells, apply_operator, edit_mask
from mrcbench.masking.plan import MaskPlan
from mrcbench.masking.recorders import MeanProbsRecorder, RemovedMassMeter, ZoneStatsRecorder


@dataclass(frozen=True)
class LayerEdit:
    """What hook point 1 decided for one attention call of a masked layer.

    ``mask``: the model's attention mask with the blanked cells set to the dtype's minimum (what a
    ``renorm`` edit hands to softmax); ``blank`` ``[B, h, T, T]``: the cells blanked; ``cells``: for a
    post-softmax operator, the blanked cells the model's own mask allows (what :func:`apply_operator` edits).
    """

    layer: int
    operator: str
    zone_ids: torch.Tensor
    mask: torch.Tensor
    blank: torch.Tensor
    cells: torch.Tensor | None

    @property
    def after_softmax(self) -> bool:
        """True for the ``zero``/``uniform`` operators, which edit the probabilities, not the mask."""
        return self.operator != "renorm"

    @property
    def needs_reference(self) -> bool:
        """True where the caller must show :meth:`ZoneHooks.hook_pattern` the unmasked probabilities
        (``reference=True``) for the removed-mass meter: a ``renorm`` edit that blanks a cell."""
        return not self.after_softmax and bool(self.blank.any())


def check_batch(zone_ids: torch.Tensor, batch: int, length: int, what: str) -> None:
    """Refuse zone ids that are not the current batch's ``[batch, length]``."""
    if zone_ids.shape[0] != batch or zone_ids.shape[1] != length:
        raise MrcbenchError(
            f"{what}: zone_ids has shape {tuple(zone_ids.shape)} but the batch is "
            f"[{batch}, {length}]; pass the current batch's zone_ids"
        )


class ZoneHooks:
    """The layer counter, the active plan and recorders, and the two hook points that read them."""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.next_layer = 0
        self.fused = False  # replayed layers whose probabilities nobody reads may use fused attention
        self.plan: MaskPlan | None = None
        self.meter: RemovedMassMeter | None = None
        self.stats: ZoneStatsRecorder | None = None
        self.mean_probs: MeanProbsRecorder | None = None

    # ---- layer counting ----------------------------------------------------------------------------
    def take_layer(self, module: nn.Module) -> int:
        """The layer of this attention call (calls are counted per forward pass)."""
        layer = self.next_layer
        self.next_layer += 1
        declared = getattr(module, "layer_idx", None)
        if isinstance(declared, int) and declared != layer:
            raise MrcbenchError(
                f"attention call counted as layer {layer} but {type(module).__name__}.layer_idx is {declared}"
            )
        if layer >= self.n_layers:
            raise MrcbenchError(f"attention call {layer} exceeds the model's {self.n_layers} layers")
        return layer

    def check_layer_count(self, model_name: str) -> None:
        """Refuse a forward pass that did not make exactly one attention call per layer."""
        if self.next_layer != self.n_layers:
            raise MrcbenchError(
                f"{model_name} made {self.next_layer} attention calls in one forward pass but has "
                f"{self.n_layers} layers; mrcbench needs exactly one self-attention call per layer"
            )

    @property
    def may_fuse(self) -> bool:
        """Whether the probabilities of an unedited call may go unread (fused attention allowed)."""
        return self.fused and self.stats is None and self.mean_probs is None

    # ---- hook point 1: before softmax --------------------------------------------------------------
    def hook_scores(
        self, layer: int, attention_mask: torch.Tensor | None, like: torch.Tensor, length: int,
        window: torch.Tensor | None,
    ) -> LayerEdit | None:
        """The edit of this call (None: no intervention, or ``layer`` is not masked).

        ``attention_mask``: the model's own mask of the call (additive float, or DeBERTa's keep mask);
        ``like``: a tensor of the call whose first dimension is the batch (its device and dtype are used);
        ``length``: the number of keys; ``window``: a sliding-window layer's band (ModernBERT), else None.
        """
        plan = self.plan
        if plan is None:
            return None
        check_batch(plan.zone_ids, like.shape[0], length, "intervention")
        if plan.zone_ids.device != like.device:
            plan = self.plan = plan.to(like.device)
        selected = plan.for_layer(layer)
        if selected is None:
            return None
        mask, blank = edit_mask(attention_mask, *selected, plan.zone_ids, like, window)
        cells = None if plan.operator == "renorm" else blank & allowed_cells(attention_mask, like)
        return LayerEdit(layer=layer, operator=plan.operator, zone_ids=plan.zone_ids, mask=mask, blank=blank,
                         cells=cells)

    # ---- hook point 2: after softmax ---------------------------------------------------------------
    def hook_pattern(
        self, layer: int, probs: torch.Tensor | None, edit: LayerEdit | None, reference: bool = False
    ) -> torch.Tensor | None:
        """The probabilities ``[B, H, T, T]`` of this call, edited by a post-softmax ``edit``, recorded.

        With ``reference``, ``probs`` are the unmasked probabilities of a ``renorm`` edit's layer
        (:attr:`LayerEdit.needs_reference`): only the removed-mass meter reads them. ``probs`` is None
        where fused attention returned none (then nothing records).
        """
        if reference:
            self.meter.add(layer, probs, edit.blank, edit.zone_ids)
            return probs
        if edit is not None and edit.after_softmax:
            if bool(edit.blank.any()):
                self.meter.add(layer, probs, edit.blank, edit.zone_ids)
            probs = apply_operator(probs, edit.cells, edit.operator).to(probs.dtype)
        if self.mean_probs is not None:
            self.mean_probs.add(layer, probs)
        if self.stats is not None:
            check_batch(self.stats.zone_ids, probs.shape[0], probs.shape[-1], "record_stats")
            self.stats.add(layer, probs)
        return probs
