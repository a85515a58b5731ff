"""CMRC 2018 answer comparison (``cmrc2018_evaluate.py``).

Mixed segmentation (one token per CJK character, nltk word tokens otherwise), the script's punctuation
list, and EM / longest-common-substring F1; the aggregate scorer is
:func:`~mrcbench.metrics.scoring.cmrc2018_evaluate`.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence

from mrcbench.errors import MrcbenchError
from mrcbench.metrics.questions import Question

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


def is_cjk_unified(char: str) -> bool:
    """The script's ``re.search(u'[\\u4e00-\\u9fa5]', char)``; the range is kept as is (it stops short of
    the end of the CJK Unified Ideographs block) so that the numbers match the official ones."""
    return "\u4e00" <= char <= "\u9fa5"


@functools.cache
def _word_tokenize() -> Callable[[str], list[str]]:
    """nltk's word tokenizer without punkt sentence splitting (which would need downloaded data).

    Imported lazily: nltk takes about a second to import and only the CMRC metric needs it.
    """
    try:
        from nltk.tokenize import word_tokenize  # the CMRC scorer only (slow to import)
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
        if is_cjk_unified(char) or char in _CMRC_PUNCTUATION_SET:
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


def cmrc_question(question: Question, prediction: str) -> tuple[float, float]:
    if not question.gold_answers:
        raise MrcbenchError(f"question {question.qid!r} has no gold answer; the cmrc2018 metric needs one")
    exact = max(cmrc_exact(gold, prediction) for gold in question.gold_answers)
    pred_segments = mixed_segmentation(prediction)  # same for every gold answer: segment once
    f1 = max(_segment_f1(mixed_segmentation(gold), pred_segments) for gold in question.gold_answers)
    return float(exact), f1
