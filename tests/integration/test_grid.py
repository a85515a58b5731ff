"""The configured grid (mrcbench/grid/cells.py, mrcbench/grid/command.py): its cells (modes, head zones, per-layer parts), its questions
and the merge of its parts."""
import subprocess
import sys

import pandas as pd
import pytest

from mrcbench import config as cfg
from mrcbench import data as data_mod
from mrcbench.errors import MrcbenchError
from mrcbench.grid import command as grid
from mrcbench.grid.cells import BASELINE, configured_cells

from support import REPO_ROOT


def _ablation(**overrides):
    return cfg.ablation_config({"ablation": overrides})


def test_every_mode_and_the_head_zones():
    cells = configured_cells(4, 3, _ablation(modes=["layer", "head", "from_layer"], head_zones=["p2q"]))
    assert cells[0] == BASELINE
    by_mode = pd.Series([c.mode for c in cells]).value_counts().to_dict()
    # mode layer adds the default zone_operators: uniform for P2Q and P2P in every layer
    assert by_mode == {"baseline": 1, "layer": 5 * 4 + 2 * 4, "head": 1 * 4 * 3, "from_layer": 5 * 4}
    assert {(c.zone, c.operator) for c in cells if c.operator != "renorm"} == {("p2q", "uniform"), ("p2p", "uniform")}
    assert {c.zone for c in cells if c.mode == "head"} == {"p2q"}
    assert len(set(cells)) == len(cells)


def test_operators_can_be_chosen_per_zone():
    cells = configured_cells(3, 2, _ablation(zone_operators={"zero": ["q2q"], "uniform": []}, null_draws=1))
    per_layer = [c for c in cells if c.layer == 1]
    assert [(c.zone, c.operator) for c in per_layer] == [
        ("all", "renorm"), ("q2q", "renorm"), ("q2p", "renorm"), ("p2q", "renorm"), ("p2p", "renorm"),
        ("q2q", "zero"), ("null_q2q", "renorm"), ("null_q2p", "renorm"), ("null_p2q", "renorm"), ("null_p2p", "renorm"),
    ]
    # an operator already run for every zone adds nothing; the schema's default is uniform for the paper's zones
    assert _ablation(operators=["renorm", "uniform"]).zone_operators == {"uniform": ("p2q", "p2p")}
    both = configured_cells(2, 2, _ablation(operators=["renorm", "uniform"]))
    assert len(both) == 1 + 2 * 10 and len(set(both)) == len(both)
    # zones the grid does not mask get no operator cell (it would have no renorm cell to be read against)
    narrow = configured_cells(1, 1, _ablation(zones=["p2q", "q2q"]))
    assert [(c.zone, c.operator) for c in narrow if c.operator == "uniform"] == [("p2q", "uniform")]


def test_layer_parts_partition_the_grid_and_hold_the_baseline_once():
    settings = _ablation(modes=["layer", "head", "from_layer"])
    whole = configured_cells(3, 2, settings)
    parts = [configured_cells(3, 2, settings, layer=layer) for layer in range(3)]
    assert sorted(map(repr, whole)) == sorted(repr(c) for part in parts for c in part)
    assert sum(c.mode == "baseline" for part in parts for c in part) == 1
    assert all(c.layer == 1 for c in parts[1])


def test_merge_grid_concatenates_parts_and_names_a_missing_one(tmp_path):
    settings = _ablation(modes=["layer"], zones=["p2q"], variants=["paper"], zone_operators={"uniform": []})
    for layer in range(2):
        rows = [{"model": "m", "train_set": "t", "eval_set": "dev", "seed": 1, "variant": "paper", **cell.columns(),
                 "qid": "q1", "f1": 50.0} for cell in configured_cells(2, 1, settings, layer=layer)]
        pd.DataFrame(rows).to_parquet(tmp_path / f"layer{layer}.parquet")
    out = tmp_path / "grid.parquet"
    spec = ["--spec", cfg.MergeGridJob(settings, num_layers=2).to_json()]
    assert grid.main_merge([*spec, "--out", str(out), str(tmp_path / "layer0.parquet"),
                            str(tmp_path / "layer1.parquet")]) == 0
    assert pd.read_parquet(out)["layer"].tolist() == [-1, 0, 1]
    proc = subprocess.run([sys.executable, "-m", "mrcbench.cli", "merge-grid", *spec, "--out", str(out),
                           str(tmp_path / "layer7.parquet")], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "layer7.parquet" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_part_name_is_one_line(tmp_path):
    config = cfg.load(REPO_ROOT / "config" / "smoke.yaml")
    wildcards = {"model": "minilm", "train": "squad_train", "seed": "7", "eval": "xquad_en", "part": "layers3"}
    spec = cfg.job_spec(config, "ablate", wildcards).to_json()
    proc = subprocess.run([sys.executable, "-m", "mrcbench.cli", "ablate", "--spec", spec,
                           "--checkpoint", str(tmp_path), "--eval-json", str(tmp_path / "x.json"),
                           "--out", str(tmp_path / "o.parquet")],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "part 'layers3'" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("setting,expected", [(True, True), (False, False), (["xquad_en"], True), (["zh"], False)])
def test_experiment_ablation_setting(setting, expected):
    assert cfg.ablates({"ablation": setting}, "xquad_en") is expected


def _split(n_articles: int, per_article: int, unanswerable_every: int = 2) -> dict:
    """A SQuAD 2.0-style split; every ``unanswerable_every``-th question has no answer."""
    articles = []
    for a in range(n_articles):
        context = f"Article {a} says word{a}."
        qas = []
        for q in range(per_article):
            if q % unanswerable_every == unanswerable_every - 1:
                qas.append({"id": f"a{a}q{q}", "question": "?", "answers": [], "is_impossible": True})
            else:
                qas.append({"id": f"a{a}q{q}", "question": "?", "is_impossible": False,
                            "answers": [{"text": f"word{a}", "answer_start": context.index(f"word{a}")}]})
        articles.append({"title": f"T{a}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "v2.0", "data": articles}


def test_grid_questions_are_answerable_and_spread_over_articles():
    split = _split(n_articles=12, per_article=20)
    chosen = grid.select_grid_questions(split, 24, answerable_only=True, seed=13)
    counts = data_mod.filters.count(chosen)
    assert counts == {"articles": 12, "paragraphs": 12, "questions": 24, "answerable": 24, "unanswerable": 0}
    assert cfg.ablation_config(None).answerable_only is True
    mixed = grid.select_grid_questions(split, 24, answerable_only=False, seed=13)
    assert data_mod.filters.count(mixed)["unanswerable"] > 0 and data_mod.filters.count(mixed)["articles"] == 12
    # All answerable questions when there are fewer than max_questions.
    assert data_mod.filters.count(grid.select_grid_questions(split, 10_000, True, 13))["questions"] == 12 * 10
    with pytest.raises(MrcbenchError, match="answerable_only"):
        grid.select_grid_questions(_split(2, 2, unanswerable_every=1), 5, True, 13)
