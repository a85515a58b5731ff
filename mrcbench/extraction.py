"""Attention runs over one eval split: zone statistics and case-study maps (``mrcbench extract-attention``).

The glue between the pipeline's pieces: windows from :mod:`mrcbench.features`, the attention
controller of :mod:`mrcbench.attention`, answers from :mod:`mrcbench.decoding` and per-question
scores from :mod:`mrcbench.metrics`. :class:`EvalRun` (a fine-tuned checkpoint and a prepared split,
loaded once) is shared with the grid's commands (``mrcbench ablate``, in :mod:`mrcbench.ablation`).
Each command writes one result file (atomically).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrcbench import attention, files, predict
from mrcbench import config as cfg
from mrcbench import data as data_mod
from mrcbench import precision as precision_mod
from mrcbench.errors import MrcbenchError
from mrcbench.models import load_for_qa


def _articles(examples: list[dict]) -> dict[str, str]:
    return {ex["id"]: ex["title"] for ex in examples}


def select_grid_questions(
    dataset: dict, max_questions: int | None, answerable_only: bool, seed: int, source: str = "eval split"
) -> dict:
    """The grid's questions: answerable ones only (``ablation.answerable_only``), at most
    ``max_questions`` of them taken round-robin over the articles
    (:func:`mrcbench.data.filters.subsample_across_articles`: hash-ranked by question id, so parallel XQuAD
    languages keep the same ids, and spread over as many articles as the split has)."""
    if answerable_only:
        dataset = data_mod.filters.answerable_only(dataset)
        if not data_mod.filters.question_ids(dataset):
            raise MrcbenchError(f"{source}: no answerable questions for the grid (ablation.answerable_only)")
    return data_mod.filters.subsample_across_articles(dataset, max_questions, seed)


class EvalRun:
    """A fine-tuned model, an eval split and their windows, loaded once per command."""

    def __init__(
        self, args: argparse.Namespace, max_questions: int | None = None, answerable_only: bool = False
    ):
        self.config = cfg.load(args.config)
        self.args = args
        self.features_cfg = cfg.features_config(self.config, args.model, args.train)
        self.training_cfg = cfg.training_config(self.config, args.model, args.train)
        if self.training_cfg.threads:
            torch.set_num_threads(int(self.training_cfg.threads))
        self.metric = cfg.split_metric(self.config, args.eval)
        self.language = cfg.split_language(self.config, args.eval)
        self.keys = {"model": args.model, "train_set": args.train, "eval_set": args.eval, "seed": args.seed}
        self.model, self.tokenizer = load_for_qa(args.checkpoint)
        self.model.eval()
        # fp32 or bf16 (inference.precision, "auto" resolved for this machine), recorded in every output.
        self.precision = precision_mod.resolve(cfg.inference_config(self.config).precision, self.model.device)
        dataset = data_mod.loading.load_squad_json(args.eval_json)
        if answerable_only or max_questions:
            dataset = select_grid_questions(
                dataset, max_questions, answerable_only, cfg.sample_seed(self.config), str(args.eval_json)
            )
        self.dataset = dataset
        self.examples = data_mod.filters.flatten(dataset)
        self.features = predict.eval_features(self.examples, self.tokenizer, self.features_cfg)
        self.batch_size = int(self.training_cfg.eval_batch_size)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_attention_heads)


# --- zone statistics and case studies -------------------------------------------------------------

def choose_case_studies(run: EvalRun, scores: pd.DataFrame | None, wanted: int, explicit: list[str]) -> list[int]:
    """Feature indices of the case-study questions: explicit ids, else the first correctly answered
    (then any answerable) questions whose answer lies in their first window."""
    first_window: dict[str, int] = {}
    for index, qid in enumerate(run.features.example_ids):
        first_window.setdefault(qid, index)
    if explicit:
        missing = [q for q in explicit if q not in first_window]
        if missing:
            # Ids may belong to another eval split (one list serves them all): say so, never drop silently.
            print(f"warning: attention.case_study_ids: {', '.join(map(repr, missing))} not in eval split "
                  f"'{run.args.eval}' (no map stored for them)", file=sys.stderr)
        return [first_window[q] for q in explicit if q in first_window]
    correct = set()
    if scores is not None and len(scores):
        correct = set(scores.loc[scores["em"] >= 100, "qid"])
    answerable = [ex["id"] for ex in run.examples if ex["answers"]["text"]]
    ordered = [q for q in answerable if q in correct] + [q for q in answerable if q not in correct]
    chosen = []
    for qid in ordered:
        if len(chosen) >= wanted:
            break
        if qid in first_window and _answer_tokens(run, first_window[qid]) is not None:
            chosen.append(first_window[qid])
    return chosen


def _answer_tokens(run: EvalRun, feature: int) -> tuple[int, int] | None:
    qid = run.features.example_ids[feature]
    example = next(ex for ex in run.examples if ex["id"] == qid)
    if not example["answers"]["text"]:
        return None
    start_char = example["answers"]["answer_start"][0]
    end_char = start_char + len(example["answers"]["text"][0])
    offsets = run.features.offset_mapping[feature]
    tokens = [i for i, span in enumerate(offsets) if span is not None and span[0] < end_char and span[1] > start_char]
    return (tokens[0], tokens[-1]) if tokens else None


def extract_attention(run: EvalRun, out_dir: Path, scores: pd.DataFrame | None, attention_cfg: cfg.Attention) -> dict:
    cases = choose_case_studies(run, scores, attention_cfg.case_studies, list(attention_cfg.case_study_ids))
    with precision_mod.autocast(run.precision, run.model.device):
        result = attention.collect_zone_stats(
            run.model, run.features.batches(run.batch_size), case_study_features=cases, progress=True
        )
    frame = attention.zone_stats_frame(result.mass, run.features.example_ids, run.keys, _articles(run.examples))
    frame["precision"] = run.precision
    predict.write_parquet(frame, out_dir / "zone_stats.parquet")

    infos, arrays = [], []
    width = max((result.maps[f].shape[-1] for f in cases), default=0)
    for feature in cases:
        maps = result.maps[feature]  # [layers, heads, t, t], cropped to the real (non-PAD) tokens
        length = maps.shape[-1]
        padded = np.zeros((maps.shape[0], maps.shape[1], width, width), dtype=np.float16)
        padded[:, :, :length, :length] = maps
        arrays.append(padded)
        qid = run.features.example_ids[feature]
        example = next(ex for ex in run.examples if ex["id"] == qid)
        infos.append({
            "qid": qid,
            "article": example["title"],
            "question": example["question"],
            "answer": example["answers"]["text"][0] if example["answers"]["text"] else "",
            "answer_tokens": _answer_tokens(run, feature),
            "tokens": run.tokenizer.convert_ids_to_tokens(run.features.input_ids[feature][:length]),
            "zone_ids": list(run.features.zone_ids[feature][:length]),
            "length": length,
            "layers": int(maps.shape[0]),
            "language": run.language,
            **run.keys,
        })
    maps_array = np.stack(arrays) if arrays else np.zeros((0, run.n_layers, run.n_heads, 0, 0), np.float16)
    with files.atomic_path(out_dir / "case_studies.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, maps=maps_array)
    files.write_json(out_dir / "case_studies.json", infos)
    return {"questions": int(frame["qid"].nunique()), "windows": len(run.features.input_ids), "case_studies": len(cases),
            "precision": run.precision}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrcbench extract-attention", description=extract_attention.__doc__)
    predict.add_run_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--scores", type=Path, help="the prediction step's scores.parquet (case-study choice)")
    args = parser.parse_args(argv)
    run = EvalRun(args)
    if args.scores is not None and not args.scores.is_file():
        raise MrcbenchError(f"--scores: file not found: {args.scores}")
    scores = files.read_parquet(args.scores) if args.scores is not None else None
    args.out.mkdir(parents=True, exist_ok=True)
    summary = extract_attention(run, args.out, scores, cfg.attention_config(run.config))
    print(json.dumps(summary))
    return 0
