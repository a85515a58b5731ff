"""The result tables, each declared once with its columns and dtypes, and the run-key vocabulary.

A :class:`Table` is one kind of result file: the masking grid (``grid.parquet``), the per-question
scores (``scores.parquet``), the zone statistics (``zone_stats.parquet``) and every statistics table
(:data:`STATS_TABLES`, ``results/stats/NAME.parquet`` and ``.csv``), its columns in file order. The
writers check each frame before writing it and :mod:`mrcbench.stats.results` checks every file it reads
(:meth:`Table.check`): a frame whose columns or dtypes differ from the declaration is refused in one
line naming the file and the column. docs/output.md lists the same columns (:func:`markdown`, compared
by tests/unit/test_docs.py). ``metrics.json`` is no table: its keys are the official scorer's
(docs/scoring.md).

Run keys. A *run* is one model fine-tuned on one train split and evaluated on one eval split
(:data:`RUN_KEYS`, the key of every statistics row: seeds pooled); each fine-tuning seed of it is one
job's output (:data:`RUN_SEED_KEYS`, the key columns of every row a job writes). The run layout's
paths, the workflow's wildcards and the commands' options name the same keys ``model``, ``train``,
``seed`` and ``eval`` (:data:`PATH_KEYS`; :func:`run_columns` maps them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mrcbench.errors import MrcbenchError

# --------------------------------------------------------------------------------------------------
# Run keys
# --------------------------------------------------------------------------------------------------

RUN_KEYS: tuple[str, ...] = ("model", "train_set", "eval_set")
"""The columns naming a run (its fine-tuning seeds pooled): the key of every statistics row."""
RUN_SEED_KEYS: tuple[str, ...] = (*RUN_KEYS, "seed")
"""The key columns of every row a job writes (scores, zone statistics, grid): the run and its seed."""
PATH_KEYS: dict[str, str] = {"model": "model", "train_set": "train", "seed": "seed", "eval_set": "eval"}
"""Each key column's name in the run layout's paths (:mod:`mrcbench.runtime.layout`), the workflow's
wildcards and the commands' options (``--model --train --seed --eval``)."""
CELL_KEYS: tuple[str, ...] = ("mode", "layer", "head", "zone")
"""The columns naming a cell of one variant's zone grid in the statistics tables (the paper's operator,
no null)."""
GRID_CELL_KEYS: tuple[str, ...] = ("variant", "mode", "operator", "layer", "head", "zone", "null_draw")
"""The grid columns naming a cell of the whole grid: the variant and the columns of
:meth:`mrcbench.grid.cells.Cell.columns`."""


def run_columns(path_keys: Mapping[str, Any]) -> dict[str, Any]:
    """A job's key columns (:data:`RUN_SEED_KEYS`, in order) from its path keys (:data:`PATH_KEYS`:
    wildcards, :func:`mrcbench.runtime.layout.parse`, the parsed command-line options)."""
    return {column: path_keys[PATH_KEYS[column]] for column in RUN_SEED_KEYS}


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

STR, CATEGORY = "str", "category"
INT, INT16, NULLABLE_INT = "int64", "int16", "Int64"
FLOAT = "float64"
BOOL, NULLABLE_BOOL = "bool", "boolean"
DTYPES: dict[str, str] = {
    STR: "text (pandas str or object; also categorical text, as concatenated zone statistics are)",
    CATEGORY: "categorical text (dictionary-encoded in the parquet file)",
    INT: "64-bit integer",
    INT16: "16-bit integer",
    NULLABLE_INT: "64-bit integer with missing values (pandas Int64)",
    FLOAT: "64-bit float (NaN: missing)",
    BOOL: "boolean",
    NULLABLE_BOOL: "boolean with missing values (pandas boolean)",
}
"""The dtypes a column may be declared with (pandas' names)."""


def _dtype_of(column: pd.Series) -> str:
    """The declared dtype a column matches: categorical text is ``category``, other categoricals are
    their categories' dtype (the parquet file stores those plain), text ``str``."""
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories
        return CATEGORY if pd.api.types.is_string_dtype(categories) else str(categories.dtype)
    if pd.api.types.is_string_dtype(column):
        return STR
    return str(dtype)


def _matches(declared: str, found: str) -> bool:
    return found == declared or (declared == STR and found == CATEGORY)


@dataclass(frozen=True)
class Table:
    """One kind of result file: its name, what one row is, its columns (name -> dtype, in file order)."""

    name: str
    file: str
    row: str
    columns: Mapping[str, str]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns.values()) - set(DTYPES))
        if unknown:
            raise ValueError(f"table {self.name}: unknown dtype(s) {', '.join(unknown)}")

    @property
    def names(self) -> list[str]:
        """The column names in file order (a new list: pandas takes lists as column selections)."""
        return list(self.columns)

    def empty(self) -> pd.DataFrame:
        """The table without rows (its columns, pandas' default dtypes)."""
        return pd.DataFrame(columns=self.names)

    def check(self, frame: pd.DataFrame, where: object) -> None:
        """Refuse ``frame`` (to be written to or read from ``where``) in one line unless it has exactly the
        declared columns, in order, each of its dtype. The dtypes of a table without rows, and of a
        column without a value, are pandas' choice and not checked."""
        expected, found = self.names, [str(column) for column in frame.columns]
        if found != expected:
            missing = [column for column in expected if column not in found]
            extra = [column for column in found if column not in expected]
            repeated = [column for column in found if found.count(column) > 1]
            if missing:
                problem = f"no column {missing[0]!r}"
            elif extra:
                problem = f"unexpected column {extra[0]!r}"
            elif repeated:
                problem = f"column {repeated[0]!r} twice"
            else:
                position = next(i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b)
                problem = f"column {found[position]!r} at position {position + 1}, expected {expected[position]!r}"
            raise MrcbenchError(f"{where}: {problem} (the {self.file} table of mrcbench/tables.py)")
        if frame.empty:
            return
        for name, declared in self.columns.items():
            column = frame[name]
            dtype = _dtype_of(column)
            if not _matches(declared, dtype) and column.notna().any():
                raise MrcbenchError(
                    f"{where}: column {name!r} is {dtype}, expected {declared} (the {self.file} table of "
                    "mrcbench/tables.py)"
                )


def _run(with_seed: bool = False, dtype: str = STR) -> dict[str, str]:
    """The run-key columns, of ``dtype`` (the seed an integer)."""
    return {key: (INT if key == "seed" else dtype) for key in (RUN_SEED_KEYS if with_seed else RUN_KEYS)}


_CELL = dict(zip(CELL_KEYS, (STR, INT, INT, STR), strict=True))
_EFFECTS = {"start_logprob_delta": FLOAT, "end_logprob_delta": FLOAT, "start_kl": FLOAT, "end_kl": FLOAT}

EFFECT_COLUMNS: tuple[str, ...] = tuple(_EFFECTS)
"""The continuous effect measure of a cell, per question, on the window the unmasked answer came from:
the change (masked minus unmasked) of the log-probability of the unmasked prediction's start and end
tokens, and KL(P_unmasked || P_masked) of the start and end distributions (softmax over the window's
tokens), in nats. NaN for a question without a valid unmasked span."""

SINK_ZONES: tuple[str, ...] = ("q2s", "p2s")
"""Zones of the special-token sinks: question rows (q2s) and passage rows (p2s) on [CLS]/[SEP] columns."""

GRID = Table("grid", "grid.parquet", "cell and question", {
    **_run(with_seed=True), "variant": STR, "mode": STR, "operator": STR, "layer": INT, "head": INT, "zone": STR,
    "qid": STR, "article": STR, "em": FLOAT, "f1": FLOAT, "removed_mass": FLOAT, **_EFFECTS, "null_draw": INT,
    "mass_match": FLOAT, "null_feasible": NULLABLE_BOOL, "null_seed": INT, "precision": STR,
})
GRID_COLUMNS: tuple[str, ...] = tuple(name for name in GRID.columns if name != "precision")
"""The grid's columns as :func:`mrcbench.grid.table.ablate` computes them: all but the last,
``precision`` (of the forward passes), which ``mrcbench ablate`` adds."""

SCORES = Table("scores", "scores.parquet", "question", {
    **_run(with_seed=True), "qid": STR, "article": STR, "question": STR, "has_answer": BOOL, "predicted": BOOL,
    "em": FLOAT, "f1": FLOAT,
})
ZONE_STATS = Table("zone_stats", "zone_stats.parquet", "question, layer, head, row zone, column zone", {
    **_run(with_seed=True, dtype=CATEGORY), "qid": CATEGORY, "article": CATEGORY, "layer": INT16, "head": INT16,
    "row_zone": CATEGORY, "col_zone": CATEGORY, "mass": FLOAT, "precision": STR,
})
RESULT_TABLES: dict[str, Table] = {table.name: table for table in (GRID, SCORES, ZONE_STATS)}
"""The tables a run's jobs write (``mrcbench predict``, ``extract-attention``, ``ablate``)."""

# -- the statistics tables ---------------------------------------------------------------------------

_SEED_SPREAD = {"seed_delta_sd": FLOAT, "seed_delta_min": FLOAT, "seed_delta_max": FLOAT}
_P_CORRECTED = {"p_holm": FLOAT, "p_bh": FLOAT, "significant_holm": BOOL, "significant_bh": BOOL}
_RESAMPLING = {"n_clusters": INT, "resampling": STR}
_CONTROL_EFFECT = {
    "zone_delta": FLOAT, "zone_ci_low": FLOAT, "zone_ci_high": FLOAT, "zone_p_holm": FLOAT, "n_questions": INT,
    "null_valid": BOOL, "feasible_fraction": FLOAT, "null_n_questions": INT, "zone_delta_matched": FLOAT,
    "null_delta": FLOAT, "null_difference": FLOAT, "null_ci_low": FLOAT, "null_ci_high": FLOAT,
    "null_p_holm": FLOAT, "uniform": BOOL, "uniform_delta": FLOAT, "uniform_ci_low": FLOAT,
    "uniform_ci_high": FLOAT, "uniform_p_holm": FLOAT, "uniform_minus_removal": FLOAT,
    "uniform_minus_ci_low": FLOAT, "uniform_minus_ci_high": FLOAT, "uniform_minus_p_holm": FLOAT,
    "control": STR, "verdict": STR,
}
_PARALLEL_PAIR = {
    "model": STR, "train_set": STR, "variant": STR, "metric": STR, "eval_a": STR, "eval_b": STR,
    "language_a": STR, "language_b": STR,
}

BASELINES = Table("baselines", "baselines.parquet", "run, metric", {
    **_run(), "language": STR, "metric": STR, "n_seeds": INT, "n_questions": INT, **_RESAMPLING, "value": FLOAT,
    "ci_low": FLOAT, "ci_high": FLOAT, "seed_sd": FLOAT, "seed_min": FLOAT, "seed_max": FLOAT, "official": FLOAT,
    "grid_baseline": FLOAT, "scores_on_grid_questions": FLOAT, "grid_mismatch": BOOL, "source": STR,
})
DELTAS = Table("deltas", "deltas.parquet", "run, variant, grid cell, metric", {
    **_run(), "variant": STR, **_CELL, "metric": STR, "n_questions": INT, **_RESAMPLING, "test": STR,
    "n_seeds": INT, "baseline": FLOAT, "masked": FLOAT, "delta": FLOAT, "ci_low": FLOAT, "ci_high": FLOAT,
    "p_value": FLOAT, "p_wilcoxon": FLOAT, **_P_CORRECTED, **_SEED_SPREAD, "removed_mass": FLOAT,
})
SEED_SPREAD = Table("seed_spread", "seed_spread.parquet", "quantity, run, variant, cell, metric, seed", {
    "quantity": STR, **_run(), "variant": STR, **_CELL, "metric": STR, "seed": INT, "n_questions": INT,
    "value": FLOAT,
})
ZONE_MASS = Table("zone_mass", "zone_mass.parquet", "run, layer, head, row zone, column zone", {
    **_run(), "layer": INT, "head": INT, "zone": STR, "row_zone": STR, "col_zone": STR, "mass": FLOAT,
    "mass_seed_sd": FLOAT, "n_seeds": INT, "n_questions": INT,
})
ATTENTION_SINKS = Table("attention_sinks", "attention_sinks.parquet", "run",
                        {**_run(), **{zone: FLOAT for zone in SINK_ZONES}})
CORRELATIONS = Table("correlations", "correlations.parquet", "analysis, run, variant, zone, layer, metric, x", {
    "analysis": STR, **_run(), "variant": STR, "zone": STR, "layer": NULLABLE_INT, "metric": STR,
    "x_quantity": STR, "y_quantity": STR, "n": NULLABLE_INT, "pearson_r": FLOAT, "pearson_ci_low": FLOAT,
    "pearson_ci_high": FLOAT, "pearson_p": FLOAT, "spearman_rho": FLOAT, "spearman_ci_low": FLOAT,
    "spearman_ci_high": FLOAT, "spearman_p": FLOAT, "ols_coef": FLOAT, "ols_se_cluster": FLOAT,
    "ols_p_cluster": FLOAT, "ols_se_naive": FLOAT, "ols_cov_type": STR, "n_clusters": NULLABLE_INT,
    "pearson_p_holm": FLOAT, "pearson_p_bh": FLOAT, "spearman_p_holm": FLOAT, "spearman_p_bh": FLOAT,
    "ols_p_holm": FLOAT, "ols_p_bh": FLOAT, "significant_holm": BOOL, "significant_bh": BOOL,
})
CROSSLINGUAL_RANK = Table("crosslingual_rank", "crosslingual_rank.parquet", "parallel eval pair, variant, metric", {
    **_PARALLEL_PAIR, "n_shared_questions": INT, "qid_overlap": FLOAT, "n_cells": INT, "kendall_tau": FLOAT,
    "p_permutation": FLOAT, "tau_ci_low": FLOAT, "tau_ci_high": FLOAT, "resampling": STR, "n_clusters": INT,
})
CROSSLINGUAL_QUESTION = Table(
    "crosslingual_question", "crosslingual_question.parquet", "parallel eval pair, variant, metric, cell", {
        **_PARALLEL_PAIR, **_CELL, "n_questions": INT, "delta_a": FLOAT, "delta_b": FLOAT, "pearson_r": FLOAT,
        "spearman_rho": FLOAT, "hurt_rate_a": FLOAT, "hurt_rate_b": FLOAT, "hurt_agreement": FLOAT,
        "cohen_kappa": FLOAT,
    })
CROSSLINGUAL_QUESTION_SUMMARY = Table(
    "crosslingual_question_summary", "crosslingual_question_summary.parquet",
    "model, variant, metric, parallel eval pair, zone", {
        "model": STR, "variant": STR, "metric": STR, "eval_a": STR, "eval_b": STR, "zone": STR,
        "pearson_r": FLOAT, "hurt_agreement": FLOAT, "cohen_kappa": FLOAT,
    })
QUESTION_TYPES = Table("question_types", "question_types.parquet", "run, variant, metric, bucket, cell", {
    **_run(), "language": STR, "variant": STR, "metric": STR, "bucket": STR, "n_questions": INT, "reported": BOOL,
    **_CELL, "baseline": FLOAT, "delta": FLOAT, "ci_low": FLOAT, "ci_high": FLOAT, **_RESAMPLING,
})
PAPER_COMPARISON = Table("paper_comparison", "paper_comparison.parquet", "run, variant, metric", {
    **_run(), "variant": STR, "metric": STR, "run_layers": INT, "paper_layers": INT, "zones_compared": STR,
    "n_cells": INT, "spearman_rho": FLOAT, "spearman_p": FLOAT, "pearson_r": FLOAT, "top2_run": STR,
    "top2_paper": STR, "top2_agree": BOOL, "layer_mapping": STR, "model_difference": STR, "provenance": STR,
})
PAPER_COMPARISON_CELLS = Table(
    "paper_comparison_cells", "paper_comparison_cells.parquet", "run, variant, metric, matched cell", {
        **_run(), "variant": STR, "metric": STR, "layer": INT, "paper_layers": STR, "zone": STR,
        "run_delta": FLOAT, "paper_delta": FLOAT,
    })
HEADLINE = Table("headline", "headline.parquet", "run, variant, metric, rank", {
    **_run(), "variant": STR, "metric": STR, "rank": INT, "zone": STR, "layer": INT, "delta": FLOAT,
    "ci_low": FLOAT, "ci_high": FLOAT, "p_holm": FLOAT, "p_bh": FLOAT, "significant_holm": BOOL,
    "ci_excludes_zero": BOOL, "n_questions": INT, **_RESAMPLING, "n_layers": INT, "paper_zones": STR,
    "agrees_with_paper": BOOL, "verdict": STR,
})
NULL_CONTRASTS = Table("null_contrasts", "null_contrasts.parquet", "run, variant, layer, zone, metric", {
    **_run(), "variant": STR, "layer": INT, "zone": STR, "metric": STR, "n_questions": INT,
    "n_grid_questions": INT, **_RESAMPLING, "test": STR, "n_seeds": INT, "null_draws": INT, "zone_value": FLOAT,
    "null_value": FLOAT, "zone_delta": FLOAT, "zone_delta_all": FLOAT, "null_delta": FLOAT, "difference": FLOAT,
    "ci_low": FLOAT, "ci_high": FLOAT, "p_value": FLOAT, **_P_CORRECTED, "removed_mass": FLOAT,
    "null_removed_mass": FLOAT, "mass_match": FLOAT, "feasible_fraction": FLOAT, "valid_control": BOOL,
})
OPERATOR_CONTRASTS = Table(
    "operator_contrasts", "operator_contrasts.parquet", "run, variant, operator, layer, zone, metric", {
        **_run(), "variant": STR, "operator": STR, "layer": INT, "zone": STR, "metric": STR, "n_questions": INT,
        **_RESAMPLING, "test": STR, "n_seeds": INT, "operator_value": FLOAT, "renorm_value": FLOAT,
        "operator_delta": FLOAT, "renorm_delta": FLOAT, "difference": FLOAT, "ci_low": FLOAT, "ci_high": FLOAT,
        "p_value": FLOAT, **_P_CORRECTED, "removed_mass": FLOAT,
    })
CONTROL_EFFECTS = Table("control_effects", "control_effects.parquet", "run, variant, zone, measure, layer", {
    **_run(), "variant": STR, "zone": STR, "measure": STR, "layer": INT, **_CONTROL_EFFECT,
})
SPECIFICITY = Table("specificity", "specificity.parquet", "run, variant, zone, measure", {
    **_run(), "variant": STR, "zone": STR, "measure": STR, "worst_layer": INT, "n_layers": INT,
    "null_valid_layers": STR, "layers_exceeding": STR, "n_exceeding": INT, **_CONTROL_EFFECT,
})

STATS_TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        BASELINES, DELTAS, SEED_SPREAD, ZONE_MASS, ATTENTION_SINKS, CORRELATIONS, CROSSLINGUAL_RANK,
        CROSSLINGUAL_QUESTION, CROSSLINGUAL_QUESTION_SUMMARY, QUESTION_TYPES, PAPER_COMPARISON,
        PAPER_COMPARISON_CELLS, HEADLINE, NULL_CONTRASTS, OPERATOR_CONTRASTS, CONTROL_EFFECTS, SPECIFICITY,
    )
}
"""The tables ``mrcbench stats`` writes (``results/stats/NAME.parquet`` and ``NAME.csv``), in the order it
writes them; the report reads each of them and the workflow's rules list them from here."""


def markdown() -> str:
    """The columns of every table as docs/output.md lists them (its "Columns" section): the run's tables,
    then the statistics tables."""
    lines = ["| file | one row per | columns (dtype) |", "|---|---|---|"]
    for table in (*RESULT_TABLES.values(), *STATS_TABLES.values()):
        columns = ", ".join(f"`{name}` {dtype}" for name, dtype in table.columns.items())
        lines.append(f"| `{table.file}` | {table.row} | {columns} |")
    return "\n".join(lines) + "\n"
