"""Failures said in one line and claims the report must earn (issue 20)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mrcbench import config as cfg
from mrcbench import report, stats
from mrcbench.tables import STATS_TABLES

from support import REPO_ROOT

FAST = cfg.stats_config({"stats": {"bootstrap": 200, "permutations": 200}})

# --------------------------------------------------------------------------------------------------
# 1. Flat or tied grids: no "most damaging" zone, no agreement claimed, no NaN printed
# --------------------------------------------------------------------------------------------------


def _deltas(values: dict[tuple[str, int], float], n_layers: int = 6, metric: str = "f1") -> pd.DataFrame:
    """A delta table of one grid: every zone x layer cell is 0 unless ``values`` says otherwise."""
    rows = []
    for zone in ("all", "q2q", "q2p", "p2q", "p2p"):
        for layer in range(n_layers):
            delta = values.get((zone, layer), 0.0)
            rows.append(
                {
                    "model": "m",
                    "train_set": "train",
                    "eval_set": "dev",
                    "variant": "paper",
                    "metric": metric,
                    "mode": "layer",
                    "head": -1,
                    "layer": layer,
                    "zone": zone,
                    "delta": delta,
                    "ci_low": min(delta, 0.0) - 0.1,
                    "ci_high": max(delta, 0.0) + 0.1,
                    "p_value": 1.0,
                    "p_holm": 1.0,
                    "p_bh": 1.0,
                    "significant_holm": False,
                    "significant_bh": False,
                    "n_questions": 4,
                    "n_clusters": 4,
                    "n_seeds": 1,
                    "resampling": "question",
                }
            )
    return pd.DataFrame(rows)


def test_real_top_zones_needs_real_and_untied_drops():
    top = stats.common.real_top_zones
    assert top({"q2q": 0.0, "q2p": 0.0, "p2q": 0.0, "p2p": 0.0}) == []
    assert top({"q2q": -1.0, "q2p": -1.0, "p2q": -1.0, "p2p": 0.0}) == []  # second ties with third
    assert top({"q2q": -2.0, "q2p": 0.0, "p2q": 0.0, "p2p": 0.0}) == []  # second is no drop
    assert sorted(top({"q2q": -2.0, "q2p": -2.0, "p2q": -1.0, "p2p": 0.0})) == ["q2p", "q2q"]
    assert top({"q2q": 0.0, "q2p": -0.5, "p2q": -3.0, "p2p": np.nan}) == ["p2q", "q2p"]


def test_flat_grid_claims_no_paper_agreement():
    # Every delta 0: before, the alphabetic-stable tie order put P2P/P2Q first and claimed agreement.
    flat = _deltas({}, n_layers=12, metric="em")
    summary, _ = stats.paper_comparison.compare_with_paper(flat, FAST)
    row = summary.iloc[0]
    assert row["top2_run"] == "" and not row["top2_agree"]
    assert np.isnan(row["spearman_rho"])
    sentence = report.abstract._paper_sentence(summary)
    assert "nan" not in sentence.lower()
    assert "undefined" in sentence and "no agreement is claimed" in sentence
    # A grid with a real effect still compares.
    real = _deltas({("p2p", 3): -5.0, ("p2q", 2): -4.0, ("q2q", 1): -1.0}, n_layers=12, metric="em")
    summary, _ = stats.paper_comparison.compare_with_paper(real, FAST)
    assert set(summary.iloc[0]["top2_run"].split(",")) == {"p2p", "p2q"} and summary.iloc[0]["top2_agree"]
    sentence = report.abstract._paper_sentence(pd.concat([summary, stats.paper_comparison.compare_with_paper(flat, FAST)[0]]))
    assert "agree in 1 of 1 grids that name two" in sentence and "1 grid names none" in sentence


def test_flat_and_tied_headlines_name_no_most_damaging_zone():
    flat = stats.headline.headline_zones(_deltas({}))
    assert set(flat["verdict"]) == {"no change"} and not flat["agrees_with_paper"].any()
    text = report.abstract.headline_sentences(flat)[0]
    assert "No zone's masking changes the score" in text and "hurts most" not in text
    # Q2Q and Q2P tie with P2P: no two zones are singled out, whatever the grid order.
    tied = stats.headline.headline_zones(_deltas({("q2q", 1): -2.0, ("q2p", 2): -2.0, ("p2p", 0): -2.0}))
    assert set(tied["verdict"]) == {"tied"} and not tied["agrees_with_paper"].any()
    text = report.abstract.headline_sentences(tied)[0]
    assert "names no two most damaging zones" in text and "hurts most" not in text
    clear = stats.headline.headline_zones(_deltas({("p2q", 1): -3.0, ("p2p", 2): -2.0}))
    assert list(clear["zone"]) == ["p2q", "p2p"] and clear["agrees_with_paper"].all()


def test_abstract_of_a_flat_grid_names_no_cell_and_prints_no_nan(tmp_path):
    flat = _deltas({}, n_layers=12)
    flat_em = _deltas({}, n_layers=12, metric="em")
    deltas = pd.concat([flat, flat_em], ignore_index=True)
    paper, _ = stats.paper_comparison.compare_with_paper(deltas, FAST)
    tables = {name: pd.DataFrame() for name in STATS_TABLES}
    rank = pd.DataFrame({"metric": ["f1"], "kendall_tau": [np.nan]})  # a flat profile has no tau
    tables.update(deltas=deltas, paper_comparison=paper, headline=stats.headline.headline_zones(deltas),
                  crosslingual_rank=rank)
    data = report.inputs.ReportData(tmp_path, tmp_path, tables, {}, {})
    text = report.abstract.abstract_markdown(data)
    assert "In 1 the grid does not single out P2Q and P2P" in text and "lowers F1 most are" not in text
    assert "nan" not in text.lower() and "(s)" not in text
    assert "agree in" not in text


# --------------------------------------------------------------------------------------------------
# 2. A full disk during `mrcbench score --per-question` leaves the previous file readable
# --------------------------------------------------------------------------------------------------


def test_score_per_question_survives_a_full_disk(tmp_path, monkeypatch, capsys):
    import errno
    import json

    from mrcbench import metrics

    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            {
                "version": "1.1",
                "data": [
                    {
                        "title": "t",
                        "paragraphs": [
                            {
                                "context": "Paris is big.",
                                "qas": [{"id": "a1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 0}]}],
                            }
                        ],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"a1": "Paris"}), encoding="utf-8")
    out = tmp_path / "per_question.parquet"
    args = ["squad", str(data), str(pred), "--per-question", str(out)]
    assert metrics.command.main(args) == 0
    before = pd.read_parquet(out)

    real = pd.DataFrame.to_parquet

    def half_then_full(self, path, *a, **k):
        Path(path).write_bytes(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_full)
    capsys.readouterr()
    assert metrics.command.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(out) in err and "No space left on device" in err
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    pd.testing.assert_frame_equal(pd.read_parquet(out), before)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------------------------------
# 3. An ordinary OS error is one line; stats writes its config last
# --------------------------------------------------------------------------------------------------


def test_cli_turns_an_os_error_into_one_line(monkeypatch, capsys, tmp_path):
    import errno

    from mrcbench import cli

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.parquet"))

    monkeypatch.setitem(cli.COMMANDS, "full-disk", ("tests_failures_dummy", "full", ""))
    monkeypatch.setitem(__import__("sys").modules, "tests_failures_dummy", type("M", (), {"full": staticmethod(full)}))
    assert cli.main(["full-disk"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'out.parquet'}: No space left on device\n"
    # An OSError without a path keeps its reason.
    assert cli.os_error_line(OSError(errno.EIO, "Input/output error")) == "Input/output error"


def test_stats_writes_its_config_last(tmp_path, monkeypatch, capsys):
    import errno

    from support.synthetic_results import write_synthetic_results

    results = write_synthetic_results(tmp_path / "results")
    out = tmp_path / "stats"
    out.mkdir()
    (out / "config.resolved.yaml").write_text("previous: run\n")
    written = []
    real = stats.command.write_csv

    def fill_disk(frame, path):
        written.append(Path(path).name)
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(frame, path)

    monkeypatch.setattr(stats.command, "write_csv", fill_disk)
    from mrcbench import cli

    def files(pattern):
        return [str(p) for p in sorted(results.glob(pattern))]

    argv = ["stats", "--results", str(results), "--out", str(out), "--config", str(results / "config.resolved.yaml"),
            "--scores", *files("predict/*/*/seed*/*/scores.parquet"),
            "--grids", *files("ablation/*/*/seed*/*/grid.parquet")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    assert (out / "config.resolved.yaml").read_text() == "previous: run\n"
    monkeypatch.setattr(stats.command, "write_csv", real)
    paths = stats.command.run_stats(results, out)
    assert paths[-1].name == "config.resolved.yaml" and "previous" not in paths[-1].read_text()


# --------------------------------------------------------------------------------------------------
# 7. A checkpoint without safetensors weights is refused for what it is, not called truncated
# --------------------------------------------------------------------------------------------------


def test_checkpoint_without_safetensors_says_why(tmp_path):
    import json

    from mrcbench.errors import MrcbenchError
    from mrcbench.models.sources import load_for_qa

    checkpoint = tmp_path / "mine"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (checkpoint / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(MrcbenchError) as caught:
        load_for_qa(checkpoint)
    message = str(caught.value)
    assert "\n" not in message and str(checkpoint) in message and "pytorch_model.bin" in message
    assert "safetensors" in message and "can run code" in message
    assert "truncated" not in message and "delete it" not in message


# --------------------------------------------------------------------------------------------------
# 5. Duplicate question ids are refused before any model work, naming the file and the id
# --------------------------------------------------------------------------------------------------


def test_predict_refuses_duplicate_ids_before_loading_the_model(tmp_path):
    import json

    from mrcbench.errors import MrcbenchError
    from mrcbench.qa import predict

    qa = {"id": "dup1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 0}]}
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(
        json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris.", "qas": [qa, qa]}]}]})
    )
    out = tmp_path / "predict"
    with pytest.raises(MrcbenchError) as caught:  # the checkpoint does not exist: no model is loaded first
        predict.predict(tmp_path / "no-checkpoint", eval_json, out, "squad", "en", {}, {}, 8, "fp32", {})
    message = str(caught.value)
    assert str(eval_json) in message and "duplicate question id 'dup1'" in message and "\n" not in message
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# 4. merge-grid refuses parts that do not make one grid; stats refuses a grid given twice
# --------------------------------------------------------------------------------------------------


def grid_settings(zones=("p2q", "p2p")) -> cfg.Ablation:
    """The grid of the parts below: one variant, two operators, the default zone_operators, one null draw."""
    return cfg.ablation_config({"ablation": {"modes": ["layer"], "zones": list(zones), "head_zones": [],
                                             "variants": ["paper"], "operators": ["renorm", "zero"], "null_draws": 1}})


def grid_part(layer: int, n_layers: int = 3, seed: int = 1, zones=("p2q", "p2p"), qids=("q1", "q2")) -> pd.DataFrame:
    """One layer's grid part, shaped like `mrcbench ablate` writes part layerN."""
    from mrcbench.grid.cells import configured_cells

    settings = grid_settings(zones)
    rows = []
    for cell in configured_cells(n_layers, 1, settings, layer=layer):
        for qid in qids:
            rows.append({"model": "m", "train_set": "t", "eval_set": "dev", "seed": seed, "variant": "paper",
                         **cell.columns(), "qid": qid, "article": "a", "em": 100.0, "f1": 100.0, "removed_mass": 0.0})
    return pd.DataFrame(rows)


def _merge(tmp_path, frames: dict[str, pd.DataFrame], order: list[str] | None = None, capsys=None,
           zones=("p2q", "p2p")):
    from mrcbench import cli

    for name, frame in frames.items():
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    out = tmp_path / "grid.parquet"
    spec = cfg.MergeGridJob(grid_settings(zones), num_layers=None).to_json()
    status = cli.main(["merge-grid", "--spec", spec, "--out", str(out),
                       *[str(tmp_path / f"{n}.parquet") for n in order or frames]])
    err = capsys.readouterr().err if capsys else ""
    return status, err, out


def test_merge_grid_accepts_a_complete_grid(tmp_path, capsys):
    status, err, out = _merge(tmp_path, {f"layer{i}": grid_part(i) for i in range(3)}, capsys=capsys)
    assert status == 0, err
    # baseline + 3 layers x (2 zones x 2 operators + uniform for both (the default zone_operators) + 2
    # size-matched nulls), 2 questions each
    assert len(pd.read_parquet(out)) == (1 + 3 * (2 * 2 + 2 + 2)) * 2
    # uniform for some zones only (P2Q and P2P of three): the default zone_operators
    zones = ("q2q", "p2q", "p2p")
    status, err, out = _merge(tmp_path, {f"layer{i}": grid_part(i, zones=zones) for i in range(3)}, capsys=capsys,
                              zones=zones)
    assert status == 0, err
    assert len(pd.read_parquet(out)) == (1 + 3 * (3 * 2 + 2 + 3)) * 2


@pytest.mark.parametrize(
    "case, needle",
    [
        ("same part twice", "given twice"),
        ("two runs", "part of another run"),
        ("overlap", "parts overlap"),
        ("missing layer", "lack layer(s) 1 (no cell at all)"),
        ("missing cell", "lack 1 cell(s), e.g. paper layer renorm p2p in layer 2"),
        ("missing null", "lack 1 cell(s), e.g. paper layer renorm null_p2q draw 0 in layer 1"),
    ],
)
def test_merge_grid_refuses_parts_that_are_not_one_grid(tmp_path, capsys, case, needle):
    parts = {f"layer{i}": grid_part(i) for i in range(3)}
    order = None
    if case == "same part twice":
        order = ["layer0", "layer1", "layer2", "layer1"]
    elif case == "two runs":
        parts["layer2"] = grid_part(2, seed=2)
    elif case == "overlap":
        parts["extra"] = grid_part(1)
    elif case == "missing layer":
        order = ["layer0", "layer2"]
    elif case == "missing cell":
        part = parts["layer2"]
        parts["layer2"] = part[~((part["zone"] == "p2p") & (part["layer"] == 2) & (part["operator"] == "renorm"))]
    elif case == "missing null":
        part = parts["layer1"]
        parts["layer1"] = part[part["zone"] != "null_p2q"]
    status, err, out = _merge(tmp_path, parts, order, capsys=capsys)
    assert status == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_merge_grid_checks_the_configured_layer_count(tmp_path, capsys):
    import yaml

    from mrcbench.grid import command as grid

    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    model = next(iter(config["models"]))
    config["models"][model]["num_layers"] = 4
    parts = []
    for layer in range(3):
        frame = grid_part(layer, n_layers=3).assign(model=model)
        parts.append((tmp_path / f"layer{layer}.parquet", frame))
    settings = grid_settings()
    grid.check_grid_parts(parts, settings, 3)
    with pytest.raises(Exception, match=r"lack layer\(s\) 3 \(no cell at all\) of the configured 4-layer grid"):
        grid.check_grid_parts(parts, settings, 4)
    # The command reads the layer count (models.<model>.num_layers) and the configured grid from its spec.
    config["ablation"] = {**(config.get("ablation") or {}), "modes": ["layer"], "zones": ["p2q", "p2p"],
                          "variants": ["paper"], "operators": ["renorm", "zero"], "null_draws": 1}
    run = next(run for run in cfg.runs(cfg.validate(config)) if run.model == model)
    spec = cfg.job_spec(config, "merge_grid", {key: str(value) for key, value in run.keys.items()})
    assert spec.num_layers == 4 and spec.ablation.zones == ("p2q", "p2p")
    for path, frame in parts:
        frame.to_parquet(path, index=False)
    from mrcbench import cli

    argv = ["merge-grid", "--spec", spec.to_json(), "--out", str(tmp_path / "grid.parquet")]
    assert cli.main([*argv, *[str(p) for p, _ in parts]]) == 2
    assert "lack layer(s) 3 (no cell at all) of the configured 4-layer grid" in capsys.readouterr().err
    with pytest.raises(Exception, match=r"lack 9 cell\(s\), e.g. paper layer renorm null_q2q draw 0 in layer 0"):
        grid.check_grid_parts(parts, dataclasses.replace(settings, zones=("q2q", "p2q", "p2p")), 3)


def test_stats_refuses_the_same_grid_twice_under_another_spelling(tmp_path):
    from mrcbench.errors import MrcbenchError
    from mrcbench.stats.results import ResultFiles, load_results

    folder = tmp_path / "ablation" / "m" / "t" / "seed1" / "dev"
    folder.mkdir(parents=True)
    grid = folder / "grid.parquet"
    pd.concat([grid_part(i) for i in range(3)], ignore_index=True).to_parquet(grid, index=False)
    other = folder / ".." / "dev" / "grid.parquet"
    files = ResultFiles(grids=[grid, other], zone_stats=[], scores=[], metrics=[])
    with pytest.raises(MrcbenchError, match=r"given twice") as caught:
        load_results(tmp_path, files)
    assert "\n" not in str(caught.value) and str(other) in str(caught.value)
    # The very same path twice was let through before (the guard compared the paths).
    with pytest.raises(MrcbenchError, match=r"grid.parquet: given twice"):
        load_results(tmp_path, ResultFiles(grids=[grid, grid], zone_stats=[], scores=[], metrics=[]))


# --------------------------------------------------------------------------------------------------
# 6. Ctrl-C or SIGTERM during `mrcbench report`: one line, 130 / 143, no kernel left behind
# --------------------------------------------------------------------------------------------------

SLOW_QMD = """---
title: slow
params:
  results_dir: x
  stats_dir: y
---

# Slow

```{python}
import os, pathlib, time
pathlib.Path(os.environ["MRC_MARK"]).write_text(str(os.getpid()))
time.sleep(120)
```
"""


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("signum, status, line", [(2, 130, "error: interrupted"), (15, 143, "error: interrupted (SIGTERM)")])
def test_report_interrupted_is_one_line_and_leaves_no_kernel(tmp_path, signum, status, line):
    import os
    import subprocess
    import sys
    import time

    qmd = tmp_path / "slow.qmd"
    qmd.write_text(SLOW_QMD)
    stats = tmp_path / "results" / "stats"
    stats.mkdir(parents=True)
    for table in STATS_TABLES:  # `mrcbench report` checks every table the report reads before rendering
        pd.DataFrame({"x": []}).to_parquet(stats / f"{table}.parquet")
    (stats / "settings.json").write_text("{}")
    mark = tmp_path / "kernel.pid"
    env = {**os.environ, "MRC_MARK": str(mark), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mrcbench.cli", "report", "--qmd", str(qmd), "--results", str(tmp_path / "results"),
         "--out", str(tmp_path / "report.html"), "--engine", "fallback"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while not (mark.is_file() and mark.read_text()) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert mark.is_file(), proc.communicate(timeout=30)
        time.sleep(0.5)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    problems = [text for text in err.splitlines() if " INFO " not in text and "without encryption" not in text]
    assert problems == [line], err
    kernel = int(mark.read_text())
    deadline = time.monotonic() + 10
    while _alive(kernel) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(kernel)
    assert not (tmp_path / "report.html").exists()


def test_cli_exit_status_of_an_interrupt(monkeypatch, capsys):
    import signal
    import sys

    from mrcbench import cli
    from mrcbench.errors import Interrupted

    def stopped(argv):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setitem(cli.COMMANDS, "stopped", ("tests_failures_stop", "stopped", ""))
    monkeypatch.setitem(sys.modules, "tests_failures_stop", type("M", (), {"stopped": staticmethod(stopped)}))
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["stopped"]) == 143
    assert capsys.readouterr().err == "error: interrupted (SIGTERM)\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_prepare_model_from_a_folder_without_safetensors_says_why(tmp_path):
    import json

    from mrcbench.errors import MrcbenchError
    from mrcbench.models.sources import prepare_model

    source = tmp_path / "mine"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (source / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(MrcbenchError, match=r"model 'mine': .*no safetensors weights \(found pytorch_model.bin\).*can run code"):
        prepare_model("mine", {"source": "local", "path": str(source)}, tmp_path / "out")


# --------------------------------------------------------------------------------------------------
# A job whose Snakemake is killed (kill -9) stops without writing its results
# --------------------------------------------------------------------------------------------------

SLOW_COMMAND = """
import sys, time, types
from mrcbench import cli
from mrcbench.runtime import files

def slow(argv):
    with files.atomic_path(argv[0]) as tmp:
        tmp.write_text("partial")
        print("started", flush=True)
        time.sleep(120)
    return 0

sys.modules["slow_command"] = types.SimpleNamespace(slow=slow)
cli.COMMANDS["slow"] = ("slow_command", "slow", "")
sys.exit(cli.main(["slow", sys.argv[1]]))
"""


def test_a_job_stops_without_writing_when_its_snakemake_is_gone(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from mrcbench import supervisor

    workflow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # stands for Snakemake
    try:
        deadline = time.time() + 10
        while (token := supervisor.token(workflow.pid)) is None and time.time() < deadline:
            time.sleep(0.1)
        assert token is not None and supervisor.alive(token)
        out = tmp_path / "result.json"
        env = {**os.environ, supervisor.ENV: token}
        job = subprocess.Popen([sys.executable, "-c", SLOW_COMMAND, str(out)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert job.stdout.readline().strip() == "started"
        time.sleep(2 * supervisor.POLL_SECONDS)
        assert job.poll() is None  # Snakemake alive: the job runs on
        workflow.kill()
        workflow.wait()
        assert not supervisor.alive(token)
        _, err = job.communicate(timeout=30)
    finally:
        workflow.kill()
    assert job.returncode == 143
    assert err.strip().splitlines() == [
        f"error: Snakemake (pid {workflow.pid}) is gone: this job stops without writing its results",
        "error: interrupted (SIGTERM)",
    ]
    assert list(tmp_path.iterdir()) == []  # neither the result nor its temporary file


def test_a_token_of_another_host_or_a_reused_pid_is_not_watched():
    import os

    from mrcbench import supervisor

    mine = supervisor.token()
    host, pid, start = mine.rsplit(":", 2)
    assert supervisor.alive(mine)
    assert not supervisor.alive(f"elsewhere:{pid}:{start}")
    assert not supervisor.alive(f"{host}:{pid}:{int(start) + 1}")  # the same id, another process
    assert not supervisor.alive("garbage")
    assert supervisor.watch({supervisor.ENV: f"elsewhere:{pid}:{start}"}) is None
    assert supervisor.watch({}) is None and os.environ.get(supervisor.ENV) is None
