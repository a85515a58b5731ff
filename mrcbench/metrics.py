"""Official-equivalent scorers for extractive MRC: SQuAD v1.1, SQuAD v2.0, CMRC 2018 and MLQA.

Each scorer reproduces the arithmetic of the official evaluation script so that our numbers can be put
next to published ones (paper-method.md §2.4):

* ``squad_v2`` -- ``evaluate-v2.0.py``, which is also what the paper ran on SQuAD v1.1 (its
  ``eval_squad.py``). Questions without a prediction are *skipped* (they are not counted in ``total``).
* ``squad`` -- ``evaluate-v1.1.py``. Questions without a prediction count as 0.
* ``cmrc2018`` -- ``cmrc2018_evaluate.py`` (Python 2 + nltk). Questions without a prediction count as 0
  and are reported as ``SKIP``.
* ``mlqa`` -- ``mlqa_evaluation_v1.py`` (facebookresearch/MLQA), per answer language: Unicode
  punctuation removal, per-language article removal, whitespace tokens or, for zh, mixed segmentation
  (one token per CJK character). Questions without a prediction count as 0. Official languages: en es
  hi vi de ar zh. **Our extension** (not official) for the other XQuAD languages: el ru tr ro split on
  whitespace without article removal, th gets one token per character.

Deliberate, documented deviations from the scripts (they only matter for inputs on which the scripts
crash or cannot run offline):

* ``squad_v2``: the official script raises ``KeyError`` when a prediction is missing and the dataset has
  HasAns/NoAns splits; here the splits are computed over the predicted questions, consistent with
  ``total``. ``best_*`` keep the official quirk of starting from the number of unanswerable questions in
  the *whole* dataset.
* ``cmrc2018``: ``nltk.word_tokenize`` needs the punkt sentence model, which is downloaded at run time.
  We call the same word tokenizer with ``preserve_line=True`` (no sentence splitting, no data). The two
  differ only when a non-Chinese run contains a sentence boundary; since the script lower-cases before
  tokenising, punkt's capitalisation cues almost never fire on answer-length strings.
* ``mlqa``: the script's stderr warning for a dataset ``version`` other than "1.0" is not printed (XQuAD
  files say "1.1"; the numbers do not depend on it).
* Every scorer reports missing predictions in one summary line on stderr, not one line per question.
* Malformed inputs (no questions, no matching predictions, a question without gold answers where the
  metric needs one) raise :class:`~mrcbench.errors.MrcbenchError` instead of a bare Python exception.

The per-question view (:func:`per_question_scores`) is built from the same per-question numbers as the
aggregate scorers, so the two can never drift apart.
"""

from __future__ import annotations

import argparse
import collections
import difflib
import functools
import json
import logging
import math
import re
import string
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrcbench.errors import MrcbenchError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Dataset traversal
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One question of a SQuAD-format dataset, as the official scorers see it."""

    qid: str
    article: str
    question: str
    gold_answers: tuple[str, ...]

    @property
    def has_answer(self) -> bool:
        """The official v2.0 definition: a question is answerable iff its ``answers`` list is non-empty.

        (``is_impossible`` is not consulted, exactly like ``make_qid_to_has_ans``.)
        """
        return bool(self.gold_answers)


def _require(condition: bool, where: str, problem: str) -> None:
    if not condition:
        raise MrcbenchError(f"dataset {where}: {problem}")


def iter_questions(dataset: Mapping[str, Any]) -> list[Question]:
    """Flatten a SQuAD-format JSON object into its questions, in file order.

    The structure is validated on the way, so that a broken file yields a one-line error that says where
    it is broken instead of a ``KeyError`` deep inside a scorer. Duplicate question ids are rejected: the
    official scripts key everything by id, so a duplicate would silently be scored once.
    """
    _require(isinstance(dataset, Mapping), "top level", "is not a JSON object")
    articles = dataset.get("data")
    _require(isinstance(articles, list), "top level", "has no 'data' list")
    questions: list[Question] = []
    seen: set[str] = set()
    for a_index, article in enumerate(articles):
        where = f"data[{a_index}]"
        _require(isinstance(article, Mapping), where, "is not an object")
        title = article.get("title", "")
        paragraphs = article.get("paragraphs")
        _require(isinstance(paragraphs, list), where, "has no 'paragraphs' list")
        for p_index, paragraph in enumerate(paragraphs):
            where = f"data[{a_index}].paragraphs[{p_index}]"
            _require(isinstance(paragraph, Mapping), where, "is not an object")
            qas = paragraph.get("qas")
            _require(isinstance(qas, list), where, "has no 'qas' list")
            for q_index, qa in enumerate(qas):
                where = f"data[{a_index}].paragraphs[{p_index}].qas[{q_index}]"
                _require(isinstance(qa, Mapping), where, "is not an object")
                qid = qa.get("id")
                _require(isinstance(qid, str), where, "has no string 'id'")
                _require(qid not in seen, where, f"duplicate question id {qid!r}")
                seen.add(qid)
                answers = qa.get("answers")
                _require(isinstance(answers, list), where, f"question {qid!r} has no 'answers' list")
                texts = []
                for answer in answers:
                    _require(
                        isinstance(answer, Mapping) and isinstance(answer.get("text"), str),
                        where,
                        f"question {qid!r} has an answer without a string 'text'",
                    )
                    texts.append(answer["text"])
                question_text = qa.get("question", "")
                questions.append(
                    Question(
                        qid=qid,
                        article=str(title),
                        question=question_text if isinstance(question_text, str) else str(question_text),
                        gold_answers=tuple(texts),
                    )
                )
    return questions


def _warn_missing(metric: str, missing: list[str], total: int, consequence: str) -> None:
    """The official scripts print one line per missing prediction; one summary line is enough here."""
    if missing:
        logger.warning(
            "%s: %d of %d questions have no prediction (first: %r); they are %s",
            metric,
            len(missing),
            total,
            missing[0],
            consequence,
        )


# --------------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0 answer comparison
# --------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop ASCII punctuation, drop a/an/the, collapse whitespace.

    Only ``string.punctuation`` is removed, so full-width or typographic punctuation (``，``, ``“``) and
    accents survive -- a known property of the official script that we keep.
    """
    lowered = text.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in _ASCII_PUNCTUATION)
    no_articles = _ARTICLES.sub(" ", no_punctuation)
    return " ".join(no_articles.split())


def _overlap_f1(gold_tokens: Sequence[str], pred_tokens: Sequence[str]) -> float:
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
    return _overlap_f1(gold_tokens, pred_tokens)


def squad_v1_f1(gold: str, prediction: str) -> float:
    """``f1_score`` of evaluate-v1.1.py: no special case for empty strings (two empty strings give 0)."""
    return _overlap_f1(normalize_answer(gold).split(), normalize_answer(prediction).split())


def _squad_v2_question(question: Question, prediction: str) -> tuple[float, float]:
    """``get_raw_scores`` for one question: gold answers that normalise to nothing are dropped, and a
    question left with no gold answer has the empty string as its only correct answer."""
    golds = [text for text in question.gold_answers if normalize_answer(text)] or [""]
    exact = max(squad_v2_exact(gold, prediction) for gold in golds)
    f1 = max(squad_v2_f1(gold, prediction) for gold in golds)
    return float(exact), f1


def _squad_v1_question(question: Question, prediction: str) -> tuple[float, float]:
    """``metric_max_over_ground_truths`` of evaluate-v1.1.py (every listed gold answer counts)."""
    if not question.gold_answers:
        raise MrcbenchError(
            f"question {question.qid!r} has no gold answer; the SQuAD v1.1 metric cannot score "
            "unanswerable questions (use squad_v2)"
        )
    exact = max(float(normalize_answer(prediction) == normalize_answer(g)) for g in question.gold_answers)
    f1 = max(squad_v1_f1(gold, prediction) for gold in question.gold_answers)
    return exact, f1


# --------------------------------------------------------------------------------------------------
# CMRC 2018 answer comparison
# --------------------------------------------------------------------------------------------------

#: The ``sp_char`` list of cmrc2018_evaluate.py, in its order. The script compares single characters
#: against it, so the two-character entry '……' can never match (an ellipsis survives as '…' '…').
CMRC_PUNCTUATION: tuple[str, ...] = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)  # fmt: skip
_CMRC_PUNCTUATION_SET = frozenset(CMRC_PUNCTUATION)


def _is_cjk_unified(char: str) -> bool:
    """The script's ``re.search(u'[\\u4e00-\\u9fa5]', char)``; the range is kept as is (it stops short of
    the end of the CJK Unified Ideographs block) so that the numbers match the official ones."""
    return "\u4e00" <= char <= "\u9fa5"


@functools.cache
def _word_tokenize() -> Callable[[str], list[str]]:
    """nltk's word tokenizer without punkt sentence splitting (which would need downloaded data).

    Imported lazily: nltk takes about a second to import and only the CMRC metric needs it.
    """
    try:
        from nltk.tokenize import word_tokenize
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MrcbenchError("the cmrc2018 metric needs the 'nltk' package (pip install nltk)") from error
    return functools.partial(word_tokenize, preserve_line=True)


def mixed_segmentation(text: str, remove_punctuation: bool = True) -> list[str]:
    """``mixed_segmentation`` of cmrc2018_evaluate.py.

    The string is lower-cased and stripped; each character in U+4E00..U+9FA5 is a segment of its own and
    every maximal run of other characters is word-tokenised. Punctuation from :data:`CMRC_PUNCTUATION` is
    either dropped before segmentation (``remove_punctuation``; the scorer always does this) or becomes a
    segment of its own. Note that a dropped character does *not* split a run: ``"e-mail"`` -> ``["email"]``.
    """
    tokenize = _word_tokenize()
    segments: list[str] = []
    run = ""
    for char in text.lower().strip():
        if remove_punctuation and char in _CMRC_PUNCTUATION_SET:
            continue
        if _is_cjk_unified(char) or char in _CMRC_PUNCTUATION_SET:
            if run:
                segments.extend(tokenize(run))
                run = ""
            segments.append(char)
        else:
            run += char
    if run:
        segments.extend(tokenize(run))
    return segments


def cmrc_remove_punctuation(text: str) -> str:
    """``remove_punctuation`` of cmrc2018_evaluate.py: lower-case, strip, then delete the listed
    characters. Stripping happens first, so whitespace next to removed punctuation stays."""
    return "".join(ch for ch in text.lower().strip() if ch not in _CMRC_PUNCTUATION_SET)


def longest_common_substring_length(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest common *contiguous* run of two segment lists (the script's ``find_lcs``).

    difflib's ``find_longest_match`` computes exactly this when junk heuristics are switched off.
    """
    matcher = difflib.SequenceMatcher(None, first, second, autojunk=False)
    return matcher.find_longest_match(0, len(first), 0, len(second)).size


def _segment_f1(gold_segments: Sequence[str], pred_segments: Sequence[str]) -> float:
    overlap = longest_common_substring_length(gold_segments, pred_segments)
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_segments)
    recall = overlap / len(gold_segments)
    return (2 * precision * recall) / (precision + recall)


def cmrc_f1(gold: str, prediction: str) -> float:
    """One term of ``calc_f1_score``: precision and recall of the longest common substring of the
    punctuation-free segmentations."""
    return _segment_f1(mixed_segmentation(gold), mixed_segmentation(prediction))


def cmrc_exact(gold: str, prediction: str) -> int:
    """One term of ``calc_em_score``: equality after :func:`cmrc_remove_punctuation`."""
    return int(cmrc_remove_punctuation(gold) == cmrc_remove_punctuation(prediction))


def _cmrc_question(question: Question, prediction: str) -> tuple[float, float]:
    if not question.gold_answers:
        raise MrcbenchError(f"question {question.qid!r} has no gold answer; the cmrc2018 metric needs one")
    exact = max(cmrc_exact(gold, prediction) for gold in question.gold_answers)
    pred_segments = mixed_segmentation(prediction)  # same for every gold answer: segment once
    f1 = max(_segment_f1(mixed_segmentation(gold), pred_segments) for gold in question.gold_answers)
    return float(exact), f1


# --------------------------------------------------------------------------------------------------
# MLQA answer comparison (per answer language)
# --------------------------------------------------------------------------------------------------

#: The languages of the official MLQA script (mlqa_evaluation_v1.py).
MLQA_OFFICIAL_LANGUAGES: tuple[str, ...] = ("en", "es", "hi", "vi", "de", "ar", "zh")
#: XQuAD languages the official script does not cover: OUR EXTENSION, not the official scorer. Greek,
#: Russian, Turkish and Romanian are tokenised on whitespace with no article list; Thai, written
#: without spaces between words, gets one token per character (like the zh branch for CJK characters).
MLQA_EXTENSION_LANGUAGES: tuple[str, ...] = ("el", "ru", "tr", "ro", "th")
MLQA_LANGUAGES: tuple[str, ...] = MLQA_OFFICIAL_LANGUAGES + MLQA_EXTENSION_LANGUAGES

#: ``remove_articles`` of the script: the regex replaced by one space, per language (None: nothing).
#: Arabic's pattern is kept verbatim: its first alternative (``\s`` then ``ال`` then start-of-string)
#: can never match, so every occurrence of ``ال`` becomes a space, also inside words.
_MLQA_ARTICLES: dict[str, re.Pattern[str] | None] = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "hi": None,
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "ar": re.compile(r"\sال^|ال"),
    "zh": None,
    "el": None,
    "ru": None,
    "tr": None,
    "ro": None,
    "th": None,
}


def _split_whitespace(text: str) -> list[str]:
    return text.split()


def mlqa_mixed_segmentation(text: str) -> list[str]:
    """The script's ``mixed_segmentation`` (zh): a character in U+4E00..U+9FA5 is a token of its own, runs
    of other characters are split on whitespace. "北京2008年" -> 北 京 2008 年; CJK extension A or
    full-width digits stay inside runs. (The script also isolates punctuation characters here, but
    normalisation has removed them before this step, so the branch never fires on normalised text.)"""
    tokens: list[str] = []
    run: list[str] = []
    for char in text:
        if _is_cjk_unified(char):
            tokens.extend("".join(run).split())
            run = []
            tokens.append(char)
        else:
            run.append(char)
    tokens.extend("".join(run).split())
    return tokens


def _split_characters(text: str) -> list[str]:
    """Our Thai extension: every non-whitespace character is a token."""
    return [char for char in text if not char.isspace()]


_MLQA_TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    **dict.fromkeys(("en", "es", "hi", "vi", "de", "ar", "el", "ru", "tr", "ro"), _split_whitespace),
    "zh": mlqa_mixed_segmentation,
    "th": _split_characters,
}


def check_mlqa_language(language: str | None) -> str:
    """Return ``language`` if the mlqa metric supports it, else raise a one-line error naming it."""
    if language not in _MLQA_TOKENIZERS:
        raise MrcbenchError(
            f"the mlqa metric does not support language {language!r}; supported: "
            f"{' '.join(MLQA_OFFICIAL_LANGUAGES)} (official) and {' '.join(MLQA_EXTENSION_LANGUAGES)} "
            "(our extension)"
        )
    return language


def _is_punctuation(char: str) -> bool:
    """The script's ``PUNCT``: every character of a Unicode category P*, plus ``string.punctuation``
    (whose ``$ + < = > ^ ` | ~`` are symbols, not punctuation, in Unicode)."""
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def mlqa_normalize(text: str, language: str) -> str:
    """``normalize_answer`` of mlqa_evaluation_v1.py: lower-case, remove punctuation, replace the
    language's articles by a space, tokenise for the language, join the tokens with single spaces."""
    check_mlqa_language(language)
    lowered = text.lower()
    no_punctuation = "".join(char for char in lowered if not _is_punctuation(char))
    articles = _MLQA_ARTICLES[language]
    no_articles = articles.sub(" ", no_punctuation) if articles is not None else no_punctuation
    return " ".join(token for token in _MLQA_TOKENIZERS[language](no_articles) if token.strip())


def mlqa_exact(gold: str, prediction: str, language: str) -> int:
    """``exact_match_score`` of mlqa_evaluation_v1.py: equality of the normalised strings (two answers
    that both normalise to nothing are equal)."""
    return int(mlqa_normalize(gold, language) == mlqa_normalize(prediction, language))


def mlqa_f1(gold: str, prediction: str, language: str) -> float:
    """``f1_score`` of mlqa_evaluation_v1.py: bag-of-tokens F1 of the normalised strings, 0 when nothing
    is in common (so also 0 when both normalise to nothing, although their EM is 1)."""
    return _overlap_f1(mlqa_normalize(gold, language).split(), mlqa_normalize(prediction, language).split())


def _mlqa_question(question: Question, prediction: str, language: str) -> tuple[float, float]:
    """``metric_max_over_ground_truths``: the maximum over every listed gold answer (duplicates allowed)."""
    if not question.gold_answers:
        raise MrcbenchError(f"question {question.qid!r} has no gold answer; the mlqa metric needs one")
    normalized = mlqa_normalize(prediction, language)  # the same for every gold answer: normalise once
    golds = [mlqa_normalize(gold, language) for gold in question.gold_answers]
    exact = max(float(gold == normalized) for gold in golds)
    f1 = max(_overlap_f1(gold.split(), normalized.split()) for gold in golds)
    return exact, f1


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
    "squad": _MetricRule(_squad_v1_question, missing_counts_as_zero=True),
    "squad_v2": _MetricRule(_squad_v2_question, missing_counts_as_zero=False),
    # cmrc2018_evaluate.py looks predictions up under ``qas['id'].strip()``.
    "cmrc2018": _MetricRule(_cmrc_question, missing_counts_as_zero=True, strip_prediction_key=True),
}


def _mlqa_rule(language: str | None) -> _MetricRule:
    if language is None:
        raise MrcbenchError(
            "the mlqa metric needs the answer language (--language, or the dataset's language)"
        )
    return _MetricRule(
        functools.partial(_mlqa_question, language=check_mlqa_language(language)), missing_counts_as_zero=True
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
    rule = _rule(metric, language)
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


def _require_a_prediction(scored: list[_ScoredQuestion]) -> None:
    """A prediction file that answers none of the questions is the wrong file, not a score of 0."""
    if scored and all(item.prediction is None for item in scored):
        raise MrcbenchError(f"none of the {len(scored)} questions of the dataset has a prediction")


def _rule(metric: str, language: str | None = None) -> _MetricRule:
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

    rule = _rule(metric, language)
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
    _warn_missing("squad_v2", missing, len(scored), "skipped")
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
    _warn_missing("squad", [i.question.qid for i in scored if i.prediction is None], len(scored), "scored 0")
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
    line each, and malformed inputs raise :class:`~mrcbench.errors.MrcbenchError`.
    """
    scored = _score_questions("mlqa", dataset, preds, language)
    if not scored:
        raise MrcbenchError("the dataset has no questions")
    missing = [item.question.qid for item in scored if item.prediction is None]
    _warn_missing(f"mlqa ({language})", missing, len(scored), "scored 0")
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
    _warn_missing("cmrc2018", skipped, len(scored), "scored 0")
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
    _rule(metric, language)
    if metric in LANGUAGE_METRICS:
        return METRICS[metric](dataset, preds, language)
    return METRICS[metric](dataset, preds)


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
    _rule(metric, language)
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
    _rule(metric, language)
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
            try:
                args.per_question.parent.mkdir(parents=True, exist_ok=True)
                frame.to_parquet(args.per_question, index=False)
            except OSError as error:
                raise MrcbenchError(f"cannot write {args.per_question}: {error.strerror or error}") from None
    except MrcbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
