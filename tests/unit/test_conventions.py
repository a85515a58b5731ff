
"""Project conventions checked on the source: one run layout, no private names across modules."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from support import REPO_ROOT

ROOT = REPO_ROOT
PACKAGE = ROOT / "mrcbench"


def _sources(*folders: str, patterns: tuple[str, ...] = ("*.py",)) -> list[Path]:
    return sorted(path for folder in folders for pattern in patterns for path in (ROOT / folder).rglob(pattern))


def test_the_run_layout_is_spelled_in_layout_py_only():
    """Changing the run layout is a one-file change: no other source spells a run folder or a stage path."""
    layout = PACKAGE / "runtime" / "layout.py"
    spelled = re.compile(
        r"seed\{|seed\*|\{model\}/\{train\}"  # run-folder templates and globs
        r"|[\"'/](?:data|models|finetune|predict|attention|ablation|stats|benchmarks|logs)/[{*\w]"  # stage paths
    )
    offending = []
    sources = _sources("mrcbench", "benchmarks", patterns=("*.py",)) + _sources("rules", patterns=("*.smk",))
    for path in [*sources, ROOT / "Snakefile"]:
        if path == layout:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if spelled.search(code) and not _docstring_or_help(code):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offending, "paths spelled outside mrcbench/runtime/layout.py:\n" + "\n".join(offending)


def _docstring_or_help(code: str) -> bool:
    """Prose (docstrings, ``help=`` texts, usage lines) may quote a path; code may not build one."""
    stripped = code.strip()
    return "``" in stripped or "help=" in stripped or stripped.startswith(("python ", '"""'))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_private_name_is_imported_from_another_module():
    """A leading underscore means "this module's own": no other module imports it (or reaches for it
    through the module, ``module._name``)."""
    offending = []
    for path in _sources("mrcbench", "tests", "benchmarks"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        here = _module_name(path)
        modules = {}  # local name -> mrcbench module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mrcbench"):
                if node.module == here:
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offending.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}")
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("mrcbench"):
                        modules[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or "mrcbench"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in modules):
                offending.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not offending, "private names used outside their module:\n" + "\n".join(offending)
