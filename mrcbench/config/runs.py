"""Experiments as runs: which models each experiment fine-tunes, every (model, train split, seed, eval
split) run, and the recipe of one fine-tuning (``features``/``training`` merged in the order schema
defaults < global section < ``models.<m>`` < ``experiments.<e>``)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mrcbench.config.sections import (
    Experiment,
    Features,
    Model,
    Training,
    deep_merge,
    experiments,
    models,
    section,
    split_language,
    thaw,
)
from mrcbench.errors import MrcbenchError
from mrcbench.tables import PATH_KEYS


@dataclass(frozen=True)
class Run:
    """One fine-tuned model evaluated on one eval split: the unit every result file is keyed by."""

    experiment: str
    model: str
    train: str
    seed: int
    eval: str
    ablation: bool

    @property
    def keys(self) -> dict:
        """The run keys of its files' paths (:mod:`mrcbench.runtime.layout`)."""
        return {key: getattr(self, key) for key in PATH_KEYS.values()}


def models_of(config: Mapping[str, Any], experiment: Experiment) -> list[str]:
    """Models of an experiment: its explicit list, else every model covering the train language."""
    if experiment.models is not None:
        return list(experiment.models)
    language = split_language(config, experiment.train)
    return [name for name, model in models(config).items() if model.covers(language)]


def experiment_models(config: Mapping[str, Any], experiment: str) -> list[str]:
    """:func:`models_of` the experiment named ``experiment``."""
    return models_of(config, Experiment.from_config(experiment, config["experiments"][experiment]))


def experiment_of(config: Mapping[str, Any], model: str, train: str) -> Experiment:
    """The experiment that fine-tunes ``model`` on split ``train`` (validation makes it unique)."""
    for exp in experiments(config).values():
        if exp.train == train and model in models_of(config, exp):
            return exp
    raise MrcbenchError(f"no experiment fine-tunes model '{model}' on split '{train}'")


def runs(config: Mapping[str, Any]) -> Iterator[Run]:
    for name, exp in experiments(config).items():
        for model in models_of(config, exp):
            for seed in exp.seeds:
                for ev in exp.eval:
                    yield Run(name, model, exp.train, int(seed), ev, exp.ablates(ev))


def _recipe(config: Mapping[str, Any], model: str, train: str, key: str) -> dict:
    """Section ``key`` (``features`` or ``training``) of one fine-tuning: schema defaults < global <
    ``models.<model>.<key>`` < the experiment's."""
    exp = experiment_of(config, model, train)
    overlay = getattr(Model.from_config(model, config["models"][model]), key)
    return deep_merge(deep_merge(section(config, key), thaw(overlay)), thaw(getattr(exp, key)))


def features_config(config: Mapping[str, Any], model: str, train: str) -> Features:
    """Schema defaults < global ``features`` < ``models.<model>.features`` < the experiment's."""
    return Features.from_mapping(_recipe(config, model, train, "features"), "features")


def training_config(config: Mapping[str, Any], model: str, train: str) -> Training:
    """Schema defaults < global ``training`` < ``models.<model>.training`` < the experiment's."""
    return Training.from_mapping(_recipe(config, model, train, "training"), "training")


def init_from(config: Mapping[str, Any], model: str, train: str) -> str | None:
    """The train split whose fine-tuned checkpoint (same model, same seed) starts this fine-tuning."""
    init = training_config(config, model, train).init_from
    return init["train"] if init else None
