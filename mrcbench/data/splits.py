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
import os
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
from mrcbench.data.loading import SquadDataset, load_hub, load_squad_json
from mrcbench.data.validation import ValidationReport, validate
from mrcbench.errors import MrcbenchError
from mrcbench.runtime.files import sha256_file, write_json

#: Which side of a dataset's article_split a split's ``part`` names (index into article_split's pair).
PARTS = ("train", "eval")


def _say(message: str) -> None:
    """Progress and summary lines go to stderr so that they land in the Snakemake rule log."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Config-driven preparation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _SplitState:
    """A split's content while it is being resolved, plus the counts for its summary file."""

    spec: cfg.Split
    pool: SquadDataset
    removed: dict[str, int]
    details: dict[str, Any]
    final: SquadDataset | None = None


class _DatasetLoader:
    """Loads, validates and article-splits each configured dataset once."""

    def __init__(
        self, specs: Mapping[str, cfg.Dataset], data_dir: str | os.PathLike | None, validation: cfg.Validation
    ):
        self.specs, self.data_dir_setting, self.validation = specs, data_dir, validation
        self.data_dir: Path | None = None
        self.validated: dict[str, tuple[SquadDataset, ValidationReport, dict[str, Any]]] = {}
        self.parts: dict[str, tuple[SquadDataset, SquadDataset]] = {}

    def _local_path(self, spec: cfg.Dataset) -> Path:
        path = Path(spec.local).expanduser()
        if path.is_absolute():
            return path
        if self.data_dir is None:
            self.data_dir = cfg.resolve_data_dir(self.data_dir_setting)
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
            clean, report = validate(
                raw, name, self.validation.on_bad_record, self.validation.realign_max_shift
            )
            _say(report.summary())
            self.validated[key] = clean, report, provenance
        return self.validated[key]

    def part(self, key: str, part: str | None) -> SquadDataset:
        dataset = self.load(key)[0]
        if part is None:
            return dataset
        if key not in self.parts:
            spec = self.specs[key]
            self.parts[key] = article_split(dataset, spec.article_split.eval_fraction, spec.article_split.seed)
        return self.parts[key][PARTS.index(part)]


def _final_dependencies(split: cfg.Split, splits: Mapping[str, cfg.Split]) -> set[str]:
    """Splits whose *final* content this split's final content needs (pools are needed separately)."""
    deps = {split.same_questions_as} if split.same_questions_as else set()
    if split.role == "train":
        deps |= {name for name, other in splits.items() if other.role == "eval"}
    return deps


def prepare_splits(
    dataset_specs: Mapping[str, cfg.Dataset],
    split_specs: Mapping[str, cfg.Split],
    validation: cfg.Validation,
    seed: int,
    data_dir: str | os.PathLike | None,
    out_dir: Path,
    splits: Sequence[str] | None,
) -> dict[str, Path]:
    """Resolve the splits (order: see the module docstring) and write the requested ones (all when
    ``splits`` is None); returns ``{split: out_dir/split.json}`` for them.

    The datasets and splits are the typed entries of a validated config (the ``prepare_data`` job
    spec's); ``validation`` judges each dataset's answers and ``seed`` (``sample_seed``) draws the
    sub-samples. ``data_dir`` is the folder of relative local files (config ``data_dir``; None: the
    ``MRCBENCH_DATA_DIR`` variable), resolved only when a dataset reads one.
    """
    requested = list(split_specs) if splits is None else list(splits)
    for name in requested:
        if name not in split_specs:
            raise MrcbenchError(f"--splits: unknown split {name!r} (known: {sorted(split_specs)})")

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

    loader = _DatasetLoader(dataset_specs, data_dir, validation)
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
            else {"eval_fraction": dataset_spec.article_split.eval_fraction, "seed": dataset_spec.article_split.seed},
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
    parser.add_argument("--spec", required=True, help="the prepare_data job spec (JSON, mrcbench.config.jobs)")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. results/data")
    parser.add_argument(
        "--splits",
        nargs="+",
        metavar="SPLIT",
        help="write only these splits (default: all splits of the config)",
    )


def run(args: argparse.Namespace) -> dict[str, Path]:
    spec = cfg.PrepareDataJob.from_json(args.spec)
    return prepare_splits(spec.datasets, spec.splits, spec.validation, spec.sample_seed, spec.data_dir, args.out,
                          args.splits)


def main(argv: Sequence[str] | None = None) -> int:
    """``mrcbench prepare-data --spec JSON --out results/data [--splits a b]``."""
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
