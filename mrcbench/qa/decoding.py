"""Start/end logits -> answer texts, n-best lists and null-score differences.

The algorithm is BERT's ``write_predictions`` (the paper's decoder), with HF's offset-based text
extraction in place of ``get_final_text``:

* per window, the ``n_best`` highest start and end logits (over the window's real tokens) are paired;
  a pair is a candidate when both tokens are passage tokens that cover text, ``end >= start``, the
  span has at most ``max_answer_length`` tokens and the start token has its maximum context in this window;
* candidates of all windows of a question are ranked by ``start_logit + end_logit``; duplicates of an
  already ranked text are dropped and the first ``n_best`` distinct texts are kept;
* the text is sliced from the ORIGINAL context through the character offsets, so accents, case and
  the absence of spaces in Chinese are preserved;
* the null score is ``start_logit[0] + end_logit[0]`` (the [CLS]/<s> token), minimised over the
  question's windows as BERT's ``score_null``; ``null_score_diff = null score - best non-null span
  score`` is what the SQuAD 2.0 evaluator's threshold search needs (HF's ``run_qa.py`` writes a
  constant 0.0 instead, which makes that search meaningless).

With ``version_2_with_negative`` the answer is ``""`` when ``null_score_diff > threshold`` and the
null answer takes part in the n-best list; otherwise the best non-null span is the answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrcbench.config import Decoding
from mrcbench.errors import MrcbenchError
from mrcbench.qa.features import EvalFeatures
from mrcbench.runtime.files import write_json
from mrcbench.zones import SPECIAL

#: Position of the null answer ([CLS] for BERT-style models, <s> for RoBERTa/XLM-R).
NULL_INDEX = 0


@dataclass
class Predictions:
    """Decoded predictions for every question id.

    ``answers``: the final answer (``""`` for a predicted null answer in SQuAD 2.0 mode).
    ``best_non_null``: the best span text even when the null answer wins (the threshold search of the
    SQuAD 2.0 evaluator needs it: a ``""`` answer cannot be recovered by lowering the threshold).
    ``null_score_diff``: null score minus best non-null span score (``inf`` when no valid span exists).
    ``nbest``: ranked dicts ``{text, probability, start_logit, end_logit}``; probabilities are a softmax
    over the listed scores. ``best_span``: (window index, start token, end token) of the best non-null
    span (questions without a valid span are absent).
    """

    answers: dict[str, str] = field(default_factory=dict)
    best_non_null: dict[str, str] = field(default_factory=dict)
    null_score_diff: dict[str, float] = field(default_factory=dict)
    nbest: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    best_span: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def _logit_rows(
    logits: np.ndarray | Sequence[Sequence[float]], features: EvalFeatures, name: str
) -> list[np.ndarray]:
    """Per-window logit vectors cut to the window's length (padding positions are ignored)."""
    if isinstance(logits, np.ndarray) and logits.ndim != 2:
        raise MrcbenchError(f"decoding: {name} must be [n_windows, seq_len], got shape {logits.shape}")
    if len(logits) != len(features):
        raise MrcbenchError(f"decoding: {name} has {len(logits)} rows for {len(features)} windows")
    rows = []
    for index, (row, ids) in enumerate(zip(logits, features.input_ids)):
        row = np.asarray(row, dtype=np.float64)
        if row.shape[0] < len(ids):
            raise MrcbenchError(
                f"decoding: {name} row {index} has {row.shape[0]} positions for {len(ids)} tokens"
            )
        rows.append(row[: len(ids)])
    return rows


def _top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest scores, highest first; ties keep the lower index first (as BERT)."""
    return np.argsort(-scores, kind="stable")[:n]


def _is_text_token(offset: tuple[int, int] | None) -> bool:
    """A passage token that covers characters: not a question/special token (None), nor a lone
    whitespace token such as SentencePiece's "▁" (an empty span after trimming), which would start or
    end an answer with a space."""
    return offset is not None and offset[1] > offset[0]


def _softmax(scores: Sequence[float]) -> list[float]:
    if not scores:
        return []
    values = np.asarray(scores, dtype=np.float64)
    exp = np.exp(values - values.max())
    return (exp / exp.sum()).tolist()


def postprocess(
    examples: Sequence[Mapping[str, Any]],
    features: EvalFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int,
    max_answer_length: int,
    version_2_with_negative: bool,
    null_score_diff_threshold: float,
) -> Predictions:
    """Decode answers for ``examples`` from per-window logits ``[n_windows, T]`` (T >= window length);
    ``n_best``, ``max_answer_length`` and ``null_score_diff_threshold`` are a run's ``decoding``
    section (:func:`decode`), and ``version_2_with_negative`` allows the null answer (SQuAD 2.0)."""
    if n_best < 1 or max_answer_length < 1:
        raise MrcbenchError("decoding: n_best and max_answer_length must be positive")
    starts = _logit_rows(start_logits, features, "start_logits")
    ends = _logit_rows(end_logits, features, "end_logits")
    windows_of = features.features_by_example()
    known_ids = {str(ex["id"]) for ex in examples}
    stray = [qid for qid in windows_of if qid not in known_ids]
    if stray:
        raise MrcbenchError(
            f"decoding: windows of question {stray[0]} have no example ({len(stray)} such ids)"
        )

    predictions = Predictions()
    for example in examples:
        qid = str(example["id"])
        context = str(example["context"])
        window_indices = windows_of.get(qid)
        if not window_indices:
            raise MrcbenchError(f"decoding: question {qid} has no window in the features")

        candidates: list[tuple[float, float, float, str]] = []  # (score, start_logit, end_logit, text)
        spans: list[tuple[int, int, int]] = []  # (window, start token, end token) of each candidate
        null_start = null_end = 0.0
        null_score = math.inf
        for f in window_indices:
            start_row, end_row = starts[f], ends[f]
            if features.zone_ids[f][NULL_INDEX] != SPECIAL:
                raise MrcbenchError(
                    f"decoding: window {f} of question {qid} does not start with a special token"
                )
            window_null = start_row[NULL_INDEX] + end_row[NULL_INDEX]
            if window_null < null_score:
                null_score, null_start, null_end = window_null, start_row[NULL_INDEX], end_row[NULL_INDEX]
            offsets = features.offset_mapping[f]
            max_context = features.token_is_max_context[f]
            end_candidates = _top_indices(end_row, n_best)
            for i in _top_indices(start_row, n_best):
                if not _is_text_token(offsets[i]) or not max_context.get(int(i), False):
                    continue
                for j in end_candidates:
                    if not _is_text_token(offsets[j]) or j < i or j - i + 1 > max_answer_length:
                        continue
                    text = context[offsets[i][0] : offsets[j][1]]
                    candidates.append((start_row[i] + end_row[j], start_row[i], end_row[j], text))
                    spans.append((int(f), int(i), int(j)))

        order = sorted(range(len(candidates)), key=lambda c: candidates[c][0], reverse=True)
        if order:  # the best non-null span (every candidate's text is non-empty)
            predictions.best_span[qid] = spans[order[0]]
        candidates = [candidates[c] for c in order]  # stable: earlier windows/positions win ties
        ranked: list[tuple[float, float, float, str]] = []
        seen: set[str] = set()
        null_entry = (float(null_score), float(null_start), float(null_end), "")
        null_listed = False
        for candidate in candidates:
            if len(ranked) >= n_best:
                break
            if version_2_with_negative and not null_listed and null_entry[0] > candidate[0]:
                ranked.append(null_entry)
                null_listed = True
                if len(ranked) >= n_best:
                    break
            if candidate[3] in seen:
                continue
            seen.add(candidate[3])
            ranked.append(candidate)
        if version_2_with_negative and not null_listed:
            ranked.append(null_entry)  # BERT appends the null answer when it is outside the n best

        probabilities = _softmax([entry[0] for entry in ranked])
        predictions.nbest[qid] = [
            {"text": text, "probability": prob, "start_logit": float(s), "end_logit": float(e)}
            for (_, s, e, text), prob in zip(ranked, probabilities)
        ]
        best = next((entry for entry in ranked if entry[3]), None)
        if best is None:
            predictions.best_non_null[qid] = ""
            predictions.null_score_diff[qid] = math.inf
            predictions.answers[qid] = ""
            continue
        diff = float(null_score - best[0])
        predictions.best_non_null[qid] = best[3]
        predictions.null_score_diff[qid] = diff
        if version_2_with_negative and diff > null_score_diff_threshold:
            predictions.answers[qid] = ""
        else:
            predictions.answers[qid] = best[3]
    return predictions


def decode(
    examples: Sequence[Mapping[str, Any]],
    features: EvalFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    metric: str,
    decoding_cfg: Decoding,
) -> Predictions:
    """:func:`postprocess` with a run's ``decoding`` config; ``metric`` ``squad_v2`` allows no-answer."""
    return postprocess(
        examples,
        features,
        start_logits,
        end_logits,
        n_best=decoding_cfg.n_best,
        max_answer_length=decoding_cfg.max_answer_length,
        version_2_with_negative=(metric == "squad_v2"),
        null_score_diff_threshold=decoding_cfg.null_score_diff_threshold,
    )


def save_predictions(pred: Predictions, out_dir: str | Path) -> dict[str, Path]:
    """Write ``predictions.json`` (official ``{qid: text}``), ``null_odds.json``, ``nbest.json`` and
    ``predictions_non_null.json`` (best span per question) into ``out_dir``.

    A question without any valid span has ``null_score_diff = inf``, written as ``Infinity`` (which
    Python's ``json``, and so the official SQuAD 2.0 evaluator, reads back as ``inf``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "predictions": (out / "predictions.json", pred.answers),
        "null_odds": (out / "null_odds.json", pred.null_score_diff),
        "nbest": (out / "nbest.json", pred.nbest),
        "predictions_non_null": (out / "predictions_non_null.json", pred.best_non_null),
    }
    for path, payload in files.values():
        write_json(path, payload)
    return {name: path for name, (path, _) in files.items()}
