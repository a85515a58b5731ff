"""Config-driven split preparation (``mrcbench prepare-data``): SQuAD-format JSON in, validated,
leakage-free, sub-sampled splits out.

Every source (a local SQuAD JSON file or a hub dataset converted to the same layout) is held as a
SQuAD-format dict ``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``,
and every prepared split is written in that layout too, so the official scorers read it unchanged.

Resolution order of :func:`prepare_splits` (why it matters is given with each step):

1. **Datasets** (``config["datasets"]``) are loaded once each (local file, or the hub) and validated
   (:func:`~mrcbench.data.validation.validate`): every answer must be the context substring at its
   ``answer_start``. A dataset with ``article_split`` is then divided by article title into a ``train`` and an ``eval`` part
   (:func:`~mrcbench.data.filters.article_split`), so no article ever contributes to both.
2. **Pools.** Each split takes its dataset part (``part``; the whole dataset when absent) and applies
   ``answerable_only``. A split's pool is what it *could* contain before any cross-split rule.
3. **Exclusions** (``exclude_articles_of``) compare against the referenced splits' *pools* from step 2,
   never their sub-samples: otherwise changing a training split's ``max_questions`` would change which
   XQuAD articles are evaluated, and two runs with different training budgets would score different
   evaluation sets.
4. **Eval splits** (``role: eval``) are resolved next: sub-sampled
   (:func:`~mrcbench.data.filters.subsample`) or, with ``same_questions_as``, restricted to exactly the question ids of another split (parallel XQuAD files
   share ids). Splits referenced by ``same_questions_as`` are resolved first (topological order).
5. **Train splits** (``role: train``) then get the leakage filter
   (:func:`~mrcbench.data.filters.remove_overlap`) against the *final* content of every eval split in the config (also those not requested with ``splits=``): any
   article whose title, and any paragraph whose whitespace-normalised context, appears in an evaluated
   question's article is removed. Filtering against what is actually evaluated (and not the eval pools)
   matters for parallel splits: ``xquad_zh`` shares all 48 titles of XQuAD, but only the sub-sampled
   questions are evaluated. Consequence: a train split depends on the eval splits' sizes and seed.
6. **Train sub-sampling** happens last, *after* the leakage filter, so a train split always has its
   requested size when enough questions survive.

Sub-sampling ranks questions by ``sha1(f"{seed}:{qid}")`` and keeps the lowest ranks: the choice does not
depend on file order, and two parallel files with the same ids keep the same ids.

Each requested split is written atomically as ``{out_dir}/{split}.json`` (SQuAD JSON, source ``version``
and titles kept) with ``{out_dir}/{split}.summary.json`` (counts kept and removed at each step), and a
one-line summary per dataset and split is printed to stderr.
"""

from __future__ import annotations

import argparse
import graphlib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrcbench import config as cfg
from mrcbench.data.filters import (
    answerable_only,
    article_split,
    count,
    exclude_articles,
    question_ids,
    remove_overlap,
    same_questions_as,
    subsample,
)
from mrcbench.data.loading import METRICS, SquadDataset, load_hub, load_squad_json
from mrcbench.data.validation import ON_BAD_CHOICES, ValidationReport, validate
from mrcbench.errors import MrcbenchError
from mrcbench.files import sha256_file, write_json

ROLES = ("train", "eval")
PARTS = ("train", "eval")


_DATASET_KEYS = {"local", "hub", "source", "metric", "language", "article_split"}
_HUB_KEYS = {"path", "name", "split", "revision"}
_SPLIT_KEYS = {
    "dataset",
    "part",
    "answerable_only",
    "max_questions",
    "role",
    "exclude_articles_of",
    "same_questions_as",
}
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _say(message: str) -> None:
    """Progress and summary lines go to stderr so that they land in the Snakemake rule log."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Config-driven preparation
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    metric: str
    language: str | None
    source: str  # "local" | "hub"
    local: str | None
    hub: Mapping[str, Any] | None
    eval_fraction: float | None
    split_seed: int | None

    @classmethod
    def parse(cls, key: str, spec: Any) -> DatasetSpec:
        where = f"datasets.{key}"
        if not isinstance(spec, Mapping):
            raise MrcbenchError(f"{where}: expected a mapping")
        if unknown := set(spec) - _DATASET_KEYS:
            raise MrcbenchError(f"{where}: unknown key(s) {sorted(unknown)}")
        source = spec.get("source") or ("local" if spec.get("local") else "hub")
        if source not in ("local", "hub"):
            raise MrcbenchError(f"{where}.source: expected 'local' or 'hub', got {source!r}")
        if source == "local" and not spec.get("local"):
            raise MrcbenchError(f"{where}.local: required with source: local")
        hub = spec.get("hub")
        if source == "hub":
            if not isinstance(hub, Mapping) or not hub.get("path") or not hub.get("split"):
                raise MrcbenchError(f"{where}.hub: needs 'path' and 'split' (no local file is configured)")
            if unknown := set(hub) - _HUB_KEYS:
                raise MrcbenchError(f"{where}.hub: unknown key(s) {sorted(unknown)}")
        metric = spec.get("metric")
        if metric not in METRICS:
            raise MrcbenchError(f"{where}.metric: expected one of {METRICS}, got {metric!r}")
        eval_fraction = split_seed = None
        if (split := spec.get("article_split")) is not None:
            if not isinstance(split, Mapping) or "eval_fraction" not in split:
                raise MrcbenchError(f"{where}.article_split: needs eval_fraction (and optionally seed)")
            eval_fraction, split_seed = float(split["eval_fraction"]), int(split.get("seed", 0))
        return cls(
            key, metric, spec.get("language"), source, spec.get("local"), hub, eval_fraction, split_seed
        )


@dataclass(frozen=True)
class SplitSpec:
    name: str
    dataset: str
    part: str | None
    role: str
    answerable_only: bool
    max_questions: int | None
    exclude_articles_of: tuple[str, ...]
    same_questions_as: str | None

    @classmethod
    def parse(cls, name: str, spec: Any, datasets: Mapping[str, DatasetSpec]) -> SplitSpec:
        where = f"splits.{name}"
        if not _SPLIT_NAME.match(name):
            raise MrcbenchError(f"{where}: split names may hold only letters, digits, '_', '-' and '.'")
        if not isinstance(spec, Mapping):
            raise MrcbenchError(f"{where}: expected a mapping")
        if unknown := set(spec) - _SPLIT_KEYS:
            raise MrcbenchError(f"{where}: unknown key(s) {sorted(unknown)}")
        dataset = spec.get("dataset")
        if dataset not in datasets:
            raise MrcbenchError(f"{where}.dataset: unknown dataset {dataset!r} (known: {sorted(datasets)})")
        part = spec.get("part")
        if part is not None:
            if part not in PARTS:
                raise MrcbenchError(f"{where}.part: expected one of {PARTS}, got {part!r}")
            if datasets[dataset].eval_fraction is None:
                raise MrcbenchError(f"{where}.part: dataset '{dataset}' has no article_split")
        role = spec.get("role")
        if role not in ROLES:
            raise MrcbenchError(f"{where}.role: expected one of {ROLES}, got {role!r}")
        max_questions = spec.get("max_questions")
        if max_questions is not None and (not isinstance(max_questions, int) or max_questions < 1):
            raise MrcbenchError(f"{where}.max_questions: expected a positive integer, got {max_questions!r}")
        exclude = spec.get("exclude_articles_of") or []
        if isinstance(exclude, str):
            exclude = [exclude]
        same = spec.get("same_questions_as")
        if same is not None and max_questions is not None:
            raise MrcbenchError(f"{where}: same_questions_as and max_questions exclude each other")
        return cls(
            name,
            dataset,
            part,
            role,
            bool(spec.get("answerable_only", False)),
            max_questions,
            tuple(exclude),
            same,
        )


@dataclass
class _SplitState:
    """A split's content while it is being resolved, plus the counts for its summary file."""

    spec: SplitSpec
    pool: SquadDataset
    removed: dict[str, int]
    details: dict[str, Any]
    final: SquadDataset | None = None


class _DatasetLoader:
    """Loads, validates and article-splits each configured dataset once."""

    def __init__(
        self,
        config: Mapping[str, Any],
        specs: Mapping[str, DatasetSpec],
        data_dir: Path | None,
        on_bad: str,
        realign_max_shift: int,
    ):
        self.config, self.specs, self.data_dir = config, specs, data_dir
        self.on_bad, self.realign_max_shift = on_bad, realign_max_shift
        self.validated: dict[str, tuple[SquadDataset, ValidationReport, dict[str, Any]]] = {}
        self.parts: dict[str, tuple[SquadDataset, SquadDataset]] = {}

    def _local_path(self, spec: DatasetSpec) -> Path:
        path = Path(spec.local).expanduser()
        if path.is_absolute():
            return path
        if self.data_dir is None:
            self.data_dir = cfg.resolve_data_dir(self.config)
        return self.data_dir / path

    def load(self, key: str) -> tuple[SquadDataset, ValidationReport, dict[str, Any]]:
        if key not in self.validated:
            spec = self.specs[key]
            if spec.source == "local":
                path = self._local_path(spec)
                raw = load_squad_json(path, config_key=f"datasets.{key}.local")
                provenance = {"source": "local", "local": spec.local, "sha256": sha256_file(path)}
                name = f"dataset '{key}' ({spec.local})"
            else:
                raw = load_hub(spec.hub, key=key, metric=spec.metric)
                provenance = {"source": "hub", "hub": dict(spec.hub)}
                name = f"dataset '{key}' (hub {spec.hub['path']})"
            clean, report = validate(raw, name, self.on_bad, self.realign_max_shift)
            _say(report.summary())
            self.validated[key] = clean, report, provenance
        return self.validated[key]

    def part(self, key: str, part: str | None) -> SquadDataset:
        dataset = self.load(key)[0]
        if part is None:
            return dataset
        if key not in self.parts:
            spec = self.specs[key]
            self.parts[key] = article_split(dataset, spec.eval_fraction, spec.split_seed)
        return self.parts[key][PARTS.index(part)]


def _parse_config(config: Mapping[str, Any]) -> tuple[dict[str, DatasetSpec], dict[str, SplitSpec]]:
    if not isinstance(config.get("datasets"), Mapping) or not config["datasets"]:
        raise MrcbenchError("datasets: the config defines no datasets")
    if not isinstance(config.get("splits"), Mapping) or not config["splits"]:
        raise MrcbenchError("splits: the config defines no splits")
    datasets = {key: DatasetSpec.parse(key, spec) for key, spec in config["datasets"].items()}
    splits = {name: SplitSpec.parse(name, spec, datasets) for name, spec in config["splits"].items()}
    for split in splits.values():
        for other in split.exclude_articles_of:
            if other not in splits:
                raise MrcbenchError(f"splits.{split.name}.exclude_articles_of: unknown split {other!r}")
        if split.same_questions_as is not None and split.same_questions_as not in splits:
            raise MrcbenchError(
                f"splits.{split.name}.same_questions_as: unknown split {split.same_questions_as!r}"
            )
    return datasets, splits


def _final_dependencies(split: SplitSpec, splits: Mapping[str, SplitSpec]) -> set[str]:
    """Splits whose *final* content this split's final content needs (pools are needed separately)."""
    deps = {split.same_questions_as} if split.same_questions_as else set()
    if split.role == "train":
        deps |= {name for name, other in splits.items() if other.role == "eval"}
    return deps


def prepare_splits(
    config: Mapping[str, Any], data_dir: Path | None, out_dir: Path, splits: Sequence[str] | None = None
) -> dict[str, Path]:
    """Resolve the config's splits (order: see the module docstring) and write the requested ones.

    Returns ``{split: out_dir/split.json}`` for the requested splits (all when ``splits`` is None).
    ``data_dir`` may be None when no dataset reads a relative local file; it is then resolved from the
    config or ``MRCBENCH_DATA_DIR`` only if needed.
    """
    dataset_specs, split_specs = _parse_config(config)
    requested = list(split_specs) if splits is None else list(splits)
    for name in requested:
        if name not in split_specs:
            raise MrcbenchError(f"--splits: unknown split {name!r} (known: {sorted(split_specs)})")
    validation = config.get("validation") or {}
    on_bad = validation.get("on_bad_record", "skip")
    if on_bad not in ON_BAD_CHOICES:
        raise MrcbenchError(f"validation.on_bad_record: expected one of {ON_BAD_CHOICES}, got {on_bad!r}")
    realign_max_shift = int(validation.get("realign_max_shift", 0))
    seed = int(config.get("sample_seed", 0))

    # Which finals are needed: the requested splits and, transitively, their final dependencies.
    graph = {name: _final_dependencies(spec, split_specs) for name, spec in split_specs.items()}
    needed: set[str] = set()
    stack = list(requested)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(graph[name])
    try:
        order = list(graphlib.TopologicalSorter({name: graph[name] for name in needed}).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise MrcbenchError(
            f"splits: circular dependency {cycle} (train splits are filtered against every "
            "eval split, and same_questions_as needs the other split first)"
        ) from None

    loader = _DatasetLoader(config, dataset_specs, data_dir, on_bad, realign_max_shift)
    states: dict[str, _SplitState] = {}

    def pool_of(name: str) -> _SplitState:
        """Step 2: dataset part plus answerable_only (the pool other splits' exclusions refer to)."""
        if name not in states:
            spec = split_specs[name]
            dataset = loader.part(spec.dataset, spec.part)
            removed = {"answerable_only": 0}
            if spec.answerable_only:
                filtered = answerable_only(dataset)
                removed["answerable_only"] = count(dataset)["questions"] - count(filtered)["questions"]
                dataset = filtered
            states[name] = _SplitState(
                spec, dataset, removed, {"pool_questions": count(dataset)["questions"]}
            )
        return states[name]

    for name in order:
        state = pool_of(name)
        spec = state.spec
        content = state.pool
        if spec.exclude_articles_of:  # step 3, against the referenced pools
            content, report = exclude_articles(
                content, {other: pool_of(other).pool for other in spec.exclude_articles_of}
            )
            state.removed["exclusion"] = report.questions_removed
            state.details["exclusion"] = report.to_dict()
        if spec.role == "train":  # step 5, against every eval split's final content
            eval_finals = {
                other: states[other].final for other in graph[name] if split_specs[other].role == "eval"
            }
            content, report = remove_overlap(content, eval_finals)
            state.removed["overlap"] = report.questions_removed
            state.details["overlap"] = report.to_dict()
        if spec.same_questions_as:  # step 4
            before = count(content)["questions"]
            content = same_questions_as(
                content, states[spec.same_questions_as].final, name, spec.same_questions_as
            )
            state.removed["same_questions_as"] = before - count(content)["questions"]
        else:  # steps 4 and 6
            before = count(content)["questions"]
            content = subsample(content, spec.max_questions, seed)
            state.removed["subsampling"] = before - count(content)["questions"]
        if not question_ids(content):
            raise MrcbenchError(f"splits.{name}: no questions left after filtering ({state.removed})")
        state.final = content

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in requested:
        state = states[name]
        dataset_key = state.spec.dataset
        _, validation_report, provenance = loader.load(dataset_key)
        dataset_spec = dataset_specs[dataset_key]
        counts = count(state.final)
        summary = {
            "split": name,
            "role": state.spec.role,
            "dataset": dataset_key,
            "part": state.spec.part,
            "metric": dataset_spec.metric,
            "language": dataset_spec.language,
            "version": state.final.get("version"),
            "provenance": provenance,
            "article_split": None
            if state.spec.part is None
            else {"eval_fraction": dataset_spec.eval_fraction, "seed": dataset_spec.split_seed},
            "sample_seed": seed,
            "max_questions": state.spec.max_questions,
            "same_questions_as": state.spec.same_questions_as,
            "counts": counts,
            "removed": {"validation_in_dataset": validation_report.questions_removed} | state.removed,
            "validation": validation_report.to_dict(),
            **state.details,
        }
        path = out_dir / f"{name}.json"
        write_json(path, {"version": state.final.get("version", ""), "data": state.final["data"]}, indent=None)
        write_json(out_dir / f"{name}.summary.json", summary, indent=2)
        removed = ", ".join(f"{step} {n}" for step, n in summary["removed"].items())
        source = dataset_key + (f"/{state.spec.part}" if state.spec.part else "")
        _say(
            f"split '{name}' ({state.spec.role}, {source}): kept {counts['questions']} questions"
            f" ({counts['answerable']} answerable) in {counts['paragraphs']} paragraphs of"
            f" {counts['articles']} articles; removed: {removed} -> {path}"
        )
        written[name] = path
    return written


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mrcbench prepare-data`` (shared with ``mrcbench.cli``)."""
    parser.add_argument("--config", required=True, type=Path, help="the YAML config")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. results/data")
    parser.add_argument(
        "--splits",
        nargs="+",
        metavar="SPLIT",
        help="write only these splits (default: all splits of the config)",
    )


def run(args: argparse.Namespace) -> dict[str, Path]:
    config = cfg.load(args.config)
    # None: resolved from the config or MRCBENCH_DATA_DIR only if some dataset reads a relative local file.
    return prepare_splits(config, None, args.out, splits=args.splits)


def main(argv: Sequence[str] | None = None) -> int:
    """``mrcbench prepare-data --config CONFIG.yaml --out results/data [--splits a b]``."""
    parser = argparse.ArgumentParser(
        prog="mrcbench prepare-data",
        description="Validate the configured datasets and write leakage-free SQuAD-JSON splits.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except MrcbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
