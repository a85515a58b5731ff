"""The report's "Setup" section: datasets, splits, models and experiments, as tables.

Read from the config the statistics ran with (:mod:`mrcbench.report.inputs`); no statistics table is
involved.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mrcbench import config as cfg


def _starting_point(config: dict[str, Any], experiment: cfg.Experiment) -> str:
    """What an experiment's fine-tuning starts from: the pre-trained weights, or (training.init_from)
    the same model already fine-tuned on another split."""
    starts = {cfg.init_from(config, model, experiment.train)
              for model in cfg.experiment_models(config, experiment.name)}
    return "; ".join(sorted(f"fine-tuned on {init} (training.init_from)" if init else "pre-trained weights"
                            for init in starts))


def _integers_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Config columns of whole numbers that pandas made float because some rows lack the key
    (``max_questions``: 240 and missing) as nullable integers, so the tables print 240, not 240.00."""
    converted = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values) and values.notna().any():
            present = values.dropna()
            if (present == present.round()).all():
                converted[column] = values.round().astype("Int64")
        elif values.dtype == object:
            present = values.dropna()
            if len(present) and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
                converted[column] = values.astype("Int64")
    return frame.assign(**converted)


def setup_tables(config: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Models, datasets/splits, experiments and recipe knobs from the resolved config."""
    models = pd.DataFrame(
        [
            {"model": name, **{k: v for k, v in entry.as_dict().items() if not isinstance(v, (dict, list))}}
            for name, entry in (cfg.models(config) if config.get("models") else {}).items()
        ]
    )
    datasets = config.get("datasets") or {}
    splits = pd.DataFrame(
        [
            {
                "split": name,
                "role": spec.get("role"),
                "dataset": spec.get("dataset"),
                "language": (datasets.get(spec.get("dataset")) or {}).get("language"),
                "metric": (datasets.get(spec.get("dataset")) or {}).get("metric"),
                **{
                    k: v
                    for k, v in spec.items()
                    if k not in ("role", "dataset") and not isinstance(v, (dict, list))
                },
            }
            for name, spec in (config.get("splits") or {}).items()
        ]
    )
    experiments = pd.DataFrame(
        [
            {
                "experiment": name,
                "train": experiment.train,
                "eval": ", ".join(experiment.eval or ()),
                "models": ", ".join(experiment.models or ()) or "(all of the language)",
                "seeds": ", ".join(map(str, experiment.seeds)),
                "starts from": _starting_point(config, experiment),
            }
            for name, experiment in (cfg.experiments(config) if config.get("experiments") else {}).items()
        ]
    )
    knobs = []
    for section in ("training", "features", "decoding", "ablation", "stats"):
        for key, value in (config.get(section) or {}).items():
            knobs.append(
                {
                    "section": section,
                    "key": key,
                    # None (unset) is missing: the table prints an en dash, not "None".
                    "value": ", ".join(map(str, value)) if isinstance(value, list)
                    else None if value is None else str(value),
                }
            )
    return {
        "models": _integers_as_integers(models),
        "splits": _integers_as_integers(splits),
        "experiments": experiments,
        "knobs": pd.DataFrame(knobs, columns=["section", "key", "value"]),
    }
