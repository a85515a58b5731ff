"""The zone × layer (× head) ablation grid: mask one zone, re-decode, score every question.

Two equivalent ways to compute the logits of every grid cell:

:func:`run_grid_naive`
    The reference: one full forward pass per cell and batch with the ``"mrcbench"`` attention function
    masking the cell's zone (:class:`mrcbench.attention.ZoneAttention`).
:func:`run_grid`
    The fast way. Masking layer ``l`` leaves the hidden states entering layers ``0..l`` unchanged, so one
    baseline pass records the input of every layer (forward pre-hooks on the model's own layer
    modules), and each cell re-runs only layers ``l..L-1`` (calling those same modules with the
    arguments they received, i.e. the model's own additive attention mask), several cells of the same
    starting layer stacked into one batch. For the paper grid (5 zones × 12 layers) this does about
    half the layer evaluations of the naive way. It works for encoders whose layers sit in
    ``encoder.layer`` (BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2/v3, MPNet), ``transformer.layer``
    (DistilBERT), ``layers`` (ModernBERT, whose final norm and prediction head form its span head) and
    for ALBERT's shared ``albert_layer_groups``; other architectures (and DeBERTa-v2 checkpoints with
    the convolution after layer 0, which the encoder applies outside its layer modules) fall back to
    the naive way with a warning.

:func:`ablate` wires a grid into decoding and scoring (injected callables) and returns the long
``grid.parquet`` table of docs/architecture.md.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mrcbench import config as cfg
from mrcbench import data as data_mod
from mrcbench import decoding, files, metrics
from mrcbench import precision as precision_mod
from mrcbench.attention import KEY_COLUMNS, MaskPlan, ZoneAttention, model_inputs
from mrcbench.errors import MrcbenchError
from mrcbench.eval_run import EvalRun, add_run_arguments
from mrcbench.features import PAD_LOGIT as LOGIT_PAD
from mrcbench.nulls import NullMasks, NullSettings, null_masks
from mrcbench.zones import (
    NULL_ZONES,
    ZONES,
    check_operator,
    check_variant,
    check_zone,
    null_of,
    null_zone_name,
)

MODES: tuple[str, ...] = ("baseline", "layer", "head", "from_layer")
"""``layer``: one zone in one layer, all heads (the paper grid); ``head``: one zone in one head of one
layer; ``from_layer``: one zone in every layer from ``layer`` upward."""

GPU_MAX_STACK = 8
"""Default number of grid cells stacked into one batch by :func:`run_grid` on a GPU."""

EFFECT_COLUMNS = ("start_logprob_delta", "end_logprob_delta", "start_kl", "end_kl")
"""The continuous effect measure of a cell, per question, on the window the unmasked answer came from:
the change (masked minus unmasked) of the log-probability of the unmasked prediction's start and end
tokens, and KL(P_unmasked || P_masked) of the start and end distributions (softmax over the window's
tokens), in nats. NaN for a question without a valid unmasked span."""

GRID_COLUMNS = (
    *KEY_COLUMNS, "variant", "mode", "operator", "layer", "head", "zone", "qid", "article", "em", "f1",
    "removed_mass", *EFFECT_COLUMNS, "null_draw", "mass_match", "null_feasible", "null_seed",
)


@dataclass(frozen=True)
class Cell:
    """One cell of the ablation grid. The baseline has ``zone=None, layer=None, mode="baseline"``.

    ``operator`` (:data:`mrcbench.zones.OPERATORS`) says how the zone's cells are removed; the baseline
    carries the default ``renorm``. A size-matched null (:mod:`mrcbench.nulls`) has the zone name
    ``null_<zone>`` and its ``null_draw`` (mode ``layer``, operator ``renorm`` only).
    """

    zone: str | None
    layer: int | None
    head: int | None = None
    mode: str = "layer"
    operator: str = "renorm"
    null_draw: int | None = None

    def __post_init__(self) -> None:
        check_operator(self.operator)
        if self.zone is not None and null_of(self.zone) is not None:
            if self.mode != "layer" or self.operator != "renorm":
                raise MrcbenchError(f"null cell {self.zone}: only mode 'layer' with operator 'renorm' has a null")
            if not isinstance(self.null_draw, int) or self.null_draw < 0:
                raise MrcbenchError(f"null cell {self.zone} needs a draw number >= 0, got {self.null_draw!r}")
            if not isinstance(self.layer, int) or self.layer < 0:
                raise MrcbenchError(f"null cell {self.zone} needs a 0-based layer, got {self.layer!r}")
            return
        if self.null_draw is not None:
            raise MrcbenchError(f"only null cells (null_<zone>) take a draw number, got {self}")
        if self.mode not in MODES:
            raise MrcbenchError(f"unknown ablation mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.mode == "baseline":
            if (self.zone, self.layer, self.head, self.operator) != (None, None, None, "renorm"):
                raise MrcbenchError(f"the baseline cell takes no zone, layer, head or operator, got {self}")
            return
        check_zone(self.zone)
        if self.zone == "all_paper_quirk" and self.operator != "renorm":
            raise MrcbenchError(f"all_paper_quirk lifts the padding mask; it has no {self.operator!r} operator")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise MrcbenchError(f"ablation cell {self.zone}/{self.mode} needs a 0-based layer, got {self.layer!r}")
        if (self.mode == "head") != (self.head is not None):
            raise MrcbenchError(f"mode {self.mode!r} {'needs' if self.mode == 'head' else 'takes no'} head index")

    def masked_layers(self, n_layers: int) -> list[int]:
        """The layers this cell masks in a model of ``n_layers`` layers."""
        if self.mode == "baseline":
            return []
        if self.layer >= n_layers:
            raise MrcbenchError(f"ablation cell layer {self.layer} out of range; the model has {n_layers} layers")
        return list(range(self.layer, n_layers)) if self.mode == "from_layer" else [self.layer]

    def columns(self) -> dict[str, object]:
        """This cell's columns of the grid table (layer/head -1 = none/all, zone "none" for the baseline)."""
        return {
            "mode": self.mode,
            "operator": self.operator,
            "layer": -1 if self.layer is None else self.layer,
            "head": -1 if self.head is None else self.head,
            "zone": "none" if self.zone is None else self.zone,
            "null_draw": -1 if self.null_draw is None else self.null_draw,
        }

    @property
    def null_zone(self) -> str | None:
        """The zone this null cell matches (None for every other cell)."""
        return None if self.zone is None else null_of(self.zone)


BASELINE = Cell(zone=None, layer=None, head=None, mode="baseline")


def grid_cells(
    n_layers: int, n_heads: int, zones: Sequence[str] = ZONES, modes: Sequence[str] = ("layer",),
    operators: Sequence[str] = ("renorm",), null_draws: int = 0,
) -> list[Cell]:
    """The baseline followed by every (mode, layer, [head,] operator, zone) cell (``all_paper_quirk``
    only with ``renorm``), and in mode ``layer`` ``null_draws`` size-matched nulls of each of the zones
    that have one (:data:`mrcbench.zones.NULL_ZONES`)."""
    for zone in zones:
        check_zone(zone)
    for operator in operators:
        check_operator(operator)
    cells = [BASELINE]
    for mode in modes:
        if mode == "baseline":
            continue
        if mode not in MODES:
            raise MrcbenchError(f"unknown ablation mode {mode!r}; allowed: {', '.join(MODES)}")
        for layer in range(n_layers):
            heads = range(n_heads) if mode == "head" else [None]
            cells.extend(
                Cell(zone, layer, head, mode, operator)
                for head in heads
                for operator in operators
                for zone in zones
                if operator == "renorm" or zone != "all_paper_quirk"
            )
            if mode == "layer":
                cells.extend(
                    Cell(null_zone_name(zone), layer, null_draw=draw)
                    for draw in range(null_draws)
                    for zone in zones
                    if zone in NULL_ZONES
                )
    return cells


class CellOutput(NamedTuple):
    """Logits ``[N features, T]`` of one cell and the removed attention mass ``[N]`` per feature.

    ``removed_mass`` is measured at the cell's lowest masked layer, where it equals the unmasked model's
    (see :class:`mrcbench.attention.InterventionResult`); 0 for the baseline, NaN where nothing was
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
    settings: NullSettings,
) -> tuple[MaskPlan, NullMasks]:
    """The mask plan of a null cell for one batch, from the unmasked head-averaged probabilities of its layer."""
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


def _unique_cells(cells: Iterable[Cell]) -> list[Cell]:
    cells = list(dict.fromkeys(cells))
    if not cells:
        raise MrcbenchError("the ablation grid has no cells")
    return cells


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
    null = null or NullSettings()
    cells, batches = _unique_cells(cells), list(batches)
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
                        model(**inputs)
                    plan, masks = _null_plan(batch, cell, variant, mean[cell.layer], controller.n_layers, null)
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
@dataclass
class _Stack:
    """How to re-run a model from layer ``l``: its per-layer block modules and the span head.

    ``shared`` names layer keyword arguments that are not per example (never tiled when stacking).
    """

    blocks: list[nn.Module]
    head: nn.Module
    shared: frozenset[str] = frozenset()


def _find_stack(model: nn.Module) -> _Stack | None:
    """Recognise the layer blocks and span head of the supported QA models (see the module docstring)."""
    config = model.config
    base = getattr(model, "base_model", model)
    classifier = getattr(model, "classifier", None)
    final_norm = getattr(base, "final_norm", None)
    if (  # ModernBERT: layers -> final_norm -> head -> drop -> classifier
        isinstance(getattr(base, "layers", None), nn.ModuleList)
        and len(base.layers) == config.num_hidden_layers
        and isinstance(final_norm, nn.Module)
        and isinstance(classifier, nn.Linear)
        and classifier.out_features == 2
        and isinstance(getattr(model, "head", None), nn.Module)
    ):
        span_head = nn.Sequential(final_norm, model.head, getattr(model, "drop", nn.Identity()), classifier)
        return _Stack(blocks=list(base.layers), head=span_head)
    head = getattr(model, "qa_outputs", None)
    if not isinstance(head, nn.Linear) or head.out_features != 2:
        return None
    encoder = getattr(base, "encoder", None)
    if encoder is None:  # DistilBERT
        encoder = getattr(base, "transformer", None)
    if getattr(encoder, "conv", None) is not None:  # DeBERTa-v2 conv: applied outside the layer modules
        return None
    layers = getattr(encoder, "layer", None)
    if isinstance(layers, nn.ModuleList) and len(layers) == config.num_hidden_layers:
        return _Stack(blocks=list(layers), head=head, shared=frozenset({"rel_embeddings", "relative_pos"}))
    groups = getattr(encoder, "albert_layer_groups", None)
    if (
        isinstance(groups, nn.ModuleList)
        and hasattr(encoder, "embedding_hidden_mapping_in")
        and getattr(config, "inner_group_num", 1) == 1  # one attention call per layer-group call
    ):
        return _Stack(blocks=list(groups), head=head)
    return None


class _LayerCall(NamedTuple):
    module: nn.Module
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def _record_layer_calls(blocks: Sequence[nn.Module]) -> Iterator[list[_LayerCall]]:
    """Record (module, args, kwargs) of every layer-block call, in call order.

    ALBERT calls its one shared layer group once per layer, so the calls (not the modules) are the layers.
    """
    calls: list[_LayerCall] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append(_LayerCall(module, args, dict(kwargs)))

    handles = [block.register_forward_pre_hook(hook, with_kwargs=True) for block in dict.fromkeys(blocks)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _repeat_batch(value: object, copies: int, batch: int) -> object:
    """Tile a per-example tensor argument ``copies`` times along the batch dimension."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or copies == 1:
        return value
    if value.shape[0] == batch:
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    if value.shape[0] == 1:
        return value
    raise MrcbenchError(f"cannot stack a layer argument of shape {tuple(value.shape)} for batch size {batch}")


def _replay(
    calls: Sequence[_LayerCall], start: int, hidden: torch.Tensor, copies: int, batch: int,
    shared: frozenset[str] = frozenset(),
) -> torch.Tensor:
    """Run the recorded layer calls ``start..`` on ``hidden`` (``copies`` stacked copies of the batch).

    Keyword arguments named in ``shared`` (e.g. DeBERTa's relative-position embeddings) are passed as
    recorded, never tiled.
    """
    for call in calls[start:]:
        kwargs = {
            name: value if name in shared else _repeat_batch(value, copies, batch)
            for name, value in call.kwargs.items()
        }
        if call.args:
            args = (hidden, *(_repeat_batch(value, copies, batch) for value in call.args[1:]))
        else:
            args, kwargs["hidden_states"] = (), hidden
        output = call.module(*args, **kwargs)
        hidden = output[0] if isinstance(output, tuple) else output
    return hidden


def _chunks(items: Sequence[Cell], size: int) -> Iterator[Sequence[Cell]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    probabilities are needed (:meth:`mrcbench.attention.ZoneAttention.replay`); the baseline pass and
    the removed attention mass stay eager.
    """
    check_variant(variant)
    device = next(model.parameters()).device
    if max_stack is None:
        max_stack = 1 if device.type == "cpu" else GPU_MAX_STACK
    if max_stack < 1:
        raise MrcbenchError(f"max_stack must be at least 1, got {max_stack}")
    stack = _find_stack(model)
    if stack is None:
        warnings.warn(
            f"{type(model).__name__}: layer stack or qa_outputs head not recognised; "
            "running the naive ablation grid (one full forward pass per cell)",
            RuntimeWarning,
            stacklevel=2,
        )
        return run_grid_naive(model, batches, cells, variant, progress=progress, null=null)
    null = null or NullSettings()
    cells, batches = _unique_cells(cells), list(batches)
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
            with _record_layer_calls(stack.blocks) as calls, controller.record_mean_probs(null_layers) as mean:
                baseline = model(**model_inputs(batch, device))
            if len(calls) != n_layers:
                raise MrcbenchError(
                    f"{type(model).__name__}: recorded {len(calls)} layer calls for {n_layers} layers"
                )
            if BASELINE in cells:
                collector.add(BASELINE, baseline.start_logits, baseline.end_logits, np.zeros(batch_size))
            for (start, operator), start_cells in sorted(by_start.items()):
                layer_input = calls[start].args[0] if calls[start].args else (
                    calls[start].kwargs["hidden_states"]
                )
                for chunk in _chunks(start_cells, max_stack):
                    plans, nulls = [], []
                    for cell in chunk:
                        if cell.null_zone is not None:
                            plan, masks = _null_plan(batch, cell, variant, mean[start], n_layers, null)
                        else:
                            plan, masks = MaskPlan.build(
                                batch["zone_ids"], cell.zone, variant, cell.masked_layers(n_layers), cell.head,
                                n_layers, controller.n_heads, operator,
                            ), None
                        plans.append(plan.to(device))
                        nulls.append(masks)
                    plan = MaskPlan.concat(plans)
                    hidden = _repeat_batch(layer_input, len(chunk), batch_size)
                    with controller.apply_plan(plan) as result, controller.replay(start, fused=fused):
                        hidden = _replay(calls, start, hidden, len(chunk), batch_size, stack.shared)
                    start_logits, end_logits = (
                        logits.squeeze(-1) for logits in stack.head(hidden).split(1, dim=-1)
                    )
                    removed = result.first_masked_layer_mass()
                    for index, cell in enumerate(chunk):
                        rows = slice(index * batch_size, (index + 1) * batch_size)
                        collector.add(cell, start_logits[rows], end_logits[rows], removed[rows], nulls[index])
            del calls, mean
    return collector.result(cells)


# --------------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------------
def ablate(
    model: nn.Module,
    features: object,
    cells: Iterable[Cell],
    variant: str,
    decode: Callable[[np.ndarray, np.ndarray], decoding.Predictions],
    score: Callable[[dict[str, str]], pd.DataFrame],
    keys: Mapping[str, object],
    batch_size: int = 32,
    cells_per_pass: int = 16,
    max_stack: int | None = None,
    fast: bool = True,
    progress: bool = True,
    sort_by_length: bool = True,
    null: NullSettings | None = None,
) -> pd.DataFrame:
    """Run the grid and return the long ``grid.parquet`` table (one row per cell and question).

    ``features`` is an ``EvalFeatures`` (``batches(batch_size)`` and ``example_ids``). ``decode`` turns
    ``[N, T]`` start/end logits into :class:`mrcbench.decoding.Predictions` (``answers``, and
    ``best_span``: where the continuous measure of :data:`EFFECT_COLUMNS` is read, from the baseline's
    decoding; the baseline pass is added to the first group of cells when it is not a grid cell);
    ``score`` turns ``{qid: answer text}`` into a frame
    with columns qid, article, em, f1. ``keys`` gives model, train_set, eval_set and seed. Cells are
    processed ``cells_per_pass`` at a time (one baseline pass each) so that only their logits are held
    in memory. ``removed_mass`` is averaged over a question's windows. With ``sort_by_length`` the
    windows are batched longest first (``features.length_order()``), so that a batch pads little
    (XQuAD: about a fifth fewer token positions at 32 windows per batch), and the logits are put back
    in feature order before decoding. Null cells (``null_<zone>``) follow ``null`` (tolerance, base seed);
    their ``mass_match`` is the question's achieved null mass over its zone mass (means over the zone's
    rows and the question's windows), ``null_feasible`` whether every row matched within the tolerance.
    """
    check_variant(variant)
    missing = [key for key in KEY_COLUMNS if key not in keys]
    if missing:
        raise MrcbenchError(f"ablate: keys lacks {missing[0]!r}")
    if cells_per_pass < 1:
        raise MrcbenchError(f"cells_per_pass must be at least 1, got {cells_per_pass}")
    cells = _unique_cells(cells)
    example_ids = np.asarray(features.example_ids)
    order = features.length_order() if sort_by_length else list(range(len(example_ids)))
    batches = list(features.batches(batch_size, order))
    ordinal: dict[str, int] = defaultdict(int)
    window_of = []  # each feature's window ordinal within its question
    for qid in example_ids:
        window_of.append(ordinal[qid])
        ordinal[qid] += 1
    for index, batch in enumerate(batches):  # the null draws' seeds: question id and window ordinal per row
        rows = order[index * batch_size : (index + 1) * batch_size]
        if len(rows) != batch["input_ids"].shape[0]:
            raise MrcbenchError("ablate: features.batches did not batch the features in the given order")
        batch["qid"] = [str(example_ids[row]) for row in rows]
        batch["window"] = [window_of[row] for row in rows]
    restore = np.argsort(np.asarray(order, dtype=np.int64), kind="stable")  # batch row -> feature order
    runner = run_grid if fast else run_grid_naive
    windows = np.asarray([sum(mask) for mask in features.attention_mask])  # real tokens of each window
    frames, reference = [], None
    with tqdm(total=len(cells), desc=f"ablation grid ({variant})", disable=not progress) as bar:
        for group in _chunks(cells, cells_per_pass):
            kwargs = {"max_stack": max_stack, "null": null} if fast else {"null": null}
            run_cells = list(group) if reference is not None or BASELINE in group else [BASELINE, *group]
            outputs = runner(model, batches, run_cells, variant, **kwargs)
            if reference is None:
                baseline_output = CellOutput(*(array[restore] for array in outputs[BASELINE]))
                reference = _EffectReference.build(
                    baseline_output, _predictions(decode(baseline_output.start_logits, baseline_output.end_logits)),
                    windows,
                )
            for cell in group:
                rows = outputs[cell].start_logits.shape[0]
                if rows != len(example_ids):
                    raise MrcbenchError(f"grid produced {rows} feature rows for {len(example_ids)} features")
                output = CellOutput(*(array[restore] for array in outputs[cell]))
                scores = score(_predictions(decode(output.start_logits, output.end_logits)).answers)
                lacking = {"qid", "article", "em", "f1"} - set(scores.columns)
                if lacking:
                    raise MrcbenchError(f"ablate: the score frame lacks column {min(lacking)!r}")
                removed = pd.Series(output.removed_mass).groupby(example_ids, sort=False).mean()
                frame = scores[["qid", "article", "em", "f1"]].copy()
                frame["removed_mass"] = frame["qid"].map(removed).astype(float)
                effects = reference.effects(output)
                for column in EFFECT_COLUMNS:
                    frame[column] = frame["qid"].map(effects[column]).astype(float)
                by_question = pd.DataFrame(
                    {"target": output.null_target, "achieved": output.null_achieved,
                     "feasible": output.null_feasible, "seed": output.null_seed}
                ).groupby(example_ids, sort=False)
                if cell.null_zone is None:
                    frame["mass_match"] = np.nan
                    frame["null_feasible"] = pd.array([pd.NA] * len(frame), dtype="boolean")
                    frame["null_seed"] = -1
                else:
                    means = by_question[["target", "achieved"]].mean()
                    match = means["achieved"] / means["target"].where(means["target"] > 0)
                    frame["mass_match"] = frame["qid"].map(match).astype(float)
                    feasible = by_question["feasible"].min() == 1.0
                    frame["null_feasible"] = pd.array(frame["qid"].map(feasible).tolist(), dtype="boolean")
                    frame["null_seed"] = frame["qid"].map(by_question["seed"].first()).astype(np.int64)
                for key in KEY_COLUMNS:
                    frame[key] = keys[key]
                frame["variant"] = variant
                for column, value in cell.columns().items():
                    frame[column] = value
                frames.append(frame[list(GRID_COLUMNS)])
                bar.update(1)
    return pd.concat(frames, ignore_index=True)


def _predictions(decoded: object) -> decoding.Predictions:
    if not isinstance(getattr(decoded, "answers", None), Mapping) or not isinstance(
        getattr(decoded, "best_span", None), Mapping
    ):
        raise MrcbenchError(
            "ablate: decode must return decoding.Predictions (answers and best_span, for the continuous measure)"
        )
    return decoded


def _log_softmax_rows(logits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over each row's first ``lengths`` positions (float64; -inf beyond)."""
    logits = logits.astype(np.float64)
    logits = np.where(np.arange(logits.shape[1])[None, :] < lengths[:, None], logits, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


@dataclass
class _EffectReference:
    """The unmasked model's log-probabilities on the window of each question's unmasked answer."""

    qids: list[str]
    rows: np.ndarray  # feature row (window) of each question
    starts: np.ndarray  # unmasked prediction's start token
    ends: np.ndarray
    lengths: np.ndarray  # real tokens of the window
    start_logp: np.ndarray  # [questions, T] log-softmax over the window
    end_logp: np.ndarray

    @classmethod
    def build(cls, baseline: CellOutput, predictions: decoding.Predictions, windows: np.ndarray) -> _EffectReference:
        spans = predictions.best_span
        qids = list(spans)
        rows = np.asarray([spans[qid][0] for qid in qids], dtype=np.int64)
        lengths = windows[rows] if len(rows) else np.zeros(0, dtype=np.int64)
        return cls(
            qids=qids, rows=rows, lengths=lengths,
            starts=np.asarray([spans[qid][1] for qid in qids], dtype=np.int64),
            ends=np.asarray([spans[qid][2] for qid in qids], dtype=np.int64),
            start_logp=_log_softmax_rows(baseline.start_logits[rows], lengths),
            end_logp=_log_softmax_rows(baseline.end_logits[rows], lengths),
        )

    def effects(self, output: CellOutput) -> dict[str, pd.Series]:
        """Per question (index qid): the columns of :data:`EFFECT_COLUMNS` for one cell's logits."""
        values = {}
        index = np.arange(len(self.qids))
        for side, reference, tokens, logits in (
            ("start", self.start_logp, self.starts, output.start_logits),
            ("end", self.end_logp, self.ends, output.end_logits),
        ):
            masked = _log_softmax_rows(logits[self.rows], self.lengths)
            values[f"{side}_logprob_delta"] = masked[index, tokens] - reference[index, tokens]
            inside = np.isfinite(reference)
            reference, masked = np.where(inside, reference, 0.0), np.where(inside, masked, 0.0)
            terms = np.where(inside, np.exp(reference) * (reference - masked), 0.0)
            values[f"{side}_kl"] = terms.sum(axis=1)
        return {name: pd.Series(value, index=self.qids, dtype=float) for name, value in values.items()}


# ==================================================================================================
# Command line: `mrcbench ablate` (one grid, or one layer's part of it) and `mrcbench merge-grid`
# ==================================================================================================


def configured_cells(n_layers: int, n_heads: int, ablation_cfg: cfg.Ablation, layer: int | None = None) -> list[Cell]:
    """The configured cells (baseline first); with ``layer``, only that layer's cells (the baseline
    goes with layer 0 so that merged parts hold it once)."""
    cells = [BASELINE] if layer in (None, 0) else []
    for mode in ablation_cfg.modes:
        zones = ablation_cfg.head_zones if mode == "head" else ablation_cfg.zones
        null_draws = ablation_cfg.null_draws if mode == "layer" else 0
        for cell in grid_cells(n_layers, n_heads, list(zones), [mode], list(ablation_cfg.operators), null_draws):
            if cell.mode != "baseline" and (layer is None or cell.layer == layer):
                cells.append(cell)
    return cells


def run_ablation(
    run: EvalRun, ablation_cfg: cfg.Ablation, decoding_cfg: cfg.Decoding, layer: int | None = None
) -> pd.DataFrame:
    if layer is not None and not 0 <= layer < run.n_layers:
        raise MrcbenchError(f"--part layer{layer}: the model has {run.n_layers} layers")
    cells = configured_cells(run.n_layers, run.n_heads, ablation_cfg, layer)

    def decode(start: np.ndarray, end: np.ndarray) -> decoding.Predictions:
        return decoding.decode(run.examples, run.features, start, end, run.metric, decoding_cfg)

    def score(answers: dict[str, str]) -> pd.DataFrame:
        return metrics.scoring.per_question_scores(run.metric, run.dataset, answers, run.language)

    with precision_mod.autocast(run.precision, run.model.device):
        frames = [
            ablate(run.model, run.features, cells, variant, decode, score, run.keys, batch_size=run.batch_size,
                   null=NullSettings(ablation_cfg.null_tolerance, ablation_cfg.null_seed))
            for variant in ablation_cfg.variants
        ]
    frame = pd.concat(frames, ignore_index=True)
    frame["precision"] = run.precision
    return frame


def select_grid_questions(
    dataset: dict, max_questions: int | None, answerable_only: bool, seed: int, source: str = "eval split"
) -> dict:
    """The grid's questions: answerable ones only (``ablation.answerable_only``), at most
    ``max_questions`` of them taken round-robin over the articles
    (:func:`mrcbench.data.filters.subsample_across_articles`: hash-ranked by question id, so parallel XQuAD
    languages keep the same ids, and spread over as many articles as the split has)."""
    if answerable_only:
        dataset = data_mod.filters.answerable_only(dataset)
        if not data_mod.filters.question_ids(dataset):
            raise MrcbenchError(f"{source}: no answerable questions for the grid (ablation.answerable_only)")
    return data_mod.filters.subsample_across_articles(dataset, max_questions, seed)


def grid_selection(ablation_cfg: cfg.Ablation) -> Callable[[dict, dict, str], dict] | None:
    """The :class:`~mrcbench.eval_run.EvalRun` selection of the grid's questions (``None``: the whole split)."""
    max_questions, answerable_only = ablation_cfg.max_questions, ablation_cfg.answerable_only
    if not (answerable_only or max_questions):
        return None

    def select(dataset: dict, config: dict, source: str) -> dict:
        return select_grid_questions(dataset, max_questions, answerable_only, cfg.sample_seed(config), source)

    return select


def main_ablate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrcbench ablate", description="The zone x layer (x head) masking grid.")
    add_run_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="grid parquet file")
    parser.add_argument("--part", default="all", help="'all', or 'layerN' for only layer N's cells (cluster split)")
    args = parser.parse_args(argv)
    if args.part == "all":
        layer = None
    elif args.part.startswith("layer") and args.part[5:].isdigit():
        layer = int(args.part[5:])
    else:
        raise MrcbenchError(f"--part {args.part!r}: expected 'all' or 'layerN'")
    config = cfg.load(args.config)
    ablation_cfg = cfg.ablation_config(config)
    run = EvalRun(args, select=grid_selection(ablation_cfg))
    frame = run_ablation(run, ablation_cfg, cfg.decoding_config(config), layer)
    files.write_parquet(frame, args.out)
    baseline = frame[frame["mode"] == "baseline"]
    print(json.dumps({"rows": len(frame), "questions": int(frame["qid"].nunique()),
                      "articles": int(frame["article"].nunique()),
                      "baseline_f1": float(baseline["f1"].mean()) if len(baseline) else None,
                      "precision": run.precision}))
    return 0


_CELL_KEYS = ("variant", "mode", "operator", "layer", "head", "zone", "null_draw")
"""The grid columns that name a cell: ``(variant, *Cell.columns().values())``."""


def _cell_name(variant: str, mode: str, operator: str, layer: int, head: int, zone: str, null_draw: int) -> str:
    if mode == "baseline":
        return f"the {variant} baseline"
    where = f"layer {layer}" + (f" head {head}" if mode == "head" else "")
    what = f"{zone} draw {null_draw}" if null_draw >= 0 else zone
    return f"{variant} {mode} {operator} {what} in {where}"


def check_grid_parts(parts: Sequence[tuple[Path, pd.DataFrame]], ablation_cfg: cfg.Ablation | None = None,
                     n_layers: int | None = None) -> None:
    """Refuse, in one line naming the part and the problem, parts that do not make one grid.

    The parts must come from one run (one model, train set, eval set and seed), hold disjoint cells
    (no part given twice, no cell in two parts, no question twice in a cell) and together cover the
    whole configured grid: every variant x configured cell for ``n_layers`` layers (default: the
    deepest layer seen). Without ``ablation_cfg`` the modes, zones and variants are those the parts hold.
    """
    seen_paths: dict[Path, Path] = {}
    for path, _ in parts:
        resolved = Path(path).resolve()
        if resolved in seen_paths:
            raise MrcbenchError(f"{path}: grid part given twice (also as {seen_paths[resolved]})")
        seen_paths[resolved] = Path(path)
    keys = list(KEY_COLUMNS)
    cell_keys = list(_CELL_KEYS)
    v_, mode_, op_, layer_, head_, zone_, draw_ = range(len(_CELL_KEYS))
    first_run, first_path = None, None
    owner: dict[tuple, Path] = {}
    for path, frame in parts:
        lacking = [c for c in (*keys, *cell_keys, "qid") if c not in frame.columns]
        if lacking:
            raise MrcbenchError(f"{path}: not a grid part (no column {lacking[0]!r})")
        runs = frame[keys].drop_duplicates()
        if len(runs) > 1:
            raise MrcbenchError(f"{path}: holds cells of {len(runs)} runs; a grid part is one run's")
        if runs.empty:
            continue
        run = tuple(runs.iloc[0])
        if first_run is None:
            first_run, first_path = run, path
        elif run != first_run:
            described = ", ".join(f"{k}={v}" for k, v in zip(keys, run, strict=True))
            expected = ", ".join(f"{k}={v}" for k, v in zip(keys, first_run, strict=True))
            raise MrcbenchError(f"{path}: part of another run ({described}) than {first_path} ({expected})")
        repeated = frame.duplicated([*cell_keys, "qid"])
        if repeated.any():
            row = frame[repeated].iloc[0]
            raise MrcbenchError(
                f"{path}: question {row['qid']!r} appears twice in {_cell_name(*(row[c] for c in cell_keys))}"
            )
        for cell in frame[cell_keys].drop_duplicates().itertuples(index=False, name=None):
            if cell in owner:
                raise MrcbenchError(f"{path}: {_cell_name(*cell)} is also in {owner[cell]}; the parts overlap")
            owner[cell] = path
    if not owner:
        raise MrcbenchError(f"{parts[0][0]}: the grid parts hold no cells")
    found = set(owner)
    if ablation_cfg is None:
        grid_modes = sorted({c[mode_] for c in found} - {"baseline"})
        plain = [c for c in found if c[draw_] < 0]
        default = cfg.ablation_config(None)
        ablation_cfg = dataclasses.replace(
            default,
            modes=tuple(grid_modes),
            zones=tuple(sorted({c[zone_] for c in plain if c[mode_] not in ("baseline", "head")})),
            head_zones=tuple(sorted({c[zone_] for c in plain if c[mode_] == "head"})),
            variants=tuple(sorted({c[v_] for c in found})),
            operators=tuple(sorted({c[op_] for c in plain if c[mode_] != "baseline"})) or default.operators,
            null_draws=max([c[draw_] for c in found], default=-1) + 1,
        )
    deepest = max(c[layer_] for c in found) + 1
    n_layers = deepest if n_layers is None else n_layers
    n_heads = max([c[head_] for c in found if c[mode_] == "head"], default=-1) + 1 or 1
    expected = {
        (variant, *cell.columns().values())
        for variant in ablation_cfg.variants
        for cell in configured_cells(n_layers, n_heads, ablation_cfg)
    }
    extra = sorted(found - expected, key=str)
    if extra:
        raise MrcbenchError(
            f"{owner[extra[0]]}: {_cell_name(*extra[0])} is not in the configured grid ({n_layers} layers)"
        )
    missing = sorted(expected - found, key=lambda c: (c[layer_], str(c)))
    if missing:
        missing_layers = sorted({c[layer_] for c in missing if c[mode_] != "baseline"}
                                - {c[layer_] for c in found if c[mode_] != "baseline"})
        if missing_layers:
            what = f"layer(s) {', '.join(str(layer) for layer in missing_layers)} (no cell at all)"
        else:
            what = f"{len(missing)} cell(s), e.g. {_cell_name(*missing[0])}"
        raise MrcbenchError(
            f"{parts[0][0].parent}: the grid parts lack {what} of the configured {n_layers}-layer grid"
        )


def main_merge(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrcbench merge-grid", description="Merge per-layer grid parts.")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--config", type=Path, default=None,
                        help="config whose ablation section (and models.<model>.num_layers) the parts must cover")
    parser.add_argument("parts", nargs="+", type=Path)
    args = parser.parse_args(argv)
    missing = [p for p in args.parts if not p.is_file()]
    if missing:
        raise MrcbenchError(f"grid part not found: {missing[0]}")
    parts = [(p, files.read_parquet(p)) for p in args.parts]
    ablation_cfg, n_layers = None, None
    if args.config is not None:
        config = cfg.load(args.config)
        ablation_cfg = cfg.ablation_config(config)
        models = {str(m) for _, frame in parts if "model" in frame for m in frame["model"].unique()}
        entry = cfg.models(config).get(next(iter(models))) if len(models) == 1 else None
        if entry is not None and entry.num_layers is not None:
            n_layers = int(entry.num_layers)
    check_grid_parts(parts, ablation_cfg, n_layers)
    frame = pd.concat([frame for _, frame in parts], ignore_index=True)
    files.write_parquet(frame, args.out)
    print(json.dumps({"parts": len(args.parts), "rows": len(frame)}))
    return 0
