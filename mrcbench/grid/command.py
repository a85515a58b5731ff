"""The configured grid of one eval run, and its two commands.

``mrcbench ablate`` (:func:`main_ablate`) runs the grid of its spec's ``ablation`` section
(:func:`mrcbench.grid.cells.configured_cells`: modes, zones, head zones, operators, null draws) on one run
(:class:`mrcbench.qa.eval_run.EvalRun`) narrowed to the grid's questions (:func:`grid_selection`), for
every configured variant, through :func:`mrcbench.grid.table.ablate`; part ``layerN`` runs only layer
``N``'s cells (one cluster job per layer with ``ablation.split_by_layer``). ``mrcbench merge-grid``
(:func:`main_merge`) joins those parts into one ``grid.parquet`` after :func:`check_grid_parts` has
checked that they make exactly one run's configured grid.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mrcbench import data as data_mod
from mrcbench import metrics
from mrcbench.config import AblateJob, Ablation, Decoding, MergeGridJob
from mrcbench.errors import MrcbenchError
from mrcbench.grid.cells import configured_cells
from mrcbench.grid.table import ablate
from mrcbench.masking.nulls import NullSettings
from mrcbench.qa import decoding
from mrcbench.qa.eval_run import EvalRun, Selection, add_run_arguments
from mrcbench.runtime import files
from mrcbench.runtime import precision as precision_mod
from mrcbench.tables import GRID, GRID_CELL_KEYS, RUN_SEED_KEYS

CELLS_PER_PASS = 16
"""Grid cells decoded per baseline pass (:func:`mrcbench.grid.table.ablate`): bounds the logits held
in memory; the results do not depend on it."""


def run_ablation(
    run: EvalRun, metric: str, ablation_cfg: Ablation, decoding_cfg: Decoding, layer: int | None
) -> pd.DataFrame:
    """The configured grid of ``run`` (with ``layer``, only that layer's part; None: the whole grid),
    every configured variant, in the run's precision, scored with ``metric``: the ``grid.parquet`` table
    of :func:`mrcbench.grid.table.ablate` plus its ``precision`` column."""
    if layer is not None and not 0 <= layer < run.n_layers:
        raise MrcbenchError(f"--part layer{layer}: the model has {run.n_layers} layers")
    cells = configured_cells(run.n_layers, run.n_heads, ablation_cfg, layer)

    def decode(start: np.ndarray, end: np.ndarray) -> decoding.Predictions:
        return decoding.decode(run.examples, run.features, start, end, metric, decoding_cfg)

    def score(answers: dict[str, str]) -> pd.DataFrame:
        return metrics.scoring.per_question_scores(metric, run.dataset, answers, run.language)

    with precision_mod.autocast(run.precision, run.model.device):
        frames = [
            ablate(run.model, run.features, cells, variant, decode, score, run.keys, batch_size=run.batch_size,
                   cells_per_pass=CELLS_PER_PASS,
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


def grid_selection(ablation_cfg: Ablation, seed: int) -> Selection | None:
    """The :class:`~mrcbench.qa.eval_run.EvalRun` selection of the grid's questions, drawn with ``seed``
    (``sample_seed``); ``None``: the whole split."""
    max_questions, answerable_only = ablation_cfg.max_questions, ablation_cfg.answerable_only
    if not (answerable_only or max_questions):
        return None

    def select(dataset: dict, source: str) -> dict:
        return select_grid_questions(dataset, max_questions, answerable_only, seed, source)

    return select


def grid_layer(part: str) -> int | None:
    """The layer of grid part ``layerN`` (None: part ``all``, the whole grid)."""
    if part == "all":
        return None
    if part.startswith("layer") and part[5:].isdigit():
        return int(part[5:])
    raise MrcbenchError(f"part {part!r}: expected 'all' or 'layerN'")


def main_ablate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrcbench ablate", description="The zone x layer (x head) masking grid.")
    add_run_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="grid parquet file")
    args = parser.parse_args(argv)
    spec = AblateJob.from_json(args.spec)
    layer = grid_layer(spec.part)
    run = EvalRun(spec, args.checkpoint, args.eval_json, select=grid_selection(spec.ablation, spec.sample_seed))
    frame = run_ablation(run, spec.metric, spec.ablation, spec.decoding, layer)
    GRID.check(frame, args.out)
    files.write_parquet(frame, args.out)
    baseline = frame[frame["mode"] == "baseline"]
    print(json.dumps({"rows": len(frame), "questions": int(frame["qid"].nunique()),
                      "articles": int(frame["article"].nunique()),
                      "baseline_f1": float(baseline["f1"].mean()) if len(baseline) else None,
                      "precision": run.precision}))
    return 0


def _cell_name(variant: str, mode: str, operator: str, layer: int, head: int, zone: str, null_draw: int) -> str:
    if mode == "baseline":
        return f"the {variant} baseline"
    where = f"layer {layer}" + (f" head {head}" if mode == "head" else "")
    what = f"{zone} draw {null_draw}" if null_draw >= 0 else zone
    return f"{variant} {mode} {operator} {what} in {where}"


def check_grid_parts(
    parts: Sequence[tuple[Path, pd.DataFrame]], ablation_cfg: Ablation, n_layers: int | None
) -> None:
    """Refuse, in one line naming the part and the problem, parts that do not make one grid.

    The parts must come from one run (one model, train set, eval set and seed), hold disjoint cells
    (no part given twice, no cell in two parts, no question twice in a cell) and together cover the
    whole configured grid: every variant x configured cell (``ablation_cfg``) for ``n_layers`` layers
    (None: the deepest layer seen).
    """
    seen_paths: dict[Path, Path] = {}
    for path, _ in parts:
        resolved = Path(path).resolve()
        if resolved in seen_paths:
            raise MrcbenchError(f"{path}: grid part given twice (also as {seen_paths[resolved]})")
        seen_paths[resolved] = Path(path)
    keys = list(RUN_SEED_KEYS)
    cell_keys = list(GRID_CELL_KEYS)
    mode_, layer_, head_ = (GRID_CELL_KEYS.index(key) for key in ("mode", "layer", "head"))
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
    parser.add_argument("--spec", required=True,
                        help="the merge_grid job spec (JSON, mrcbench.config.jobs): the grid the parts must make")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("parts", nargs="+", type=Path)
    args = parser.parse_args(argv)
    spec = MergeGridJob.from_json(args.spec)
    missing = [p for p in args.parts if not p.is_file()]
    if missing:
        raise MrcbenchError(f"grid part not found: {missing[0]}")
    parts = [(p, files.read_parquet(p)) for p in args.parts]
    check_grid_parts(parts, spec.ablation, spec.num_layers)
    frame = pd.concat([frame for _, frame in parts], ignore_index=True)
    files.write_parquet(frame, args.out)
    print(json.dumps({"parts": len(args.parts), "rows": len(frame)}))
    return 0
