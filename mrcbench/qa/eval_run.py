"""One run over one eval split: a fine-tuned checkpoint and a prepared split, loaded once.

The shared input of the commands that evaluate a run beyond its predictions: ``mrcbench
extract-attention`` (:mod:`mrcbench.grid.extraction`) and ``mrcbench ablate`` (:mod:`mrcbench.grid.command`).
Also the command-line arguments of such a job (:func:`add_run_arguments`: its spec and inputs, used by
``mrcbench predict`` too), the threads it computes with (:func:`use_threads`) and the keys its result
rows carry (:func:`run_keys`).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from mrcbench import data as data_mod
from mrcbench.config import EvalJob
from mrcbench.models.sources import load_for_qa
from mrcbench.qa import features as feat_mod
from mrcbench.runtime import precision as precision_mod
from mrcbench.tables import PATH_KEYS, run_columns


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a job over one run's eval split: its spec and its inputs."""
    parser.add_argument("--spec", required=True, help="the job's spec (JSON, mrcbench.config.jobs)")
    parser.add_argument("--checkpoint", required=True, type=Path, help="fine-tuned checkpoint directory")
    parser.add_argument("--eval-json", required=True, type=Path, help="prepared eval split (SQuAD JSON)")


def run_keys(spec: EvalJob) -> dict:
    """A run's key columns (:data:`mrcbench.tables.RUN_SEED_KEYS`), from its spec's path keys."""
    return run_columns({key: getattr(spec, key) for key in PATH_KEYS.values()})


def use_threads(threads: int | None) -> None:
    """torch's intra-op threads (``training.threads``; None: torch's default)."""
    if threads:
        torch.set_num_threads(int(threads))


Selection = Callable[[dict, str], dict]
"""Narrows a run's eval split: ``(dataset, source) -> dataset`` (the grid's questions)."""


class EvalRun:
    """A fine-tuned model, an eval split and their windows, loaded once per command from the job's spec.

    ``select`` (optional) narrows the split before its windows are made: the grid keeps its own
    questions (:func:`mrcbench.grid.command.grid_selection`).
    """

    def __init__(self, spec: EvalJob, checkpoint: Path, eval_json: Path, select: Selection | None = None):
        self.spec = spec
        use_threads(spec.threads)
        self.language = spec.language
        self.keys = run_keys(spec)
        self.model, self.tokenizer = load_for_qa(checkpoint)
        self.model.eval()
        # fp32 or bf16 (inference.precision, "auto" resolved for this machine), recorded in every output.
        self.precision = precision_mod.resolve(spec.inference.precision, self.model.device)
        dataset = data_mod.loading.load_squad_json(eval_json)
        if select is not None:
            dataset = select(dataset, str(eval_json))
        self.dataset = dataset
        self.examples = data_mod.filters.flatten(dataset)
        self.features = feat_mod.eval_features(self.examples, self.tokenizer, spec.features)
        self.batch_size = int(spec.eval_batch_size)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_attention_heads)
