"""Scores of a prediction set: per question (:func:`per_question_scores`) and aggregate, as each official script reports them.

One rule per metric (how a question is scored by its family's comparison, what a missing prediction
counts) feeds both the per-question view and the aggregate scorers (:data:`METRICS`, :func:`evaluate`),
so the two can never drift apart.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mrcbench.errors import MrcbenchError

if TYPE_CHECKING:
    import pandas as pd

from mrcbench.metrics.cmrc import cmrc_question
from mrcbench.metrics.mlqa import check_mlqa_language, mlqa_question
from mrcbench.metrics.questions import Question, iter_questions, warn_missing
from mrcbench.metrics.squad import squad_v1_question, squad_v2_question

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Per-question scores shared by all metrics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MetricRule:
    """How one metric scores a question and what it does with a question that has no prediction."""

    score_question: Callable[[Question, str], tuple[float, float]]
    missing_counts_as_zero: bool
    strip_prediction_key: bool = False


_RULES: dict[str, _MetricRule] = {
    "squad": _MetricRule(squad_v1_question, missing_counts_as_zero=True),
    "squad_v2": _MetricRule(squad_v2_question, missing_counts_as_zero=False),
    # cmrc2018_evaluate.py looks predictions up under ``qas['id'].strip()``.
    "cmrc2018": _MetricRule(cmrc_question, missing_counts_as_zero=True, strip_prediction_key=True),
}


def _mlqa_rule(language: str | None) -> _MetricRule:
    if language is None:
        raise MrcbenchError(
            "the mlqa metric needs the answer language (--language, or the dataset's language)"
        )
    return _MetricRule(
        functools.partial(mlqa_question, language=check_mlqa_language(language)), missing_counts_as_zero=True
    )


#: Metrics whose rule depends on the answer language: name -> rule factory.
_LANGUAGE_RULES: dict[str, Callable[[str | None], _MetricRule]] = {"mlqa": _mlqa_rule}


@dataclass(frozen=True)
class _ScoredQuestion:
    question: Question
    prediction: str | None
    exact: float | None  # 0/1, None without a prediction
    f1: float | None  # 0..1, None without a prediction


def _score_questions(
    metric: str, dataset: Mapping[str, Any], preds: Mapping[str, str], language: str | None = None
) -> list[_ScoredQuestion]:
    rule = metric_rule(metric, language)
    scored = []
    keys = set()
    for question in iter_questions(dataset):
        key = question.qid.strip() if rule.strip_prediction_key else question.qid
        keys.add(key)
        prediction = preds.get(key)
        if prediction is None:
            scored.append(_ScoredQuestion(question, None, None, None))
        else:
            exact, f1 = rule.score_question(question, prediction)
            scored.append(_ScoredQuestion(question, prediction, exact, f1))
    unknown = [qid for qid in preds if qid not in keys]
    if unknown:
        logger.warning(
            "%s: %d of %d predictions name no question of the dataset (first: %r); they are ignored",
            metric, len(unknown), len(preds), unknown[0],
        )
    return scored


def _nothing_matched(scored: list[_ScoredQuestion]) -> str | None:
    """The one-line message when no prediction matches any question of the dataset, else None."""
    if scored and all(item.prediction is None for item in scored):
        return f"none of the {len(scored)} questions of the dataset has a prediction"
    return None


def _require_a_prediction(scored: list[_ScoredQuestion]) -> None:
    """A prediction file that answers none of the questions is the wrong file, not a score of 0."""
    message = _nothing_matched(scored)
    if message is not None:
        raise MrcbenchError(message)


def metric_rule(metric: str, language: str | None = None) -> _MetricRule:
    """The rule of ``metric``; ``language`` is used by (and required for) the language-dependent ones."""
    if metric in _RULES:
        return _RULES[metric]
    if metric in _LANGUAGE_RULES:
        return _LANGUAGE_RULES[metric](language)
    raise MrcbenchError(
        f"unknown metric {metric!r}; choose one of {', '.join(sorted([*_RULES, *_LANGUAGE_RULES]))}"
    )


def per_question_scores(
    metric: str, dataset: Mapping[str, Any], preds: Mapping[str, str], language: str | None = None
) -> pd.DataFrame:
    """One row per question, in dataset order: qid, article, question, has_answer, predicted, em, f1.

    ``em`` and ``f1`` are on the 0-100 scale. A question without a prediction gets the value its metric
    gives it: NaN for ``squad_v2`` (the official script skips it) and 0 for ``squad``/``cmrc2018``/``mlqa``
    (they count it as wrong). Hence ``frame[["em", "f1"]].mean()`` (which skips NaN) reproduces the
    scorer's ``exact``/``f1`` (``exact_match``/``f1``, ``EM``/``F1``) for every metric. No null-probability
    threshold is applied: the predictions are taken as they are. ``language`` is the answer language,
    needed by ``mlqa`` and ignored by the others.
    """
    import pandas as pd  # imported here: the config check reads this module's language tables

    rule = metric_rule(metric, language)
    missing_value = 0.0 if rule.missing_counts_as_zero else math.nan
    rows = [
        {
            "qid": item.question.qid,
            "article": item.question.article,
            "question": item.question.question,
            "has_answer": item.question.has_answer,
            "predicted": item.prediction is not None,
            "em": 100.0 * item.exact if item.exact is not None else missing_value,
            "f1": 100.0 * item.f1 if item.f1 is not None else missing_value,
        }
        for item in _score_questions(metric, dataset, preds, language)
    ]
    columns = ["qid", "article", "question", "has_answer", "predicted", "em", "f1"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"has_answer": bool, "predicted": bool, "em": "float64", "f1": "float64"})


# --------------------------------------------------------------------------------------------------
# Aggregate scorers
# --------------------------------------------------------------------------------------------------


def _find_best_threshold(
    preds: Mapping[str, str],
    raw_scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """``find_best_thresh`` of evaluate-v2.0.py, line for line.

    Start from "answer nothing" (every unanswerable question right), then walk the questions by increasing
    null-probability and switch each to its predicted answer: an answerable one gains its score, an
    unanswerable one loses a point if the raw prediction string is non-empty. The threshold is the
    null-probability of the question after which the running score peaked. Quirks kept: the start value
    counts the unanswerable questions of the whole dataset, the denominator only the predicted ones.
    """
    num_no_ans = sum(1 for has_ans in qid_to_has_ans.values() if not has_ans)
    current = float(num_no_ans)
    best = current
    best_threshold = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in raw_scores:
            continue
        if qid_to_has_ans[qid]:
            diff = raw_scores[qid]
        else:
            diff = -1.0 if preds[qid] else 0.0
        current += diff
        if current > best:
            best = current
            best_threshold = na_probs[qid]
    return 100.0 * best / len(raw_scores), best_threshold


def _eval_dict(exact: Mapping[str, float], f1: Mapping[str, float], qids: Sequence[str]) -> dict[str, Any]:
    """``make_eval_dict``: means ×100 over ``qids``."""
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[qid] for qid in qids) / total,
        "f1": 100.0 * sum(f1[qid] for qid in qids) / total,
        "total": total,
    }


def squad_v2_evaluate(
    dataset: Mapping[str, Any],
    preds: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, Any]:
    """The official SQuAD v2.0 evaluation (evaluate-v2.0.py) of ``preds`` (``{qid: answer text}``).

    ``na_probs`` maps qid -> no-answer score (for BERT-style models the null-score difference); a question
    whose score exceeds ``na_prob_thresh`` is treated as answered with "no answer". When ``na_probs`` is
    given, ``best_exact``/``best_f1`` and their thresholds are added. Returns, in this order: exact, f1,
    total, HasAns_* and NoAns_* (when the dataset has such questions), best_* (when ``na_probs`` is given).
    """
    if math.isnan(na_prob_thresh):
        raise MrcbenchError("na_prob_thresh must be a number, not nan")
    scored = _score_questions("squad_v2", dataset, preds)
    qid_to_has_ans = {item.question.qid: item.question.has_answer for item in scored}
    exact_raw = {item.question.qid: item.exact for item in scored if item.exact is not None}
    f1_raw = {item.question.qid: item.f1 for item in scored if item.f1 is not None}
    missing = [item.question.qid for item in scored if item.prediction is None]
    warn_missing("squad_v2", missing, len(scored), "skipped")
    if not exact_raw:
        raise MrcbenchError(f"none of the {len(scored)} questions of the dataset has a prediction")

    if na_probs is None:
        effective_na_probs: Mapping[str, float] = {qid: 0.0 for qid in preds}
    else:
        lacking = [qid for qid in exact_raw if qid not in na_probs]
        if lacking:
            raise MrcbenchError(
                f"na_probs has no entry for {len(lacking)} predicted questions (first: {lacking[0]!r})"
            )
        effective_na_probs = na_probs

    def thresholded(raw: Mapping[str, float]) -> dict[str, float]:
        # apply_no_ans_threshold: above the threshold the answer is "no answer", right iff unanswerable.
        return {
            qid: float(not qid_to_has_ans[qid]) if effective_na_probs[qid] > na_prob_thresh else score
            for qid, score in raw.items()
        }

    exact_scores, f1_scores = thresholded(exact_raw), thresholded(f1_raw)
    result = _eval_dict(exact_scores, f1_scores, list(exact_scores))
    # Splits over the predicted questions (the official script would raise KeyError on a missing one).
    has_ans = [qid for qid in exact_scores if qid_to_has_ans[qid]]
    no_ans = [qid for qid in exact_scores if not qid_to_has_ans[qid]]
    for prefix, qids in (("HasAns", has_ans), ("NoAns", no_ans)):
        if qids:
            for key, value in _eval_dict(exact_scores, f1_scores, qids).items():
                result[f"{prefix}_{key}"] = value
    if na_probs is not None:
        best_exact, best_exact_thresh = _find_best_threshold(preds, exact_raw, na_probs, qid_to_has_ans)
        best_f1, best_f1_thresh = _find_best_threshold(preds, f1_raw, na_probs, qid_to_has_ans)
        result["best_exact"] = best_exact
        result["best_exact_thresh"] = best_exact_thresh
        result["best_f1"] = best_f1
        result["best_f1_thresh"] = best_f1_thresh
    return result


def _percent_over_all_questions(scored: Sequence[_ScoredQuestion]) -> tuple[float, float]:
    """100 x mean EM and F1 over every question, a question without a prediction counting 0.

    Accumulated question by question with ``+=``, as the official scripts do: from Python 3.12 on,
    ``sum`` of floats is compensated and can differ from that in the last bit.
    """
    exact = f1 = 0.0
    for item in scored:
        exact += item.exact or 0.0
        f1 += item.f1 or 0.0
    return 100.0 * exact / len(scored), 100.0 * f1 / len(scored)


def squad_v1_evaluate(dataset: Mapping[str, Any], preds: Mapping[str, str]) -> dict[str, Any]:
    """The official SQuAD v1.1 evaluation (evaluate-v1.1.py): ``{"exact_match", "f1"}`` ×100, where a
    question without a prediction scores 0."""
    scored = _score_questions("squad", dataset, preds)
    if not scored:
        raise MrcbenchError("the dataset has no questions")
    _require_a_prediction(scored)
    warn_missing("squad", [i.question.qid for i in scored if i.prediction is None], len(scored), "scored 0")
    exact_match, f1 = _percent_over_all_questions(scored)
    return {"exact_match": exact_match, "f1": f1}


def mlqa_evaluate(dataset: Mapping[str, Any], preds: Mapping[str, str], language: str) -> dict[str, Any]:
    """The official MLQA evaluation (mlqa_evaluation_v1.py DATASET PREDICTIONS LANGUAGE) of ``preds``
    (``{qid: answer text}``): ``{"exact_match", "f1"}`` ×100 over every question of the dataset, where a
    question without a prediction scores 0.

    ``language`` is the answer language: one of :data:`MLQA_OFFICIAL_LANGUAGES` (the script's own), or
    one of :data:`MLQA_EXTENSION_LANGUAGES` -- el, ru, tr, ro (whitespace tokens, no articles) and th
    (one token per character) -- which are our extension for XQuAD, not the official scorer. Deliberate
    deviations: the dataset's ``version`` is not checked (the script only prints a warning when it is not
    "1.0"; XQuAD files say "1.1"), missing predictions are reported in one summary line instead of one
    line each, and malformed inputs raise :class:`~mrcbench.errors.MrcbenchError`. A prediction file
    that matches no question scores 0, as with the script, with a loud warning (docs/scoring.md §3).
    """
    scored = _score_questions("mlqa", dataset, preds, language)
    if not scored:
        raise MrcbenchError("the dataset has no questions")
    nothing = _nothing_matched(scored)
    if nothing is not None:
        # The official script scores such a file 0, and so do we; but it is almost surely the wrong
        # prediction file, so say so in one line (stderr of ``mrcbench score``, the predict rule's log),
        # as loudly as the error the squad and cmrc2018 scorers raise.
        logger.warning(
            "WARNING: mlqa (%s): %s (no prediction id matches a question id); exact_match and f1 are 0 "
            "as mlqa_evaluation_v1.py gives, but the prediction file is probably not for this dataset",
            language, nothing,
        )
    else:
        missing = [item.question.qid for item in scored if item.prediction is None]
        warn_missing(f"mlqa ({language})", missing, len(scored), "scored 0")
    exact_match, f1 = _percent_over_all_questions(scored)
    return {"exact_match": exact_match, "f1": f1}


def cmrc2018_evaluate(dataset: Mapping[str, Any], preds: Mapping[str, str]) -> dict[str, Any]:
    """The official CMRC 2018 evaluation (cmrc2018_evaluate.py).

    Returns AVERAGE = (EM + F1) / 2, F1, EM (×100 over *all* questions; unanswered ones count 0), TOTAL
    (number of questions) and SKIP (number without a prediction). Values are floats; the script prints
    them formatted as '%.3f' strings.
    """
    scored = _score_questions("cmrc2018", dataset, preds)
    if not scored:
        raise MrcbenchError("the dataset has no questions")
    _require_a_prediction(scored)
    skipped = [item.question.qid for item in scored if item.prediction is None]
    warn_missing("cmrc2018", skipped, len(scored), "scored 0")
    em, f1 = _percent_over_all_questions(scored)
    return {"AVERAGE": (em + f1) * 0.5, "F1": f1, "EM": em, "TOTAL": len(scored), "SKIP": len(skipped)}


#: Metric name -> aggregate scorer ``(dataset, preds) -> dict``; ``squad_v2`` also accepts
#: ``na_probs`` and ``na_prob_thresh``; the metrics of :data:`LANGUAGE_METRICS` take the answer language
#: as a third argument (:func:`evaluate` dispatches both kinds).
METRICS: dict[str, Callable[..., dict[str, Any]]] = {
    "squad": squad_v1_evaluate,
    "squad_v2": squad_v2_evaluate,
    "cmrc2018": cmrc2018_evaluate,
    "mlqa": mlqa_evaluate,
}
LANGUAGE_METRICS = frozenset(_LANGUAGE_RULES)


def evaluate(
    metric: str, dataset: Mapping[str, Any], preds: Mapping[str, str], language: str | None = None
) -> dict[str, Any]:
    """The aggregate scorer of ``metric`` on ``preds`` (``squad_v2`` without no-answer scores).

    ``language`` is the dataset's answer language: required by the metrics of :data:`LANGUAGE_METRICS`
    (``mlqa``), ignored by the others, which are language-independent.
    """
    metric_rule(metric, language)
    if metric in LANGUAGE_METRICS:
        return METRICS[metric](dataset, preds, language)
    return METRICS[metric](dataset, preds)
