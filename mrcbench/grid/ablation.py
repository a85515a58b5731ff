"""The zone × layer (× head) ablation grid: mask one zone, re-decode, score every question.

Two equivalent ways to compute the logits of every grid cell:

:func:`run_grid_naive`
    The reference: one full forward pass per cell and batch with the ``"mrcbench"`` attention function
    masking the cell's zone (:class:`mrcbench.masking.attention.ZoneAttention`).
:func:`run_grid`
    The fast way. Masking layer ``l`` leaves the hidden states entering layers ``0..l`` unchanged, so one
    baseline pass records the input of every layer and each cell re-runs only layers ``l..L-1`` with the
    model's own layer modules (:mod:`mrcbench.masking.replay`), several cells of the same starting layer stacked
    into one batch. For the paper grid (5 zones × 12 layers) this does about half the layer evaluations
    of the naive way. Architectures whose layers :func:`mrcbench.masking.replay.find_stack` does not recognise
    fall back to the naive way with a warning.

:func:`ablate` wires a grid into decoding and scoring (injected callables) and returns the long
``grid.parquet`` table of docs/architecture.md. The configured grid of one eval run and the commands
``mrcbench ablate`` and ``mrcbench merge-grid`` are in :mod:`mrcbench.grid.command`.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mrcbench.errors import MrcbenchError
from mrcbench.masking.attention import MaskPlan, ZoneAttention
from mrcbench.masking.nulls import NullMasks, NullSettings, null_masks
from mrcbench.masking.replay import find_stack, record_layer_calls, repeat_batch, replay_layers
from mrcbench.qa import decoding
from mrcbench.qa.eval_run import KEY_COLUMNS
from mrcbench.qa.features import PAD_LOGIT as LOGIT_PAD
from mrcbench.qa.features import model_inputs
from mrcbench.zones import (
    NULL_ZONES,
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
    carries the default ``renorm``. A size-matched null (:mod:`mrcbench.masking.nulls`) has the zone name
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
    n_layers: int, n_heads: int, zones: Sequence[str], modes: Sequence[str], operators: Sequence[str],
    null_draws: int, zone_operators: Mapping[str, Sequence[str]],
) -> list[Cell]:
    """The baseline followed by every (mode, layer, [head,] operator, zone) cell (``all_paper_quirk``
    only with ``renorm``); in mode ``layer``, per layer, then the cells of ``zone_operators`` (operator ->
    those of the zones in ``zones`` it runs for on top of ``operators``, e.g. ``{"uniform": ["p2q", "p2p"]}``)
    and ``null_draws``
    size-matched nulls of each of the zones that have one (:data:`mrcbench.zones.NULL_ZONES`)."""
    for zone in zones:
        check_zone(zone)
    for operator in operators:
        check_operator(operator)
    zone_operators = dict(zone_operators or {})
    for operator, named in zone_operators.items():
        check_operator(operator)
        for zone in named:
            check_zone(zone)
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
                    Cell(zone, layer, None, mode, operator)
                    for operator, named in zone_operators.items()
                    if operator not in operators
                    for zone in named
                    if zone in zones  # an operator's cell is read against the zone's renorm cell
                )
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
    (see :class:`mrcbench.masking.attention.InterventionResult`); 0 for the baseline, NaN where nothing was
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


def _unique_cells(cells: Iterable[Cell]) -> list[Cell]:
    cells = list(dict.fromkeys(cells))
    if not cells:
        raise MrcbenchError("the ablation grid has no cells")
    return cells


def _chunks(items: Sequence[Cell], size: int) -> Iterator[Sequence[Cell]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    probabilities are needed (:meth:`mrcbench.masking.attention.ZoneAttention.replay`); the baseline pass and
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
                for chunk in _chunks(start_cells, max_stack):
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
    batch_size: int,
    cells_per_pass: int,
    max_stack: int | None = None,
    fast: bool = True,
    progress: bool = True,
    sort_by_length: bool = True,
    null: NullSettings | None = None,
) -> pd.DataFrame:
    """Run the grid and return the long ``grid.parquet`` table (one row per cell and question).

    ``features`` is an ``EvalFeatures`` (``batches(batch_size)`` and ``example_ids``). ``decode`` turns
    ``[N, T]`` start/end logits into :class:`mrcbench.qa.decoding.Predictions` (``answers``, and
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
                    # a question whose draw missed the zone's mass is no control: its outcome is not
                    # recorded (its windows may not even have been run, see run_grid)
                    missed = ~frame["null_feasible"].fillna(False).to_numpy(dtype=bool)
                    frame.loc[missed, ["em", "f1", *EFFECT_COLUMNS]] = np.nan
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
