"""MLQA answer comparison per answer language (``mlqa_evaluation_v1.py``, plus our XQuAD extension).

Unicode punctuation removal, per-language article removal, whitespace tokens or mixed segmentation;
the aggregate scorer is :func:`~mrcbench.metrics.scoring.mlqa_evaluate`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from mrcbench.errors import MrcbenchError
from mrcbench.languages import check_mlqa_language
from mrcbench.metrics.cmrc import is_cjk_unified
from mrcbench.metrics.questions import Question
from mrcbench.metrics.squad import ASCII_PUNCTUATION, overlap_f1

# --------------------------------------------------------------------------------------------------
# MLQA answer comparison (per answer language)
# --------------------------------------------------------------------------------------------------


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
        if is_cjk_unified(char):
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




def _is_punctuation(char: str) -> bool:
    """The script's ``PUNCT``: every character of a Unicode category P*, plus ``string.punctuation``
    (whose ``$ + < = > ^ ` | ~`` are symbols, not punctuation, in Unicode)."""
    return char in ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


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
    return overlap_f1(mlqa_normalize(gold, language).split(), mlqa_normalize(prediction, language).split())


def mlqa_question(question: Question, prediction: str, language: str) -> tuple[float, float]:
    """``metric_max_over_ground_truths``: the maximum over every listed gold answer (duplicates allowed)."""
    if not question.gold_answers:
        raise MrcbenchError(f"question {question.qid!r} has no gold answer; the mlqa metric needs one")
    normalized = mlqa_normalize(prediction, language)  # the same for every gold answer: normalise once
    golds = [mlqa_normalize(gold, language) for gold in question.gold_answers]
    exact = max(float(gold == normalized) for gold in golds)
    f1 = max(overlap_f1(gold.split(), normalized.split()) for gold in golds)
    return exact, f1
