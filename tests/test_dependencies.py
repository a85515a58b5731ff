"""The installed libraries are inside the ranges pyproject.toml pins (the ones the tests ran on)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name: Requirement(line) for line in project["dependencies"]}


def test_transformers_has_a_tested_major_range_and_the_installed_one_is_in_it():
    requirement = _requirements()["transformers"]
    assert any(spec.operator == "<" for spec in requirement.specifier), "transformers needs an upper bound"
    assert requirement.specifier.contains(metadata.version("transformers"), prereleases=True)
