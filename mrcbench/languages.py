"""The answer languages of the MLQA scorer: a torch-free vocabulary, read by config validation (a
dataset scored with ``mlqa`` must name one) and by :mod:`mrcbench.metrics.mlqa` (one tokeniser and
article list per language; ``tests/unit/test_metrics.py`` checks that they cover exactly these)."""
from __future__ import annotations

from mrcbench.errors import MrcbenchError

#: The languages of the official MLQA script (mlqa_evaluation_v1.py).
MLQA_OFFICIAL_LANGUAGES: tuple[str, ...] = ("en", "es", "hi", "vi", "de", "ar", "zh")
#: XQuAD languages the official script does not cover: OUR EXTENSION, not the official scorer. Greek,
#: Russian, Turkish and Romanian are tokenised on whitespace with no article list; Thai, written
#: without spaces between words, gets one token per character (like the zh branch for CJK characters).
MLQA_EXTENSION_LANGUAGES: tuple[str, ...] = ("el", "ru", "tr", "ro", "th")
MLQA_LANGUAGES: tuple[str, ...] = MLQA_OFFICIAL_LANGUAGES + MLQA_EXTENSION_LANGUAGES


def check_mlqa_language(language: str | None) -> str:
    """Return ``language`` if the mlqa metric supports it, else raise a one-line error naming it."""
    if language not in MLQA_LANGUAGES:
        raise MrcbenchError(
            f"the mlqa metric does not support language {language!r}; supported: "
            f"{' '.join(MLQA_OFFICIAL_LANGUAGES)} (official) and {' '.join(MLQA_EXTENSION_LANGUAGES)} "
            "(our extension)"
        )
    return language
