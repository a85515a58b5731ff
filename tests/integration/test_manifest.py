"""The run manifest (``results/manifest.json``), ``mrcbench compare``, and re-run determinism."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from mrcbench import stats
from mrcbench.cli import main as cli
from mrcbench.provenance import environment, manifest
from mrcbench.report import appendix
from mrcbench.runtime import kernels
from mrcbench.tables import STATS_TABLES

from support import REPO_ROOT
from support.synthetic_results import write_synthetic_results
from support.tiny_run import RUN, compare, copy_run, run_config

FAKE_CPUINFO = "processor\t: 0\nmodel name\t: Fake EPYC 9999\nflags\t\t: sse2 avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 ht\n"


@pytest.fixture()
def tree(tiny_run) -> Path:
    """The tiny run, plus what is not a result: a wall time, logs, benchmark timings, an atomic writer's
    temporary file, the rendered report, another profile's run inside the folder."""
    results = tiny_run
    (results / "finetune" / "minilm" / "squad_train" / "seed42" / "train_summary.json").write_text(
        '{"seconds": 12.5}', encoding="utf-8")
    (results / "logs").mkdir()
    (results / "logs" / "predict.log").write_text("log\n", encoding="utf-8")
    (results / "benchmarks" / "predict").mkdir(parents=True)
    (results / "benchmarks" / "predict" / "x.tsv").write_text("s\n1.0\n", encoding="utf-8")
    (results / RUN / ".scores.parquet.abc.tmp.parquet").write_bytes(b"partial")
    (results / "report.html").write_text("<html>wall time 12 s</html>", encoding="utf-8")
    # config/smoke.yaml writes results/smoke
    (results / "smoke" / "stats").mkdir(parents=True)
    (results / "smoke" / "config.resolved.yaml").write_text("{}\n", encoding="utf-8")
    (results / "smoke" / "stats" / "deltas.parquet").write_bytes(b"other run")
    return results


def test_manifest_holds_every_result_with_its_digest_and_the_environment(tree, capsys):
    assert cli(["manifest", "--config", str(tree / "config.resolved.yaml"), "--results", str(tree)]) == 0
    written = json.loads((tree / "manifest.json").read_text(encoding="utf-8"))
    paths = [row["path"] for row in written["files"]]
    assert paths == ["config.resolved.yaml", "data/squad_heldout.json",
                     "finetune/minilm/squad_train/seed42/checkpoint/model.safetensors",
                     f"{RUN}/metrics.json", f"{RUN}/null_odds.json", f"{RUN}/predictions.json",
                     f"{RUN}/scores.parquet", "stats/deltas.csv", "stats/deltas.parquet"]
    for row in written["files"]:
        data = (tree / row["path"]).read_bytes()
        assert row["size"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
    env = written["environment"]
    assert env["precision"] == "fp32" and env["precision_setting"] == "fp32"
    assert env["threads"]["predict"] == 3 and env["threads"]["finetune"] == 1
    assert env["packages"]["torch"] == torch.__version__
    assert set(env["packages"]) >= {"python", "torch", "transformers", "tokenizers", "numpy"}
    assert set(env["cpu_flags"]) <= set(environment.KERNEL_FLAGS)
    assert env["os"] and env["cpu_model"]
    # The variables that choose CPU kernels, as the job saw them (mrcbench/runtime/kernels.py).
    assert set(env["kernel_env"]) == set(kernels.RECORDED)
    assert env["kernel_env"]["ATEN_CPU_CAPABILITY"] == os.environ.get("ATEN_CPU_CAPABILITY")
    config = yaml.safe_load((tree / "config.resolved.yaml").read_text(encoding="utf-8"))
    assert written["config_sha256"] == manifest.config_digest(config)
    assert written["config_sha256"] != manifest.config_digest({**config, "seeds": [1]})


def test_environment_names_the_cpu_and_its_kernel_flags():
    env = environment.record(run_config(), Path("/nonexistent"), cpuinfo=FAKE_CPUINFO)
    assert env["cpu_model"] == "Fake EPYC 9999"
    assert env["cpu_flags"] == ["amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512f", "fma"]
    # Nothing predicted yet: the precision this machine would use for the config's setting.
    assert env["precision"] == "fp32"


def test_a_kernel_difference_is_named_right_after_precision(tree, tmp_path, capsys, monkeypatch):
    """An AVX2 run beside a native AVX512 one: compare names the kernel variables and dispatch level
    before the (informational) CPU flags, as the likely cause of differing results."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    manifest.write(tree, run_config())
    copy = copy_run(tree, tmp_path / "b")
    (copy / RUN / "metrics.json").write_text('{"f1": 75.1}', encoding="utf-8")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    manifest.write(copy, run_config())
    code, out = compare(capsys, tree, copy)
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith("environment differs")]
    assert lines[0] == "environment differs: kernel_env ATEN_CPU_CAPABILITY avx2 vs None"
    assert lines[1] == "environment differs: kernel_env MKL_CBWR AVX2 vs AUTO"


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    assert environment.git_commit(tmp_path) is None
    assert manifest.build(tmp_path, run_config(), repo=tmp_path)["git_commit"] is None


def test_manifest_is_written_atomically(tree, monkeypatch):
    manifest.write(tree, run_config())
    before = (tree / "manifest.json").read_bytes()
    (tree / "data" / "extra.json").write_text("{}", encoding="utf-8")

    def broken(self, data):
        Path.open(self, "wb").write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        manifest.write(tree, run_config())
    monkeypatch.undo()
    assert (tree / "manifest.json").read_bytes() == before
    assert not [p for p in tree.iterdir() if p.name.startswith(".manifest.json")]


def test_a_run_compared_with_itself_is_identical(tree, tmp_path, capsys):
    manifest.write(tree, run_config())
    copy = copy_run(tree, tmp_path / "b")
    (copy / "logs" / "predict.log").write_text("another log\n", encoding="utf-8")  # logs are no result
    assert compare(capsys, tree, tree) == (0, "identical\n")
    assert compare(capsys, tree, copy) == (0, "identical\n")
    assert compare(capsys, tree / "manifest.json", copy) == (0, "identical\n")


def test_a_changed_parquet_cell_is_named_with_its_column_and_difference(tree, tmp_path, capsys):
    copy = copy_run(tree, tmp_path / "b")
    scores = pd.read_parquet(copy / RUN / "scores.parquet")
    scores.loc[1, "f1"] = 0.5
    scores.to_parquet(copy / RUN / "scores.parquet", index=False)
    code, out = compare(capsys, tree, copy)
    assert code == 1
    lines = out.splitlines()
    # A per-question score is meaning: compared exactly, named with its question.
    assert lines[2] == "changed in meaning (answers, scores, decisions, headline):"
    assert lines[3] == f"  {RUN}/scores.parquet:"
    assert lines[4].strip() == "f1: 1 of 4 rows differ: row 1 (qid q2): 0.0 vs 0.5"
    assert "em:" not in out
    assert lines[-1] == f"differs: 1 file changed in meaning, 0 with floats beyond tolerance; first: {RUN}/scores.parquet"


def test_an_extra_question_is_counted_by_key(tree, tmp_path, capsys):
    copy = copy_run(tree, tmp_path / "b")
    scores = pd.read_parquet(copy / RUN / "scores.parquet")
    scores = pd.concat([scores, pd.DataFrame({"qid": ["q5"], "em": [0.0], "f1": [0.5]})], ignore_index=True)
    scores.to_parquet(copy / RUN / "scores.parquet", index=False)
    (copy / "data" / "squad_heldout.json").unlink()
    code, out = compare(capsys, tree, copy)
    assert code == 1
    assert "rows: 4 vs 5 (0 only in A, 1 only in B, keyed by qid)" in out
    assert "only in A: data/squad_heldout.json" in out
    # In run order: the input data before the predictions.
    assert out.index("only in A: data/squad_heldout.json") < out.index(f"{RUN}/scores.parquet")
    assert out.strip().endswith("first: data/squad_heldout.json")


def test_an_environment_difference_is_named(tree, tmp_path, capsys):
    manifest.write(tree, run_config())
    copy = copy_run(tree, tmp_path / "b")
    metrics = json.loads((copy / RUN / "metrics.json").read_text(encoding="utf-8"))
    metrics.update(f1=76.5, precision="bf16")
    (copy / RUN / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    config = run_config()
    config["resources"]["predict"]["threads"] = 2
    manifest.write(copy, config)
    code, out = compare(capsys, tree, copy)
    assert code == 1
    assert "environment differs: precision fp32 vs bf16" in out
    assert "environment differs: threads predict 3 vs 2" in out
    assert "environment differs: config_sha256" in out
    assert "f1: 1 of 1 differ: f1: 62.5 vs 76.5" in out
    # A manifest holds no content: only the digests can be compared, and it says so.
    code, out = compare(capsys, tree / "manifest.json", copy)
    assert code == 1 and f"differs: {RUN}/metrics.json" in out and "environment differs: precision fp32 vs bf16" in out
    assert "A manifest holds only digests, so only digests can be compared" in out.splitlines()[-1]
    # A folder without a manifest has no recorded environment, and says so.
    (copy / "manifest.json").unlink()
    code, out = compare(capsys, tree, copy)
    assert "environment not recorded for B" in out


def test_compare_of_a_missing_side_is_one_line(tmp_path, capsys):
    assert cli(["compare", str(tmp_path / "nothing"), str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nothing'}: no such results folder or manifest"


def test_statistics_are_byte_identical_on_rerun(tmp_path, capsys):
    """Re-running a stage on the same inputs gives the same bytes (here: every statistics table)."""
    results = write_synthetic_results(tmp_path)
    first, second = tmp_path / "first" / "stats", tmp_path / "second" / "stats"
    stats.command.run_stats(results, first)
    stats.command.run_stats(results, second)
    rows = manifest.result_files(first.parent)
    assert len(rows) >= 2 * len(STATS_TABLES)
    assert compare(capsys, first.parent, second.parent) == (0, "identical\n")


def test_the_manifest_is_the_dags_last_step():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--printshellcmds", "--cores", "1"],
                          check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "MRCBENCH_DATA_DIR": "/nonexistent",
                               "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "mrcbench manifest --config results/config.resolved.yaml --results results --out results/manifest.json" in out
    assert out.rindex("mrcbench report") < out.index("mrcbench manifest")
    assert out.index("mrcbench stats") < out.index("mrcbench manifest")


def test_the_appendix_states_the_precision_and_what_bf16_costs(tree):
    note = appendix.precision_note(tree, run_config())
    assert note.startswith("Inference precision: **fp32**") and "differ" not in note
    metrics = json.loads((tree / RUN / "metrics.json").read_text(encoding="utf-8"))
    (tree / RUN / "metrics.json").write_text(json.dumps({**metrics, "precision": "bf16"}), encoding="utf-8")
    note = appendix.precision_note(tree, {"inference": {"precision": "auto"}})
    assert "**bf16** (setting `inference.precision: auto`)" in note and "differ from fp32 runs" in note
    env = appendix.environment_table(tree, run_config()).set_index("item")["value"]
    assert env["precision"] == "bf16" and "predict: 3" in env["threads"]


@pytest.mark.slow
def test_the_smoke_run_ends_with_its_manifest(smoke_run, capsys):
    """The smoke DAG's last step: every result of the run is in it, computed in fp32."""
    workdir, _ = smoke_run
    config = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text(encoding="utf-8"))
    results = workdir / config["results_dir"]
    written = json.loads((results / "manifest.json").read_text(encoding="utf-8"))
    paths = {row["path"] for row in written["files"]}
    assert paths == {row["path"] for row in manifest.result_files(results)}
    assert {f"stats/{name}.parquet" for name in STATS_TABLES} <= paths
    assert any(path.endswith("checkpoint/model.safetensors") for path in paths)
    assert not any(path.startswith(("logs/", "benchmarks/")) for path in paths)
    assert written["environment"]["precision"] == "fp32"
    assert compare(capsys, results / "manifest.json", results) == (0, "identical\n")


def test_a_large_json_is_summarised_per_value_name(tree, tmp_path, capsys):
    nbest = {f"q{i}": [{"text": "a", "start_logit": 0.5, "probability": 0.25}] for i in range(20)}
    (tree / RUN / "nbest.json").write_text(json.dumps(nbest), encoding="utf-8")
    copy = copy_run(tree, tmp_path / "b")
    for i in range(12):
        nbest[f"q{i}"][0]["start_logit"] = 0.5 + i / 100
    nbest["q0"][0]["text"] = "b"
    (copy / RUN / "nbest.json").write_text(json.dumps(nbest), encoding="utf-8")
    code, out = compare(capsys, tree, copy)
    assert code == 1
    assert "start_logit: max |diff| 0.11, 11 of 20 values beyond logit tolerance (abs 0.0001 + rel 0.0001)" in out
    assert "text: 1 of 20 differ: q0.0.text: 'a' vs 'b'" in out and "probability" not in out


def test_the_appendix_says_whether_the_run_matches_the_reference_of_its_config(tree, tmp_path):
    config = run_config()
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    assert "No reference manifest" in appendix.reference_note(tree, config, reference_dir)
    manifest.write(tree, config, reference_dir / "default.json")
    written = json.loads((reference_dir / "default.json").read_text(encoding="utf-8"))
    assert written["files_sha256"] == manifest.files_digest(manifest.result_files(tree))
    note = appendix.reference_note(tree, config, reference_dir)
    assert "**identical**" in note and str(reference_dir / "default.json") in note
    # A reference made from another config says nothing about this run.
    assert "No reference manifest" in appendix.reference_note(tree, {**config, "sample_seed": 14}, reference_dir)
    # One changed score: the note names the count and the first differing stage.
    scores = pd.read_parquet(tree / RUN / "scores.parquet")
    scores.loc[1, "f1"] = 0.5
    scores.to_parquet(tree / RUN / "scores.parquet", index=False)
    note = appendix.reference_note(tree, config, reference_dir)
    assert "**differs** from" in note and "1 file differs in digest" in note and "first differing stage: predict" in note
    assert manifest.files_digest(manifest.result_files(tree)) != written["files_sha256"]
