"""The zone-attention controller: zone masking and zone statistics attached to a transformers encoder.

:class:`ZoneAttention` gives a model's self-attention calls their two hook points
(:class:`~mrcbench.masking.hooks.ZoneHooks`): through the registered ``"mrcbench"`` attention function
(:mod:`mrcbench.masking.attention_function`) where the family routes attention through transformers'
interface, else through the family's module adapter (:mod:`mrcbench.masking.adapters`: DeBERTa-v2/v3,
MPNet). Its contexts set what the hooks do meanwhile: an intervention (:meth:`ZoneAttention.intervene`,
:meth:`ZoneAttention.apply_plan`), the zone statistics (:meth:`ZoneAttention.record_stats`), the
head-averaged probabilities (:meth:`ZoneAttention.record_mean_probs`) and the layer count of a replay
(:meth:`ZoneAttention.replay`). Outside them the model is bit-identical to eager attention.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mrcbench.errors import MrcbenchError
from mrcbench.families import check_model
from mrcbench.masking import attention_function
from mrcbench.masking.adapters import ModuleAdapter
from mrcbench.masking.hooks import ZoneHooks
from mrcbench.masking.plan import MaskPlan
from mrcbench.masking.recorders import (
    InterventionResult,
    MeanProbsRecorder,
    RemovedMassMeter,
    ZoneStats,
    ZoneStatsRecorder,
)
from mrcbench.zones import check_variant, check_zone

if TYPE_CHECKING:
    from typing import Self  # Python >= 3.11; annotations are never evaluated here


class ZoneAttention:
    """Attach zone masking / zone statistics to a transformers encoder of a supported family.

    The zone ids of the *current* batch are handed over by the context managers; outside them the model
    behaves exactly like eager attention. :meth:`close` (or leaving ``with ZoneAttention(model) as
    controller:``) removes the hooks and restores the previous attention implementation.
    """

    def __init__(self, model: nn.Module):
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "num_hidden_layers"):
            raise MrcbenchError(f"{type(model).__name__} is not a transformers encoder with num_hidden_layers")
        family = check_model(model, type(model).__name__)
        self.model = model
        self.n_layers = int(config.num_hidden_layers)
        self.n_heads = int(config.num_attention_heads)
        self.hooks = ZoneHooks(self.n_layers)
        self._restore: Callable[[], None] | None = None
        attention_function.claim(model, self.hooks)
        try:
            if family.adapter is None:
                self._handles = []
                self._restore = attention_function.switch_model(model)
            else:
                self._handles = ModuleAdapter(self.hooks).attach(model, family.adapter)
        except BaseException:
            attention_function.release(model, self.hooks)
            raise
        base = getattr(model, "base_model", model)
        self._handles += [
            base.register_forward_pre_hook(self._start_forward),
            base.register_forward_hook(self._end_forward),
        ]

    # ---- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove hooks and restore the model's previous attention implementation."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        attention_function.release(self.model, self.hooks)
        if self._restore is not None:
            self._restore()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- layer counting ----------------------------------------------------------------------------
    def _start_forward(self, module: nn.Module, args: tuple) -> None:
        self.hooks.next_layer = 0

    def _end_forward(self, module: nn.Module, args: tuple, output: object) -> None:
        self.hooks.check_layer_count(type(self.model).__name__)

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
        self.hooks.next_layer = start_layer
        self.hooks.fused = fused
        try:
            yield
        finally:
            self.hooks.next_layer = 0
            self.hooks.fused = False

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
        if self.hooks.plan is not None:
            raise MrcbenchError("an intervention is already active on this model; interventions do not nest")
        batch = plan.zone_ids.shape[0]
        result = InterventionResult(removed_mass=np.full((batch, self.n_layers), np.nan))
        meter = RemovedMassMeter(batch, self.n_layers)
        self.hooks.plan, self.hooks.meter = plan, meter
        try:
            yield result
        finally:
            result.removed_mass = meter.result()
            self.hooks.plan, self.hooks.meter = None, None

    @contextlib.contextmanager
    def record_stats(self, zone_ids: torch.Tensor, maps_for: Sequence[int] = ()) -> Iterator[ZoneStats]:
        """Accumulate zone statistics (and full maps of the batch rows ``maps_for``) during the forward pass.

        May be combined with :meth:`intervene`; the statistics are then those of the masked model.
        """
        if self.hooks.stats is not None:
            raise MrcbenchError("zone statistics are already being recorded on this model")
        zone_ids = torch.as_tensor(zone_ids)
        bad = [row for row in maps_for if not 0 <= row < zone_ids.shape[0]]
        if bad:
            raise MrcbenchError(f"maps_for row {bad[0]} is outside the batch of {zone_ids.shape[0]}")
        recorder = self.hooks.stats = ZoneStatsRecorder(zone_ids, self.n_layers, self.n_heads, maps_for)
        stats = ZoneStats(mass=recorder.mass.numpy())
        try:
            yield stats
            finished = recorder.result()
            stats.mass, stats.maps = finished.mass, finished.maps
        finally:
            self.hooks.stats = None

    @contextlib.contextmanager
    def record_mean_probs(self, layers: Iterable[int]) -> Iterator[dict[int, torch.Tensor | None]]:
        """Keep the head-averaged attention probabilities ``[B, T, T]`` (fp32) of ``layers`` during the
        forward pass (the size-matched null's reference, :mod:`mrcbench.masking.nulls`); eager, never fused."""
        if self.hooks.mean_probs is not None:
            raise MrcbenchError("mean attention probabilities are already being recorded on this model")
        recorder = self.hooks.mean_probs = MeanProbsRecorder(layers)
        try:
            yield recorder.probs
        finally:
            self.hooks.mean_probs = None
