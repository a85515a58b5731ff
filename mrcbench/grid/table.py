"""The ``grid.parquet`` table: a grid run, decoded and scored per question, with its effect measures.

:func:`ablate` runs a grid (:mod:`mrcbench.grid.run`) a group of cells at a time, decodes and scores each
cell's logits (injected callables) and returns one row per cell and question (:data:`GRID_COLUMNS`): EM/F1,
the removed attention mass, the continuous effect measure on the unmasked answer's window
(:data:`EFFECT_COLUMNS`) and, for a size-matched null, its mass match and feasibility. The configured grid
of one eval run and the commands ``mrcbench ablate`` and ``mrcbench merge-grid`` are in
:mod:`mrcbench.grid.command`.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from mrcbench.errors import MrcbenchError
from mrcbench.grid.cells import BASELINE, Cell, chunked, unique_cells
from mrcbench.grid.run import CellOutput, run_grid, run_grid_naive
from mrcbench.masking.nulls import NullSettings
from mrcbench.qa import decoding
from mrcbench.tables import EFFECT_COLUMNS, GRID_COLUMNS, RUN_SEED_KEYS
from mrcbench.zones import check_variant


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
    missing = [key for key in RUN_SEED_KEYS if key not in keys]
    if missing:
        raise MrcbenchError(f"ablate: keys lacks {missing[0]!r}")
    if cells_per_pass < 1:
        raise MrcbenchError(f"cells_per_pass must be at least 1, got {cells_per_pass}")
    cells = unique_cells(cells)
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
        for group in chunked(cells, cells_per_pass):
            kwargs = {"max_stack": max_stack, "null": null} if fast else {"null": null}
            run_cells = list(group) if reference is not None or BASELINE in group else [BASELINE, *group]
            outputs = runner(model, batches, run_cells, variant, **kwargs)
            if reference is None:
                baseline_output = CellOutput(*(array[restore] for array in outputs[BASELINE]))
                reference = EffectReference.build(
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
                frames.append(cell_rows(cell, output, scores, reference, example_ids, keys, variant))
                bar.update(1)
    return pd.concat(frames, ignore_index=True)


def cell_rows(
    cell: Cell, output: CellOutput, scores: pd.DataFrame, reference: EffectReference, example_ids: np.ndarray,
    keys: Mapping[str, object], variant: str,
) -> pd.DataFrame:
    """One cell's rows of the grid table (:data:`GRID_COLUMNS`), one per question of ``scores``.

    ``output`` is the cell's run in feature order (``example_ids``); ``scores`` its per-question EM/F1
    (columns qid, article, em, f1); ``reference`` the unmasked model's effect reference.
    """
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
    for key in RUN_SEED_KEYS:
        frame[key] = keys[key]
    frame["variant"] = variant
    for column, value in cell.columns().items():
        frame[column] = value
    return frame[list(GRID_COLUMNS)]


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
class EffectReference:
    """The unmasked model's log-probabilities on the window of each question's unmasked answer."""

    qids: list[str]
    rows: np.ndarray  # feature row (window) of each question
    starts: np.ndarray  # unmasked prediction's start token
    ends: np.ndarray
    lengths: np.ndarray  # real tokens of the window
    start_logp: np.ndarray  # [questions, T] log-softmax over the window
    end_logp: np.ndarray

    @classmethod
    def build(cls, baseline: CellOutput, predictions: decoding.Predictions, windows: np.ndarray) -> EffectReference:
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
