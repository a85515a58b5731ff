"""mrcbench's SLURM execution path, run against a real single-node SLURM cluster on this machine.

The cluster comes from ``tests/slurm_cluster.py`` (skipped when SLURM/munge are not installed or the
tests do not run as root; ``.ci/setup_slurm.sh`` installs them). Snakemake talks to it through
``snakemake-executor-plugin-slurm`` with the repository's own ``profiles/slurm``. The cluster has no
accounting database, so the tests add ``--slurm-status-command squeue`` (see docs/cluster.md) and a
1 s first status check instead of the production 40 s.

* ``test_toy_workflow_runs_through_slurm`` (always run, about 40 s): a fan-out/merge workflow; checks
  the outputs, that every job ran as a SLURM job with the CPUs/memory/time/partition its rule asked
  for, and that ``MRCBENCH_DATA_DIR`` reaches the jobs.
* ``test_smoke_workflow_on_slurm_matches_local_run`` (``slow``): the real workflow's smoke
  configuration, once locally and once through SLURM; every ``metrics.json`` and ``grid.parquet``
  must agree.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import pytest
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401 - slurm_cluster is a fixture

REPO_ROOT = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO_ROOT / "profiles" / "slurm"
LOCAL_PROFILE = REPO_ROOT / "profiles" / "local"
SMOKE_CONFIG = Path("config") / "smoke.yaml"

# Options added to profiles/slurm for the test cluster: it has no slurmdbd, so job states come from
# squeue; a 1 s first status check keeps the test short (the production default is 40 s).
TEST_CLUSTER_OPTIONS = (
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "1",
    "--slurm-keep-successful-logs",
)

TOY_SNAKEFILE = textwrap.dedent('''
    """Toy workflow: draw fans out over shards, square works per shard, merge joins them."""
    import json
    import os

    SHARDS = [1, 2, 3]

    localrules: all

    rule all:
        input: "merged.json"

    rule draw:
        output: "draw/{shard}.txt"
        threads: 1
        resources: mem_mb=200, runtime=5
        shell: 'echo "$(( {wildcards.shard} * 10 )) $SLURM_JOB_ID ${{MRCBENCH_DATA_DIR:-unset}}" > {output}'

    rule square:
        input: "draw/{shard}.txt"
        output: "square/{shard}.json"
        threads: 1
        resources: mem_mb=250, runtime=6
        run:
            value = int(open(input[0]).read().split()[0])
            with open(output[0], "w") as handle:
                json.dump({"value": value ** 2, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}, handle)

    rule merge:
        input: expand("square/{shard}.json", shard=SHARDS)
        output: "merged.json"
        threads: 2
        resources: mem_mb=300, runtime=7
        run:
            parts = [json.load(open(path)) for path in input]
            with open(output[0], "w") as handle:
                json.dump({"total": sum(part["value"] for part in parts),
                           "slurm_job_id": os.environ.get("SLURM_JOB_ID")}, handle)
''')


def run_snakemake(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float,
                  cluster: SlurmCluster | None = None) -> subprocess.CompletedProcess[str]:
    """Run Snakemake in ``cwd``; on failure, fail the test with its output (and the daemon logs)."""
    command = [sys.executable, "-m", "snakemake", *args]
    result = subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        daemon_logs = f"\n{cluster.log_tails()}" if cluster is not None else ""
        pytest.fail(f"snakemake failed ({result.returncode}): {' '.join(command)}\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-8000:]}{daemon_logs}")
    return result


def jobs_named(cluster: SlurmCluster, prefix: str) -> dict[str, str]:
    """``{job id: state}`` of the cluster's jobs whose name starts with ``prefix``."""
    return {job_id: state for job_id, (name, state) in cluster.job_states().items() if name.startswith(prefix)}


@pytest.mark.slurm
def test_toy_workflow_runs_through_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    workdir = tmp_path / "workflow"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(TOY_SNAKEFILE)
    data_mirror = tmp_path / "data-mirror"
    data_mirror.mkdir()
    requested_partition = slurm_cluster.partitions[1]  # not the default: proves the profile passes it on
    env = slurm_cluster.env()
    env.update(MRCBENCH_DATA_DIR=str(data_mirror), MRCBENCH_SLURM_PARTITION=requested_partition)

    run_snakemake(["--workflow-profile", str(SLURM_PROFILE), *TEST_CLUSTER_OPTIONS,
                   "--slurm-jobname-prefix", "mrcbench_toy"],
                  cwd=workdir, env=env, timeout=300, cluster=slurm_cluster)

    merged = json.loads((workdir / "merged.json").read_text())
    assert merged["total"] == 10**2 + 20**2 + 30**2
    draws = {shard: (workdir / "draw" / f"{shard}.txt").read_text().split() for shard in (1, 2, 3)}
    assert {shard: fields[2] for shard, fields in draws.items()} == dict.fromkeys(draws, str(data_mirror))
    job_of_output = {f"draw/{shard}": fields[1] for shard, fields in draws.items()}
    for shard in (1, 2, 3):
        job_of_output[f"square/{shard}"] = json.loads((workdir / "square" / f"{shard}.json").read_text())[
            "slurm_job_id"]
    job_of_output["merge"] = merged["slurm_job_id"]

    # Seven jobs, each in its own SLURM allocation, all completed, and nothing else submitted.
    states = jobs_named(slurm_cluster, "mrcbench_toy")
    assert sorted(job_of_output.values()) == sorted(states), (job_of_output, states)
    assert set(states.values()) == {"COMPLETED"}

    # The rule's threads/mem_mb/runtime and the profile's partition reached sbatch.
    expected = {"draw": ("1", "200M", "00:05:00"), "square": ("1", "250M", "00:06:00"),
                "merge": ("2", "300M", "00:07:00")}
    for output, job_id in job_of_output.items():
        details = slurm_cluster.job_details(job_id)
        rule = output.split("/")[0]
        assert (details["NumCPUs"], details["MinMemoryNode"], details["TimeLimit"]) == expected[rule], output
        assert details["Partition"] == requested_partition, output
    # profiles/slurm puts the sbatch logs under logs/slurm of the working directory.
    assert len(list((workdir / "logs" / "slurm").rglob("*.log"))) == len(job_of_output)


def copy_workflow(destination: Path) -> Path:
    """Copy the repository's workflow sources (no results, logs, caches or VCS data) to ``destination``."""
    ignored_at_root = {".git", ".snakemake", "results", "logs", "data", "build", ".pytest_cache", ".ruff_cache",
                       "reports/*.html", "reports/*_files", "reports/.quarto"}
    ignored_anywhere = {"__pycache__", "*.egg-info"}

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(REPO_ROOT)
        skipped = set()
        for name in names:
            path = (relative / name).as_posix()
            if any(fnmatch(path, pattern) for pattern in ignored_at_root) or any(
                    fnmatch(name, pattern) for pattern in ignored_anywhere):
                skipped.add(name)
        return skipped

    shutil.copytree(REPO_ROOT, destination, ignore=ignore, symlinks=True)
    return destination


def assert_json_close(expected: object, actual: object, where: str) -> None:
    """Equal structure and strings; floats equal up to float noise (rel 1e-5, abs 1e-6)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and expected.keys() == actual.keys(), where
        for key in expected:
            assert_json_close(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(expected) == len(actual), where
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            assert_json_close(left, right, f"{where}[{index}]")
    elif isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, (int, float)) and math.isclose(expected, actual, rel_tol=1e-5, abs_tol=1e-6), (
            f"{where}: local {expected} != slurm {actual}")
    else:
        assert expected == actual, f"{where}: local {expected!r} != slurm {actual!r}"


def result_files(workdir: Path, pattern: str) -> dict[str, Path]:
    return {path.relative_to(workdir).as_posix(): path for path in sorted(workdir.glob(pattern))}


@pytest.mark.slow
@pytest.mark.slurm
def test_smoke_workflow_on_slurm_matches_local_run(slurm_cluster: SlurmCluster, data_dir: Path,  # noqa: F811
                                                    tmp_path: Path) -> None:
    if not (REPO_ROOT / "Snakefile").is_file() or not (REPO_ROOT / SMOKE_CONFIG).is_file():
        pytest.skip("the workflow (Snakefile, config/smoke.yaml) is not in this checkout yet")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["MRCBENCH_DATA_DIR"] = str(data_dir)

    local_dir = copy_workflow(tmp_path / "local")
    run_snakemake(["--workflow-profile", str(LOCAL_PROFILE), "--configfile", str(SMOKE_CONFIG)],
                  cwd=local_dir, env=env, timeout=1800)

    slurm_dir = copy_workflow(tmp_path / "slurm")
    slurm_run = run_snakemake(["--workflow-profile", str(SLURM_PROFILE), "--configfile", str(SMOKE_CONFIG),
                               *TEST_CLUSTER_OPTIONS, "--slurm-jobname-prefix", "mrcbench_smoke"],
                              cwd=slurm_dir, env=slurm_cluster.env(env), timeout=1800, cluster=slurm_cluster)

    # Every non-local job went through SLURM, and all of them succeeded.
    submitted = slurm_run.stderr.count("has been submitted with SLURM jobid")
    states = jobs_named(slurm_cluster, "mrcbench_smoke")
    assert submitted > 0 and len(states) == submitted, (submitted, states)
    assert set(states.values()) == {"COMPLETED"}, states

    local_metrics = result_files(local_dir, "results/predict/**/metrics.json")
    slurm_metrics = result_files(slurm_dir, "results/predict/**/metrics.json")
    assert local_metrics, "the smoke run wrote no results/predict/**/metrics.json"
    assert local_metrics.keys() == slurm_metrics.keys()
    for name, local_path in local_metrics.items():
        assert_json_close(json.loads(local_path.read_text()), json.loads(slurm_metrics[name].read_text()), name)

    local_grids = result_files(local_dir, "results/ablation/**/grid.parquet")
    slurm_grids = result_files(slurm_dir, "results/ablation/**/grid.parquet")
    assert local_grids, "the smoke run wrote no results/ablation/**/grid.parquet"
    assert local_grids.keys() == slurm_grids.keys()
    scores = ["em", "f1", "removed_mass"]
    for name, local_path in local_grids.items():
        local_grid, slurm_grid = pd.read_parquet(local_path), pd.read_parquet(slurm_grids[name])
        assert list(local_grid.columns) == list(slurm_grid.columns), name
        keys = [column for column in local_grid.columns if column not in scores]
        pd.testing.assert_frame_equal(local_grid.sort_values(keys, ignore_index=True),
                                      slurm_grid.sort_values(keys, ignore_index=True),
                                      check_exact=False, rtol=1e-5, atol=1e-6, obj=name)
