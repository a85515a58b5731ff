"""Prediction: run a fine-tuned checkpoint over an eval split, decode answers, score them.

Writes, into one folder per (model, train split, seed, eval split): ``predictions.json``
(``{qid: text}``, the official format), ``null_odds.json``, ``nbest.json``, ``metrics.json`` (the
official-equivalent scorer's output, plus the best null threshold for SQuAD 2.0) and
``scores.parquet`` (per-question EM/F1, keyed for the later statistics).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mrcbench import data as data_mod
from mrcbench import metrics
from mrcbench.config import Decoding, Features, PredictJob
from mrcbench.errors import MrcbenchError
from mrcbench.metrics.questions import iter_questions
from mrcbench.models.sources import load_for_qa
from mrcbench.qa import decoding
from mrcbench.qa import features as feat_mod
from mrcbench.qa.eval_run import add_run_arguments, run_keys, use_threads
from mrcbench.qa.features import PAD_LOGIT
from mrcbench.runtime import files
from mrcbench.runtime import precision as precision_mod
from mrcbench.tables import SCORES


def stack_logits(chunks: list[torch.Tensor], width: int) -> np.ndarray:
    out = np.full((sum(c.shape[0] for c in chunks), width), PAD_LOGIT, dtype=np.float32)
    row = 0
    for chunk in chunks:
        out[row:row + chunk.shape[0], : chunk.shape[1]] = chunk.float().cpu().numpy()
        row += chunk.shape[0]
    return out


@torch.no_grad()
def model_logits(model, features: feat_mod.EvalFeatures, batch_size: int, precision: str, desc: str = "predict"):
    """Start/end logits for every window, as [n_windows, max_len] float32 arrays.

    ``precision`` (``fp32`` or ``bf16``, see :mod:`mrcbench.runtime.precision`) is that of the forward
    passes; the logits are returned as fp32 either way.
    """
    model.eval()
    starts, ends = [], []
    n_batches = (len(features.input_ids) + batch_size - 1) // batch_size
    for batch in tqdm(features.batches(batch_size), total=n_batches, desc=desc, unit="batch", dynamic_ncols=True):
        inputs = {k: v.to(model.device) for k, v in batch.items() if k != "zone_ids"}
        with precision_mod.autocast(precision, model.device):
            out = model(**inputs)
        starts.append(out.start_logits)
        ends.append(out.end_logits)
    width = max(len(ids) for ids in features.input_ids)
    return stack_logits(starts, width), stack_logits(ends, width)


def score(metric: str, dataset: dict, preds: decoding.Predictions, language: str | None) -> dict:
    """The official scorer's numbers for the thresholded answers (``language``: the dataset's answer
    language, used by the mlqa metric).

    For SQuAD 2.0 the best-threshold search (``best_*``) runs on the best non-null span of every
    question with its null-score difference, as the official script expects; running it on
    answers already thresholded to "" could only ever move the threshold one way (and with HF's
    constant no-answer probability it means nothing: docs/pitfalls.md).
    """
    if metric != "squad_v2":
        return metrics.scoring.evaluate(metric, dataset, preds.answers, language)
    result = metrics.scoring.squad_v2_evaluate(dataset, preds.answers)
    best = metrics.scoring.squad_v2_evaluate(dataset, preds.best_non_null, na_probs=preds.null_score_diff)
    result.update({k: v for k, v in best.items() if k.startswith("best_")})
    return result


def write_scores(path: Path, frame, keys: dict) -> None:
    frame = frame.copy()
    for i, (key, value) in enumerate(keys.items()):
        frame.insert(i, key, value)
    SCORES.check(frame, path)
    files.write_parquet(frame, path)


def predict(checkpoint: Path, eval_json: Path, out_dir: Path, metric: str, language: str, features_cfg: Features,
            decoding_cfg: Decoding, batch_size: int, precision: str, keys: dict) -> dict:
    """Predict, score and write one run's files; ``precision`` is ``inference.precision`` (``auto``
    is resolved for the model's device and the result recorded in ``metrics.json``); ``language``
    is the eval dataset's (the mlqa metric needs it)."""
    out_dir = Path(out_dir)  # created by the first write: a failed load leaves no empty folder
    dataset = data_mod.loading.load_squad_json(eval_json)
    try:  # the scorer's checks (duplicate question ids, ...) before any model work
        iter_questions(dataset)
    except MrcbenchError as exc:
        raise MrcbenchError(f"{eval_json}: {exc}") from None
    model, tokenizer = load_for_qa(checkpoint)
    examples = data_mod.filters.flatten(dataset)
    features = feat_mod.eval_features(examples, tokenizer, features_cfg)
    used = precision_mod.resolve(precision, model.device)
    start, end = model_logits(model, features, batch_size, used)
    preds = decoding.decode(examples, features, start, end, metric, decoding_cfg)
    decoding.save_predictions(preds, out_dir)
    result = score(metric, dataset, preds, language)
    result["n_windows"] = len(features.input_ids)
    result["precision"] = used
    frame = metrics.scoring.per_question_scores(metric, dataset, preds.answers, language)
    write_scores(out_dir / "scores.parquet", frame, keys)
    files.write_json(out_dir / "metrics.json", result, indent=2)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrcbench predict", description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    spec = PredictJob.from_json(args.spec)
    use_threads(spec.threads)
    result = predict(
        args.checkpoint, args.eval_json, args.out, spec.metric, spec.language, spec.features, spec.decoding,
        spec.eval_batch_size, spec.inference.precision, run_keys(spec),
    )
    print(json.dumps(result, ensure_ascii=False))
    return 0
