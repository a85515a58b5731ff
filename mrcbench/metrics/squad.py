"""SQuAD v1.1 / v2.0 answer comparison (``evaluate-v1.1.py``, ``evaluate-v2.0.py``).

Answer normalisation, exact match and token-overlap F1 of one prediction against the gold answers; the
aggregate scorers :func:`~mrcbench.metrics.scoring.squad_v1_evaluate` and
:func:`~mrcbench.metrics.scoring.squad_v2_evaluate` add them up.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

from mrcbench.errors import MrcbenchError
from mrcbench.metrics.questions import Question

# --------------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0 answer comparison
# --------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
ASCII_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop ASCII punctuation, drop a/an/the, collapse whitespace.

    Only ``string.punctuation`` is removed, so full-width or typographic punctuation (``，``, ``“``) and
    accents survive -- a known property of the official script that we keep.
    """
    lowered = text.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in ASCII_PUNCTUATION)
    no_articles = _ARTICLES.sub(" ", no_punctuation)
    return " ".join(no_articles.split())


def overlap_f1(gold_tokens: Sequence[str], pred_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1: the overlap is the multiset intersection, so repeated tokens count at most
    as often as they occur on both sides."""
    common = collections.Counter(gold_tokens) & collections.Counter(pred_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_v2_exact(gold: str, prediction: str) -> int:
    """``compute_exact`` of evaluate-v2.0.py."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def squad_v2_f1(gold: str, prediction: str) -> float:
    """``compute_f1`` of evaluate-v2.0.py: if either side normalises to nothing (a no-answer), the F1 is
    1 when both do and 0 otherwise."""
    gold_tokens = normalize_answer(gold).split()
    pred_tokens = normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    return overlap_f1(gold_tokens, pred_tokens)


def squad_v1_f1(gold: str, prediction: str) -> float:
    """``f1_score`` of evaluate-v1.1.py: no special case for empty strings (two empty strings give 0)."""
    return overlap_f1(normalize_answer(gold).split(), normalize_answer(prediction).split())


def squad_v2_question(question: Question, prediction: str) -> tuple[float, float]:
    """``get_raw_scores`` for one question: gold answers that normalise to nothing are dropped, and a
    question left with no gold answer has the empty string as its only correct answer."""
    golds = [text for text in question.gold_answers if normalize_answer(text)] or [""]
    exact = max(squad_v2_exact(gold, prediction) for gold in golds)
    f1 = max(squad_v2_f1(gold, prediction) for gold in golds)
    return float(exact), f1


def squad_v1_question(question: Question, prediction: str) -> tuple[float, float]:
    """``metric_max_over_ground_truths`` of evaluate-v1.1.py (every listed gold answer counts)."""
    if not question.gold_answers:
        raise MrcbenchError(
            f"question {question.qid!r} has no gold answer; the SQuAD v1.1 metric cannot score "
            "unanswerable questions (use squad_v2)"
        )
    exact = max(float(normalize_answer(prediction) == normalize_answer(g)) for g in question.gold_answers)
    f1 = max(squad_v1_f1(gold, prediction) for gold in question.gold_answers)
    return exact, f1
