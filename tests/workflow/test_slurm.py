"""mrcbench's SLURM execution path, run against a real single-node SLURM cluster on this machine.

The cluster comes from ``tests/support/slurm_cluster.py`` (skipped when SLURM/munge are not installed or the
tests do not run as root; ``.ci/setup_slurm.sh`` installs them). Snakemake talks to it through
``snakemake-executor-plugin-slurm`` with the repository's own ``profiles/slurm``. The cluster has no
accounting database, so the tests add ``--slurm-status-command squeue`` (see docs/cluster.md) and a
1 s first status check instead of the production 40 s.

* ``test_toy_workflow_runs_through_slurm`` (always run, about 40 s): a fan-out/merge workflow; checks
  the outputs, that every job ran as a SLURM job with the CPUs/memory/time/partition its rule asked
  for, and that ``MRCBENCH_DATA_DIR`` reaches the jobs.
* ``test_smoke_workflow_on_slurm_matches_local_run`` (``slow``): the real workflow's smoke
  configuration through SLURM, up to one eval split's predictions and grid (data, model, fine-tuning,
  prediction, ablation: every kind of job the cluster runs, about half the smoke run); the
  checkpoint, the metrics and the grid are byte-identical to the shared local smoke run's (the
  stages after them are the local run's business: tests/workflow/test_workflow.py, tests/workflow/test_resume.py).
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from mrcbench.runtime import layout

from support.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401 - slurm_cluster is a fixture
from support.workflow import SLURM_PROFILE, SMOKE_CONFIG, SMOKE_RESULTS, copy_workflow, run_snakemake

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


@pytest.mark.slow
@pytest.mark.slurm
def test_smoke_workflow_on_slurm_matches_local_run(slurm_cluster: SlurmCluster, data_dir: Path,  # noqa: F811
                                                    smoke_run, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["MRCBENCH_DATA_DIR"] = str(data_dir)

    local_dir, _ = smoke_run
    slurm_dir = copy_workflow(tmp_path / "slurm")
    run = {"model": "minilm", "train": "squad_train", "seed": 7}
    targets = [
        layout.predict(SMOKE_RESULTS, "metrics.json", **run, eval="squad_heldout"),
        layout.ablation(SMOKE_RESULTS, "grid.parquet", **run, eval="squad_heldout"),
    ]
    slurm_run = run_snakemake(["--workflow-profile", str(SLURM_PROFILE), "--configfile", str(SMOKE_CONFIG),
                               *TEST_CLUSTER_OPTIONS, "--slurm-jobname-prefix", "mrcbench_smoke", *targets],
                              cwd=slurm_dir, env=slurm_cluster.env(env), timeout=1800, cluster=slurm_cluster)

    # Every non-local job went through SLURM, and all of them succeeded.
    submitted = slurm_run.stderr.count("has been submitted with SLURM jobid")
    states = jobs_named(slurm_cluster, "mrcbench_smoke")
    assert submitted > 0 and len(states) == submitted, (submitted, states)
    assert set(states.values()) == {"COMPLETED"}, states

    checkpoint = Path(layout.checkpoint_dir(layout.finetune_dir(SMOKE_RESULTS, **run))) / "model.safetensors"
    for path in [checkpoint, *map(Path, targets)]:
        assert (slurm_dir / path).read_bytes() == (local_dir / path).read_bytes(), f"{path} differs from the local run's"
