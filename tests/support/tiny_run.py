"""A tiny finished run, the results folder the tests of ``mrcbench manifest`` and ``mrcbench compare``
share (the ``tiny_run`` fixture of tests/conftest.py): a split, a checkpoint, one prediction run's
answers, null odds, metrics and per-question scores, and one statistics table (parquet and CSV)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import yaml

from mrcbench.cli import main as cli

from support import REPO_ROOT

RUN = "predict/minilm/squad_train/seed42/squad_heldout"
"""The one prediction run's folder, relative to the results folder."""

QIDS = ["q1", "q2", "q3", "q4"]

CHECKPOINT = "finetune/minilm/squad_train/seed42/checkpoint"


def run_config() -> dict:
    """The default config (config.yaml) with a thread count per rule of its own (the manifest records them)."""
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text(encoding="utf-8"))
    config["resources"] = {"default": {"threads": 1}, "predict": {"threads": 3}}
    return config


def write_tiny_run(results: Path) -> Path:
    """Write the run into ``results`` (created); no manifest. Returns ``results``."""
    (results / RUN).mkdir(parents=True)
    (results / "config.resolved.yaml").write_text(yaml.safe_dump(run_config(), sort_keys=False), encoding="utf-8")
    (results / "data").mkdir()
    (results / "data" / "squad_heldout.json").write_text('{"version": "v2.0", "data": []}\n', encoding="utf-8")
    (results / CHECKPOINT).mkdir(parents=True)
    (results / CHECKPOINT / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    answers = {"q1": "Paris", "q2": "", "q3": "the river Seine", "q4": "1848"}
    (results / RUN / "predictions.json").write_text(json.dumps(answers), encoding="utf-8")
    (results / RUN / "null_odds.json").write_text(json.dumps({q: -3.25 + i for i, q in enumerate(QIDS)}),
                                                  encoding="utf-8")
    (results / RUN / "metrics.json").write_text(json.dumps(
        {"exact": 50.0, "f1": 62.5, "best_f1": 75.0, "best_f1_thresh": -1.234567, "total": 4,
         "precision": "fp32"}), encoding="utf-8")
    pd.DataFrame({"qid": QIDS, "em": [1.0, 0.0, 1.0, 0.0], "f1": [1.0, 0.0, 1.0, 0.5]}).to_parquet(
        results / RUN / "scores.parquet", index=False)
    (results / "stats").mkdir()
    deltas = pd.DataFrame({
        "zone": ["q2q", "q2p", "p2q", "p2p"], "layer": [0, 0, 1, 1],
        "delta": [-12.5, -0.25, -6.0, 0.125], "p_holm": [0.001, 0.8, 0.01, 1.0],
        "significant_holm": [True, False, True, False], "removed_mass": [0.1234567, 0.25, 0.5, 0.0625],
        "verdict": ["damaging", "no effect", "damaging", "no effect"], "new_float": [1.5, 2.5, 3.5, 4.5]})
    deltas.to_parquet(results / "stats" / "deltas.parquet", index=False)
    deltas.to_csv(results / "stats" / "deltas.csv", index=False)
    return results


def copy_run(results: Path, where: Path) -> Path:
    """A copy of a results folder at ``where/results`` (symbolic links copied as links)."""
    return Path(shutil.copytree(results, where / "results", symlinks=True))


def compare(capsys, a, b) -> tuple[int, str]:
    """``mrcbench compare A B``: (exit status, what it printed)."""
    code = cli(["compare", str(a), str(b)])
    return code, capsys.readouterr().out
