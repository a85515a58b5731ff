"""The run layout (mrcbench/runtime/layout.py): the documented paths, Snakemake patterns from the same
templates, and the inverse."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from mrcbench.config import Run
from mrcbench.errors import MrcbenchError
from mrcbench.runtime import layout

from support import REPO_ROOT

RUN = {"model": "minilm", "train": "squad_train", "seed": 7, "eval": "xquad_en"}


def test_concrete_paths_are_the_documented_layout():
    assert layout.predict("results", "metrics.json", **RUN) == "results/predict/minilm/squad_train/seed7/xquad_en/metrics.json"
    assert layout.attention("r", "zone_stats.parquet", **RUN) == "r/attention/minilm/squad_train/seed7/xquad_en/zone_stats.parquet"
    assert layout.grid_part("r", "layer3", **RUN) == "r/ablation/minilm/squad_train/seed7/xquad_en/parts/layer3.parquet"
    assert layout.finetune_dir("r", **RUN) == "r/finetune/minilm/squad_train/seed7"
    assert layout.checkpoint_dir(layout.finetune_dir("r", **RUN)) == "r/finetune/minilm/squad_train/seed7/checkpoint"
    assert layout.model_dir("r", "minilm") == "r/models/minilm"
    assert layout.split_json("r", "xquad_en") == "r/data/xquad_en.json"
    assert layout.split_summary("r", "xquad_en") == "r/data/xquad_en.summary.json"
    assert layout.stats("r", "deltas.parquet") == "r/stats/deltas.parquet"
    assert layout.config_file("r") == "r/config.resolved.yaml" and layout.manifest_file("r") == "r/manifest.json"
    assert layout.log("logs", "ablate", part="all", **RUN) == "logs/ablate/minilm/squad_train/seed7/xquad_en/all.log"
    assert layout.log("logs", "stats") == "logs/stats.log"
    assert layout.benchmark("r", "prepare_model", model="minilm") == "r/benchmarks/prepare_model/minilm.tsv"
    assert layout.benchmark("r", "prepare_data") == "r/benchmarks/prepare_data.tsv"
    run = Run("english", ablation=True, **RUN)
    assert layout.predict("r", "scores.parquet", **run.keys) == layout.predict("r", "scores.parquet", **RUN)


def test_keys_not_given_stay_snakemake_wildcards():
    assert layout.predict("results", "metrics.json") == "results/predict/{model}/{train}/seed{seed}/{eval}/metrics.json"
    assert layout.log("logs", "finetune") == "logs/finetune/{model}/{train}/seed{seed}.log"
    assert layout.split_json("r") == "r/data/{split}.json"
    assert layout.finetune_dir("r", model="m", train="t", seed=1, eval="ignored") == "r/finetune/m/t/seed1"


def test_globs_and_parse_invert_the_paths():
    assert layout.glob("predict", "metrics.json") == "predict/*/*/seed*/*/metrics.json"
    assert layout.parse("/x/" + layout.predict("results", "metrics.json", **RUN), "predict", "metrics.json") == RUN
    with pytest.raises(MrcbenchError, match=r"expected predict/MODEL/TRAIN/seedN/EVAL/metrics\.json"):
        layout.parse("predict/m/t/seedX/e/metrics.json", "predict", "metrics.json")


@pytest.mark.parametrize(("results", "logs"), [
    ("results", "logs"), ("results/smoke", "logs/smoke"), ("./results/", "logs"), ("other", "logs/other"),
    ("/abs/run", "/abs/run/logs"), ("../run", "../run/logs"),
])
def test_logs_mirror_the_results_folder(results, logs):
    assert layout.logs_root(layout.results_root({"results_dir": results})) == logs
    assert layout.results_root({}) == "results"


def test_project_sources_list_the_tracked_top_level():
    """``layout.PROJECT_SOURCES`` (what no results folder may be or lie in) covers every tracked entry."""
    root = REPO_ROOT
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("no git checkout")
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    top = {line.split("/")[0] for line in tracked.splitlines() if line}
    assert top - set(layout.PROJECT_SOURCES) == set()
