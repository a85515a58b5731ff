"""Helpers for the tests that run the real Snakemake workflow in a scratch copy of the repository."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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
            f"{where}: {expected} != {actual}")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


def result_files(workdir: Path, pattern: str) -> dict[str, Path]:
    return {path.relative_to(workdir).as_posix(): path for path in sorted(workdir.glob(pattern))}


def assert_same_results(reference: Path, other: Path) -> None:
    """Every metrics.json and grid.parquet of two smoke runs agree."""
    import pandas as pd

    metrics = result_files(reference, f"{SMOKE_RESULTS}/predict/**/metrics.json")
    assert metrics, "the smoke run wrote no predict/**/metrics.json"
    assert metrics.keys() == result_files(other, f"{SMOKE_RESULTS}/predict/**/metrics.json").keys()
    for name, path in metrics.items():
        assert_json_close(json.loads(path.read_text()), json.loads((other / name).read_text()), name)
    grids = result_files(reference, f"{SMOKE_RESULTS}/ablation/**/grid.parquet")
    assert grids, "the smoke run wrote no ablation/**/grid.parquet"
    assert grids.keys() == result_files(other, f"{SMOKE_RESULTS}/ablation/**/grid.parquet").keys()
    scores = ["em", "f1", "removed_mass"]
    for name, path in grids.items():
        left, right = pd.read_parquet(path), pd.read_parquet(other / name)
        assert list(left.columns) == list(right.columns), name
        keys = [column for column in left.columns if column not in scores]
        pd.testing.assert_frame_equal(left.sort_values(keys, ignore_index=True),
                                      right.sort_values(keys, ignore_index=True),
                                      check_exact=False, rtol=1e-5, atol=1e-6, check_categorical=False, obj=name)
