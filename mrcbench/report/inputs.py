"""What the report reads: the statistics tables of :mod:`mrcbench.stats.tables` and the config they ran with.

:func:`load_report_data` is the report's first cell ("setup"); every section reads its tables from the
:class:`ReportData` it returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mrcbench import config as cfg
from mrcbench import layout
from mrcbench.errors import MrcbenchError
from mrcbench.stats.common import layer_grid, primary_variant, variant_order  # noqa: F401  (the report reads them as R.inputs.*)
from mrcbench.stats.tables import TABLES as STATS_TABLES

# ==================================================================================================
# Inputs of the report
# ==================================================================================================


@dataclass
class ReportData:
    """Everything the report reads: the statistics tables and a few raw result files.

    Each table of :data:`STATS_TABLES` is also an attribute (``data.deltas``); a table that was not
    written is an empty frame, so report cells test ``.empty`` instead of catching errors.
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


def load_report_data(results_dir: str | Path, stats_dir: str | Path | None = None) -> ReportData:
    results_dir = Path(results_dir)
    stats_dir = Path(stats_dir if stats_dir else layout.stats(results_dir))
    if not (stats_dir / "deltas.parquet").is_file():
        raise MrcbenchError(f"{stats_dir / 'deltas.parquet'} not found: run `mrcbench stats` first")
    tables = {}
    for name in STATS_TABLES:
        path = stats_dir / f"{name}.parquet"
        tables[name] = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    # The config `mrcbench stats` ran with (written beside its tables), else a results-level copy.
    config_path = stats_dir / layout.CONFIG_NAME
    if not config_path.is_file():
        config_path = Path(layout.config_file(results_dir))
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    settings_path = stats_dir / "settings.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    return ReportData(results_dir, stats_dir, tables, config or {}, settings)
