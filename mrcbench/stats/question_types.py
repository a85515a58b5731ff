"""Masking deltas per question type (docs/method.md §5, our English and Chinese buckets).

Writes the ``question_types`` table, shown in the report's "Question types" section (drawn by
:mod:`mrcbench.report.question_types`).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from mrcbench.stats.common import StatsSettings, seeded_rng
from mrcbench.stats.deltas import QuestionMatrix
from mrcbench.stats.resampling import summarize_paired
from mrcbench.tables import CELL_KEYS, QUESTION_TYPES, RUN_KEYS

# --------------------------------------------------------------------------------------------------
# Question types (docs/method.md §5, our buckets)
# --------------------------------------------------------------------------------------------------

ENGLISH_BUCKETS = ("what", "which", "who", "when", "where", "why", "how", "how many/much", "other")
CHINESE_BUCKETS = ("什么", "谁", "哪", "何时-什么时候", "几-多少", "为什么", "如何-怎么", "是否", "other")

_ENGLISH_WH = {
    "what": "what",
    "which": "which",
    "who": "who",
    "whom": "who",
    "whose": "who",
    "when": "when",
    "where": "where",
    "why": "why",
    "how": "how",
}

#: Chinese interrogatives and the bucket of each. At one position the longest form wins, so
#: 什么时候 is "when" and not "what", and 为什么 (which contains 什么) starts earlier anyway.
_CHINESE_FORMS: tuple[tuple[str, str], ...] = (
    ("什么时候", "何时-什么时候"),
    ("何时", "何时-什么时候"),
    ("几时", "何时-什么时候"),
    ("为什么", "为什么"),
    ("为何", "为什么"),
    ("多少", "几-多少"),
    ("几", "几-多少"),
    ("如何", "如何-怎么"),
    ("怎么", "如何-怎么"),
    ("怎样", "如何-怎么"),
    ("是否", "是否"),
    ("是不是", "是否"),
    ("谁", "谁"),
    ("哪", "哪"),
    ("什么", "什么"),
    ("啥", "什么"),
)
#: Words that contain an interrogative character without asking anything.
_CHINESE_NON_QUESTION = ("几乎", "几何")


def english_question_type(question: str) -> str:
    """Bucket of the first wh-word of an English question ("how many/much" before "how")."""
    tokens = re.findall(r"[a-z]+", question.lower())
    for i, token in enumerate(tokens):
        if token in _ENGLISH_WH:
            if token == "how" and i + 1 < len(tokens) and tokens[i + 1] in ("many", "much"):
                return "how many/much"
            return _ENGLISH_WH[token]
    return "other"


def chinese_question_type(question: str) -> str:
    """Bucket of the first interrogative of a Chinese question (longest form at the first position)."""
    text = question
    for word in _CHINESE_NON_QUESTION:
        text = text.replace(word, "\u3000" * len(word))
    best: tuple[int, int, str] | None = None
    for form, bucket in _CHINESE_FORMS:
        position = text.find(form)
        if position >= 0:
            candidate = (position, -len(form), bucket)
            if best is None or candidate < best:
                best = candidate
    return best[2] if best else "other"


def question_type(question: str, language: str) -> str | None:
    """Bucket for English and Chinese questions; None for other languages (no taxonomy)."""
    if language == "en":
        return english_question_type(question)
    if language == "zh":
        return chinese_question_type(question)
    return None


def compute_question_types(
    matrices: list[QuestionMatrix],
    questions: pd.DataFrame | None,
    languages: dict[str, str],
    settings: StatsSettings,
) -> pd.DataFrame:
    """Per question-type bucket: baseline and delta (with article-bootstrap CI) of every zone x layer cell.

    Buckets smaller than ``min_bucket_size`` are kept but marked ``reported = False``: their deltas
    are too noisy to interpret (docs/method.md §5).
    """
    if questions is None or questions.empty:
        return QUESTION_TYPES.empty()
    text = questions.drop_duplicates(["eval_set", "qid"]).set_index(["eval_set", "qid"])["question"]
    rows: list[pd.DataFrame] = []
    for matrix in matrices:
        language = languages.get(matrix.eval_set, "")
        if language not in ("en", "zh"):
            continue
        cells = matrix.layer_cells()
        if cells.empty:
            continue
        texts = text.reindex(pd.MultiIndex.from_product([[matrix.eval_set], matrix.qids]))
        buckets = np.array(
            [question_type(t, language) if isinstance(t, str) else "other" for t in texts], dtype=object
        )
        design = matrix.design(settings.min_clusters)
        columns = cells["column"].to_numpy()
        for bucket in ENGLISH_BUCKETS if language == "en" else CHINESE_BUCKETS:
            members = np.flatnonzero(buckets == bucket)
            if len(members) == 0:
                continue
            sub_design = design.subset(members)
            deltas = matrix.delta[np.ix_(members, columns)]
            summary = summarize_paired(
                deltas,
                sub_design,
                settings,
                seeded_rng(settings, "question_types", *matrix.key, bucket),
                with_tests=False,
            )
            table = cells[list(CELL_KEYS)].reset_index(drop=True).copy()
            table = table.assign(
                **dict(zip(RUN_KEYS, matrix.run, strict=True)),
                language=language,
                variant=matrix.variant,
                metric=matrix.metric,
                bucket=bucket,
                n_questions=len(members),
                reported=len(members) >= settings.min_bucket_size,
                baseline=float(matrix.baseline[members].mean()),
                delta=summary.mean,
                ci_low=summary.ci_low,
                ci_high=summary.ci_high,
                n_clusters=sub_design.n_articles,
                resampling=sub_design.unit,
            )
            rows.append(table[QUESTION_TYPES.names])
    if not rows:
        return QUESTION_TYPES.empty()
    return pd.concat(rows, ignore_index=True)
