"""The grid's controls before and after: the same `mrcbench ablate` job from two source trees, side by side.

    python benchmarks/control_cells.py --before /path/to/old/checkout --results RESULTS \\
        --model minilm --train squad_train --seed 42 --eval squad_heldout --max-questions 30

``--before`` is a checkout of the code to compare with (e.g. ``git worktree add /tmp/before <commit>``);
the code of this repository is "after". Both run ``mrcbench ablate`` on the same fine-tuned checkpoint and
prepared eval split of a finished run (``RESULTS``: its ``config.resolved.yaml``, with
``ablation.max_questions`` replaced), one thread each, in alternating order for ``--rounds`` rounds. Prints
one JSON line: mean wall and CPU seconds of each side, the after/before ratios, the cells each grid holds
(plain zones, nulls, other operators) and the null cells that ran no forward pass in the after grid.
Each side's own config keys apply: a key the before code does not know is left out of its config.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrcbench.config import job_spec, load
from mrcbench.runtime import layout

NEW_KEYS = {"ablation": ("zone_operators",), "stats": ("min_null_feasible_share",)}
"""Config keys the code before the controls change did not know (left out of the before side's config)."""


def _config(results: Path, max_questions: int, before: bool, out: Path) -> Path:
    config = yaml.safe_load((results / "config.resolved.yaml").read_text())
    config["ablation"]["max_questions"] = max_questions
    if before:
        for section, keys in NEW_KEYS.items():
            for key in keys:
                config.get(section, {}).pop(key, None)
    path = out / ("before.yaml" if before else "after.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _job_arguments(source: Path, config: Path, args: argparse.Namespace) -> list[str]:
    """What names the job: this tree's `mrcbench ablate` reads its job spec; a tree before the job specs
    (mrcbench/config/jobs.py) read the config file and the run's keys."""
    if source == ROOT:
        wildcards = {"model": args.model, "train": args.train, "seed": str(args.seed), "eval": args.eval,
                     "part": "all"}
        return ["--spec", job_spec(load(config), "ablate", wildcards).to_json()]
    return ["--config", str(config), "--model", args.model, "--train", args.train, "--seed", str(args.seed),
            "--eval", args.eval]


def _run(source: Path, config: Path, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    finetuned = layout.finetune_dir(args.results, model=args.model, train=args.train, seed=args.seed)
    command = [
        sys.executable, "-m", "mrcbench.cli", "ablate", *_job_arguments(source, config, args),
        "--checkpoint", layout.checkpoint_dir(finetuned), "--eval-json", layout.split_json(args.results, args.eval),
        "--out", str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TQDM_DISABLE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=source, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _cells(grid: pd.DataFrame) -> dict:
    cells = grid[grid["mode"] == "layer"].drop_duplicates(["operator", "layer", "zone", "null_draw"])
    nulls = cells[cells["zone"].str.startswith("null_")]
    per_null = grid[grid["zone"].str.startswith("null_")].groupby(["layer", "zone"])
    unrun = int((per_null["f1"].apply(lambda f1: f1.isna().all())).sum()) if "f1" in grid else 0
    return {"zone_cells": int(((cells["operator"] == "renorm") & ~cells["zone"].str.startswith("null_")).sum()),
            "null_cells": len(nulls), "other_operator_cells": int((cells["operator"] != "renorm").sum()),
            "null_cells_without_a_matched_question": unrun}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, type=Path, help="checkout of the code before")
    parser.add_argument("--results", required=True, type=Path, help="a finished run's results folder")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train", default="squad_train")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval", default="squad_heldout")
    parser.add_argument("--max-questions", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    args.results = args.results.resolve()
    sides = {"before": args.before.resolve(), "after": ROOT}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        configs = {name: _config(args.results, args.max_questions, name == "before", scratch) for name in sides}
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                times[name].append(_run(sides[name], configs[name], args, scratch / f"{name}.parquet"))
        grids = {name: pd.read_parquet(scratch / f"{name}.parquet") for name in sides}
    mean = {name: [sum(values) / len(values) for values in zip(*runs, strict=True)] for name, runs in times.items()}
    print(json.dumps({
        "cpu": platform.processor() or platform.machine(), "questions": int(grids["after"]["qid"].nunique()),
        "run": {"model": args.model, "train": args.train, "seed": args.seed, "eval": args.eval},
        "rounds": args.rounds,
        "wall_s": {name: round(value[0], 1) for name, value in mean.items()},
        "cpu_s": {name: round(value[1], 1) for name, value in mean.items()},
        "wall_ratio_after_over_before": round(mean["after"][0] / mean["before"][0], 3),
        "cpu_ratio_after_over_before": round(mean["after"][1] / mean["before"][1], 3),
        "cells": {name: _cells(grid) for name, grid in grids.items()},
    }))


if __name__ == "__main__":
    main()
