"""Shared pytest fixtures.

The local dataset mirror is found through ``MRCBENCH_DATA_DIR`` (never a hard-coded path); tests that
need it are skipped with a clear reason when it is not set.
"""
import os

# Tests never touch a hub. huggingface_hub, transformers and datasets read these once, at import, so
# they are set here, before any test module (or the package) imports an HF library.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import pytest

from mrcbench.runtime import kernels

from support.tiny_run import write_tiny_run

# The tests compute with the kernels the workflow's jobs compute with. Every `mrcbench` command pins
# them (mrcbench/cli.py calls kernels.apply() before the command's module loads torch) and importing
# mrcbench sets nothing, so the in-process tests apply the same setting here, before any test module
# imports torch (mrcbench.runtime.kernels imports none): the bit-level tests (fast == naive, eager
# bit-identity: tests/integration/test_ablation.py, test_precision.py) were measured with these
# kernels, and the subprocesses the tests start inherit them.
kernels.apply()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("MRCBENCH_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("MRCBENCH_DATA_DIR is not set to the local dataset mirror")
    return Path(value).resolve()


@pytest.fixture()
def tiny_run(tmp_path) -> Path:
    """A tiny finished run without its manifest, at ``tmp_path/a/results`` (tests/support/tiny_run.py)."""
    return write_tiny_run(tmp_path / "a" / "results")


@pytest.fixture(scope="session")
def smoke_run(data_dir, tmp_path_factory):
    """The whole DAG of config/smoke.yaml, run once locally in a scratch copy of the repository."""
    from support.workflow import LOCAL_PROFILE, SMOKE_CONFIG, copy_workflow, run_snakemake

    workdir = copy_workflow(tmp_path_factory.mktemp("smoke") / "local")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["MRCBENCH_DATA_DIR"] = str(data_dir)
    result = run_snakemake(["--workflow-profile", str(LOCAL_PROFILE), "--configfile", str(SMOKE_CONFIG), "--cores", "2"],
                           cwd=workdir, env=env, timeout=1800)
    return workdir, result


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """README's test command runs two pytest-xdist workers (``-n 2``, ``--dist loadgroup``): the
    end-to-end tests that read the one shared smoke run, and the tests of the one local SLURM cluster,
    go to the same worker, so that neither is set up twice."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & {"smoke_run", "slurm_cluster"} or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("smoke_run"))
