"""Dataset traversal shared by every scorer: the questions of a SQuAD-format dataset, in order.

:func:`iter_questions` checks the structure each official script relies on (one line per problem) and
yields :class:`Question` records; :func:`_warn_missing` is the one summary line on missing predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mrcbench.errors import MrcbenchError

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
