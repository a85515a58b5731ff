"""Dataset preparation: SQuAD-format JSON in, validated, leakage-free, sub-sampled splits out.

Every source (a local SQuAD JSON file or a hub dataset converted to the same layout) is held as a
SQuAD-format dict ``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``,
and every prepared split is written in that layout too, so the official scorers read it unchanged.

Resolution order of :func:`prepare_splits` (why it matters is given with each step):

1. **Datasets** (``config["datasets"]``) are loaded once each (local file, or the hub) and validated
   (:func:`validate`): every answer must be the context substring at its ``answer_start``. A dataset with
   ``article_split`` is then divided by article title into a ``train`` and an ``eval`` part
   (:func:`article_split`), so no article ever contributes to both.
2. **Pools.** Each split takes its dataset part (``part``; the whole dataset when absent) and applies
   ``answerable_only``. A split's pool is what it *could* contain before any cross-split rule.
3. **Exclusions** (``exclude_articles_of``) compare against the referenced splits' *pools* from step 2,
   never their sub-samples: otherwise changing a training split's ``max_questions`` would change which
   XQuAD articles are evaluated, and two runs with different training budgets would score different
   evaluation sets.
4. **Eval splits** (``role: eval``) are resolved next: sub-sampled (:func:`subsample`) or, with
   ``same_questions_as``, restricted to exactly the question ids of another split (parallel XQuAD files
   share ids). Splits referenced by ``same_questions_as`` are resolved first (topological order).
5. **Train splits** (``role: train``) then get the leakage filter (:func:`remove_overlap`) against the
   *final* content of every eval split in the config (also those not requested with ``splits=``): any
   article whose title, and any paragraph whose whitespace-normalised context, appears in an evaluated
   question's article is removed. Filtering against what is actually evaluated (and not the eval pools)
   matters for parallel splits: ``xquad_zh`` shares all 48 titles of XQuAD, but only the sub-sampled
   questions are evaluated. Consequence: a train split depends on the eval splits' sizes and seed.
6. **Train sub-sampling** happens last, *after* the leakage filter, so a train split always has its
   requested size when enough questions survive.

Sub-sampling ranks questions by ``sha1(f"{seed}:{qid}")`` and keeps the lowest ranks: the choice does not
depend on file order, and two parallel files with the same ids keep the same ids.

Each requested split is written atomically as ``{out_dir}/{split}.json`` (SQuAD JSON, source ``version``
and titles kept) with ``{out_dir}/{split}.summary.json`` (counts kept and removed at each step), and a
one-line summary per dataset and split is printed to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import graphlib
import hashlib
import json
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from mrcbench import config as cfg
from mrcbench.errors import MrcbenchError
from mrcbench.files import write_json

SquadDataset = dict[str, Any]
"""A SQuAD-format dict: ``{"version": str, "data": [article, ...]}``."""

ON_BAD_CHOICES = ("skip", "drop_answer", "fail")
METRICS = ("squad", "squad_v2", "cmrc2018", "mlqa")
ROLES = ("train", "eval")
PARTS = ("train", "eval")

# The version string each metric's official data files carry; used for datasets converted from the hub.
# (mlqa: the datasets scored with it here are XQuAD, whose files say 1.1; MLQA's own files say 1.0.)
_HUB_VERSION = {"squad": "1.1", "squad_v2": "v2.0", "cmrc2018": "v1.0", "mlqa": "1.1"}

_DATASET_KEYS = {"local", "hub", "source", "metric", "language", "article_split"}
_HUB_KEYS = {"path", "name", "split", "revision"}
_SPLIT_KEYS = {
    "dataset",
    "part",
    "answerable_only",
    "max_questions",
    "role",
    "exclude_articles_of",
    "same_questions_as",
}
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_IDS_IN_MESSAGE = 5


def _say(message: str) -> None:
    """Progress and summary lines go to stderr so that they land in the Snakemake rule log."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Reading: local JSON files and the hub
# ---------------------------------------------------------------------------------------------------------


def load_squad_json(path: str | Path, config_key: str | None = None) -> SquadDataset:
    """Read a SQuAD-format JSON file and check its structure.

    Structural problems (invalid JSON, missing keys, wrong types) are not data-quality issues that one
    could skip: they mean the file is not SQuAD JSON at all, so they always raise, naming the file and the
    JSON path of the first problem (``data[3].paragraphs[0].qas[2]: missing 'id'``). Content problems
    (misaligned answers, duplicate ids, ...) are left to :func:`validate`.
    """
    path = Path(path)
    where = f"{config_key}: " if config_key else ""
    if not path.is_file():
        raise MrcbenchError(f"{where}dataset file not found: {path}")
    try:
        with path.open(encoding="utf-8") as handle:
            dataset = json.load(handle)
    except json.JSONDecodeError as exc:
        raise MrcbenchError(
            f"{where}{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError as exc:
        raise MrcbenchError(f"{where}{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise MrcbenchError(f"{where}{path}: cannot read ({exc.strerror})") from None
    problem = _structure_problem(dataset)
    if problem is not None:
        raise MrcbenchError(f"{where}{path}: not SQuAD JSON: {problem}")
    return dataset


def _structure_problem(dataset: Any) -> str | None:
    """Return ``"<json path>: <problem>"`` for the first structural problem, or None for valid SQuAD JSON."""

    def check(obj: Any, where: str, key: str, kind: type | tuple[type, ...], kind_name: str) -> str | None:
        if key not in obj:
            return f"{where}: missing '{key}'"
        value = obj[key]
        # bool is an int subclass; an answer_start of true is a bug, not an offset.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{where}.{key}: expected {kind_name}, got {type(value).__name__}"
        return None

    if not isinstance(dataset, dict):
        return f"top level: expected an object, got {type(dataset).__name__}"
    if (problem := check(dataset, "top level", "data", list, "a list")) is not None:
        return problem.replace("top level.", "")
    if "version" in dataset and not isinstance(dataset["version"], (str, int, float)):
        return f"version: expected a string, got {type(dataset['version']).__name__}"
    for a, article in enumerate(dataset["data"]):
        at = f"data[{a}]"
        if not isinstance(article, dict):
            return f"{at}: expected an object, got {type(article).__name__}"
        for key, kind, name in (("title", str, "a string"), ("paragraphs", list, "a list")):
            if (problem := check(article, at, key, kind, name)) is not None:
                return problem
        for p, paragraph in enumerate(article["paragraphs"]):
            pt = f"{at}.paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                return f"{pt}: expected an object, got {type(paragraph).__name__}"
            for key, kind, name in (("context", str, "a string"), ("qas", list, "a list")):
                if (problem := check(paragraph, pt, key, kind, name)) is not None:
                    return problem
            for q, qa in enumerate(paragraph["qas"]):
                qt = f"{pt}.qas[{q}]"
                if not isinstance(qa, dict):
                    return f"{qt}: expected an object, got {type(qa).__name__}"
                for key, kind, name in (
                    ("id", str, "a string"),
                    ("question", str, "a string"),
                    ("answers", list, "a list"),
                ):
                    if (problem := check(qa, qt, key, kind, name)) is not None:
                        return problem
                if "is_impossible" in qa and not isinstance(qa["is_impossible"], bool):
                    kind = type(qa["is_impossible"]).__name__
                    return f"{qt}.is_impossible: expected true or false, got {kind}"
                for n, answer in enumerate(qa["answers"]):
                    nt = f"{qt}.answers[{n}]"
                    if not isinstance(answer, dict):
                        return f"{nt}: expected an object, got {type(answer).__name__}"
                    for key, kind, name in (("text", str, "a string"), ("answer_start", int, "an integer")):
                        if (problem := check(answer, nt, key, kind, name)) is not None:
                            return problem
    return None


def _hub_hosts_resolve() -> bool:
    """Whether the hub's host name resolves. Without a network, ``datasets`` retries each request with
    back-off for about half a minute before failing; one failed DNS lookup tells us the same at once.
    Behind an HTTP(S) proxy the local resolver may legitimately fail, so the check is skipped there."""
    if any(
        os.environ.get(name)
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    ):
        return True
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError, OSError):
        return False
    return True


@contextlib.contextmanager
def _forced_offline() -> Iterator[None]:
    """Run ``datasets`` in offline mode (cached copies still load, anything else fails immediately).
    Both libraries read ``HF_HUB_OFFLINE`` once at import, so the module constants are switched."""
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def load_hub(hub_spec: Mapping[str, Any], key: str = "hub", metric: str | None = None) -> SquadDataset:
    """Load ``datasets.load_dataset(path, name, split)`` and convert it to a SQuAD-format dict.

    Hub QA datasets are flat (one row per question, with ``id, context, question, answers`` and usually
    ``title``; ``answers`` is ``{"text": [...], "answer_start": [...]}``). Articles and paragraphs are rebuilt
    by grouping on title and then context, in order of first appearance. Rows without a title column (the
    hub copies of XQuAD and CMRC 2018) get ``untitled-<sha1 of context>`` as title: one pseudo-article per
    paragraph, named so that titles match across datasets exactly when contexts do. For ``squad_v2`` every
    question gets ``is_impossible = (no answers)``, as in the official files.

    Any failure to fetch (no network, offline mode, unknown dataset) raises one line telling the user to
    point ``datasets.KEY.local`` at a local file instead.
    """
    if "path" not in hub_spec or "split" not in hub_spec:
        raise MrcbenchError(f"datasets.{key}.hub: needs 'path' and 'split' (got {sorted(hub_spec)})")
    path, name, split = hub_spec["path"], hub_spec.get("name"), hub_spec["split"]
    import datasets

    offline = (
        contextlib.nullcontext()
        if datasets.config.HF_HUB_OFFLINE or _hub_hosts_resolve()
        else _forced_offline()
    )
    kwargs = {"revision": hub_spec["revision"]} if hub_spec.get("revision") else {}
    try:
        with offline:
            rows = datasets.load_dataset(path, name, split=split, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every hub failure gets the same actionable one-line message
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
        raise MrcbenchError(
            f"dataset '{key}': cannot load '{path}' from the hub (no network? {cause}); "
            f"set datasets.{key}.local to a local SQuAD JSON file under the data dir"
        ) from None
    return hub_rows_to_squad(rows, key=key, metric=metric, source=f"{path}:{name or ''}:{split}")


def hub_rows_to_squad(
    rows: Iterable[Mapping[str, Any]], key: str = "hub", metric: str | None = None, source: str = "hub"
) -> SquadDataset:
    """Group flat QA rows (a ``datasets.Dataset`` or any iterable of row dicts) into SQuAD JSON."""
    column_names = getattr(rows, "column_names", None)
    required = ("id", "context", "question", "answers")
    if column_names is not None and (missing := [c for c in required if c not in column_names]):
        raise MrcbenchError(f"dataset '{key}': hub dataset {source} lacks column(s) {missing}")
    articles: dict[str, dict[str, Any]] = {}
    paragraphs: dict[tuple[str, str], dict[str, Any]] = {}
    for index, row in enumerate(rows):
        if column_names is None and (missing := [c for c in required if c not in row]):
            raise MrcbenchError(f"dataset '{key}': hub row {index} of {source} lacks {missing}")
        context = row["context"]
        title = row.get("title") or f"untitled-{hashlib.sha1(context.encode('utf-8')).hexdigest()[:12]}"
        if title not in articles:
            articles[title] = {"title": title, "paragraphs": []}
        if (title, context) not in paragraphs:
            paragraphs[title, context] = {"context": context, "qas": []}
            articles[title]["paragraphs"].append(paragraphs[title, context])
        answers = row["answers"]
        if isinstance(answers, Mapping):  # datasets' Sequence-of-struct feature: a dict of lists
            answers = [
                {"text": t, "answer_start": int(s)}
                for t, s in zip(answers["text"], answers["answer_start"], strict=True)
            ]
        else:
            answers = [{"text": a["text"], "answer_start": int(a["answer_start"])} for a in answers]
        qa: dict[str, Any] = {"id": str(row["id"]), "question": row["question"], "answers": answers}
        if metric == "squad_v2":
            qa["is_impossible"] = not answers
        paragraphs[title, context]["qas"].append(qa)
    return {"version": _HUB_VERSION.get(metric or "", source), "data": list(articles.values())}


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
    """With ``on_bad='drop_answer'``: questions kept after dropping some of their misaligned answers."""

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


def _realign(context: str, text: str, start: int, max_shift: int) -> int | None:
    """The occurrence of ``text`` nearest to ``start`` if within ``max_shift`` characters, else None.

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
    dataset: SquadDataset, source_name: str, on_bad: str = "skip", realign_max_shift: int = 0
) -> tuple[SquadDataset, ValidationReport]:
    """Check every question's content; return a cleaned copy and a report.

    A question is bad if its question or context is empty, its id was already seen, its ``is_impossible``
    flag contradicts its answers, or an answer is not ``context[answer_start:answer_start+len(text)]``
    (after moving the offset by at most ``realign_max_shift`` characters to the nearest exact occurrence).

    ``on_bad``: ``skip`` removes bad questions (ids in the report); ``fail`` raises listing the first ids;
    ``drop_answer`` removes only misaligned *answers* and keeps the question if an aligned answer remains
    (useful for CMRC 2018 dev, whose extra reference answers sometimes have ``answer_start = -1``: the
    CMRC scorer matches answer text, and skipping those questions would drop 5 % of the dev set).
    """
    if on_bad not in ON_BAD_CHOICES:
        raise MrcbenchError(f"validation.on_bad_record: expected one of {ON_BAD_CHOICES}, got {on_bad!r}")
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
                problem, clean_qa = _check_question(qa, context, seen_ids, on_bad, realign_max_shift, report)
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
    if on_bad == "fail" and report.questions_removed:
        listed = "; ".join(
            f"{problem}: {', '.join(ids[:_MAX_IDS_IN_MESSAGE])}"
            + (" ..." if len(ids) > _MAX_IDS_IN_MESSAGE else "")
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
        fixed = _realign(context, text, start, realign_max_shift) if realign_max_shift > 0 else None
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
    after = count(filtered)
    report.articles_removed = before["articles"] - after["articles"]
    report.paragraphs_removed = before["paragraphs"] - after["paragraphs"]
    report.questions_removed = before["questions"] - after["questions"]
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
    after = count(filtered)
    report.articles_removed = before["articles"] - after["articles"]
    report.paragraphs_removed = before["paragraphs"] - after["paragraphs"]
    report.questions_removed = before["questions"] - after["questions"]
    return filtered, report


def same_questions_as(
    dataset: SquadDataset, reference: SquadDataset, split: str, reference_split: str
) -> SquadDataset:
    """Keep exactly the question ids of ``reference``; every one of them must exist in ``dataset``."""
    wanted = set(question_ids(reference))
    missing = wanted - set(question_ids(dataset))
    if missing:
        shown = ", ".join(sorted(missing)[:_MAX_IDS_IN_MESSAGE])
        raise MrcbenchError(
            f"splits.{split}.same_questions_as: {len(missing)} question ids of "
            f"'{reference_split}' are not in this split's pool (e.g. {shown})"
        )
    return _filter(dataset, keep_question=lambda qa: qa["id"] in wanted)


def flatten(dataset: SquadDataset) -> list[dict[str, Any]]:
    """One example per question: ``id, title, context, question, answers={"text", "answer_start"},
    is_impossible`` (the layout of the hub's QA datasets and of ``mrcbench.features``)."""
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


# ---------------------------------------------------------------------------------------------------------
# Config-driven preparation
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    metric: str
    language: str | None
    source: str  # "local" | "hub"
    local: str | None
    hub: Mapping[str, Any] | None
    eval_fraction: float | None
    split_seed: int | None

    @classmethod
    def parse(cls, key: str, spec: Any) -> DatasetSpec:
        where = f"datasets.{key}"
        if not isinstance(spec, Mapping):
            raise MrcbenchError(f"{where}: expected a mapping")
        if unknown := set(spec) - _DATASET_KEYS:
            raise MrcbenchError(f"{where}: unknown key(s) {sorted(unknown)}")
        source = spec.get("source") or ("local" if spec.get("local") else "hub")
        if source not in ("local", "hub"):
            raise MrcbenchError(f"{where}.source: expected 'local' or 'hub', got {source!r}")
        if source == "local" and not spec.get("local"):
            raise MrcbenchError(f"{where}.local: required with source: local")
        hub = spec.get("hub")
        if source == "hub":
            if not isinstance(hub, Mapping) or not hub.get("path") or not hub.get("split"):
                raise MrcbenchError(f"{where}.hub: needs 'path' and 'split' (no local file is configured)")
            if unknown := set(hub) - _HUB_KEYS:
                raise MrcbenchError(f"{where}.hub: unknown key(s) {sorted(unknown)}")
        metric = spec.get("metric")
        if metric not in METRICS:
            raise MrcbenchError(f"{where}.metric: expected one of {METRICS}, got {metric!r}")
        eval_fraction = split_seed = None
        if (split := spec.get("article_split")) is not None:
            if not isinstance(split, Mapping) or "eval_fraction" not in split:
                raise MrcbenchError(f"{where}.article_split: needs eval_fraction (and optionally seed)")
            eval_fraction, split_seed = float(split["eval_fraction"]), int(split.get("seed", 0))
        return cls(
            key, metric, spec.get("language"), source, spec.get("local"), hub, eval_fraction, split_seed
        )


@dataclass(frozen=True)
class SplitSpec:
    name: str
    dataset: str
    part: str | None
    role: str
    answerable_only: bool
    max_questions: int | None
    exclude_articles_of: tuple[str, ...]
    same_questions_as: str | None

    @classmethod
    def parse(cls, name: str, spec: Any, datasets: Mapping[str, DatasetSpec]) -> SplitSpec:
        where = f"splits.{name}"
        if not _SPLIT_NAME.match(name):
            raise MrcbenchError(f"{where}: split names may hold only letters, digits, '_', '-' and '.'")
        if not isinstance(spec, Mapping):
            raise MrcbenchError(f"{where}: expected a mapping")
        if unknown := set(spec) - _SPLIT_KEYS:
            raise MrcbenchError(f"{where}: unknown key(s) {sorted(unknown)}")
        dataset = spec.get("dataset")
        if dataset not in datasets:
            raise MrcbenchError(f"{where}.dataset: unknown dataset {dataset!r} (known: {sorted(datasets)})")
        part = spec.get("part")
        if part is not None:
            if part not in PARTS:
                raise MrcbenchError(f"{where}.part: expected one of {PARTS}, got {part!r}")
            if datasets[dataset].eval_fraction is None:
                raise MrcbenchError(f"{where}.part: dataset '{dataset}' has no article_split")
        role = spec.get("role")
        if role not in ROLES:
            raise MrcbenchError(f"{where}.role: expected one of {ROLES}, got {role!r}")
        max_questions = spec.get("max_questions")
        if max_questions is not None and (not isinstance(max_questions, int) or max_questions < 1):
            raise MrcbenchError(f"{where}.max_questions: expected a positive integer, got {max_questions!r}")
        exclude = spec.get("exclude_articles_of") or []
        if isinstance(exclude, str):
            exclude = [exclude]
        same = spec.get("same_questions_as")
        if same is not None and max_questions is not None:
            raise MrcbenchError(f"{where}: same_questions_as and max_questions exclude each other")
        return cls(
            name,
            dataset,
            part,
            role,
            bool(spec.get("answerable_only", False)),
            max_questions,
            tuple(exclude),
            same,
        )


@dataclass
class _SplitState:
    """A split's content while it is being resolved, plus the counts for its summary file."""

    spec: SplitSpec
    pool: SquadDataset
    removed: dict[str, int]
    details: dict[str, Any]
    final: SquadDataset | None = None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _DatasetLoader:
    """Loads, validates and article-splits each configured dataset once."""

    def __init__(
        self,
        config: Mapping[str, Any],
        specs: Mapping[str, DatasetSpec],
        data_dir: Path | None,
        on_bad: str,
        realign_max_shift: int,
    ):
        self.config, self.specs, self.data_dir = config, specs, data_dir
        self.on_bad, self.realign_max_shift = on_bad, realign_max_shift
        self.validated: dict[str, tuple[SquadDataset, ValidationReport, dict[str, Any]]] = {}
        self.parts: dict[str, tuple[SquadDataset, SquadDataset]] = {}

    def _local_path(self, spec: DatasetSpec) -> Path:
        path = Path(spec.local).expanduser()
        if path.is_absolute():
            return path
        if self.data_dir is None:
            self.data_dir = cfg.resolve_data_dir(self.config)
        return self.data_dir / path

    def load(self, key: str) -> tuple[SquadDataset, ValidationReport, dict[str, Any]]:
        if key not in self.validated:
            spec = self.specs[key]
            if spec.source == "local":
                path = self._local_path(spec)
                raw = load_squad_json(path, config_key=f"datasets.{key}.local")
                provenance = {"source": "local", "local": spec.local, "sha256": _file_sha256(path)}
                name = f"dataset '{key}' ({spec.local})"
            else:
                raw = load_hub(spec.hub, key=key, metric=spec.metric)
                provenance = {"source": "hub", "hub": dict(spec.hub)}
                name = f"dataset '{key}' (hub {spec.hub['path']})"
            clean, report = validate(raw, name, self.on_bad, self.realign_max_shift)
            _say(report.summary())
            self.validated[key] = clean, report, provenance
        return self.validated[key]

    def part(self, key: str, part: str | None) -> SquadDataset:
        dataset = self.load(key)[0]
        if part is None:
            return dataset
        if key not in self.parts:
            spec = self.specs[key]
            self.parts[key] = article_split(dataset, spec.eval_fraction, spec.split_seed)
        return self.parts[key][PARTS.index(part)]


def _parse_config(config: Mapping[str, Any]) -> tuple[dict[str, DatasetSpec], dict[str, SplitSpec]]:
    if not isinstance(config.get("datasets"), Mapping) or not config["datasets"]:
        raise MrcbenchError("datasets: the config defines no datasets")
    if not isinstance(config.get("splits"), Mapping) or not config["splits"]:
        raise MrcbenchError("splits: the config defines no splits")
    datasets = {key: DatasetSpec.parse(key, spec) for key, spec in config["datasets"].items()}
    splits = {name: SplitSpec.parse(name, spec, datasets) for name, spec in config["splits"].items()}
    for split in splits.values():
        for other in split.exclude_articles_of:
            if other not in splits:
                raise MrcbenchError(f"splits.{split.name}.exclude_articles_of: unknown split {other!r}")
        if split.same_questions_as is not None and split.same_questions_as not in splits:
            raise MrcbenchError(
                f"splits.{split.name}.same_questions_as: unknown split {split.same_questions_as!r}"
            )
    return datasets, splits


def _final_dependencies(split: SplitSpec, splits: Mapping[str, SplitSpec]) -> set[str]:
    """Splits whose *final* content this split's final content needs (pools are needed separately)."""
    deps = {split.same_questions_as} if split.same_questions_as else set()
    if split.role == "train":
        deps |= {name for name, other in splits.items() if other.role == "eval"}
    return deps


def prepare_splits(
    config: Mapping[str, Any], data_dir: Path | None, out_dir: Path, splits: Sequence[str] | None = None
) -> dict[str, Path]:
    """Resolve the config's splits (order: see the module docstring) and write the requested ones.

    Returns ``{split: out_dir/split.json}`` for the requested splits (all when ``splits`` is None).
    ``data_dir`` may be None when no dataset reads a relative local file; it is then resolved from the
    config or ``MRCBENCH_DATA_DIR`` only if needed.
    """
    dataset_specs, split_specs = _parse_config(config)
    requested = list(split_specs) if splits is None else list(splits)
    for name in requested:
        if name not in split_specs:
            raise MrcbenchError(f"--splits: unknown split {name!r} (known: {sorted(split_specs)})")
    validation = config.get("validation") or {}
    on_bad = validation.get("on_bad_record", "skip")
    if on_bad not in ON_BAD_CHOICES:
        raise MrcbenchError(f"validation.on_bad_record: expected one of {ON_BAD_CHOICES}, got {on_bad!r}")
    realign_max_shift = int(validation.get("realign_max_shift", 0))
    seed = int(config.get("sample_seed", 0))

    # Which finals are needed: the requested splits and, transitively, their final dependencies.
    graph = {name: _final_dependencies(spec, split_specs) for name, spec in split_specs.items()}
    needed: set[str] = set()
    stack = list(requested)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(graph[name])
    try:
        order = list(graphlib.TopologicalSorter({name: graph[name] for name in needed}).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise MrcbenchError(
            f"splits: circular dependency {cycle} (train splits are filtered against every "
            "eval split, and same_questions_as needs the other split first)"
        ) from None

    loader = _DatasetLoader(config, dataset_specs, data_dir, on_bad, realign_max_shift)
    states: dict[str, _SplitState] = {}

    def pool_of(name: str) -> _SplitState:
        """Step 2: dataset part plus answerable_only (the pool other splits' exclusions refer to)."""
        if name not in states:
            spec = split_specs[name]
            dataset = loader.part(spec.dataset, spec.part)
            removed = {"answerable_only": 0}
            if spec.answerable_only:
                filtered = answerable_only(dataset)
                removed["answerable_only"] = count(dataset)["questions"] - count(filtered)["questions"]
                dataset = filtered
            states[name] = _SplitState(
                spec, dataset, removed, {"pool_questions": count(dataset)["questions"]}
            )
        return states[name]

    for name in order:
        state = pool_of(name)
        spec = state.spec
        content = state.pool
        if spec.exclude_articles_of:  # step 3, against the referenced pools
            content, report = exclude_articles(
                content, {other: pool_of(other).pool for other in spec.exclude_articles_of}
            )
            state.removed["exclusion"] = report.questions_removed
            state.details["exclusion"] = report.to_dict()
        if spec.role == "train":  # step 5, against every eval split's final content
            eval_finals = {
                other: states[other].final for other in graph[name] if split_specs[other].role == "eval"
            }
            content, report = remove_overlap(content, eval_finals)
            state.removed["overlap"] = report.questions_removed
            state.details["overlap"] = report.to_dict()
        if spec.same_questions_as:  # step 4
            before = count(content)["questions"]
            content = same_questions_as(
                content, states[spec.same_questions_as].final, name, spec.same_questions_as
            )
            state.removed["same_questions_as"] = before - count(content)["questions"]
        else:  # steps 4 and 6
            before = count(content)["questions"]
            content = subsample(content, spec.max_questions, seed)
            state.removed["subsampling"] = before - count(content)["questions"]
        if not question_ids(content):
            raise MrcbenchError(f"splits.{name}: no questions left after filtering ({state.removed})")
        state.final = content

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in requested:
        state = states[name]
        dataset_key = state.spec.dataset
        _, validation_report, provenance = loader.load(dataset_key)
        dataset_spec = dataset_specs[dataset_key]
        counts = count(state.final)
        summary = {
            "split": name,
            "role": state.spec.role,
            "dataset": dataset_key,
            "part": state.spec.part,
            "metric": dataset_spec.metric,
            "language": dataset_spec.language,
            "version": state.final.get("version"),
            "provenance": provenance,
            "article_split": None
            if state.spec.part is None
            else {"eval_fraction": dataset_spec.eval_fraction, "seed": dataset_spec.split_seed},
            "sample_seed": seed,
            "max_questions": state.spec.max_questions,
            "same_questions_as": state.spec.same_questions_as,
            "counts": counts,
            "removed": {"validation_in_dataset": validation_report.questions_removed} | state.removed,
            "validation": validation_report.to_dict(),
            **state.details,
        }
        path = out_dir / f"{name}.json"
        write_json(path, {"version": state.final.get("version", ""), "data": state.final["data"]}, indent=None)
        write_json(out_dir / f"{name}.summary.json", summary, indent=2)
        removed = ", ".join(f"{step} {n}" for step, n in summary["removed"].items())
        source = dataset_key + (f"/{state.spec.part}" if state.spec.part else "")
        _say(
            f"split '{name}' ({state.spec.role}, {source}): kept {counts['questions']} questions"
            f" ({counts['answerable']} answerable) in {counts['paragraphs']} paragraphs of"
            f" {counts['articles']} articles; removed: {removed} -> {path}"
        )
        written[name] = path
    return written


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mrcbench prepare-data`` (shared with ``mrcbench.cli``)."""
    parser.add_argument("--config", required=True, type=Path, help="the YAML config")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. results/data")
    parser.add_argument(
        "--splits",
        nargs="+",
        metavar="SPLIT",
        help="write only these splits (default: all splits of the config)",
    )


def run(args: argparse.Namespace) -> dict[str, Path]:
    config = cfg.load(args.config)
    # None: resolved from the config or MRCBENCH_DATA_DIR only if some dataset reads a relative local file.
    return prepare_splits(config, None, args.out, splits=args.splits)


def main(argv: Sequence[str] | None = None) -> int:
    """``mrcbench prepare-data --config CONFIG.yaml --out results/data [--splits a b]``."""
    parser = argparse.ArgumentParser(
        prog="mrcbench prepare-data",
        description="Validate the configured datasets and write leakage-free SQuAD-JSON splits.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except MrcbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
