"""Unmasked baselines: the official scores and the grid's per-question baseline, with CIs.

Writes the ``baselines`` table (and its seed rows in ``seed_spread``), shown in the report's
"Baselines" section (a table drawn with :func:`mrcbench.report.blocks.table_html`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrcbench.stats.common import (
    BASELINE_TOLERANCE,
    METRICS,
    StatsSettings,
    eval_language,
    seeded_rng,
)
from mrcbench.stats.resampling import ResamplingDesign, summarize_paired
from mrcbench.stats.results import ResultTables
from mrcbench.tables import BASELINES, RUN_KEYS, SEED_SPREAD


def compute_baselines(
    tables: ResultTables, config: dict | None, settings: StatsSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Baseline EM/F1 per run: seed mean, article-bootstrap CI, seed spread, official scorer value.

    The source is ``scores.parquet`` (prediction rule); runs with a grid but no scores fall back to the
    grid's baseline rows. ``grid_baseline`` repeats the grid's own baseline so that a mismatch between
    the prediction and the ablation code paths is visible.
    """
    source = tables.scores
    source_name = "scores.parquet"
    if source is None or source.empty:
        if tables.grid is None:
            return BASELINES.empty(), SEED_SPREAD.empty()
        source = tables.grid[tables.grid["mode"] == "baseline"].drop_duplicates([*RUN_KEYS, "seed", "qid"])
        source_name = "grid.parquet (baseline rows)"
    grid_base = grid_rows = None
    if tables.grid is not None:
        grid_rows = tables.grid[tables.grid["mode"] == "baseline"].drop_duplicates([*RUN_KEYS, "seed", "qid"])
        grid_base = grid_rows.groupby(list(RUN_KEYS))[list(METRICS)].mean()
    official = tables.official.groupby(list(RUN_KEYS))[["official_em", "official_f1"]].mean()
    rows, seed_rows = [], []
    for key, run in source.groupby(list(RUN_KEYS), sort=True):
        run_values = dict(zip(RUN_KEYS, key, strict=True))
        run = run.drop_duplicates(["seed", "qid"])
        questions = run.get("question", ())
        language = eval_language(config, run_values["eval_set"], questions)
        for metric in METRICS:
            per_seed = run.groupby("seed")[metric].mean()
            per_question = run.groupby("qid")[metric].mean().dropna()
            articles = run.drop_duplicates("qid").set_index("qid")["article"].reindex(per_question.index)
            design = ResamplingDesign.from_articles(
                articles.to_numpy(dtype=object), len(per_question), settings.min_clusters
            )
            summary = summarize_paired(
                per_question.to_numpy(dtype=float)[:, None],
                design,
                settings,
                seeded_rng(settings, "baseline", *key, metric),
                with_tests=False,
            )
            official_value = official[f"official_{metric}"].get(key, np.nan)
            grid_value = (
                grid_base[metric].get(key, np.nan)
                if grid_base is not None
                else np.nan
            )
            # The grid may run on a sub-sample (ablation.max_questions): compare on its questions.
            on_grid_questions = np.nan
            if grid_rows is not None:
                in_run = np.logical_and.reduce(
                    [(grid_rows[c] == v).to_numpy() for c, v in zip(RUN_KEYS, key, strict=True)]
                )
                grid_qids = grid_rows.loc[in_run, "qid"]
                shared = run[run["qid"].isin(set(grid_qids))]
                if len(shared):
                    on_grid_questions = float(shared.groupby("seed")[metric].mean().mean())
            rows.append(
                {
                    **run_values,
                    "language": language,
                    "metric": metric,
                    "n_seeds": int(per_seed.size),
                    "n_questions": int(per_question.size),
                    "n_clusters": design.n_articles,
                    "resampling": design.unit,
                    "value": float(per_seed.mean()),
                    "ci_low": float(summary.ci_low[0]),
                    "ci_high": float(summary.ci_high[0]),
                    "seed_sd": float(per_seed.std(ddof=1)) if per_seed.size > 1 else np.nan,
                    "seed_min": float(per_seed.min()),
                    "seed_max": float(per_seed.max()),
                    "official": official_value,
                    "grid_baseline": grid_value,
                    "scores_on_grid_questions": on_grid_questions,
                    "grid_mismatch": bool(abs(grid_value - on_grid_questions) > BASELINE_TOLERANCE)
                    if pd.notna(grid_value) and pd.notna(on_grid_questions) else False,
                    "source": source_name,
                }
            )
            counts = run.groupby("seed")[metric].count()
            for seed, value in per_seed.items():
                seed_rows.append(
                    {
                        "quantity": "baseline",
                        **run_values,
                        "variant": "none",
                        "mode": "baseline",
                        "layer": -1,
                        "head": -1,
                        "zone": "none",
                        "metric": metric,
                        "seed": int(seed),
                        "n_questions": int(counts[seed]),
                        "value": float(value),
                    }
                )
    return pd.DataFrame(rows, columns=BASELINES.names), pd.DataFrame(seed_rows, columns=SEED_SPREAD.names)
