"""The grid's two commands: ``mrcbench ablate`` and ``mrcbench merge-grid``.

``mrcbench ablate`` (:func:`main_ablate`) runs the grid of the config's ``ablation`` section
(:func:`mrcbench.grid.cells.configured_cells`: modes, zones, head zones, operators, null draws) on one run
(:class:`mrcbench.qa.eval_run.EvalRun`) narrowed to the grid's questions (:func:`grid_selection`), for
every configured variant, through :func:`mrcbench.grid.table.ablate`; ``--part layerN`` runs only layer
``N``'s cells (one cluster job per layer with ``ablation.split_by_layer``). ``mrcbench merge-grid``
(:func:`main_merge`) joins those parts into one ``grid.parquet`` after :func:`check_grid_parts` has
checked that they make exactly one run's configured grid.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mrcbench import config as cfg
from mrcbench import data as data_mod
from mrcbench import metrics
from mrcbench.errors import MrcbenchError
from mrcbench.grid.cells import configured_cells
from mrcbench.grid.table import ablate
from mrcbench.masking.nulls import NullSettings
from mrcbench.qa import decoding
from mrcbench.qa.eval_run import EvalRun, add_run_arguments
from mrcbench.runtime import files
from mrcbench.runtime import precision as precision_mod
from mrcbench.tables import GRID, GRID_CELL_KEYS, RUN_SEED_KEYS


def run_ablation(
    run: EvalRun, ablation_cfg: cfg.Ablation, decoding_cfg: cfg.Decoding, layer: int | None = None
) -> pd.DataFrame:
    """The configured grid of ``run`` (with ``layer``, only that layer's part), every configured variant,
    in the run's precision: the ``grid.parquet`` table of :func:`mrcbench.grid.table.ablate` plus its
    ``precision`` column."""
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
    """The :class:`~mrcbench.qa.eval_run.EvalRun` selection of the grid's questions (``None``: the whole split)."""
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
    keys = list(RUN_SEED_KEYS)
    cell_keys = list(GRID_CELL_KEYS)
    v_, mode_, op_, layer_, head_, zone_, draw_ = range(len(GRID_CELL_KEYS))
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
        # an operator found for every zone of its mode ran for all of them (ablation.operators); one
        # found for fewer zones, only in mode layer, ran for those (ablation.zone_operators)
        layer_cells = [c for c in plain if c[mode_] == "layer"]
        all_zones = {c[zone_] for c in plain if c[mode_] not in ("baseline", "head")}
        every_zone = {
            op for op in {c[op_] for c in plain if c[mode_] != "baseline"}
            if {c[zone_] for c in plain if c[op_] == op and c[mode_] not in ("baseline", "head")} == all_zones
            or any(c[op_] == op and c[mode_] != "layer" for c in plain if c[mode_] != "baseline")
        }
        ablation_cfg = dataclasses.replace(
            default,
            modes=tuple(grid_modes),
            zones=tuple(sorted({c[zone_] for c in plain if c[mode_] not in ("baseline", "head")})),
            head_zones=tuple(sorted({c[zone_] for c in plain if c[mode_] == "head"})),
            variants=tuple(sorted({c[v_] for c in found})),
            operators=tuple(sorted(every_zone)) or default.operators,
            zone_operators={
                operator: tuple(sorted({c[zone_] for c in layer_cells if c[op_] == operator}))
                for operator in sorted({c[op_] for c in layer_cells} - every_zone)
            },
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
