"""The ``mrcbench stats`` command: every statistics table, written once.

:func:`run_stats` loads the result files (:mod:`mrcbench.stats.results`), runs each analysis and writes
the tables of :data:`mrcbench.tables.STATS_TABLES` (``results/stats/NAME.parquet`` and ``NAME.csv``, each
checked against its declaration) with the config and the settings they ran with. The report reads these
files only (:mod:`mrcbench.report.inputs`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd
import yaml

from mrcbench import config as cfg
from mrcbench.errors import MrcbenchError
from mrcbench.runtime import layout
from mrcbench.runtime.files import write_csv, write_parquet, write_text
from mrcbench.stats.baselines import compute_baselines
from mrcbench.stats.common import eval_language
from mrcbench.stats.controls import (
    CONTRAST_FAMILY,
    OPERATOR_FAMILY,
    PRIMARY_CONTINUOUS,
    SPECIFICITY_FAMILY,
    compute_control_effects,
    compute_null_contrasts,
    compute_operator_contrasts,
    compute_specificity,
)
from mrcbench.stats.correlations import CORRELATION_FAMILY, compute_correlations
from mrcbench.stats.crosslingual import compute_crosslingual, summarise_question_agreement
from mrcbench.stats.deltas import DELTA_FAMILY, build_question_matrices, compute_deltas
from mrcbench.stats.headline import headline_zones
from mrcbench.stats.paper_comparison import compare_with_paper
from mrcbench.stats.question_types import compute_question_types
from mrcbench.stats.results import ResultFiles, answerable_grid, load_results
from mrcbench.stats.zone_mass import attention_sinks, compute_zone_mass, question_layer_mass
from mrcbench.tables import SEED_SPREAD, STATS_TABLES

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _write_table(frame: pd.DataFrame, out_dir: Path, name: str) -> list[Path]:
    parquet, csv = out_dir / f"{name}.parquet", out_dir / f"{name}.csv"
    frame = frame.reset_index(drop=True)
    write_parquet(frame, parquet)
    write_csv(frame, csv)
    return [parquet, csv]


def run_stats(
    results_dir: Path, out_dir: Path, config: dict | None = None, files: ResultFiles | None = None
) -> list[Path]:
    """Compute every statistics table from the result files under ``results_dir``; write them to ``out_dir``.

    ``config`` defaults to ``results_dir/config.resolved.yaml`` when that file exists. Returns the written
    paths (each table as parquet and csv, plus ``settings.json`` with the knobs used). ``files``: the
    result files to read (the workflow passes its declared inputs); default: all under ``results_dir``.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise MrcbenchError(f"results directory not found: {results_dir}")
    if config is None and Path(layout.config_file(results_dir)).is_file():
        config = cfg.load(layout.config_file(results_dir))
    settings = cfg.stats_config(config)
    tables = load_results(results_dir, files)
    if tables.grid is None and tables.scores is None:
        raise MrcbenchError(
            f"{results_dir}: no {layout.glob('ablation', 'grid.parquet')} or {layout.glob('predict', 'scores.parquet')} found"
        )
    questions = tables.scores[["eval_set", "qid", "question"]] if tables.scores is not None else None
    languages = {}
    for frame in (tables.scores, tables.grid):
        if frame is None:
            continue
        for eval_set in frame["eval_set"].unique():
            if eval_set not in languages:
                texts = (
                    questions.loc[questions["eval_set"] == eval_set, "question"]
                    if questions is not None
                    else ()
                )
                languages[eval_set] = eval_language(config, eval_set, texts)

    log.info("building per-question matrices")
    matrices = build_question_matrices(answerable_grid(tables.grid, tables.scores))
    log.info("deltas: %d grid(s) (run x variant x metric)", len(matrices))
    deltas, delta_seeds = compute_deltas(matrices, settings)
    baselines, baseline_seeds = compute_baselines(tables, config, settings)
    zone_mass = compute_zone_mass(tables.zone_stats)
    log.info("correlations")
    correlations = compute_correlations(
        matrices, deltas, zone_mass, question_layer_mass(tables.zone_stats), settings
    )
    log.info("cross-lingual consistency")
    cross_rank, cross_question = compute_crosslingual(matrices, config, languages, settings)
    log.info("question types")
    question_types = compute_question_types(matrices, questions, languages, settings)
    paper, paper_cells = compare_with_paper(deltas, settings)
    headline = headline_zones(deltas)
    controls = answerable_grid(tables.controls, tables.scores)
    null_contrasts = compute_null_contrasts(controls, settings)
    operator_contrasts = compute_operator_contrasts(controls, settings)
    control_effects = compute_control_effects(controls, deltas, null_contrasts, operator_contrasts, settings)
    specificity = compute_specificity(control_effects, settings)

    out_dir.mkdir(parents=True, exist_ok=True)
    seed_spread = pd.concat(
        [frame for frame in (baseline_seeds, delta_seeds) if not frame.empty]
        or [SEED_SPREAD.empty()],
        ignore_index=True,
    )
    written: list[Path] = []
    frames = dict(zip(STATS_TABLES, (baselines, deltas, seed_spread, zone_mass, attention_sinks(zone_mass),
                                     correlations, cross_rank, cross_question,
                                     summarise_question_agreement(cross_question), question_types, paper,
                                     paper_cells, headline, null_contrasts, operator_contrasts, control_effects,
                                     specificity),
                      strict=True))
    for name, frame in frames.items():  # every table checked before any is written
        STATS_TABLES[name].check(frame, out_dir / f"{name}.parquet")
    for name, frame in frames.items():
        written += _write_table(frame, out_dir, name)
    settings_path = out_dir / "settings.json"
    ablation = cfg.ablation_config(config)  # the controls' knobs, for the report's captions
    write_text(
        settings_path,
        json.dumps(
            {
                "seed": settings.seed,
                "bootstrap": settings.bootstrap,
                "permutations": settings.permutations,
                "alpha": settings.alpha,
                "confidence": settings.confidence,
                "min_bucket_size": settings.min_bucket_size,
                "min_clusters": settings.min_clusters,
                "parallel_min_overlap": settings.parallel_min_overlap,
                "languages": languages,
                "correction_family": DELTA_FAMILY,
                "correlation_correction_family": CORRELATION_FAMILY,
                "null_contrast_correction_family": CONTRAST_FAMILY,
                "operator_contrast_correction_family": OPERATOR_FAMILY,
                "specificity_correction_family": SPECIFICITY_FAMILY,
                "primary_continuous_measure": PRIMARY_CONTINUOUS,
                "null_draws": ablation.null_draws,
                "null_tolerance": ablation.null_tolerance,
                "min_null_feasible_share": settings.min_null_feasible_share,
                "operators": list(ablation.operators),
                "zone_operators": {op: list(zones) for op, zones in ablation.zone_operators.items()},
            },
            indent=2,
            ensure_ascii=False,
        ),
    )
    written.append(settings_path)
    if config is not None:
        # The report reads the config of the run beside the tables it describes: written last, so a
        # failed write (a full disk) never leaves a new config beside the previous run's tables.
        config_path = out_dir / layout.CONFIG_NAME
        write_text(config_path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        written.append(config_path)
    log.info("wrote %d files to %s", len(written), out_dir)
    return written


def main(argv: list[str] | None = None) -> int:
    """``mrcbench stats --results results --out results/stats [--config results/config.resolved.yaml]
    --scores ... [--metrics ...] [--grids ...] [--zone-stats ...]``."""
    parser = argparse.ArgumentParser(prog="mrcbench stats", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="results directory")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: RESULTS/stats)")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="resolved config (default: RESULTS/config.resolved.yaml when present)",
    )
    # The files to read, exactly (the workflow passes its rule's inputs; nothing else is globbed).
    parser.add_argument("--scores", type=Path, nargs="+", required=True, metavar="PARQUET",
                        help="predict/.../scores.parquet of every run")
    parser.add_argument("--metrics", type=Path, nargs="*", default=[], metavar="JSON",
                        help="predict/.../metrics.json of every run (official-equivalent EM/F1)")
    parser.add_argument("--grids", type=Path, nargs="*", default=[], metavar="PARQUET",
                        help="ablation/.../grid.parquet of every ablated run")
    parser.add_argument("--zone-stats", type=Path, nargs="*", default=[], metavar="PARQUET",
                        help="attention/.../zone_stats.parquet of every ablated run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = cfg.load(args.config) if args.config is not None else None
    files = ResultFiles(grids=args.grids, zone_stats=args.zone_stats, scores=args.scores, metrics=args.metrics)
    run_stats(args.results, args.out or Path(layout.stats(args.results)), config, files)
    return 0
