"""The package's layers and its acyclic modules (.importlinter, docs/architecture.md): checked on the
package, and shown to fail on a copy given one upward import or one cycle."""
import os
import shutil
import subprocess
import sys

import pytest

from support import REPO_ROOT


def _lint(root) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under ``root`` (its .importlinter, its mrcbench/)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", script, "--config", str(root / ".importlinter"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, check=False)


def test_the_package_keeps_its_import_contracts():
    result = _lint(REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.fixture
def package_copy(tmp_path):
    shutil.copytree(REPO_ROOT / "mrcbench", tmp_path / "mrcbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


@pytest.mark.parametrize(("module", "added", "broken"), [
    # an upward import: the zone vocabulary (bottom) reaching the statistics
    ("zones.py", "from mrcbench.stats import common as _common  # noqa", "mrcbench.zones is not allowed to import mrcbench.stats"),
    # an upward import inside a function counts as well: the config reaching the grid
    ("config/__init__.py", "def _late():\n    from mrcbench.grid import command  # noqa", "mrcbench.config is not allowed to import mrcbench.grid"),
    # a cycle inside one package: the shared statistics names importing an analysis that imports them
    ("stats/common.py", "from mrcbench.stats import controls as _controls  # noqa", "No cycles are allowed in mrcbench.stats"),
])
def test_an_upward_import_or_a_cycle_breaks_the_contract(package_copy, module, added, broken):
    path = package_copy / "mrcbench" / module
    path.write_text(path.read_text() + "\n" + added + "\n")
    result = _lint(package_copy)
    assert result.returncode != 0
    assert broken in result.stdout, result.stdout[-3000:]
