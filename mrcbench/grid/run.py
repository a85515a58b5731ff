"""Two equivalent ways to compute the logits of every grid cell.

:func:`run_grid_naive`
    The reference: one full forward pass per cell and batch with the ``"mrcbench"`` attention function
    masking the cell's zone (:class:`mrcbench.masking.controller.ZoneAttention`).
:func:`run_grid`
    The fast way. Masking layer ``l`` leaves the hidden states entering layers ``0..l`` unchanged, so one
    baseline pass records the input of every layer and each cell re-runs only layers ``l..L-1`` with the
    model's own layer modules (:mod:`mrcbench.masking.replay`), several cells of the same starting layer stacked
    into one batch. For the paper grid (5 zones × 12 layers) this does about half the layer evaluations
    of the naive way. Architectures whose layers :func:`mrcbench.masking.replay.find_stack` does not recognise
    fall back to the naive way with a warning.

Both return per cell a :class:`CellOutput`: the logits of every feature, the removed attention mass and,
for a size-matched null cell, its masses, feasibility and seed.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mrcbench.errors import MrcbenchError
from mrcbench.grid.cells import BASELINE, Cell, chunked, unique_cells
from mrcbench.masking.controller import ZoneAttention
from mrcbench.masking.nulls import NullMasks, NullSettings, null_masks
from mrcbench.masking.plan import MaskPlan
from mrcbench.masking.replay import find_stack, record_layer_calls, repeat_batch, replay_layers
from mrcbench.qa.features import PAD_LOGIT as LOGIT_PAD
from mrcbench.qa.features import model_inputs
from mrcbench.zones import check_variant

GPU_MAX_STACK = 8
"""Default number of grid cells stacked into one batch by :func:`run_grid` on a GPU."""


class CellOutput(NamedTuple):
    """Logits ``[N features, T]`` of one cell and the removed attention mass ``[N]`` per feature.

    ``removed_mass`` is measured at the cell's lowest masked layer, where it equals the unmasked model's
    (see :class:`mrcbench.masking.recorders.InterventionResult`); 0 for the baseline, NaN where nothing was
    blanked. Logits of different batches are right-padded with :data:`LOGIT_PAD` to a common length.
    """

    start_logits: np.ndarray
    end_logits: np.ndarray
    removed_mass: np.ndarray
    null_target: np.ndarray  # null cells: per window, mean over the zone's rows of the zone's mass (else NaN)
    null_achieved: np.ndarray  # ... and of the mass the null removes
    null_feasible: np.ndarray  # 1.0 where every row matched within the tolerance, 0.0 where not, NaN: no null
    null_seed: np.ndarray  # the question's recorded seed (int64; -1: no null)


class _Collector:
    """Per-cell lists of per-batch arrays, concatenated (with padding) at the end."""

    def __init__(self) -> None:
        self.parts: dict[Cell, list[tuple[np.ndarray, ...]]] = defaultdict(list)

    def add(
        self, cell: Cell, start: torch.Tensor, end: torch.Tensor, removed: np.ndarray, null: NullMasks | None = None
    ) -> None:
        rows = len(removed)
        if null is None:
            nan = np.full(rows, np.nan)
            extra = (nan, nan, nan, np.full(rows, -1, dtype=np.int64))
        else:  # removed mass over the zone's rows (a row may draw no key), as the zone's own
            removed = null.achieved
            extra = (null.target, null.achieved, null.feasible.astype(np.float64), null.seeds)
        self.parts[cell].append((start.float().cpu().numpy(), end.float().cpu().numpy(), removed, *extra))

    def result(self, cells: Sequence[Cell]) -> dict[Cell, CellOutput]:
        outputs = {}
        for cell in cells:
            parts = self.parts[cell]
            width = max(part[0].shape[1] for part in parts)
            outputs[cell] = CellOutput(
                np.concatenate([pad_logits(part[0], width) for part in parts]),
                np.concatenate([pad_logits(part[1], width) for part in parts]),
                *(np.concatenate([part[index] for part in parts]) for index in range(2, len(CellOutput._fields))),
            )
        return outputs


def _null_plan(
    batch: Mapping[str, object], cell: Cell, variant: str, mean_probs: torch.Tensor, n_layers: int,
    settings: NullSettings | None,
) -> tuple[MaskPlan, NullMasks]:
    """The mask plan of a null cell for one batch, from the unmasked head-averaged probabilities of its layer."""
    if settings is None:
        raise MrcbenchError("null cells need their NullSettings (ablation.null_tolerance, ablation.null_seed)")
    if "qid" not in batch or "window" not in batch:
        raise MrcbenchError("null cells need each batch's 'qid' and 'window' (window ordinal) lists; see ablate")
    zone_ids = torch.as_tensor(batch["zone_ids"]).to(mean_probs.device)
    masks = null_masks(zone_ids, mean_probs, cell.null_zone, variant, cell.layer, cell.null_draw,
                       batch["qid"], batch["window"], settings)
    rows = zone_ids.shape[0]
    layers = torch.zeros(rows, n_layers, dtype=torch.bool, device=zone_ids.device)
    layers[:, cell.layer] = True
    plan = MaskPlan(zone_ids=zone_ids, blanked=masks.blanked, layers=layers, heads=None,
                    unmask_padding=torch.zeros(rows, dtype=torch.bool, device=zone_ids.device))
    plan.check_rows_keep_a_key()
    return plan, masks


def pad_logits(logits: np.ndarray, width: int) -> np.ndarray:
    return np.pad(logits, ((0, 0), (0, width - logits.shape[1])), constant_values=LOGIT_PAD)


# --------------------------------------------------------------------------------------------------
# naive grid
# --------------------------------------------------------------------------------------------------
def run_grid_naive(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    cells: Iterable[Cell],
    variant: str,
    progress: bool = False,
    null: NullSettings | None = None,
) -> dict[Cell, CellOutput]:
    """Reference grid: one full forward pass per cell and batch, masking inside the attention function
    (a null cell: one unmasked pass for its layer's probabilities, then the masked one)."""
    check_variant(variant)
    cells, batches = unique_cells(cells), list(batches)
    device = next(model.parameters()).device
    collector = _Collector()
    model.eval()
    with ZoneAttention(model) as controller, torch.inference_mode():
        for cell in tqdm(cells, desc="ablation grid (naive)", disable=not progress):
            layers = cell.masked_layers(controller.n_layers)
            for batch in batches:
                inputs = model_inputs(batch, device)
                masks = None
                if cell.mode == "baseline":
                    outputs = model(**inputs)
                    removed = np.zeros(batch["input_ids"].shape[0])
                elif cell.null_zone is not None:
                    with controller.record_mean_probs([cell.layer]) as mean:
                        outputs = model(**inputs)
                    plan, masks = _null_plan(batch, cell, variant, mean[cell.layer], controller.n_layers, null)
                    removed = masks.achieved
                    if masks.feasible.any():  # else no window is a control: recorded, not computed
                        with controller.apply_plan(plan) as result:
                            outputs = model(**inputs)
                        removed = result.first_masked_layer_mass()
                else:
                    with controller.intervene(
                        batch["zone_ids"], cell.zone, layers, cell.head, variant, cell.operator
                    ) as result:
                        outputs = model(**inputs)
                    removed = result.first_masked_layer_mass()
                collector.add(cell, outputs.start_logits, outputs.end_logits, removed, masks)
    return collector.result(cells)


# --------------------------------------------------------------------------------------------------
# fast grid
# --------------------------------------------------------------------------------------------------
def run_grid(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    cells: Iterable[Cell],
    variant: str,
    max_stack: int | None = None,
    progress: bool = False,
    fused: bool = True,
    null: NullSettings | None = None,
) -> dict[Cell, CellOutput]:
    """Fast grid with prefix reuse; same results as :func:`run_grid_naive` up to float rounding.

    ``batches`` are dicts with ``input_ids``, ``attention_mask``, optional ``token_type_ids`` and
    ``zone_ids`` (as from ``EvalFeatures.batches``). Up to ``max_stack`` cells with the same lowest
    masked layer are stacked into one batch of ``max_stack × batch size`` rows. Stacking pays off on
    a GPU; on a CPU the larger tensors cost more in memory traffic than the fewer calls save (measured
    in benchmarks/README.md), so ``None`` means 1 on CPU and :data:`GPU_MAX_STACK` otherwise. With
    ``fused`` the replayed layers' attention outputs come from fused ``sdpa`` kernels where no
    probabilities are needed (:meth:`mrcbench.masking.controller.ZoneAttention.replay`); the baseline pass and
    the removed attention mass stay eager.
    """
    check_variant(variant)
    device = next(model.parameters()).device
    if max_stack is None:
        max_stack = 1 if device.type == "cpu" else GPU_MAX_STACK
    if max_stack < 1:
        raise MrcbenchError(f"max_stack must be at least 1, got {max_stack}")
    stack = find_stack(model)
    if stack is None:
        warnings.warn(
            f"{type(model).__name__}: layer stack or qa_outputs head not recognised; "
            "running the naive ablation grid (one full forward pass per cell)",
            RuntimeWarning,
            stacklevel=2,
        )
        return run_grid_naive(model, batches, cells, variant, progress=progress, null=null)
    cells, batches = unique_cells(cells), list(batches)
    collector = _Collector()
    model.eval()
    with ZoneAttention(model) as controller, torch.inference_mode():
        n_layers = controller.n_layers
        by_start: dict[tuple[int, str], list[Cell]] = defaultdict(list)  # stacked cells share one operator
        for cell in cells:
            if cell.mode != "baseline":
                by_start[cell.masked_layers(n_layers)[0], cell.operator].append(cell)
        null_layers = sorted({cell.layer for cell in cells if cell.null_zone is not None})
        for batch in tqdm(batches, desc="ablation grid (fast)", disable=not progress):
            batch_size = batch["input_ids"].shape[0]
            with record_layer_calls(stack.blocks) as calls, controller.record_mean_probs(null_layers) as mean:
                baseline = model(**model_inputs(batch, device))
            if len(calls) != n_layers:
                raise MrcbenchError(
                    f"{type(model).__name__}: recorded {len(calls)} layer calls for {n_layers} layers"
                )
            if BASELINE in cells:
                collector.add(BASELINE, baseline.start_logits, baseline.end_logits, np.zeros(batch_size))
            for (start, operator), start_cells in sorted(by_start.items()):
                layer_input = calls[start].hidden_states
                for chunk in chunked(start_cells, max_stack):
                    plans, nulls, drawn = [], [], []
                    for cell in chunk:
                        if cell.null_zone is not None:
                            plan, masks = _null_plan(batch, cell, variant, mean[start], n_layers, null)
                            if not masks.feasible.any():  # no window of the batch is a control: no pass
                                collector.add(cell, baseline.start_logits, baseline.end_logits, masks.achieved, masks)
                                continue
                        else:
                            plan, masks = MaskPlan.build(
                                batch["zone_ids"], cell.zone, variant, cell.masked_layers(n_layers), cell.head,
                                n_layers, controller.n_heads, operator,
                            ), None
                        plans.append(plan.to(device))
                        nulls.append(masks)
                        drawn.append(cell)
                    if not drawn:
                        continue
                    chunk = drawn
                    plan = MaskPlan.concat(plans)
                    hidden = repeat_batch(layer_input, len(chunk), batch_size)
                    with controller.apply_plan(plan) as result, controller.replay(start, fused=fused):
                        hidden = replay_layers(calls, start, hidden, len(chunk), batch_size, stack.shared)
                    start_logits, end_logits = (
                        logits.squeeze(-1) for logits in stack.head(hidden).split(1, dim=-1)
                    )
                    removed = result.first_masked_layer_mass()
                    for index, cell in enumerate(chunk):
                        rows = slice(index * batch_size, (index + 1) * batch_size)
                        collector.add(cell, start_logits[rows], end_logits[rows], removed[rows], nulls[index])
            del calls, mean
    return collector.result(cells)
