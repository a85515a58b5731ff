"""The ``mrcbench score`` command (also ``python -m mrcbench.metrics``): dataset and prediction files in, the scorer's JSON out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mrcbench.errors import MrcbenchError
from mrcbench.languages import MLQA_EXTENSION_LANGUAGES, MLQA_OFFICIAL_LANGUAGES
from mrcbench.metrics.questions import iter_questions
from mrcbench.metrics.scoring import (
    LANGUAGE_METRICS,
    METRICS,
    evaluate,
    metric_rule,
    per_question_scores,
    squad_v2_evaluate,
)
from mrcbench.runtime.files import write_parquet

# --------------------------------------------------------------------------------------------------
# Files and command line
# --------------------------------------------------------------------------------------------------


def _read_json(path: str | Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise MrcbenchError(f"{what} file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise MrcbenchError(f"{what} file {path} is not valid JSON: {error}") from None
    except UnicodeDecodeError as error:
        raise MrcbenchError(f"{what} file {path} is not UTF-8 text: {error.reason}") from None
    except OSError as error:
        raise MrcbenchError(f"cannot read {what} file {path}: {error.strerror or error}") from None


def load_dataset_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a SQuAD-format dataset file; errors name the file and the broken spot."""
    dataset = _read_json(path, "dataset")
    try:
        iter_questions(dataset)
    except MrcbenchError as error:
        raise MrcbenchError(f"{path}: {error}") from None
    return dataset


def load_predictions_file(path: str | Path) -> dict[str, str]:
    """Read an official-format prediction file: a JSON object ``{qid: answer text}``."""
    preds = _read_json(path, "prediction")
    if not isinstance(preds, dict):
        raise MrcbenchError(f"prediction file {path} must hold a JSON object {{qid: answer text}}")
    for qid, text in preds.items():
        if not isinstance(text, str):
            raise MrcbenchError(
                f"prediction file {path}: the prediction for {qid!r} is a {type(text).__name__}, not a string"
            )
    return preds


def load_na_probs_file(path: str | Path) -> dict[str, float]:
    """Read a no-answer score file: a JSON object ``{qid: number}`` (e.g. null-score differences)."""
    na_probs = _read_json(path, "na-prob")
    if not isinstance(na_probs, dict):
        raise MrcbenchError(f"na-prob file {path} must hold a JSON object {{qid: number}}")
    for qid, value in na_probs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MrcbenchError(
                f"na-prob file {path}: the value for {qid!r} is not a finite number: {value!r}"
            )
    return {qid: float(value) for qid, value in na_probs.items()}


def _evaluate_loaded(
    metric: str,
    dataset: Mapping[str, Any],
    preds: Mapping[str, str],
    pred_path: str | Path,
    na_probs: Mapping[str, float] | None,
    na_prob_path: str | Path | None,
    na_prob_thresh: float,
    language: str | None = None,
) -> dict[str, Any]:
    metric_rule(metric, language)
    if language is not None and metric not in LANGUAGE_METRICS:
        raise MrcbenchError(
            f"--language is only used by the {', '.join(sorted(LANGUAGE_METRICS))} metric, not {metric}"
        )
    if metric != "squad_v2":
        if na_prob_path is not None:
            raise MrcbenchError(
                f"na-prob file {na_prob_path} is only used by the squad_v2 metric, not {metric}"
            )
        try:
            return evaluate(metric, dataset, preds, language)
        except MrcbenchError as error:
            raise MrcbenchError(f"scoring {pred_path}: {error}") from None
    context = f"scoring {pred_path}" + (f" with {na_prob_path}" if na_prob_path is not None else "")
    try:
        return squad_v2_evaluate(dataset, preds, na_probs=na_probs, na_prob_thresh=na_prob_thresh)
    except MrcbenchError as error:
        raise MrcbenchError(f"{context}: {error}") from None


def score_files(
    metric: str,
    data_path: str | Path,
    pred_path: str | Path,
    na_prob_path: str | Path | None = None,
    na_prob_thresh: float = 1.0,
    language: str | None = None,
) -> dict[str, Any]:
    """Score a prediction file against a dataset file, like running the official script on them
    (``language``: the answer language, for ``mlqa`` only)."""
    metric_rule(metric, language)
    dataset = load_dataset_file(data_path)
    preds = load_predictions_file(pred_path)
    na_probs = load_na_probs_file(na_prob_path) if na_prob_path is not None else None
    return _evaluate_loaded(
        metric, dataset, preds, pred_path, na_probs, na_prob_path, na_prob_thresh, language
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrcbench score",
        description="Score predictions with an official-equivalent SQuAD v1.1 / v2.0, CMRC 2018 or MLQA "
        "scorer and print the result as JSON.",
    )
    parser.add_argument("metric", choices=sorted(METRICS), help="which official script to reproduce")
    parser.add_argument("data_file", type=Path, help="SQuAD-format dataset JSON")
    parser.add_argument("pred_file", type=Path, help="predictions JSON {qid: answer text}")
    parser.add_argument(
        "--language",
        default=None,
        help=f"mlqa only (required): the answer language, one of {' '.join(MLQA_OFFICIAL_LANGUAGES)} "
        f"(official script) or {' '.join(MLQA_EXTENSION_LANGUAGES)} (our extension for XQuAD, not "
        "official: el ru tr ro split on whitespace with no article removal, th one token per character)",
    )
    parser.add_argument(
        "--na-prob-file", type=Path, default=None, help="squad_v2 only: JSON {qid: no-answer score}"
    )
    parser.add_argument(
        "--na-prob-thresh",
        type=float,
        default=1.0,
        help="squad_v2 only: predict no-answer when the no-answer score exceeds this (default 1.0)",
    )
    parser.add_argument(
        "--per-question",
        type=Path,
        default=None,
        metavar="OUT.parquet",
        help="also write per-question scores",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mrcbench score`` and ``python -m mrcbench.metrics``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        dataset = load_dataset_file(args.data_file)
        preds = load_predictions_file(args.pred_file)
        na_probs = load_na_probs_file(args.na_prob_file) if args.na_prob_file is not None else None
        result = _evaluate_loaded(
            args.metric,
            dataset,
            preds,
            args.pred_file,
            na_probs,
            args.na_prob_file,
            args.na_prob_thresh,
            args.language,
        )
        if args.per_question is not None:
            frame = per_question_scores(args.metric, dataset, preds, args.language)
            try:  # atomically: a failed write (a full disk) leaves the previous file in place
                write_parquet(frame, args.per_question)
            except OSError as error:
                raise MrcbenchError(f"cannot write {args.per_question}: {error.strerror or error}") from None
    except MrcbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
