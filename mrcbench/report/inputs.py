"""What the report reads: the statistics tables of :mod:`mrcbench.stats.command` and the config they ran with.

:func:`load_report_data` is the report's first cell ("setup"); every section reads its tables from the
:class:`ReportData` it returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow
import pyarrow.parquet as pq
import yaml

from mrcbench import config as cfg
from mrcbench.errors import MrcbenchError
from mrcbench.runtime import files, layout
from mrcbench.stats.common import layer_grid, primary_variant, variant_order  # noqa: F401  (the report reads them as R.inputs.*)
from mrcbench.tables import STATS_TABLES

# ==================================================================================================
# Inputs of the report
# ==================================================================================================


@dataclass
class ReportData:
    """Everything the report reads: the statistics tables and a few raw result files.

    Each table of :data:`mrcbench.tables.STATS_TABLES` is also an attribute (``data.deltas``); every one is required
    (:func:`check_tables`); a table ``mrcbench stats`` wrote without rows is an empty frame, so report
    cells test ``.empty`` instead of catching errors.
    """

    results_dir: Path
    stats_dir: Path
    tables: dict[str, pd.DataFrame]
    config: dict[str, Any]
    settings: dict[str, Any]

    @property
    def stats(self) -> cfg.Stats:
        """The typed ``stats`` section of the run's config (the schema's defaults where it has none)."""
        return cfg.stats_config(self.config)

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)


SETTINGS = "settings.json"
"""The statistics' settings, written by ``mrcbench stats`` beside its tables (the report's captions)."""


def check_tables(stats_dir: str | Path) -> None:
    """Refuse, in one line, a statistics folder that lacks a table the report reads (every table of
    :data:`mrcbench.tables.STATS_TABLES`, and ``settings.json``) or holds an unreadable one (a 0-byte parquet file),
    naming the file and the command that writes it; reads only each parquet file's footer."""

    stats_dir = Path(stats_dir)
    for name in (*(f"{table}.parquet" for table in STATS_TABLES), SETTINGS):
        path = stats_dir / name
        if not path.is_file():
            raise MrcbenchError(f"{path}: missing; `mrcbench stats` writes it: run it (or the workflow) again")
        try:
            if path.suffix == ".parquet":
                pq.read_metadata(path)
            else:
                json.loads(path.read_text(encoding="utf-8"))
        except (pyarrow.ArrowException, OSError, ValueError) as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MrcbenchError(
                f"{path}: unreadable ({detail}); `mrcbench stats` writes it: delete it and run it again"
            ) from None


def load_report_data(results_dir: str | Path, stats_dir: str | Path | None = None) -> ReportData:
    results_dir = Path(results_dir)
    stats_dir = Path(stats_dir if stats_dir else layout.stats(results_dir))
    check_tables(stats_dir)
    tables = {name: files.read_parquet(stats_dir / f"{name}.parquet") for name in STATS_TABLES}
    # The config `mrcbench stats` ran with (written beside its tables), else a results-level copy.
    config_path = stats_dir / layout.CONFIG_NAME
    if not config_path.is_file():
        config_path = Path(layout.config_file(results_dir))
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    settings = files.read_json(stats_dir / SETTINGS)
    return ReportData(results_dir, stats_dir, tables, config or {}, settings)
