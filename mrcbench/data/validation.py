"""Validation of a SQuAD-format dataset: every answer is the context substring at its ``answer_start``.

Misaligned answers are realigned within ``validation.realign_max_shift`` characters, else skipped,
dropped or refused (``validation.on_bad_record``); the :class:`ValidationReport` counts each problem.
Step 1 of :func:`mrcbench.data.splits.prepare_splits`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mrcbench.data.loading import SquadDataset
from mrcbench.errors import MrcbenchError

ON_BAD_CHOICES = ("skip", "drop_answer", "fail")


MAX_IDS_IN_MESSAGE = 5


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------

PROBLEMS = (
    "misaligned_answer",  # answer text != context[answer_start:answer_start+len(text)], not realigned
    "empty_answer",  # answer text is empty or whitespace
    "empty_question",
    "empty_context",
    "duplicate_id",  # a later question with an id seen before (the first one is kept)
    "unanswerable_with_answers",  # is_impossible true but answers given
    "answerable_without_answers",  # is_impossible false/absent but no answers
)


@dataclass
class ValidationReport:
    """What :func:`validate` kept, repaired and removed from one source."""

    source: str
    questions_in: int = 0
    questions_kept: int = 0
    bad_ids: dict[str, list[str]] = field(default_factory=lambda: {problem: [] for problem in PROBLEMS})
    realigned_ids: list[str] = field(default_factory=list)
    """Questions with an answer whose offset was off by at most ``realign_max_shift`` characters (fixed)."""
    dropped_answer_ids: list[str] = field(default_factory=list)
    """With ``on_bad_record='drop_answer'``: questions kept after dropping some of their misaligned answers."""

    @property
    def questions_removed(self) -> int:
        return self.questions_in - self.questions_kept

    def summary(self) -> str:
        problems = ", ".join(f"{problem} {len(ids)}" for problem, ids in self.bad_ids.items() if ids)
        line = (
            f"{self.source}: kept {self.questions_kept} of {self.questions_in} questions, "
            f"removed {self.questions_removed}" + (f" ({problems})" if problems else "")
        )
        if self.realigned_ids:
            line += f"; realigned answers in {len(self.realigned_ids)}"
        if self.dropped_answer_ids:
            line += f"; dropped misaligned answers in {len(self.dropped_answer_ids)}"
        return line

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"questions_removed": self.questions_removed}


def realign(context: str, text: str, start: int, max_shift: int) -> int | None:
    """The occurrence of ``text`` nearest to ``start`` if within ``max_shift`` characters, else None;
    of two equally near, the earlier one. The one answer realignment: data validation (config
    ``validation.realign_max_shift``) and the training features (:func:`mrcbench.qa.features.locate_answer`).

    CMRC 2018 has answers whose offset is off by one or two characters (BERT's CMRC script shifted them
    back by up to a few characters); a wrong offset puts the training target on the wrong tokens."""
    best: int | None = None
    for candidate in range(max(0, start - max_shift), min(len(context), start + max_shift) + 1):
        if context.startswith(text, candidate) and (
            best is None or abs(candidate - start) < abs(best - start)
        ):
            best = candidate
    return best


def validate(
    dataset: SquadDataset, source_name: str, on_bad_record: str, realign_max_shift: int
) -> tuple[SquadDataset, ValidationReport]:
    """Check every question's content; return a cleaned copy and a report.

    A question is bad if its question or context is empty, its id was already seen, its ``is_impossible``
    flag contradicts its answers, or an answer is not ``context[answer_start:answer_start+len(text)]``
    (after moving the offset by at most ``realign_max_shift`` characters to the nearest exact occurrence).

    ``on_bad_record``: ``skip`` removes bad questions (ids in the report); ``fail`` raises listing the first
    ids; ``drop_answer`` removes only misaligned *answers* and keeps the question if an aligned answer
    remains (useful for CMRC 2018 dev, whose extra reference answers sometimes have ``answer_start = -1``:
    the CMRC scorer matches answer text, and skipping those questions would drop 5 % of the dev set).
    Both are the config's ``validation`` section.
    """
    if on_bad_record not in ON_BAD_CHOICES:
        raise MrcbenchError(
            f"validation.on_bad_record: expected one of {ON_BAD_CHOICES}, got {on_bad_record!r}"
        )
    report = ValidationReport(source=source_name)
    seen_ids: set[str] = set()
    clean_articles = []
    for article in dataset["data"]:
        clean_paragraphs = []
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            clean_qas = []
            for qa in paragraph["qas"]:
                report.questions_in += 1
                qid = qa["id"]
                problem, clean_qa = _check_question(qa, context, seen_ids, on_bad_record, realign_max_shift, report)
                seen_ids.add(qid)
                if problem is not None:
                    report.bad_ids[problem].append(qid)
                    continue
                report.questions_kept += 1
                clean_qas.append(clean_qa)
            if clean_qas:
                clean_paragraphs.append(paragraph | {"qas": clean_qas})
        if clean_paragraphs:
            clean_articles.append(article | {"paragraphs": clean_paragraphs})
    if on_bad_record == "fail" and report.questions_removed:
        listed = "; ".join(
            f"{problem}: {', '.join(ids[:MAX_IDS_IN_MESSAGE])}"
            + (" ..." if len(ids) > MAX_IDS_IN_MESSAGE else "")
            for problem, ids in report.bad_ids.items()
            if ids
        )
        raise MrcbenchError(
            f"{source_name}: {report.questions_removed} invalid questions ({listed}); "
            f"set validation.on_bad_record: skip to drop them"
        )
    return dataset | {"data": clean_articles}, report


def _check_question(
    qa: dict[str, Any],
    context: str,
    seen_ids: set[str],
    on_bad: str,
    realign_max_shift: int,
    report: ValidationReport,
) -> tuple[str | None, dict[str, Any]]:
    """Return (problem or None, possibly repaired copy of ``qa``)."""
    if qa["id"] in seen_ids:
        return "duplicate_id", qa
    if not context.strip():
        return "empty_context", qa
    if not qa["question"].strip():
        return "empty_question", qa
    answers = qa["answers"]
    if qa.get("is_impossible", False):
        return ("unanswerable_with_answers", qa) if answers else (None, qa)
    if not answers:
        return "answerable_without_answers", qa
    kept, realigned, misaligned = [], False, False
    for answer in answers:
        text, start = answer["text"], answer["answer_start"]
        if not text.strip():
            return "empty_answer", qa
        if start >= 0 and context[start : start + len(text)] == text:
            kept.append(answer)
            continue
        fixed = realign(context, text, start, realign_max_shift) if realign_max_shift > 0 else None
        if fixed is not None:
            kept.append(answer | {"answer_start": fixed})
            realigned = True
        else:
            misaligned = True
    if misaligned and (on_bad != "drop_answer" or not kept):
        return "misaligned_answer", qa
    if realigned:
        report.realigned_ids.append(qa["id"])
    if misaligned:
        report.dropped_answer_ids.append(qa["id"])
    return None, (qa | {"answers": kept} if realigned or misaligned else qa)
