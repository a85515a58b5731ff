
"""The installed libraries are inside the ranges pyproject.toml pins (the ones the tests ran on)."""

from __future__ import annotations

import ast
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from support import REPO_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = REPO_ROOT


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name: Requirement(line) for line in project["dependencies"]}


def test_transformers_has_a_tested_major_range_and_the_installed_one_is_in_it():
    requirement = _requirements()["transformers"]
    assert any(spec.operator == "<" for spec in requirement.specifier), "transformers needs an upper bound"
    assert requirement.specifier.contains(metadata.version("transformers"), prereleases=True)


# transformers names that are not its stable public API: only mrcbench/models/hf_compat.py may reach them.
_INTERNALS = re.compile(
    r"transformers\.(masking_utils|integrations|models|modeling_utils)\b|\._attn_implementation\b|"
    r"import .*\b(AttentionInterface|AttentionMaskInterface|eager_attention_forward|sdpa_attention_forward)\b"
)


def _code_lines(path: Path):
    """(number, line) of the code of a module, docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) \
                and isinstance(node.value.value, str):
            doc_lines.update(range(node.lineno, node.end_lineno + 1))
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if number not in doc_lines:
            yield number, line.split("#", 1)[0]


def test_transformers_internals_are_reached_only_from_hf_compat():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "mrcbench").rglob("*.py"))
        if path.name != "hf_compat.py"
        for number, line in _code_lines(path)
        if _INTERNALS.search(line)
    ]
    assert offenders == []
    # and the check can fail: hf_compat itself reaches them
    assert any(_INTERNALS.search(line) for _, line in _code_lines(ROOT / "mrcbench" / "models" / "hf_compat.py"))


def test_hf_compat_entry_points_exist_in_the_installed_transformers():
    from mrcbench.models import hf_compat

    band = hf_compat.sliding_window_band(2, 5)
    assert band.shape == (5, 5) and bool(band[0, 1]) and not bool(band[0, 4])
    import torch
    q = k = v = torch.randn(1, 2, 3, 4)
    out, weights = hf_compat.sdpa_attention(torch.nn.Module(), q, k, v, None, dropout=0.0, scaling=None)
    assert weights is None and out.shape == (1, 3, 2, 4)
    assert hf_compat.register_attention_function("mrcbench_test", lambda *a, **k: None) == "mrcbench_test"
