"""Structure-preserving filters and splits of a SQuAD-format dataset.

Counting, answerable questions, the article split (by title), sub-sampling by ``sha1(f"{seed}:{qid}")``
rank, the leakage filter (titles and normalised contexts), article exclusion, ``same_questions_as``,
and flattening to the examples the features read. Steps 2-6 of
:func:`mrcbench.data.splits.prepare_splits` use them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mrcbench.data.loading import SquadDataset
from mrcbench.data.validation import MAX_IDS_IN_MESSAGE
from mrcbench.errors import MrcbenchError

# ---------------------------------------------------------------------------------------------------------
# Structure-preserving filters
# ---------------------------------------------------------------------------------------------------------


def _filter(
    dataset: SquadDataset,
    keep_article: Callable[[dict[str, Any]], bool] = lambda article: True,
    keep_paragraph: Callable[[dict[str, Any], dict[str, Any]], bool] = lambda article, par: True,
    keep_question: Callable[[dict[str, Any]], bool] = lambda qa: True,
) -> SquadDataset:
    """Copy of ``dataset`` with only the kept articles/paragraphs/questions; paragraphs and articles left
    without questions are dropped (empty paragraphs would give training windows without questions)."""
    articles = []
    for article in dataset["data"]:
        if not keep_article(article):
            continue
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if not keep_paragraph(article, paragraph):
                continue
            qas = [qa for qa in paragraph["qas"] if keep_question(qa)]
            if qas:
                paragraphs.append(paragraph | {"qas": qas})
        if paragraphs:
            articles.append(article | {"paragraphs": paragraphs})
    return dataset | {"data": articles}


def count(dataset: SquadDataset) -> dict[str, int]:
    """Articles, paragraphs, questions, answerable and unanswerable questions."""
    questions = [qa for article in dataset["data"] for par in article["paragraphs"] for qa in par["qas"]]
    unanswerable = sum(bool(qa.get("is_impossible", False)) or not qa["answers"] for qa in questions)
    return {
        "articles": len(dataset["data"]),
        "paragraphs": sum(len(article["paragraphs"]) for article in dataset["data"]),
        "questions": len(questions),
        "answerable": len(questions) - unanswerable,
        "unanswerable": unanswerable,
    }


def question_ids(dataset: SquadDataset) -> list[str]:
    return [qa["id"] for article in dataset["data"] for par in article["paragraphs"] for qa in par["qas"]]


def answerable_only(dataset: SquadDataset) -> SquadDataset:
    """Drop unanswerable questions (SQuAD 2.0 ``is_impossible``), e.g. to train a v1.1-style model."""
    return _filter(
        dataset, keep_question=lambda qa: not qa.get("is_impossible", False) and bool(qa["answers"])
    )


def article_split(
    dataset: SquadDataset, eval_fraction: float, seed: int
) -> tuple[SquadDataset, SquadDataset]:
    """Split by article title into (train part, eval part).

    The eval part gets ``floor(eval_fraction * n_titles + 0.5)`` titles (at least one, and at least one
    left for train), drawn by ``numpy.random.default_rng(seed).permutation`` over the *sorted* titles, so
    the split depends only on the set of titles and the seed, not on file order. Articles keep their file
    order within each part; articles sharing a title go to the same part.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise MrcbenchError(f"article_split.eval_fraction must be between 0 and 1, got {eval_fraction}")
    titles = sorted({article["title"] for article in dataset["data"]})
    if len(titles) < 2:
        raise MrcbenchError(f"article_split needs at least 2 distinct article titles, found {len(titles)}")
    n_eval = min(len(titles) - 1, max(1, math.floor(eval_fraction * len(titles) + 0.5)))
    order = np.random.default_rng(seed).permutation(len(titles))
    eval_titles = {titles[i] for i in order[:n_eval]}
    return (
        _filter(dataset, keep_article=lambda article: article["title"] not in eval_titles),
        _filter(dataset, keep_article=lambda article: article["title"] in eval_titles),
    )


def subsample_rank(seed: int, qid: str) -> str:
    """Sort key of a question in :func:`subsample`: independent of file order and of the other ids."""
    return hashlib.sha1(f"{seed}:{qid}".encode()).hexdigest()


def subsample(dataset: SquadDataset, n: int | None, seed: int) -> SquadDataset:
    """Keep the ``n`` questions with the smallest ``sha1(f"{seed}:{qid}")`` (all when ``n`` is None or at
    least the number of questions), preserving the SQuAD structure and order.

    Ranking by a hash of the id (rather than drawing positions) makes parallel files (XQuAD languages share
    ids) keep the same questions, and makes the kept set of a filtered pool a subset-consistent choice:
    removing questions from the pool never swaps out a question that both pools contain and that was kept.
    """
    ids = question_ids(dataset)
    if n is None or n >= len(ids):
        return _filter(dataset)
    if n < 0:
        raise MrcbenchError(f"max_questions must be >= 0, got {n}")
    keep = set(sorted(ids, key=lambda qid: subsample_rank(seed, qid))[:n])
    return _filter(dataset, keep_question=lambda qa: qa["id"] in keep)


def subsample_across_articles(dataset: SquadDataset, n: int | None, seed: int) -> SquadDataset:
    """Keep ``n`` questions spread over as many articles as possible: round-robin over the articles.

    Questions are ranked within their article by :func:`subsample_rank`; articles are visited in the
    order of their best-ranked question (a seeded hash order that, like :func:`subsample`, depends only
    on the question ids, so parallel XQuAD languages keep the same questions). Round ``r`` takes the
    ``r``-th question of every article that still has one, until ``n`` are kept: 100 questions from a
    split of 30 articles come from all 30, not from the few articles a plain hash sample favours.
    Keeps everything when ``n`` is None or at least the number of questions; structure and file order
    are preserved.
    """
    ids = question_ids(dataset)
    if n is None or n >= len(ids):
        return _filter(dataset)
    if n < 0:
        raise MrcbenchError(f"max_questions must be >= 0, got {n}")
    ranked: list[list[str]] = []
    for article in dataset["data"]:
        qids = [qa["id"] for par in article["paragraphs"] for qa in par["qas"]]
        if qids:
            ranked.append(sorted(qids, key=lambda qid: subsample_rank(seed, qid)))
    # Articles sharing a title stay separate lists; their order is the rank of their first question.
    ranked.sort(key=lambda qids: subsample_rank(seed, qids[0]))
    order = sorted(
        ((position, article, qid) for article, qids in enumerate(ranked) for position, qid in enumerate(qids))
    )
    keep = {qid for _, _, qid in order[:n]}
    return _filter(dataset, keep_question=lambda qa: qa["id"] in keep)


def normalize_title(title: str) -> str:
    """Titles match across sources case-insensitively, with ``_`` as space (``Super_Bowl_50``)."""
    return " ".join(title.replace("_", " ").split()).casefold()


def normalize_context(context: str) -> str:
    """Contexts match after collapsing whitespace (copies differ in line breaks and double spaces)."""
    return " ".join(context.split())


def _titles_and_contexts(datasets: Iterable[SquadDataset]) -> tuple[set[str], set[str]]:
    titles: set[str] = set()
    contexts: set[str] = set()
    for dataset in datasets:
        for article in dataset["data"]:
            if normalize_title(article["title"]):
                titles.add(normalize_title(article["title"]))
            contexts.update(normalize_context(par["context"]) for par in article["paragraphs"])
    return titles, contexts


@dataclass
class OverlapReport:
    """What a cross-split filter removed; ``*_by_title`` are whole articles, ``*_by_context`` paragraphs
    of articles whose title did not match."""

    articles_removed: int = 0
    paragraphs_removed: int = 0
    questions_removed: int = 0
    paragraphs_removed_by_title: int = 0
    paragraphs_removed_by_context: int = 0
    removed_titles: list[str] = field(default_factory=list)
    against: list[str] = field(default_factory=list)

    def count_removed(self, before: Mapping[str, int], after: Mapping[str, int]) -> None:
        """The articles, paragraphs and questions removed: :func:`count` before minus after."""
        self.articles_removed = before["articles"] - after["articles"]
        self.paragraphs_removed = before["paragraphs"] - after["paragraphs"]
        self.questions_removed = before["questions"] - after["questions"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def remove_overlap(
    train: SquadDataset, eval_sets: Mapping[str, SquadDataset]
) -> tuple[SquadDataset, OverlapReport]:
    """Leakage filter: remove from ``train`` every article whose title occurs in an eval set, and every
    remaining paragraph whose whitespace-normalised context occurs in one.

    Titles catch re-used articles whose paragraphs were edited or translated; contexts catch the same
    paragraph under another title (SQuAD 2.0 dev and XQuAD share 78 identical paragraphs)."""
    titles, contexts = _titles_and_contexts(eval_sets.values())
    report = OverlapReport(against=sorted(eval_sets))
    before = count(train)
    kept_articles = []
    for article in train["data"]:
        if normalize_title(article["title"]) in titles:
            report.removed_titles.append(article["title"])
            report.paragraphs_removed_by_title += len(article["paragraphs"])
            continue
        paragraphs = [
            par for par in article["paragraphs"] if normalize_context(par["context"]) not in contexts
        ]
        report.paragraphs_removed_by_context += len(article["paragraphs"]) - len(paragraphs)
        if paragraphs:
            kept_articles.append(article | {"paragraphs": paragraphs})
    filtered = train | {"data": kept_articles}
    report.count_removed(before, count(filtered))
    return filtered, report


def exclude_articles(
    dataset: SquadDataset, others: Mapping[str, SquadDataset]
) -> tuple[SquadDataset, OverlapReport]:
    """``exclude_articles_of``: drop every whole article whose title, or any of whose paragraph contexts,
    occurs in ``others`` (whole articles, so an evaluated article is never half-seen in training)."""
    titles, contexts = _titles_and_contexts(others.values())
    report = OverlapReport(against=sorted(others))
    before = count(dataset)

    def keep(article: dict[str, Any]) -> bool:
        if normalize_title(article["title"]) in titles:
            report.paragraphs_removed_by_title += len(article["paragraphs"])
        elif any(normalize_context(par["context"]) in contexts for par in article["paragraphs"]):
            report.paragraphs_removed_by_context += len(article["paragraphs"])
        else:
            return True
        report.removed_titles.append(article["title"])
        return False

    filtered = _filter(dataset, keep_article=keep)
    report.count_removed(before, count(filtered))
    return filtered, report


def same_questions_as(
    dataset: SquadDataset, reference: SquadDataset, split: str, reference_split: str
) -> SquadDataset:
    """Keep exactly the question ids of ``reference``; every one of them must exist in ``dataset``."""
    wanted = set(question_ids(reference))
    missing = wanted - set(question_ids(dataset))
    if missing:
        shown = ", ".join(sorted(missing)[:MAX_IDS_IN_MESSAGE])
        raise MrcbenchError(
            f"splits.{split}.same_questions_as: {len(missing)} question ids of "
            f"'{reference_split}' are not in this split's pool (e.g. {shown})"
        )
    return _filter(dataset, keep_question=lambda qa: qa["id"] in wanted)


def flatten(dataset: SquadDataset) -> list[dict[str, Any]]:
    """One example per question: ``id, title, context, question, answers={"text", "answer_start"},
    is_impossible`` (the layout of the hub's QA datasets and of ``mrcbench.qa.features``)."""
    examples = []
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                examples.append(
                    {
                        "id": qa["id"],
                        "title": article["title"],
                        "context": paragraph["context"],
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in qa["answers"]],
                            "answer_start": [a["answer_start"] for a in qa["answers"]],
                        },
                        "is_impossible": bool(qa.get("is_impossible", False)),
                    }
                )
    return examples
