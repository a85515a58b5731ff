"""What each job reads: its spec, built from the config and the job's wildcards.

The one channel from config to job. :func:`job_spec` builds, per rule, a frozen spec holding exactly
the values that rule's command reads (with the run named by the wildcards); the rule's ``params`` is
that spec as JSON, so Snakemake's params trigger re-runs a job exactly when something it reads changes,
and the command reads only that spec (``--spec JSON``), never the config file. Fine-tuning reads the
``training`` keys of its :class:`Recipe`, so changing ``training.eval_batch_size`` (read by prediction,
attention extraction and the grid) re-runs no fine-tuning.

Jobs that read the whole config (``stats``, ``report``, ``manifest``) read the run's
``config.resolved.yaml`` instead (:func:`mrcbench.config.loading.write_resolved`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from mrcbench.config.runs import features_config, training_config
from mrcbench.config.sections import (
    Ablation,
    Attention,
    Dataset,
    Decoding,
    Entry,
    Features,
    Inference,
    Model,
    Section,
    Split,
    Training,
    Validation,
    ablation_config,
    attention_config,
    datasets,
    decoding_config,
    freeze,
    inference_config,
    models,
    sample_seed,
    split_language,
    split_metric,
    splits,
    validation_config,
)
from mrcbench.errors import MrcbenchError

if TYPE_CHECKING:
    from typing import Self  # Python >= 3.11; annotations are never evaluated here


@dataclass(frozen=True)
class Recipe(Section):
    """The keys of ``training`` that fine-tuning reads: all but ``eval_batch_size`` (inference's batch
    size) and ``init_from`` (the fine-tuning job's input names that checkpoint)."""

    learning_rate: float
    epochs: float
    train_batch_size: int
    micro_batch_size: int
    warmup_ratio: float
    weight_decay: float
    adam_epsilon: float
    adam_betas: tuple[float, float]
    max_grad_norm: float
    max_train_features: int | None
    threads: int | None
    answerless_window_keep: float
    freeze_embeddings: bool

    @classmethod
    def of(cls, training: Training) -> Recipe:
        values = training.as_dict()
        return cls.from_mapping({f.name: values[f.name] for f in dataclasses.fields(cls)}, "training")


class Job:
    """A job's spec: the values its command reads, as a frozen dataclass and as JSON (``--spec``)."""

    RULE: ClassVar[str]

    @classmethod
    def of(cls, config: Mapping[str, Any], **wildcards: str) -> Self:
        """The spec of this rule's job named by ``wildcards`` in a validated ``config``."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values, in field order (sections and entries as a config writes them)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """The spec as one line of JSON: the rule's ``params`` and its command's ``--spec``."""
        return json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Self:
        where = f"--spec ({cls.RULE})"
        names = [f.name for f in dataclasses.fields(cls)]
        if missing := [n for n in names if n not in mapping]:
            raise MrcbenchError(f"{where}: no value for {missing}")
        if extra := sorted(set(mapping) - set(names)):
            raise MrcbenchError(f"{where}: {extra} not known to {cls.__name__}")
        hints = _hints(cls)
        return cls(**{n: _typed(hints[n], mapping[n], f"{where}.{n}") for n in names})

    @classmethod
    def from_json(cls, text: str) -> Self:
        """The spec a rule passed as ``--spec``; one line naming the problem when it is not one."""
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MrcbenchError(f"--spec ({cls.RULE}): not JSON ({exc})") from None
        if not isinstance(mapping, dict):
            raise MrcbenchError(f"--spec ({cls.RULE}): not a JSON object")
        return cls.from_mapping(mapping)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_entry(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Entry | Dataset)


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.as_dict()
    if isinstance(value, Entry | Dataset):
        return {"name": value.name, **value.as_dict()}
    if isinstance(value, Mapping):
        return {key: item.as_dict() if isinstance(item, Entry | Dataset) else _plain(item)
                for key, item in value.items()}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` (plain JSON) as the field typed ``hint``: a section, an entry, a mapping of entries, or
    a frozen plain value."""
    if isinstance(hint, type) and issubclass(hint, Section):
        return hint.from_mapping(value, where)
    if _is_entry(hint):
        return hint.from_config(value["name"], {key: item for key, item in value.items() if key != "name"})
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Mapping and len(args) == 2 and _is_entry(args[1]):
        return MappingProxyType({name: args[1].from_config(name, entry) for name, entry in value.items()})
    return freeze(value)


# --- the jobs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepareDataJob(Job):
    """``mrcbench prepare-data``: the splits, the datasets they read, and how they are drawn and checked."""

    RULE: ClassVar[str] = "prepare_data"

    datasets: Mapping[str, Dataset]
    splits: Mapping[str, Split]
    sample_seed: int
    validation: Validation
    data_dir: str | None  # None: MRCBENCH_DATA_DIR

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> PrepareDataJob:
        wanted = splits(config)
        read = {split.dataset for split in wanted.values()}
        return cls(
            MappingProxyType({name: dataset for name, dataset in datasets(config).items() if name in read}),
            MappingProxyType(wanted), sample_seed(config), validation_config(config), config["data_dir"],
        )


@dataclass(frozen=True)
class PrepareModelJob(Job):
    """``mrcbench prepare-model``: where one model's weights come from."""

    RULE: ClassVar[str] = "prepare_model"

    model: Model  # Model.weights_source(): its languages and training/features overlays left out

    @classmethod
    def of(cls, config: Mapping[str, Any], model: str) -> PrepareModelJob:
        return cls(models(config)[model].weights_source())


@dataclass(frozen=True)
class FinetuneJob(Job):
    """``mrcbench finetune``: one (model, train split, seed) and its recipe."""

    RULE: ClassVar[str] = "finetune"

    model: str
    train: str
    seed: int
    features: Features
    training: Recipe

    @classmethod
    def of(cls, config: Mapping[str, Any], model: str, train: str, seed: str) -> FinetuneJob:
        return cls(model, train, int(seed), features_config(config, model, train),
                   Recipe.of(training_config(config, model, train)))


@dataclass(frozen=True)
class EvalJob(Job):
    """What every job over one run's eval split reads: the run, its language, how its windows are made,
    batched (``training.eval_batch_size``, ``training.threads``) and computed (``inference``)."""

    model: str
    train: str
    seed: int
    eval: str
    language: str
    features: Features
    inference: Inference
    eval_batch_size: int
    threads: int | None

    @staticmethod
    def _run(config: Mapping[str, Any], model: str, train: str, seed: str, eval: str) -> dict[str, Any]:
        training = training_config(config, model, train)
        return {"model": model, "train": train, "seed": int(seed), "eval": eval,
                "language": split_language(config, eval), "features": features_config(config, model, train),
                "inference": inference_config(config), "eval_batch_size": training.eval_batch_size,
                "threads": training.threads}


@dataclass(frozen=True)
class PredictJob(EvalJob):
    """``mrcbench predict``: the run, its scorer and the decoding of answers."""

    RULE: ClassVar[str] = "predict"

    metric: str
    decoding: Decoding

    @classmethod
    def of(cls, config: Mapping[str, Any], model: str, train: str, seed: str, eval: str) -> PredictJob:
        return cls(**cls._run(config, model, train, seed, eval), metric=split_metric(config, eval),
                   decoding=decoding_config(config))


@dataclass(frozen=True)
class ExtractJob(EvalJob):
    """``mrcbench extract-attention``: the run and its case studies."""

    RULE: ClassVar[str] = "extract_attention"

    attention: Attention

    @classmethod
    def of(cls, config: Mapping[str, Any], model: str, train: str, seed: str, eval: str) -> ExtractJob:
        return cls(**cls._run(config, model, train, seed, eval), attention=attention_config(config))


@dataclass(frozen=True)
class AblateJob(EvalJob):
    """``mrcbench ablate``: the run, its scorer and decoding, the grid, the seed choosing its questions,
    and the part (``all`` or ``layerN``) this job computes."""

    RULE: ClassVar[str] = "ablate"

    metric: str
    decoding: Decoding
    ablation: Ablation
    sample_seed: int
    part: str

    @classmethod
    def of(
        cls, config: Mapping[str, Any], model: str, train: str, seed: str, eval: str, part: str
    ) -> AblateJob:
        return cls(**cls._run(config, model, train, seed, eval), metric=split_metric(config, eval),
                   decoding=decoding_config(config), ablation=ablation_config(config),
                   sample_seed=sample_seed(config), part=part)


@dataclass(frozen=True)
class MergeGridJob(Job):
    """``mrcbench merge-grid``: the grid its parts must make (``ablation``) and the model's layer count
    (``models.<model>.num_layers``; None: the deepest layer the parts hold)."""

    RULE: ClassVar[str] = "merge_grid"

    ablation: Ablation
    num_layers: int | None

    @classmethod
    def of(cls, config: Mapping[str, Any], model: str, train: str, seed: str, eval: str) -> MergeGridJob:
        return cls(ablation_config(config), models(config)[model].num_layers)


JOBS: dict[str, type[Job]] = {
    job.RULE: job for job in (PrepareDataJob, PrepareModelJob, FinetuneJob, PredictJob, ExtractJob, AblateJob,
                              MergeGridJob)
}
"""The job spec of each rule whose command reads a spec (the others read the resolved config)."""


def job_spec(config: Mapping[str, Any], rule: str, wildcards: Mapping[str, str] | None = None) -> Job:
    """The spec of rule ``rule``'s job named by ``wildcards`` (Snakemake's, as strings) in a validated
    ``config``: exactly the values its command reads."""
    if rule not in JOBS:
        raise MrcbenchError(f"rule '{rule}' has no job spec (rules with one: {', '.join(JOBS)})")
    return JOBS[rule].of(config, **dict(wildcards or {}))
