"""One run over one eval split: a fine-tuned checkpoint and a prepared split, loaded once.

The shared input of the commands that evaluate a run beyond its predictions: ``mrcbench
extract-attention`` (:mod:`mrcbench.grid.extraction`) and ``mrcbench ablate`` (:mod:`mrcbench.grid.command`).
Also the command-line arguments naming a run (:func:`add_run_arguments`, used by ``mrcbench predict``
too); the keys its result rows carry are :func:`mrcbench.tables.run_columns` of them.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from mrcbench import config as cfg
from mrcbench import data as data_mod
from mrcbench.models.sources import load_for_qa
from mrcbench.qa import features as feat_mod
from mrcbench.runtime import precision as precision_mod
from mrcbench.tables import run_columns


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments naming one (model, train split, seed, eval split) run and its inputs."""
    parser.add_argument("--config", required=True, help="resolved config (RESULTS/config.resolved.yaml)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True, help="train split name")
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--eval", required=True, help="eval split name")
    parser.add_argument("--checkpoint", required=True, type=Path, help="fine-tuned checkpoint directory")
    parser.add_argument("--eval-json", required=True, type=Path, help="prepared eval split (SQuAD JSON)")


Selection = Callable[[dict, dict, str], dict]
"""Narrows a run's eval split: ``(dataset, config, source) -> dataset`` (the grid's questions)."""


class EvalRun:
    """A fine-tuned model, an eval split and their windows, loaded once per command.

    ``select`` (optional) narrows the split before its windows are made: the grid keeps its own
    questions (:func:`mrcbench.grid.command.grid_selection`).
    """

    def __init__(self, args: argparse.Namespace, select: Selection | None = None):
        self.config = cfg.load(args.config)
        self.args = args
        self.features_cfg = cfg.features_config(self.config, args.model, args.train)
        self.training_cfg = cfg.training_config(self.config, args.model, args.train)
        if self.training_cfg.threads:
            torch.set_num_threads(int(self.training_cfg.threads))
        self.metric = cfg.split_metric(self.config, args.eval)
        self.language = cfg.split_language(self.config, args.eval)
        self.keys = run_columns(vars(args))
        self.model, self.tokenizer = load_for_qa(args.checkpoint)
        self.model.eval()
        # fp32 or bf16 (inference.precision, "auto" resolved for this machine), recorded in every output.
        self.precision = precision_mod.resolve(cfg.inference_config(self.config).precision, self.model.device)
        dataset = data_mod.loading.load_squad_json(args.eval_json)
        if select is not None:
            dataset = select(dataset, self.config, str(args.eval_json))
        self.dataset = dataset
        self.examples = data_mod.filters.flatten(dataset)
        self.features = feat_mod.eval_features(self.examples, self.tokenizer, self.features_cfg)
        self.batch_size = int(self.training_cfg.eval_batch_size)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_attention_heads)
