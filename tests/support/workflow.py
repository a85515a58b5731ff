"""Helpers for the tests that run the real Snakemake workflow in a scratch copy of the repository."""
from __future__ import annotations

import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

from support import REPO_ROOT

SMOKE_CONFIG = Path("config") / "smoke.yaml"
#: results_dir of config/smoke.yaml
SMOKE_RESULTS = Path("results") / "smoke"
LOCAL_PROFILE = REPO_ROOT / "profiles" / "local"
SLURM_PROFILE = REPO_ROOT / "profiles" / "slurm"


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


def snakemake_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def run_snakemake(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float,
                  cluster=None) -> subprocess.CompletedProcess[str]:
    """Run Snakemake in ``cwd``; on failure, fail the test with its output (and the daemon logs)."""
    command = snakemake_command(args)
    result = subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        daemon_logs = f"\n{cluster.log_tails()}" if cluster is not None else ""
        pytest.fail(f"snakemake failed ({result.returncode}): {' '.join(command)}\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-8000:]}{daemon_logs}")
    return result
