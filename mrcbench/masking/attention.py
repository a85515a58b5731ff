"""The ``"mrcbench"`` attention implementation: zone masking and zone statistics inside attention.

transformers 5 routes every self-attention of BERT, RoBERTa, XLM-R, ELECTRA and ALBERT through
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``; the old
``head_mask`` argument no longer exists. We therefore register one attention function under the name
``"mrcbench"`` (plus the eager mask factory under the same name, so the model still builds the additive
``[B, 1, T, T]`` float padding mask) and switch the model to it. The function

* delegates to the model's *own* ``eager_attention_forward`` (looked up in the module's modeling file),
  so with no intervention the model is bit-identical to ``attn_implementation="eager"``;
* in the selected layers (and optionally heads) sets the blanked cells of the additive mask to the
  mask dtype's most negative value with ``torch.where`` (never adding two ``finfo.min``), so
  ``exp`` underflows to exactly 0 and softmax renormalises over the remaining keys: the paper's
  "−10000 on the raw scores" operation (docs/masking.md §5);
* optionally accumulates zone statistics on the fly (never storing all maps), records full maps for a
  few case-study features, and records the attention mass the blanked cells carried before masking.

ModernBERT's local layers receive a sliding-window mask: the zone mask is combined with it (cells are
only ever added to the masked set, and the replicated "all" quirk lifts padding only inside the
window). DeBERTa-v2/v3 and MPNet compute attention in their own modules (see :mod:`mrcbench.families`):
for them a per-family adapter edits the same (row, column) cells in the module's own mask argument
before its softmax, and takes the zone statistics from the probabilities its ``nn.Dropout`` receives.
A real-token row whose every key would be masked (possible only inside a sliding window) keeps its
own diagonal cell, so no row is ever fully blanked.

The layer index is counted per forward pass (reset by a pre-hook on the base model) because ALBERT
calls one shared attention module for every layer; where a module carries ``layer_idx`` (BERT-style
models) the count is cross-checked against it, and every forward must make exactly
``num_hidden_layers`` attention calls.

Usage::

    controller = ZoneAttention(model)
    with controller.intervene(zone_ids, zone="p2q", layers=3, variant="paper") as result:
        outputs = model(input_ids=..., attention_mask=..., token_type_ids=...)
    result.removed_mass          # [B, L] numpy, NaN where the layer was not masked
    with controller.record_stats(zone_ids) as stats:
        model(...)
    stats.mass                   # [B, L, H, 3 row zones, 3 column zones]
"""
from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mrcbench.errors import MrcbenchError
from mrcbench.families import check_model
from mrcbench.models import hf_compat
from mrcbench.zones import (
    PAD,
    blanked_cells,
    check_operator,
    check_variant,
    check_zone,
    stat_zone_onehot,
    unmasks_padding,
)

if TYPE_CHECKING:
    from typing import Self  # Python >= 3.11; annotations are never evaluated here

IMPLEMENTATION = "mrcbench"
"""Name under which the attention function and its mask factory are registered in transformers."""

_CONTROLLERS: weakref.WeakKeyDictionary[nn.Module, ZoneAttention] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------------
# registration and the attention function
# --------------------------------------------------------------------------------------------------
def register_attention() -> str:
    """Register the ``"mrcbench"`` attention function and its (eager, additive float) mask factory.

    Idempotent. Without the mask registration transformers would treat ``"mrcbench"`` as a backend
    that needs no mask and silently drop the padding mask.
    """
    hf_compat.register_attention_function(IMPLEMENTATION, mrcbench_attention_forward)
    return IMPLEMENTATION


def _eager_for(module: nn.Module) -> Callable:
    """The ``eager_attention_forward`` of the modeling file that defines ``module`` (BERT's as fallback)."""
    return hf_compat.eager_attention_for(module)


def mrcbench_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention function registered as ``"mrcbench"`` (signature of transformers' attention interface).

    Plain eager attention unless a :class:`ZoneAttention` controller of this module's model has an
    intervention or a statistics recorder active.
    """
    eager = _eager_for(module)
    controller = _CONTROLLERS.get(module)
    if controller is None:
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    return controller.attend(eager, module, query, key, value, attention_mask, scaling, dropout, kwargs)


# --------------------------------------------------------------------------------------------------
# interventions
# --------------------------------------------------------------------------------------------------
def _index_mask(selection: int | Sequence[int] | None, size: int, what: str) -> torch.Tensor:
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
        operator: str = "renorm",
    ) -> MaskPlan:
        """One zone, the same layers and heads for every row of the batch."""
        zone_ids = torch.as_tensor(zone_ids)
        batch, device = zone_ids.shape[0], zone_ids.device
        layer_mask = _index_mask(layers, n_layers, "layer").to(device)
        head_mask = None if heads is None else _index_mask(heads, n_heads, "head").to(device)
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


@dataclass
class ZoneStats:
    """Zone statistics of one batch, filled while :meth:`ZoneAttention.record_stats` is active.

    ``mass[b, l, h, r, c]``: mean over the rows of zone ``r`` of feature ``b`` of the attention
    probability that layer ``l``, head ``h`` puts on the columns of zone ``c``; zones are ordered as
    :data:`mrcbench.zones.STAT_ZONES` (question, passage, special). NaN where feature ``b`` has no row of
    zone ``r``. ``maps[b]``: full ``[L, H, t, t]`` maps of requested batch rows, cropped to their ``t``
    non-PAD tokens.
    """

    mass: np.ndarray
    maps: dict[int, np.ndarray] = field(default_factory=dict)


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


class _StatsRecorder:
    def __init__(self, zone_ids: torch.Tensor, n_layers: int, n_heads: int, maps_for: Sequence[int]):
        self.zone_ids = zone_ids
        self.mass = torch.full((zone_ids.shape[0], n_layers, n_heads, 3, 3), float("nan"))
        self.maps_for = list(maps_for)
        self.maps: dict[int, list[torch.Tensor | None]] = {row: [None] * n_layers for row in self.maps_for}

    def add(self, layer: int, probs: torch.Tensor) -> None:
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
# the controller
# --------------------------------------------------------------------------------------------------
class ZoneAttention:
    """Attach zone masking / zone statistics to a transformers encoder (BERT, RoBERTa, XLM-R, ELECTRA, ALBERT).

    Switches ``model`` to the ``"mrcbench"`` attention implementation. The zone ids of the *current*
    batch are handed over by the context managers; outside them the model behaves exactly like eager
    attention. :meth:`close` (or leaving ``with ZoneAttention(model) as controller:``) restores the
    previous implementation.
    """

    def __init__(self, model: nn.Module):
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "num_hidden_layers"):
            raise MrcbenchError(f"{type(model).__name__} is not a transformers encoder with num_hidden_layers")
        family = check_model(model, type(model).__name__)
        self.model = model
        self.n_layers = int(config.num_hidden_layers)
        self.n_heads = int(config.num_attention_heads)
        for module in model.modules():
            if module in _CONTROLLERS and _CONTROLLERS[module] is not self:
                raise MrcbenchError(f"{type(model).__name__} already has a ZoneAttention controller; close it first")
        base = getattr(model, "base_model", model)
        self._hooks = []
        self._previous_implementation = None
        if family.adapter is None:
            register_attention()
            self._previous_implementation = hf_compat.attention_implementation(config)
            model.set_attn_implementation(IMPLEMENTATION)
            if hf_compat.attention_implementation(config) != IMPLEMENTATION:
                raise MrcbenchError(
                    f"{type(model).__name__} does not route attention through transformers' AttentionInterface; "
                    "zone masking is not possible for it"
                )
        else:
            self._hooks.extend(self._attach_adapter(family.adapter))
        for module in model.modules():
            _CONTROLLERS[module] = self
        self._hooks += [
            base.register_forward_pre_hook(self._start_forward),
            base.register_forward_hook(self._end_forward),
        ]
        self._adapter_layer: int | None = None
        self._reference_probs: list[torch.Tensor] | None = None
        self._adapter_edit: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._mean_probs: dict[int, torch.Tensor | None] | None = None
        self._next_layer = 0
        self._plan: MaskPlan | None = None
        self._removed: torch.Tensor | None = None
        self._stats: _StatsRecorder | None = None
        self._fused = False

    # ---- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove hooks and restore the model's previous attention implementation."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for module in self.model.modules():
            if _CONTROLLERS.get(module) is self:
                del _CONTROLLERS[module]
        if self._previous_implementation is not None:
            self.model.set_attn_implementation(self._previous_implementation)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- layer counting ----------------------------------------------------------------------------
    def _start_forward(self, module: nn.Module, args: tuple) -> None:
        self._next_layer = 0

    def _end_forward(self, module: nn.Module, args: tuple, output: object) -> None:
        counted = self._next_layer
        if counted != self.n_layers:
            raise MrcbenchError(
                f"{type(self.model).__name__} made {counted} attention calls in one forward pass but has "
                f"{self.n_layers} layers; mrcbench needs exactly one self-attention call per layer"
            )

    @contextlib.contextmanager
    def replay(self, start_layer: int, fused: bool = False) -> Iterator[None]:
        """Count layers from ``start_layer`` while the caller runs the model's layer modules directly.

        Used by the fast ablation grid, which re-runs only layers ``start_layer..L-1``. With ``fused``
        the attention outputs whose probabilities nobody reads (no statistics recorded; the masked
        call of an intervention, whose removed mass comes from the eager unmasked call) come from
        transformers' ``sdpa`` function with the same (edited) additive mask: equal to eager attention
        up to float rounding and, on a CPU, about 5x faster (benchmarks/README.md). Only in fp32: under
        bf16 autocast the two kernels differ at bf16 resolution, enough to flip near-tied answers, so
        the fast grid stays eager there and picks the same spans as the naive one.
        """
        if not 0 <= start_layer < self.n_layers:
            raise MrcbenchError(f"layer {start_layer} out of range; the model has {self.n_layers} layers")
        self._next_layer = start_layer
        self._fused = fused
        try:
            yield
        finally:
            self._next_layer = 0
            self._fused = False

    def _take_layer(self, module: nn.Module) -> int:
        layer = self._next_layer
        self._next_layer += 1
        declared = getattr(module, "layer_idx", None)
        if isinstance(declared, int) and declared != layer:
            raise MrcbenchError(
                f"attention call counted as layer {layer} but {type(module).__name__}.layer_idx is {declared}"
            )
        if layer >= self.n_layers:
            raise MrcbenchError(f"attention call {layer} exceeds the model's {self.n_layers} layers")
        return layer

    # ---- public contexts ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def intervene(
        self,
        zone_ids: torch.Tensor,
        zone: str,
        layers: int | Sequence[int],
        heads: int | Sequence[int] | None = None,
        variant: str = "paper",
        operator: str = "renorm",
    ) -> Iterator[InterventionResult]:
        """Remove ``zone`` (see :mod:`mrcbench.zones`) in ``layers`` (all heads, or only ``heads``).

        The paper grid is ``layers=l, heads=None``; head ablation ``layers=l, heads=h``; masking from
        layer ``l`` upward ``layers=range(l, L)``. ``zone_ids`` must be the current batch's ``[B, T]``.
        ``operator`` (:data:`mrcbench.zones.OPERATORS`): ``renorm`` blanks before softmax (the paper's),
        ``zero`` and ``uniform`` edit the probabilities after it.
        """
        check_zone(zone)
        check_variant(variant)
        plan = MaskPlan.build(zone_ids, zone, variant, layers, heads, self.n_layers, self.n_heads, operator)
        with self.apply_plan(plan) as result:
            yield result

    @contextlib.contextmanager
    def apply_plan(self, plan: MaskPlan) -> Iterator[InterventionResult]:
        """Low-level :meth:`intervene` with per-row zones/layers/heads (see :class:`MaskPlan`)."""
        if self._plan is not None:
            raise MrcbenchError("an intervention is already active on this model; interventions do not nest")
        result = InterventionResult(removed_mass=np.full((plan.zone_ids.shape[0], self.n_layers), np.nan))
        self._plan = plan
        self._removed = torch.full((plan.zone_ids.shape[0], self.n_layers), float("nan"))
        try:
            yield result
        finally:
            result.removed_mass = self._removed.numpy().astype(np.float64)
            self._plan = None
            self._removed = None

    @contextlib.contextmanager
    def record_stats(self, zone_ids: torch.Tensor, maps_for: Sequence[int] = ()) -> Iterator[ZoneStats]:
        """Accumulate zone statistics (and full maps of the batch rows ``maps_for``) during the forward pass.

        May be combined with :meth:`intervene`; the statistics are then those of the masked model.
        """
        if self._stats is not None:
            raise MrcbenchError("zone statistics are already being recorded on this model")
        zone_ids = torch.as_tensor(zone_ids)
        bad = [row for row in maps_for if not 0 <= row < zone_ids.shape[0]]
        if bad:
            raise MrcbenchError(f"maps_for row {bad[0]} is outside the batch of {zone_ids.shape[0]}")
        self._stats = _StatsRecorder(zone_ids, self.n_layers, self.n_heads, maps_for)
        stats = ZoneStats(mass=self._stats.mass.numpy())
        try:
            yield stats
            finished = self._stats.result()
            stats.mass, stats.maps = finished.mass, finished.maps
        finally:
            self._stats = None

    @contextlib.contextmanager
    def record_mean_probs(self, layers: Iterable[int]) -> Iterator[dict[int, torch.Tensor | None]]:
        """Keep the head-averaged attention probabilities ``[B, T, T]`` (fp32) of ``layers`` during the
        forward pass (the size-matched null's reference, :mod:`mrcbench.masking.nulls`); eager, never fused."""
        if self._mean_probs is not None:
            raise MrcbenchError("mean attention probabilities are already being recorded on this model")
        self._mean_probs = {int(layer): None for layer in layers}
        recorded = self._mean_probs
        try:
            yield recorded
        finally:
            self._mean_probs = None

    def _keep_mean_probs(self, layer: int, probs: torch.Tensor) -> None:
        if self._mean_probs is not None and layer in self._mean_probs:
            self._mean_probs[layer] = probs.float().mean(1)

    # ---- the attention call ------------------------------------------------------------------------
    def attend(
        self,
        eager: Callable,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None,
        dropout: float,
        kwargs: dict,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One attention call of this controller's model (called by the ``"mrcbench"`` attention function)."""
        layer = self._take_layer(module)
        plan, stats = self._plan, self._stats
        edit = None
        if plan is not None:
            self._check_batch(plan.zone_ids, query, key, "intervention")
            if plan.zone_ids.device != query.device:
                plan = self._plan = plan.to(query.device)
            edit = plan.for_layer(layer)
        attend = eager
        if (
            self._fused and stats is None and self._mean_probs is None and query.dtype == torch.float32
            and (attention_mask is None or attention_mask.is_floating_point())
        ):
            attend = fused_attention
        if edit is None:
            output, probs = attend(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        elif plan.operator != "renorm":  # after softmax: the model's own eager probabilities, edited
            _, blank = _edit_mask(attention_mask, *edit, plan.zone_ids, query, _window_band(module, key.shape[2]))
            _, unmasked = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0, **kwargs)
            if bool(blank.any()):
                self._removed[:, layer] = _removed_mass(unmasked, blank, plan.zone_ids).cpu()
            probs = apply_operator(unmasked, blank & _allowed_cells(attention_mask, query), plan.operator)
            weights = nn.functional.dropout(probs, p=dropout, training=module.training)
            output = torch.matmul(weights.to(value.dtype), value).transpose(1, 2).contiguous()  # as eager
        else:
            mask, blank = _edit_mask(attention_mask, *edit, plan.zone_ids, query, _window_band(module, key.shape[2]))
            if bool(blank.any()):
                _, unmasked = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0, **kwargs)
                self._removed[:, layer] = _removed_mass(unmasked, blank, plan.zone_ids).cpu()
            output, probs = attend(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)
        self._keep_mean_probs(layer, probs)
        if stats is not None:
            self._check_batch(stats.zone_ids, query, key, "record_stats")
            stats.zone_ids = stats.zone_ids.to(query.device)
            stats.add(layer, probs)
        return output, probs

    @staticmethod
    def _check_batch(zone_ids: torch.Tensor, query: torch.Tensor, key: torch.Tensor, what: str) -> None:
        if zone_ids.shape[0] != query.shape[0] or zone_ids.shape[1] != key.shape[2]:
            raise MrcbenchError(
                f"{what}: zone_ids has shape {tuple(zone_ids.shape)} but the batch is "
                f"[{query.shape[0]}, {key.shape[2]}]; pass the current batch's zone_ids"
            )


    # ---- adapter for families that compute attention in their own module (DeBERTa-v2/v3, MPNet) -------
    def _attach_adapter(self, class_name: str) -> list:
        """Hook every ``class_name`` self-attention module: mask edit before, probabilities at its dropout."""
        modules = [module for module in self.model.modules() if type(module).__name__ == class_name]
        name = type(self.model).__name__
        if not modules:
            raise MrcbenchError(f"{name} has no {class_name} module; its attention cannot be adapted")
        hooks = []
        for module in modules:
            dropout = getattr(module, "dropout", None)
            if not isinstance(dropout, nn.Dropout):
                raise MrcbenchError(f"{name}: {class_name} has no nn.Dropout on its attention probabilities")
            hooks.append(module.register_forward_pre_hook(self._adapter_before, with_kwargs=True))
            hooks.append(dropout.register_forward_hook(self._adapter_probs))
        return hooks

    def _adapter_before(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Count the layer; with an active intervention, hand the module an edited attention mask."""
        layer = self._adapter_layer = self._take_layer(module)
        plan = self._plan
        if plan is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        batch_and_length = hidden.new_empty(hidden.shape[0], 0, hidden.shape[1], 0)  # [B, ., T, .] for the check
        self._check_batch(plan.zone_ids, batch_and_length, batch_and_length, "intervention")
        if plan.zone_ids.device != hidden.device:
            plan = self._plan = plan.to(hidden.device)
        edit = plan.for_layer(layer)
        if edit is None:
            return None
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        attention_mask = bound.arguments.get("attention_mask")
        mask, blank = _edit_mask(attention_mask, *edit, plan.zone_ids, hidden, None)
        if plan.operator != "renorm":  # edited after softmax, at the dropout (removed mass measured there)
            self._adapter_edit = (blank, blank & _allowed_cells(attention_mask, hidden), layer)
            return None
        if bool(blank.any()):  # the unmasked probabilities of this call, for the removed mass
            self._reference_probs = []
            try:
                module.forward(*args, **kwargs)
                unmasked = self._reference_probs[-1]
            finally:
                self._reference_probs = None
            self._removed[:, layer] = _removed_mass(unmasked, blank, plan.zone_ids).cpu()
        bound.arguments["attention_mask"] = mask
        return bound.args, bound.kwargs

    def _adapter_probs(self, dropout: nn.Module, inputs: tuple, probs: torch.Tensor) -> None:
        """Forward hook on the dropout applied to the attention probabilities ``[B, H, T, T]``."""
        if self._reference_probs is not None:
            self._reference_probs.append(probs)
            return None
        edit, self._adapter_edit = self._adapter_edit, None
        if edit is not None:
            blank, attendable, layer = edit
            if bool(blank.any()):
                self._removed[:, layer] = _removed_mass(probs, blank, self._plan.zone_ids).cpu()
            probs = apply_operator(probs, attendable, self._plan.operator).to(probs.dtype)
        self._keep_mean_probs(self._adapter_layer, probs)
        stats = self._stats
        if stats is not None:
            self._check_batch(stats.zone_ids, probs, probs, "record_stats")
            stats.zone_ids = stats.zone_ids.to(probs.device)
            stats.add(self._adapter_layer, probs)
        return probs if edit is not None else None


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


def _allowed_cells(attention_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Bool cells the model's own mask lets a query attend to (additive float or DeBERTa keep mask)."""
    if attention_mask is None:
        return torch.ones((), dtype=torch.bool, device=like.device)
    if attention_mask.is_floating_point():
        return attention_mask > torch.finfo(attention_mask.dtype).min
    return attention_mask.bool()


def fused_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa`` attention for a bidirectional encoder (never causal), no probabilities."""
    return hf_compat.sdpa_attention(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


def _window_band(module: nn.Module, length: int) -> torch.Tensor | None:
    """``[T, T]`` bool: the cells a sliding-window layer may attend to at all (None: no window).

    ModernBERT's local layers carry ``sliding_window``; the band is transformers' own bidirectional
    overlay for ``config.sliding_window``, the same one the model's mask was built from.
    """
    if getattr(module, "sliding_window", None) is None or getattr(module, "config", None) is None:
        return None
    return hf_compat.sliding_window_band(module.config.sliding_window, length)


def _edit_mask(
    attention_mask: torch.Tensor | None,
    blank: torch.Tensor,
    lift_padding: torch.Tensor,
    zone_ids: torch.Tensor,
    like: torch.Tensor,
    window: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(edited mask, blanked cells actually applied) for one layer; the model's own mask is kept.

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


def _removed_mass(unmasked_probs: torch.Tensor, blank: torch.Tensor, zone_ids: torch.Tensor) -> torch.Tensor:
    """``[B]`` mean over masked heads and blanked non-PAD rows of the probability on blanked keys."""
    batch, heads, length, _ = unmasked_probs.shape
    per_row = (unmasked_probs.float() * blank).sum(-1)  # [B, H, T]
    rows = (blank.any(-1) & (zone_ids != PAD)[:, None, :]).expand(batch, heads, length)
    return (per_row * rows).sum((1, 2)) / rows.sum((1, 2))
