"""Attention runs over one eval split: zone statistics and case-study maps (``mrcbench extract-attention``).

The glue between the pipeline's pieces: windows from :mod:`mrcbench.qa.features`, the attention
controller of :mod:`mrcbench.masking.controller`, answers from :mod:`mrcbench.qa.decoding` and per-question
scores from :mod:`mrcbench.metrics`, over the run :class:`mrcbench.qa.eval_run.EvalRun` loads.
Each output is written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mrcbench.config import Attention, ExtractJob
from mrcbench.errors import MrcbenchError
from mrcbench.grid import zone_stats
from mrcbench.qa.eval_run import EvalRun, add_run_arguments
from mrcbench.runtime import files
from mrcbench.runtime import precision as precision_mod
from mrcbench.tables import ZONE_STATS


def _articles(examples: list[dict]) -> dict[str, str]:
    return {ex["id"]: ex["title"] for ex in examples}


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
                  f"'{run.spec.eval}' (no map stored for them)", file=sys.stderr)
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


def extract_attention(run: EvalRun, out_dir: Path, scores: pd.DataFrame | None, attention_cfg: Attention) -> dict:
    """Zone statistics of every question and the case-study maps of one run, written into ``out_dir``."""
    cases = choose_case_studies(run, scores, attention_cfg.case_studies, list(attention_cfg.case_study_ids))
    with precision_mod.autocast(run.precision, run.model.device):
        result = zone_stats.collect_zone_stats(
            run.model, run.features.batches(run.batch_size), case_study_features=cases, progress=True
        )
    frame = zone_stats.zone_stats_frame(result.mass, run.features.example_ids, run.keys, _articles(run.examples))
    frame["precision"] = run.precision
    ZONE_STATS.check(frame, out_dir / "zone_stats.parquet")
    files.write_parquet(frame, out_dir / "zone_stats.parquet")

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
    parser = argparse.ArgumentParser(prog="mrcbench extract-attention", description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--scores", type=Path, help="the prediction step's scores.parquet (case-study choice)")
    args = parser.parse_args(argv)
    spec = ExtractJob.from_json(args.spec)
    run = EvalRun(spec, args.checkpoint, args.eval_json)
    if args.scores is not None and not args.scores.is_file():
        raise MrcbenchError(f"--scores: file not found: {args.scores}")
    scores = files.read_parquet(args.scores) if args.scores is not None else None
    args.out.mkdir(parents=True, exist_ok=True)
    summary = extract_attention(run, args.out, scores, spec.attention)
    print(json.dumps(summary))
    return 0
