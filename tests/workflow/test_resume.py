"""Resumability and determinism: a run killed in the middle of fine-tuning, and again in the middle of
a grid, restarts without recomputing anything that had finished, and ends with the same bytes as an
uninterrupted run of the same config in another folder (every stage, checkpoints included)."""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mrcbench.cli import main as cli
from mrcbench.provenance import manifest

from support.workflow import (
    LOCAL_PROFILE,
    SMOKE_CONFIG,
    SMOKE_RESULTS,
    copy_workflow,
    run_snakemake,
    snakemake_command,
)

pytestmark = pytest.mark.slow


ARGS = ["--workflow-profile", str(LOCAL_PROFILE), "--configfile", str(SMOKE_CONFIG)]


def _unlock(workdir: Path, env: dict) -> None:
    """A SIGKILLed Snakemake leaves its lock behind; `--unlock` is what a user runs (README)."""
    subprocess.run(snakemake_command([*ARGS, "--unlock"]), cwd=workdir, env=env, check=True, capture_output=True)


def _start(workdir: Path, env: dict) -> subprocess.Popen:
    log = (workdir / "run.log").open("a")
    return subprocess.Popen(snakemake_command([*ARGS, "--cores", "2"]), cwd=workdir, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc: subprocess.Popen, workdir: Path, condition, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be interrupted:\n" + (workdir / "run.log").read_text()[-4000:])
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for the point of interruption")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the hardest case: no chance to clean up
    proc.wait()


def _mtimes(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_kill_during_finetune_and_grid_then_resume_to_the_same_bytes(smoke_run, data_dir, tmp_path, capsys):
    reference, _ = smoke_run
    workdir = copy_workflow(tmp_path / "resume")
    results = workdir / SMOKE_RESULTS
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["MRCBENCH_DATA_DIR"] = str(data_dir)
    run_dir = results / "finetune" / "minilm" / "squad_train"

    # 1. Kill in the middle of fine-tuning (its temporary folder exists, the checkpoint does not).
    proc = _start(workdir, env)
    _kill_when(proc, workdir, lambda: (run_dir / "seed7.tmp").is_dir())
    assert not (run_dir / "seed7" / "checkpoint").exists()
    before = _mtimes(results / "data") | _mtimes(results / "models")
    assert before, "data and model preparation had finished before fine-tuning started"

    # 2. Restart; kill while the second grid is being computed, after the first one has finished.
    #    Snakemake's own log says which jobs it has registered as finished (a file on disk is not
    #    enough: a job killed between writing its output and registering it is rerun, rightly).
    log = workdir / "run.log"
    offset = log.stat().st_size

    def second_grid_running() -> bool:
        text = log.read_text()[offset:]
        started = len(re.findall(r"^(?:local)?rule ablate:", text, re.MULTILINE))
        return started == 2 and text.count("(Rule: ablate)") == 1

    _unlock(workdir, env)
    proc = _start(workdir, env)
    _kill_when(proc, workdir, second_grid_running)
    finished = _mtimes(results / "data") | _mtimes(results / "models")
    assert finished == before, "data or model preparation was recomputed after the first kill"
    # One grid is finished: its part, or (where a core was free for its merge_grid) the merged grid.
    written = [*results.glob("ablation/**/parts/all.parquet"), *results.glob("ablation/**/grid.parquet")]
    finished_grids = {path.parent.parent if path.parent.name == "parts" else path.parent for path in written}
    assert len(finished_grids) == 1, written
    checkpoint = run_dir / "seed7" / "checkpoint" / "model.safetensors"
    kept = {checkpoint: checkpoint.stat().st_mtime_ns}

    # 3. Restart to the end: nothing finished is recomputed, and the results equal an uninterrupted run's.
    _unlock(workdir, env)
    resumed = run_snakemake([*ARGS, "--cores", "2"],
                            cwd=workdir, env=env, timeout=1800)
    # Only the interrupted grid is computed again; the finished part is merged, then deleted (temp()).
    log_text = resumed.stdout + resumed.stderr
    assert len(re.findall(r"^(?:local)?rule ablate:", log_text, re.MULTILINE)) == 1, log_text[-3000:]
    assert not list(results.glob("ablation/**/parts/*.parquet"))
    for path, mtime in kept.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    assert (_mtimes(results / "data") | _mtimes(results / "models")) == before
    # 4. Same config, same seed, another folder, two interruptions: the same bytes as the shared smoke run.
    paths = {row["path"] for row in manifest.result_files(results)}
    assert any(path.startswith("finetune/") and path.endswith("model.safetensors") for path in paths)
    assert any(path.startswith("ablation/") and path.endswith("grid.parquet") for path in paths)
    assert cli(["compare", str(reference / SMOKE_RESULTS), str(results)]) == 0
    assert capsys.readouterr().out == "identical\n"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_9_leaves_no_job_writing_and_the_plain_command_restarts(data_dir, tmp_path):
    """README: after `kill -9` of Snakemake, `snakemake --unlock` then the same command (no profile, no
    --rerun-incomplete) restarts; the fine-tuning job it left behind stops without writing its checkpoint."""
    workdir = copy_workflow(tmp_path / "orphan")
    results = workdir / SMOKE_RESULTS
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["MRCBENCH_DATA_DIR"] = str(data_dir)
    run_dir = results / "finetune" / "minilm" / "squad_train"
    plain = ["--configfile", str(SMOKE_CONFIG), "--cores", "2"]
    log = (workdir / "run.log").open("a")
    proc = subprocess.Popen(snakemake_command(plain), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while not (run_dir / "seed7.tmp").is_dir():
            assert proc.poll() is None and time.time() < deadline, (workdir / "run.log").read_text()[-3000:]
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)  # Snakemake only: its jobs are left running
        proc.wait()
        deadline = time.time() + 60
        while _group_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.5)
        assert not _group_alive(proc.pid), "the fine-tuning job went on after Snakemake was killed"
        assert not (run_dir / "seed7").exists()
        job_log = (workdir / "logs" / "smoke" / "finetune" / "minilm" / "squad_train" / "seed7.log").read_text()
        assert f"error: Snakemake (pid {proc.pid}) is gone" in job_log
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    subprocess.run(snakemake_command([*plain, "--unlock"]), cwd=workdir, env=env, check=True, capture_output=True)
    # Nothing the job computed was renamed in, so the same command (no profile) plans it again.
    dry = subprocess.run(snakemake_command([*plain, "-n"]), check=False, cwd=workdir, env=env, capture_output=True,
                         text=True)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    assert re.search(r"^rule finetune:", dry.stdout + dry.stderr, re.MULTILINE)
