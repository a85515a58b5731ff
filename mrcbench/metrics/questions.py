"""Dataset traversal shared by every scorer: the questions of a SQuAD-format dataset, in order.

:func:`iter_questions` checks the structure each official script relies on (one line per problem, from
the one SQuAD-structure reader in :mod:`mrcbench.data.loading`) and
yields :class:`Question` records; :func:`warn_missing` is the one summary line on missing predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mrcbench.data.loading import structure_problem
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


def iter_questions(dataset: Mapping[str, Any]) -> list[Question]:
    """Flatten a SQuAD-format JSON object into its questions, in file order.

    The structure is validated first (:func:`mrcbench.data.loading.structure_problem`, the keys the
    official scripts read), so that a broken file yields a one-line error that says where it is broken
    instead of a ``KeyError`` deep inside a scorer. Duplicate question ids are rejected: the official
    scripts key everything by id, so a duplicate would silently be scored once.
    """
    problem = structure_problem(dataset, scoring=True)
    if problem is not None:
        raise MrcbenchError(f"dataset {problem}")
    questions: list[Question] = []
    seen: set[str] = set()
    for a_index, article in enumerate(dataset["data"]):
        title = article.get("title", "")
        for p_index, paragraph in enumerate(article["paragraphs"]):
            for q_index, qa in enumerate(paragraph["qas"]):
                qid = qa["id"]
                if qid in seen:
                    where = f"data[{a_index}].paragraphs[{p_index}].qas[{q_index}]"
                    raise MrcbenchError(f"dataset {where}: duplicate question id {qid!r}")
                seen.add(qid)
                question_text = qa.get("question", "")
                questions.append(
                    Question(
                        qid=qid,
                        article=str(title),
                        question=question_text if isinstance(question_text, str) else str(question_text),
                        gold_answers=tuple(answer["text"] for answer in qa["answers"]),
                    )
                )
    return questions


def warn_missing(metric: str, missing: list[str], total: int, consequence: str) -> None:
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
