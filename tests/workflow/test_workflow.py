"""End to end: config/smoke.yaml through the whole Snakemake DAG on the real MiniLM weights (slow), and
the cheap checks of the workflow itself (lint, dry runs: the fast tier, `pytest -m "not slow"`)."""
import html as html_lib
import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from support.workflow import REPO_ROOT, SMOKE_CONFIG, SMOKE_RESULTS

RUN = "minilm/squad_train/seed7"
EVALS = ("squad_heldout", "xquad_en")
#: Metric and question count of each smoke split (config/smoke.yaml).
SMOKE_SPLITS = {"squad_train": ("squad_v2", 40), "squad_heldout": ("squad_v2", 12), "xquad_en": ("mlqa", 12)}


@pytest.mark.slow
def test_every_stage_wrote_its_files(smoke_run):
    workdir, _ = smoke_run
    results = workdir / SMOKE_RESULTS
    for split, (metric, n_questions) in SMOKE_SPLITS.items():
        summary = json.loads((results / "data" / f"{split}.summary.json").read_text())
        prepared = json.loads((results / "data" / f"{split}.json").read_text())
        qids = [q["id"] for a in prepared["data"] for p in a["paragraphs"] for q in p["qas"]]
        assert summary["split"] == split and summary["metric"] == metric
        assert summary["counts"]["questions"] == len(qids) == n_questions
        assert summary["counts"]["articles"] == len(prepared["data"])
    checkpoint = results / "finetune" / RUN / "checkpoint"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "tokenizer.json").is_file()
    train_summary = json.loads((results / "finetune" / RUN / "train_summary.json").read_text())
    assert train_summary["optimizer_steps"] >= 3
    assert (workdir / "logs" / "smoke" / "finetune" / f"{RUN}.log").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("eval_set", EVALS)
def test_predictions_scores_and_grid(smoke_run, eval_set):
    workdir, _ = smoke_run
    results = workdir / SMOKE_RESULTS
    gold = json.loads((results / "data" / f"{eval_set}.json").read_text())
    qids = [q["id"] for a in gold["data"] for p in a["paragraphs"] for q in p["qas"]]

    predictions = json.loads((results / "predict" / RUN / eval_set / "predictions.json").read_text())
    assert set(predictions) == set(qids)
    metrics = json.loads((results / "predict" / RUN / eval_set / "metrics.json").read_text())
    expected_keys = {"exact", "f1", "total", "HasAns_exact"} if eval_set == "squad_heldout" else {"exact_match", "f1"}
    assert expected_keys <= set(metrics)
    # The official-equivalent scorer on the files the DAG wrote agrees with metrics.json.
    scorer = ["squad_v2"] if eval_set == "squad_heldout" else ["mlqa", "--language", "en"]
    proc = subprocess.run([sys.executable, "-m", "mrcbench.cli", "score", *scorer,
                           str(results / "data" / f"{eval_set}.json"),
                           str(results / "predict" / RUN / eval_set / "predictions.json")],
                          capture_output=True, text=True, check=True)
    scored = json.loads(proc.stdout)
    assert scored["f1"] == pytest.approx(metrics["f1"])

    scores = pd.read_parquet(results / "predict" / RUN / eval_set / "scores.parquet")
    assert sorted(scores["qid"]) == sorted(qids)
    assert scores["f1"].mean() == pytest.approx(metrics["f1"])
    assert {"model", "train_set", "eval_set", "seed", "qid", "article", "em", "f1"} <= set(scores.columns)

    grid = pd.read_parquet(results / "ablation" / RUN / eval_set / "grid.parquet")
    n_layers = 6
    cells = grid.groupby(["variant", "mode", "operator", "layer", "head", "zone", "null_draw"]).size()
    # paper + clean: baseline, 5 zones x 6 layers x 3 operators, and one null of each of the 4 zones x 6 layers
    assert len(cells) == 2 * (1 + 5 * n_layers * 3 + 4 * n_layers)
    assert set(grid["zone"]) == {"none", "all", "q2q", "q2p", "p2q", "p2p",
                                 "null_q2q", "null_q2p", "null_p2q", "null_p2p"}
    nulls = grid[grid["zone"].str.startswith("null_")]
    feasible = nulls[nulls["null_feasible"].astype(bool)]
    assert (feasible["mass_match"] - 1).abs().max() <= 0.1 + 1e-9  # ablation.null_tolerance
    assert grid.loc[~grid["zone"].str.startswith("null_"), "mass_match"].isna().all()
    assert grid[["start_kl", "end_kl"]].min().min() >= 0
    # The grid runs on answerable questions only (ablation.answerable_only, the default), at most
    # ablation.max_questions of them.
    answerable = [q["id"] for a in gold["data"] for p in a["paragraphs"] for q in p["qas"]
                  if q["answers"] and not q.get("is_impossible", False)]
    max_questions = yaml.safe_load((REPO_ROOT / SMOKE_CONFIG).read_text(encoding="utf-8"))["ablation"]["max_questions"]
    assert set(grid["qid"]) <= set(answerable)
    assert grid["qid"].nunique() == min(len(answerable), max_questions)
    assert (cells == grid["qid"].nunique()).all()
    baseline = grid[grid["mode"] == "baseline"]
    for variant in ("paper", "clean"):
        # The grid's baseline is the prediction step's result, question by question.
        merged = baseline[baseline["variant"] == variant].merge(scores, on="qid", suffixes=("_grid", ""))
        assert (merged["f1_grid"] - merged["f1"]).abs().max() < 1e-6

    stats = pd.read_parquet(results / "attention" / RUN / eval_set / "zone_stats.parquet")
    assert stats["qid"].nunique() == len(qids)
    assert set(stats["layer"]) == set(range(n_layers)) and stats["head"].nunique() == 12
    row_sums = stats.groupby(["qid", "layer", "head", "row_zone"], observed=True)["mass"].sum()
    assert ((row_sums.dropna() - 1).abs() < 1e-4).all()
    cases = json.loads((results / "attention" / RUN / eval_set / "case_studies.json").read_text())
    assert len(cases) == 1 and len(cases[0]["tokens"]) == len(cases[0]["zone_ids"])


@pytest.mark.slow
def test_stats_and_report(smoke_run):
    workdir, _ = smoke_run
    deltas = pd.read_parquet(workdir / SMOKE_RESULTS / "stats" / "deltas.parquet")
    assert set(deltas["eval_set"]) == set(EVALS) and set(deltas["variant"]) == {"paper", "clean"}
    assert {"all", "q2q", "q2p", "p2q", "p2p"} <= set(deltas["zone"])
    text = html_lib.unescape((workdir / SMOKE_RESULTS / "report.html").read_text())
    # Every section of the notebook was rendered, no cell failed, and the config's seeds were read.
    headings = [line[3:].strip() for line in (REPO_ROOT / "reports" / "report.qmd").read_text().splitlines()
                if line.startswith("## ")]
    assert headings and all(heading in text for heading in headings), [h for h in headings if h not in text]
    assert "Traceback (most recent call last)" not in text
    assert "Fine-tuning seeds: not recorded" not in text


def _planned(workdir, override: dict | None = None, tmp_path=None) -> dict[str, int]:
    """The jobs a dry run of the smoke profile in ``workdir`` plans, per rule, with ``override`` merged
    over the profile (a second ``--configfile``: ``--config`` would pass nested numbers as strings)."""
    configfiles = [str(SMOKE_CONFIG)]
    if override is not None:
        path = tmp_path / "override.yaml"
        path.write_text(yaml.safe_dump(override))
        configfiles.append(str(path))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", *configfiles],
                          check=False, cwd=workdir, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "MRCBENCH_DATA_DIR": "/nonexistent"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    if "Job stats:" not in out:
        return {}
    table = out.split("Job stats:", 1)[1].strip().split("\n\n", 1)[0].splitlines()[2:]  # below its header
    return {rule: int(count) for rule, count in map(str.split, table) if rule != "total"}


@pytest.mark.slow
def test_a_change_reruns_exactly_the_jobs_that_read_it(smoke_run, tmp_path):
    """A rule's params are its job's spec (mrcbench/config/jobs.py): on the finished smoke run, an inference
    setting plans prediction, attention statistics and the grid again but no fine-tuning; a setting of
    the fine-tuning recipe plans fine-tuning."""
    workdir, _ = smoke_run
    assert _planned(workdir) == {}
    inference = _planned(workdir, {"training": {"eval_batch_size": 4}}, tmp_path)
    assert {"predict", "extract_attention", "ablate"} <= set(inference), inference
    assert not {"finetune", "prepare_model", "prepare_data"} & set(inference), inference
    recipe = _planned(workdir, {"training": {"learning_rate": 5.0e-5}}, tmp_path)
    assert recipe.get("finetune") == 1 and "prepare_model" not in recipe, recipe


def _snakemake_report(workdir, zip_path, env):
    """`snakemake --report` of the smoke profile in ``workdir``: the archive's entries and its index page."""
    import zipfile

    proc = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "config/smoke.yaml", "--report",
                           str(zip_path)], check=False, cwd=workdir, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        index = html_lib.unescape(archive.read("snakemake_report/report.html").decode())
        files = {name.rsplit("/", 1)[-1]: archive.read(name) for name in names if "/data/raw/" in name}
    return names, index, files


def _assert_report_lists_every_flagged_output(index, files):
    from mrcbench.tables import STATS_TABLES

    assert {f"{table}.csv" for table in STATS_TABLES} | {"report.html", "metrics.json"} <= set(files), sorted(files)
    assert "Statistics tables" in index and "Official scores" in index and "Report" in index
    flat = " ".join(index.replace("\\n", " ").split())  # captions sit in the page's JSON, newlines escaped
    assert "attention zone (P2P, P2Q, Q2P, Q2Q)" in flat  # rules/report/workflow.rst, the archive's front page
    for eval_set in EVALS:  # the captions' wildcards were filled in, one caption per run
        assert f"train split squad_train, seed 7, eval split {eval_set}." in flat, eval_set


@pytest.mark.slow
def test_snakemake_report_of_the_smoke_run(smoke_run, tmp_path):
    """`snakemake --report` on the finished smoke run: a browsable archive holding the paper-style HTML."""
    workdir, _ = smoke_run
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "MRCBENCH_DATA_DIR": "/nonexistent"}
    _, index, files = _snakemake_report(workdir, tmp_path / "snakemake_report.zip", env)
    _assert_report_lists_every_flagged_output(index, files)
    assert files["report.html"] == (workdir / SMOKE_RESULTS / "report.html").read_bytes()
    assert files["deltas.csv"] == (workdir / SMOKE_RESULTS / "stats" / "deltas.csv").read_bytes()


def test_snakemake_report_wiring(tmp_path):
    """The report() flags, captions and categories, without a run: every output of the smoke DAG as a
    placeholder file, then `snakemake --report` (the slow test above does it on the real smoke run)."""
    from support.workflow import copy_workflow

    workdir = copy_workflow(tmp_path / "wf")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "MRCBENCH_DATA_DIR": "/nonexistent"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "config/smoke.yaml", "--summary"],
                          check=False, cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("\t") for line in proc.stdout.splitlines()[1:] if "\t" in line]
    assert any(row[2] == "report" for row in rows), proc.stdout[-2000:]
    for path, _, rule, *rest in rows:
        if "removed temp file" in rest:  # a grid part: temp(), gone once merge_grid has run
            continue
        target = workdir / path
        if rule in ("prepare_model", "finetune"):  # directory() outputs: a checkpoint's files (the DAG checks them)
            checkpoint = target / "checkpoint" if rule == "finetune" else target
            checkpoint.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "model.safetensors", "tokenizer.json"):
                (checkpoint / name).write_text("placeholder\n")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"placeholder {path}\n")
    _, index, files = _snakemake_report(workdir, tmp_path / "snakemake_report.zip", env)
    _assert_report_lists_every_flagged_output(index, files)
    assert files["report.html"] == f"placeholder {SMOKE_RESULTS}/report.html\n".encode()


def test_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", "config/smoke.yaml"],
                          check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "MRCBENCH_DATA_DIR": "/nonexistent", "HOME": "/tmp"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_paper_config_builds_its_whole_dag_offline():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/paper.yaml", "--quiet", "rules"],
                          check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HOME": "/tmp"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for rule, count in (("finetune", 18), ("predict", 18), ("ablate", 216), ("merge_grid", 18)):
        assert any(line.split()[:2] == [rule, str(count)] for line in out.splitlines()), (rule, out[-2000:])


def test_init_from_is_a_dag_edge():
    """config/large.yaml's Chinese leg starts from the e5 checkpoint fine-tuned on English SQuAD."""
    import yaml

    results = yaml.safe_load((REPO_ROOT / "config" / "large.yaml").read_text()).get("results_dir", "results")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--printshellcmds",
                           f"{results}/finetune/e5_small/cmrc_train/seed42", "--configfile", "config/large.yaml"],
                          check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "MRCBENCH_DATA_DIR": "/nonexistent"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    first = f"--out {results}/finetune/e5_small/squad_train/seed42"
    second = f"--init-checkpoint={results}/finetune/e5_small/squad_train/seed42/checkpoint >"
    assert first in out and second in out, out[-3000:]
    assert out.index(first) < out.index(second)
    assert "--init-checkpoint= >" in out  # the first stage starts from the pre-trained weights
