"""A config from file to record: :func:`load` reads a YAML file, :func:`validate` is the one validation of a
process (the schema with its defaults filled in, the paths a config may name, then the cross-reference
checks), and :func:`write_resolved` records the config a run ran with."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mrcbench.config import schema
from mrcbench.config.checks import check_references
from mrcbench.config.sections import deep_merge, report_config
from mrcbench.errors import MrcbenchError
from mrcbench.runtime import files, layout

MAX_CONFIG_VALUES = 100_000
"""The most values (mapping entries and list items, counted as YAML aliases expand them) a config may
hold: a few hundred make a real one; nested aliases could otherwise expand to gigabytes."""


def _check_size(config: Any, source: str) -> None:
    """Refuse a config that expands (YAML aliases) to more than :data:`MAX_CONFIG_VALUES` values,
    before anything walks or prints it."""
    count, stack = 0, [config]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            count += len(node)
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            count += len(node)
            stack.extend(node)
        if count > MAX_CONFIG_VALUES:
            raise MrcbenchError(
                f"{source}: the config expands to more than {MAX_CONFIG_VALUES} values "
                "(nested YAML aliases?); write it out plainly"
            )


def validate(config: dict, source: str = "config") -> dict:
    """Fill the schema's defaults into ``config`` (in place) while validating it against the schema,
    then check the paths it names and the cross-references; return it. The one validation of a process
    (every command that reads a config file, and ``rules/common.smk`` for the DAG)."""
    _check_size(config, source)
    schema.check(config, source)
    try:
        layout.check_results_dir(config["results_dir"])
        report = report_config(config)
        layout.check_report_paths(report.qmd, report.html, config["results_dir"])
    except MrcbenchError as exc:
        raise MrcbenchError(f"{source}: {exc}") from None
    check_references(config, source)
    return config


def load(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read a YAML config file, validate it (filling the schema's defaults in) and return it."""
    path = Path(path)
    if not path.is_file():
        raise MrcbenchError(f"config file not found: {path}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise MrcbenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise MrcbenchError(f"{path}: the top level must be a mapping")
    if overrides:
        config = deep_merge(config, overrides)
    return validate(config, source=str(path))


def write_resolved(config: dict, path: str | os.PathLike) -> Path:
    """Write the record of the config a run ran with: the file(s) plus command-line overrides, its
    defaults filled in. The statistics, the report and the manifest read it; every other job reads its
    own spec (:mod:`mrcbench.config.jobs`), which Snakemake's ``params`` compare to decide re-runs.

    Called from the workflow's ``onstart`` handler, i.e. only when jobs really run (never by a dry
    run or a lint, which could otherwise change the config under running jobs; Snakemake's lock
    keeps two runs out of one results folder). Rewritten only when its content changes.
    """
    path = Path(path)
    text = yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False, allow_unicode=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        files.write_text(path, text)
    return path
